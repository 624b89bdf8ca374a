// The com.fastattention::FastAttention contract, once, free of ONNX Runtime and Python types:
// names, attributes (defaults and validation), input rules and output shapes, and the filling
// of the kernels' AttentionParams from plain tensor descriptions. The custom op, the plugin EP
// (ep/) and the Python bindings (python/src/) all call this; each only adapts its own tensor
// and attribute types.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "attention_params.h"

namespace fastattn::core {

inline constexpr const char* kOpDomain = "com.fastattention";
inline constexpr const char* kOpType = "FastAttention";
inline constexpr int kOpSinceVersion = 1;
inline constexpr const char* kEpName = "FastAttentionEP";

enum InputSlot : int { kQuery = 0, kKey, kValue, kAttnBias, kKeyPaddingMask, kPastKey, kPastValue, kNumInputs };
enum OutputSlot : int { kOutput = 0, kPresentKey, kPresentValue, kNumOutputs };
extern const char* const kInputNames[kNumInputs];
extern const char* const kOutputNames[kNumOutputs];

// Element types as callers report them (the ones the op accepts, and enough others to name
// what was given instead).
enum class DType : int32_t {
  kUndefined = 0, kFloat32, kFloat16, kBFloat16, kFloat64, kBool, kInt8, kUInt8, kInt16, kUInt16, kInt32, kInt64,
  kOther
};
const char* dtype_name(DType t);

// The attributes, as the schema declares them. default_value applies when has_default.
struct AttributeSpec {
  const char* name;
  bool is_float;
  bool has_default;
  double default_value;
};
inline constexpr AttributeSpec kAttributeSpecs[] = {
    {"num_heads", false, false, 0},   // required for 3D inputs
    {"kv_num_heads", false, false, 0},  // default: num_heads
    {"scale", true, false, 0},          // default: 1/sqrt(head size)
    {"causal", false, true, 0},
    {"window_size", false, true, -1},   // -1: none
    {"softcap", true, true, 0},         // 0: none
};

struct OpAttributes {
  int64_t num_heads = 0;     // 0: not given
  int64_t kv_num_heads = 0;  // 0: not given (defaults to num_heads)
  bool has_scale = false;
  float scale = 0.f;
  int64_t causal = 0;
  int64_t window_size = -1;
  float softcap = 0.f;
};

// What a node holds under an attribute name.
enum class AttrKind { kAbsent, kInt, kFloat, kOther };

// Where a caller's attributes come from (an ORT kernel info, a shape-inference context, a graph
// node, Python keywords). get_int / get_float are called only for names whose kind_of says so.
struct AttributeSource {
  std::function<AttrKind(const char* name)> kind_of;
  std::function<int64_t(const char* name)> get_int;
  std::function<float(const char* name)> get_float;
  // Every attribute name the node has, where the caller can list them (a graph node, Python
  // keywords); left empty where it cannot (ONNX Runtime gives a custom op's kernel and its shape
  // inference no list, so a misspelt name is caught only on the EP path and by onnx.checker).
  std::function<std::vector<std::string>()> names;
};

// The one attribute reader: reads every attribute of kAttributeSpecs, keeps the defaults of
// absent ones and validates them; an attribute of the wrong type, or (where the source lists
// names) one the op does not have, is an error too. Returns "" or the broken rule.
std::string check_attributes(const OpAttributes& a);

// What is known about one input or output: absent, or an element type and dims.
// rank < 0: rank unknown; a dim < 0: that dim unknown (symbolic).
struct TensorDesc {
  bool present = false;
  DType dtype = DType::kUndefined;
  int rank = -1;
  std::vector<int64_t> dims;
  // Outputs only: for each dim, the (input slot, dim) it always equals, or {-1, -1}; lets
  // callers carry a symbolic dim name over to the output.
  std::vector<std::pair<int, int>> same_as;
};

// A broken rule, "" when none; about_type: the rule is about element types (Python raises
// TypeError for those, ValueError for the rest).
struct Rule {
  std::string text;
  bool about_type = false;
  bool broken() const { return !text.empty(); }
};

Rule read_attributes(const AttributeSource& source, OpAttributes* a);

// Checks every rule that the known types and dims allow and derives the output descriptions
// (dims < 0 where not derivable).
Rule infer_outputs(const OpAttributes& a, const TensorDesc (&in)[kNumInputs], TensorDesc (&out)[kNumOutputs]);

// A concrete tensor: its description (every dim known), where its data is, and its strides in
// elements (empty: dense row-major). The last axis must be contiguous.
struct TensorArg {
  TensorDesc desc;
  void* data = nullptr;
  std::vector<int64_t> strides;
};

// For tensors that passed infer_outputs: fills p (pointers, strides, element types, attributes,
// device). Absent optional outputs have data == nullptr. Returns "" or the broken rule.
std::string fill_params(const OpAttributes& a, const TensorArg (&in)[kNumInputs], const TensorArg (&out)[kNumOutputs],
                        Device device, AttentionParams* p);

// The params a backend is asked about before shapes are concrete (session creation): sizes not
// known yet are 0 and present tensors get a placeholder (non-null, never read) data pointer.
AttentionParams params_for_support_check(const OpAttributes& a, const TensorDesc (&in)[kNumInputs], Device device);

// "FastAttention node 'n': rule" -- every error the user sees names the node and the rule.
std::string node_error(const std::string& op_type, const std::string& node_name, const std::string& rule);

}  // namespace fastattn::core
