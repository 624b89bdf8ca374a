// The com.fastattention::FastAttention contract as ORT sees it: attribute and input rules,
// output shapes, and the translation of concrete tensors into fastattn::AttentionParams.
// Shared by the custom op (custom_op.cc) and the plugin EP (ep.cc). No ORT calls in here,
// only ORT's element-type enum, so the rules can be checked on static shapes (session
// creation) and on real tensors (run) alike.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "attention_params.h"
#include "onnxruntime_c_api.h"

namespace fastattn::ep {

inline constexpr const char* kOpDomain = "com.fastattention";
inline constexpr const char* kOpType = "FastAttention";
inline constexpr int kOpSinceVersion = 1;

enum InputSlot : int { kQuery = 0, kKey, kValue, kAttnBias, kKeyPaddingMask, kPastKey, kPastValue, kNumInputs };
enum OutputSlot : int { kOutput = 0, kPresentKey, kPresentValue, kNumOutputs };

struct OpAttributes {
  int64_t num_heads = 0;     // 0: not given
  int64_t kv_num_heads = 0;  // 0: not given (defaults to num_heads)
  bool has_scale = false;
  float scale = 0.f;
  int64_t causal = 0;
  int64_t window_size = -1;
  float softcap = 0.f;
};

// What is known about one input or output: absent, or an element type and dims.
// rank < 0: rank unknown; a dim < 0: that dim unknown (symbolic).
struct TensorInfo {
  bool present = false;
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  int rank = -1;
  std::vector<int64_t> dims;
};

// "" when the attributes are valid, else the broken rule.
std::string check_attributes(const OpAttributes& a);

// Checks every rule that the known types and dims allow and derives the output infos
// (dims < 0 where not derivable). Returns "" or the broken rule.
std::string infer_outputs(const OpAttributes& a, const TensorInfo (&in)[kNumInputs],
                          TensorInfo (&out)[kNumOutputs]);

// For inputs whose shapes are all known and passed infer_outputs: fills p with pointers,
// strides and attributes. out_data[i] may be null for absent optional outputs.
void fill_params(const OpAttributes& a, const TensorInfo (&in)[kNumInputs], const void* const (&in_data)[kNumInputs],
                 void* const (&out_data)[kNumOutputs], AttentionParams* p);

// "FastAttention node 'n': rule" -- every error the user sees names the node and the rule.
std::string node_error(const char* op_type, const std::string& node_name, const std::string& rule);

const char* type_name(ONNXTensorElementDataType t);

}  // namespace fastattn::ep
