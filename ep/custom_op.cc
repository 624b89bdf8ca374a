#include "custom_op.h"

#include <atomic>
#include <climits>
#include <stdexcept>
#include <vector>

#include "compute.h"

namespace fastattn::ep {
namespace {

using core::kNumInputs;
using core::kNumOutputs;
using core::kOpType;

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
  return i <= core::kValue ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL;
}
OrtCustomOpInputOutputCharacteristic ORT_API_CALL output_characteristic(const OrtCustomOp*, size_t i) {
  return i == core::kOutput ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL;
}
OrtMemType ORT_API_CALL input_memory_type(const OrtCustomOp*, size_t) { return OrtMemTypeDefault; }
int ORT_API_CALL variadic_min_arity(const OrtCustomOp*) { return 1; }
int ORT_API_CALL variadic_homogeneity(const OrtCustomOp*) { return 1; }
int ORT_API_CALL start_version(const OrtCustomOp*) { return core::kOpSinceVersion; }
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
    if (auto rule = core::read_attributes(attributes_of(info), &cfg->attrs); rule.broken())
      return make_error(core::node_error(kOpType, cfg->name, rule.text));
    for (int i = 0; i < kNumInputs; ++i) cfg->input_index[i] = i;
    for (int i = 0; i < kNumOutputs; ++i) cfg->output_index[i] = i;
    *kernel = cfg.release();
    return nullptr;
  });
}

OrtStatus* ORT_API_CALL compute(void* kernel, OrtKernelContext* context) {
  // The custom op runs on ONNX Runtime's CPU EP: host memory, the CPU device.
  return compute_attention(*static_cast<const NodeConfig*>(kernel), cpu_plumbing(), 0, context);
}

// Names for the output dims that are not static. ONNX Runtime turns a dim of -1 without a name
// into the value -1, which constant folding of Shape(output) then bakes into the graph; so each
// unknown dim gets the symbol of the input dim it equals (TensorDesc::same_as), or a fresh one.
std::vector<std::string> output_dim_names(const TensorDesc& out, const std::vector<std::string>* in_names) {
  static std::atomic<int64_t> fresh{0};
  std::vector<std::string> names(out.dims.size());
  for (size_t d = 0; d < out.dims.size(); ++d) {
    if (out.dims[d] >= 0) continue;
    const auto [input, dim] = d < out.same_as.size() ? out.same_as[d] : std::pair<int, int>{-1, -1};
    if (input >= 0 && dim < static_cast<int>(in_names[input].size())) names[d] = in_names[input][dim];
    if (names[d].empty()) names[d] = "fastattn_dim_" + std::to_string(fresh++);
  }
  return names;
}

// Static shapes are checked here, so a bad model fails at session creation.
OrtStatus* infer_shapes_impl(OrtShapeInferContext* ctx, std::string* rule) {
  return guarded([&]() -> OrtStatus* {
    OpAttributes a;
    if (*rule = core::read_attributes(attributes_of(ctx), &a).text; !rule->empty()) return nullptr;
    size_t count = 0;
    FASTATTN_RETURN_IF_ERROR(ort().ShapeInferContext_GetInputCount(ctx, &count));
    TensorDesc in[kNumInputs];
    std::vector<std::string> dim_names[kNumInputs];  // symbolic names of the inputs' dims ("" if none)
    for (size_t i = 0; i < count && i < kNumInputs; ++i) {
      OrtTensorTypeAndShapeInfo* raw = nullptr;
      if (OrtStatus* s = ort().ShapeInferContext_GetInputTypeShape(ctx, i, &raw)) {
        ort().ReleaseStatus(s);  // an empty optional input
        continue;
      }
      if (!raw) continue;
      const OrtTensorTypeAndShapeInfo* ts = raw;  // owned by the context: not released here
      TensorDesc& t = in[i];
      FASTATTN_RETURN_IF_ERROR(describe(ts, &t));
      if (t.dtype == DType::kUndefined) continue;
      t.present = true;
      const size_t rank = t.dims.size();
      std::vector<const char*> names(rank, nullptr);
      FASTATTN_RETURN_IF_ERROR(ort().GetSymbolicDimensions(ts, names.data(), rank));
      for (size_t d = 0; d < rank; ++d) dim_names[i].emplace_back(names[d] ? names[d] : "");
    }
    TensorDesc out[kNumOutputs];
    *rule = core::infer_outputs(a, in, out).text;
    if (!rule->empty()) return nullptr;
    for (int i = 0; i < kNumOutputs; ++i) {
      if (out[i].rank < 0 || out[i].dtype == DType::kUndefined) continue;
      OrtTensorTypeAndShapeInfo* raw = nullptr;
      FASTATTN_RETURN_IF_ERROR(ort().CreateTensorTypeAndShapeInfo(&raw));
      TypeShapeInfoPtr ts(raw);
      FASTATTN_RETURN_IF_ERROR(ort().SetTensorElementType(ts.get(), ort_type_of(out[i].dtype)));
      FASTATTN_RETURN_IF_ERROR(ort().SetDimensions(ts.get(), out[i].dims.data(), out[i].dims.size()));
      std::vector<std::string> names = output_dim_names(out[i], dim_names);
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
  FASTATTN_RETURN_IF_ERROR(ort().CreateCustomOpDomain(core::kOpDomain, domain));
  if (OrtStatus* s = ort().CustomOpDomain_Add(*domain, fast_attention_custom_op())) {
    ort().ReleaseCustomOpDomain(*domain);
    *domain = nullptr;
    return s;
  }
  return nullptr;
}

}  // namespace fastattn::ep
