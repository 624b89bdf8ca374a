#include "compute.h"

#include <cstring>
#include <limits>
#include <vector>

namespace fastattn::ep {
namespace {

using core::kAttnBias;
using core::kNumInputs;
using core::kNumOutputs;
using core::kQuery;

// 0 / -inf in the query's element type, as raw bits (float32 uses 4 bytes, the halves 2).
std::vector<uint8_t> bool_mask_to_bias(const bool* mask, size_t n, DType t) {
  const size_t width = t == DType::kFloat32 ? 4 : 2;
  std::vector<uint8_t> out(n * width, 0);
  const float neg_inf = -std::numeric_limits<float>::infinity();
  const uint16_t half_neg_inf = t == DType::kFloat16 ? 0xFC00 : 0xFF80;  // fp16 / bf16
  for (size_t i = 0; i < n; ++i) {
    if (mask[i]) continue;
    if (width == 4) std::memcpy(&out[i * 4], &neg_inf, 4);
    else std::memcpy(&out[i * 2], &half_neg_inf, 2);
  }
  return out;
}

}  // namespace

OrtStatus* compute_attention(const NodeConfig& cfg, const DevicePlumbing& device, int ordinal,
                             OrtKernelContext* context) noexcept {
  return guarded([&]() -> OrtStatus* {
    size_t num_inputs = 0, num_outputs = 0;
    FASTATTN_RETURN_IF_ERROR(ort().KernelContext_GetInputCount(context, &num_inputs));
    FASTATTN_RETURN_IF_ERROR(ort().KernelContext_GetOutputCount(context, &num_outputs));
    core::TensorArg in[kNumInputs], out[kNumOutputs];
    for (int i = 0; i < kNumInputs; ++i) {
      const int idx = cfg.input_index[i];
      if (idx < 0 || static_cast<size_t>(idx) >= num_inputs) continue;
      const OrtValue* value = nullptr;
      FASTATTN_RETURN_IF_ERROR(ort().KernelContext_GetInput(context, idx, &value));
      if (!value) continue;  // optional input left empty
      FASTATTN_RETURN_IF_ERROR(describe(value, &in[i].desc));
      FASTATTN_RETURN_IF_ERROR(ort().GetTensorMutableData(const_cast<OrtValue*>(value), &in[i].data));
    }
    std::vector<uint8_t> converted_bias;
    core::TensorArg& bias = in[kAttnBias];
    if (cfg.bool_mask_as_bias && bias.desc.present && bias.desc.dtype == DType::kBool) {
      size_t n = 1;
      for (int64_t d : bias.desc.dims) n *= static_cast<size_t>(d);
      converted_bias = bool_mask_to_bias(static_cast<const bool*>(bias.data), n, in[kQuery].desc.dtype);
      bias.desc.dtype = in[kQuery].desc.dtype;
      bias.data = converted_bias.data();
    }
    TensorDesc in_desc[kNumInputs], out_desc[kNumOutputs];
    for (int i = 0; i < kNumInputs; ++i) in_desc[i] = in[i].desc;
    if (auto rule = core::infer_outputs(cfg.attrs, in_desc, out_desc); rule.broken())
      return make_error(core::node_error(cfg.op_type, cfg.name, rule.text));

    for (int i = 0; i < kNumOutputs; ++i) {
      const int idx = cfg.output_index[i];
      if (idx < 0 || static_cast<size_t>(idx) >= num_outputs) continue;
      OrtValue* value = nullptr;
      const auto& dims = out_desc[i].dims;
      FASTATTN_RETURN_IF_ERROR(ort().KernelContext_GetOutput(context, idx, dims.data(), dims.size(), &value));
      if (!value) continue;
      out[i].desc = out_desc[i];
      FASTATTN_RETURN_IF_ERROR(ort().GetTensorMutableData(value, &out[i].data));
    }
    const LaunchContext launch = device.launch_context(context, ordinal);
    AttentionParams p;
    std::string rule = core::fill_params(cfg.attrs, in, out, launch.device, &p);
    if (rule.empty()) rule = attention_forward(p, launch);
    if (!rule.empty()) return make_error(core::node_error(cfg.op_type, cfg.name, rule));
    return nullptr;
  });
}

}  // namespace fastattn::ep
