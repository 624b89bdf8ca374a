#include "custom_op.h"

#include <atomic>

#include <climits>
#include <stdexcept>
#include <vector>

#include "compute.h"
#include "op_contract.h"

namespace fastattn::ep {
namespace {

// Reads an optional attribute from a kernel info; absent leaves *out unchanged.
bool kernel_attr_int(const OrtKernelInfo* info, const char* name, int64_t* out) {
  if (OrtStatus* s = ort().KernelInfoGetAttribute_int64(info, name, out)) {
    ort().ReleaseStatus(s);
    return false;
  }
  return true;
}
bool kernel_attr_float(const OrtKernelInfo* info, const char* name, float* out) {
  if (OrtStatus* s = ort().KernelInfoGetAttribute_float(info, name, out)) {
    ort().ReleaseStatus(s);
    return false;
  }
  return true;
}

// Same for shape inference, where attributes come as OrtOpAttr.
bool infer_attr(OrtShapeInferContext* ctx, const char* name, OrtOpAttrType type, void* out, size_t size) {
  const OrtOpAttr* attr = nullptr;
  if (OrtStatus* s = ort().ShapeInferContext_GetAttribute(ctx, name, &attr)) {
    ort().ReleaseStatus(s);
    return false;
  }
  if (!attr) return false;
  size_t written = 0;
  if (OrtStatus* s = ort().ReadOpAttr(attr, type, out, size, &written)) {
    ort().ReleaseStatus(s);
    return false;
  }
  return true;
}

void* ORT_API_CALL unused_create_kernel(const OrtCustomOp*, const OrtApi*, const OrtKernelInfo*) { return nullptr; }
const char* ORT_API_CALL get_name(const OrtCustomOp*) { return kOpType; }
const char* ORT_API_CALL get_ep_type(const OrtCustomOp*) { return nullptr; }  // CPU EP
// Every input and output is type-generic here; infer_outputs enforces the type rules with
// messages that name the rule.
ONNXTensorElementDataType ORT_API_CALL any_type(const OrtCustomOp*, size_t) {
  return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
}
size_t ORT_API_CALL num_inputs(const OrtCustomOp*) { return kNumInputs; }
size_t ORT_API_CALL num_outputs(const OrtCustomOp*) { return kNumOutputs; }
void ORT_API_CALL unused_compute(void*, OrtKernelContext*) {}
void ORT_API_CALL destroy_kernel(void* kernel) { delete static_cast<NodeConfig*>(kernel); }
OrtCustomOpInputOutputCharacteristic ORT_API_CALL input_characteristic(const OrtCustomOp*, size_t i) {
  return i <= kValue ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL;
}
OrtCustomOpInputOutputCharacteristic ORT_API_CALL output_characteristic(const OrtCustomOp*, size_t i) {
  return i == kOutput ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL;
}
OrtMemType ORT_API_CALL input_memory_type(const OrtCustomOp*, size_t) { return OrtMemTypeDefault; }
int ORT_API_CALL variadic_min_arity(const OrtCustomOp*) { return 1; }
int ORT_API_CALL variadic_homogeneity(const OrtCustomOp*) { return 1; }
int ORT_API_CALL start_version(const OrtCustomOp*) { return kOpSinceVersion; }
int ORT_API_CALL end_version(const OrtCustomOp*) { return INT_MAX; }
size_t ORT_API_CALL no_alias(int** in, int** out) {
  *in = nullptr;
  *out = nullptr;
  return 0;
}
void ORT_API_CALL release_alias(int*, int*) {}

OrtStatus* ORT_API_CALL create_kernel(const OrtCustomOp*, const OrtApi*, const OrtKernelInfo* info,
                                      void** kernel) {
  return guarded([&]() -> OrtStatus* {
    auto cfg = std::make_unique<NodeConfig>();
    cfg->op_type = kOpType;
    size_t size = 0;
    FASTATTN_RETURN_IF_ERROR(ort().KernelInfo_GetNodeName(info, nullptr, &size));
    std::vector<char> name(size + 1, '\0');
    FASTATTN_RETURN_IF_ERROR(ort().KernelInfo_GetNodeName(info, name.data(), &size));
    cfg->name = name.data();
    OpAttributes& a = cfg->attrs;
    kernel_attr_int(info, "num_heads", &a.num_heads);
    kernel_attr_int(info, "kv_num_heads", &a.kv_num_heads);
    a.has_scale = kernel_attr_float(info, "scale", &a.scale);
    kernel_attr_int(info, "causal", &a.causal);
    kernel_attr_int(info, "window_size", &a.window_size);
    kernel_attr_float(info, "softcap", &a.softcap);
    if (auto rule = check_attributes(a); !rule.empty()) return make_error(node_error(kOpType, cfg->name, rule));
    for (int i = 0; i < kNumInputs; ++i) cfg->input_index[i] = i;
    for (int i = 0; i < kNumOutputs; ++i) cfg->output_index[i] = i;
    *kernel = cfg.release();
    return nullptr;
  });
}

OrtStatus* ORT_API_CALL compute(void* kernel, OrtKernelContext* context) {
  return compute_attention(*static_cast<const NodeConfig*>(kernel), context);
}

// Names for the output dims that are not static. ONNX Runtime turns a dim of -1 without a name
// into the value -1, which constant folding of Shape(output) then bakes into the graph; so each
// unknown dim gets the symbol of the input dim it equals (batch, query length, key length), or a
// fresh one.
std::vector<std::string> output_dim_names(int slot, const TensorInfo& out, const TensorInfo* in,
                                          const std::vector<std::string>* in_names) {
  static std::atomic<int64_t> fresh{0};
  auto name_of = [&](int input, int dim) -> std::string {
    const auto& names = in_names[input];
    return dim >= 0 && dim < static_cast<int>(names.size()) ? names[dim] : std::string();
  };
  const bool q4d = in[kQuery].rank == 4;
  std::vector<std::string> names(out.dims.size());
  for (size_t d = 0; d < out.dims.size(); ++d) {
    if (out.dims[d] >= 0) continue;
    std::string n;
    if (d == 0) n = name_of(kQuery, 0);                                              // batch
    else if (slot == kOutput && d == (q4d ? 2u : 1u)) n = name_of(kQuery, q4d ? 2 : 1);  // S_q
    else if (slot != kOutput && d == 2 && !in[kPastKey].present)                     // S_total = S_kv
      n = name_of(kKey, in[kKey].rank == 4 ? 2 : 1);
    names[d] = n.empty() ? "fastattn_dim_" + std::to_string(fresh++) : n;
  }
  return names;
}

// Static shapes are checked here, so a bad model fails at session creation.
OrtStatus* infer_shapes_impl(OrtShapeInferContext* ctx, std::string* rule) {
  return guarded([&]() -> OrtStatus* {
    OpAttributes a;
    infer_attr(ctx, "num_heads", ORT_OP_ATTR_INT, &a.num_heads, sizeof(int64_t));
    infer_attr(ctx, "kv_num_heads", ORT_OP_ATTR_INT, &a.kv_num_heads, sizeof(int64_t));
    a.has_scale = infer_attr(ctx, "scale", ORT_OP_ATTR_FLOAT, &a.scale, sizeof(float));
    infer_attr(ctx, "causal", ORT_OP_ATTR_INT, &a.causal, sizeof(int64_t));
    infer_attr(ctx, "window_size", ORT_OP_ATTR_INT, &a.window_size, sizeof(int64_t));
    infer_attr(ctx, "softcap", ORT_OP_ATTR_FLOAT, &a.softcap, sizeof(float));
    size_t count = 0;
    FASTATTN_RETURN_IF_ERROR(ort().ShapeInferContext_GetInputCount(ctx, &count));
    TensorInfo in[kNumInputs];
    std::vector<std::string> dim_names[kNumInputs];  // symbolic names of the inputs' dims ("" if none)
    for (size_t i = 0; i < count && i < kNumInputs; ++i) {
      OrtTensorTypeAndShapeInfo* raw = nullptr;
      if (OrtStatus* s = ort().ShapeInferContext_GetInputTypeShape(ctx, i, &raw)) {
        ort().ReleaseStatus(s);  // an empty optional input
        continue;
      }
      if (!raw) continue;
      const OrtTensorTypeAndShapeInfo* ts = raw;  // owned by the context: not released here
      TensorInfo& t = in[i];
      FASTATTN_RETURN_IF_ERROR(ort().GetTensorElementType(ts, &t.type));
      if (t.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED) continue;
      t.present = true;
      size_t rank = 0;
      FASTATTN_RETURN_IF_ERROR(ort().GetDimensionsCount(ts, &rank));
      t.rank = static_cast<int>(rank);
      t.dims.resize(rank);
      FASTATTN_RETURN_IF_ERROR(ort().GetDimensions(ts, t.dims.data(), rank));
      std::vector<const char*> names(rank, nullptr);
      FASTATTN_RETURN_IF_ERROR(ort().GetSymbolicDimensions(ts, names.data(), rank));
      for (size_t d = 0; d < rank; ++d) dim_names[i].emplace_back(names[d] ? names[d] : "");
    }
    TensorInfo out[kNumOutputs];
    *rule = infer_outputs(a, in, out);
    if (!rule->empty()) return nullptr;
    for (int i = 0; i < kNumOutputs; ++i) {
      if (out[i].rank < 0 || out[i].type == ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED) continue;
      OrtTensorTypeAndShapeInfo* raw = nullptr;
      FASTATTN_RETURN_IF_ERROR(ort().CreateTensorTypeAndShapeInfo(&raw));
      TypeShapeInfoPtr ts(raw);
      FASTATTN_RETURN_IF_ERROR(ort().SetTensorElementType(ts.get(), out[i].type));
      FASTATTN_RETURN_IF_ERROR(ort().SetDimensions(ts.get(), out[i].dims.data(), out[i].dims.size()));
      std::vector<std::string> names = output_dim_names(i, out[i], in, dim_names);
      std::vector<const char*> name_ptrs;
      for (const auto& n : names) name_ptrs.push_back(n.c_str());
      FASTATTN_RETURN_IF_ERROR(ort().SetSymbolicDimensions(ts.get(), name_ptrs.data(), name_ptrs.size()));
      if (OrtStatus* s = ort().ShapeInferContext_SetOutputTypeShape(ctx, i, ts.get())) {
        ort().ReleaseStatus(s);  // the node does not have this optional output
      }
    }
    return nullptr;
  });
}

// ONNX Runtime (up to 1.31 at least) ignores the status this callback returns, so a broken rule
// is thrown instead: its graph shape inference catches std::exception and fails the session with
// "Node (<name>) Op (FastAttention) ..." plus our rule. A failure of the API itself is dropped.
OrtStatus* ORT_API_CALL infer_shapes(const OrtCustomOp*, OrtShapeInferContext* ctx) {
  std::string rule;
  if (OrtStatus* s = infer_shapes_impl(ctx, &rule)) return s;
  if (!rule.empty()) throw std::invalid_argument(std::string("[FastAttention] ") + rule);
  return nullptr;
}

OrtCustomOp make_op() {
  OrtCustomOp op{};
  op.version = ORT_API_VERSION;
  op.CreateKernel = unused_create_kernel;
  op.GetName = get_name;
  op.GetExecutionProviderType = get_ep_type;
  op.GetInputType = any_type;
  op.GetInputTypeCount = num_inputs;
  op.GetOutputType = any_type;
  op.GetOutputTypeCount = num_outputs;
  op.KernelCompute = unused_compute;
  op.KernelDestroy = destroy_kernel;
  op.GetInputCharacteristic = input_characteristic;
  op.GetOutputCharacteristic = output_characteristic;
  op.GetInputMemoryType = input_memory_type;
  op.GetVariadicInputMinArity = variadic_min_arity;
  op.GetVariadicInputHomogeneity = variadic_homogeneity;
  op.GetVariadicOutputMinArity = variadic_min_arity;
  op.GetVariadicOutputHomogeneity = variadic_homogeneity;
  op.CreateKernelV2 = create_kernel;
  op.KernelComputeV2 = compute;
  op.InferOutputShapeFn = infer_shapes;
  op.GetStartVersion = start_version;
  op.GetEndVersion = end_version;
  op.GetMayInplace = no_alias;
  op.ReleaseMayInplace = release_alias;
  op.GetAliasMap = no_alias;
  op.ReleaseAliasMap = release_alias;
  return op;
}

}  // namespace

const OrtCustomOp* fast_attention_custom_op() {
  static const OrtCustomOp op = make_op();
  return &op;
}

OrtStatus* create_op_domain(OrtCustomOpDomain** domain) {
  FASTATTN_RETURN_IF_ERROR(ort().CreateCustomOpDomain(kOpDomain, domain));
  if (OrtStatus* s = ort().CustomOpDomain_Add(*domain, fast_attention_custom_op())) {
    ort().ReleaseCustomOpDomain(*domain);
    *domain = nullptr;
    return s;
  }
  return nullptr;
}

}  // namespace fastattn::ep
