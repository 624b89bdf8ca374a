#include "compute.h"

#include <cstring>
#include <limits>
#include <memory>
#include <string>
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

std::string check_memory(const DevicePlumbing& device, int ordinal, const OrtValue* value, const char* what,
                         const char* name) {
  if (!device.accelerator()) return "";
  const OrtMemoryDevice* m = ort_ep().Value_GetMemoryDevice(value);
  if (device.can_access(m, ordinal)) return "";
  const bool host = m && ort_ep().MemoryDevice_GetDeviceType(m) == OrtMemoryInfoDeviceType_CPU;
  return std::string(what) + " '" + name + "' is in " +
         (host ? std::string("host memory") : "memory of another device (id " +
                                                  std::to_string(m ? ort_ep().MemoryDevice_GetDeviceId(m) : 0) + ")") +
         ", but the node runs on " + device_label(device.kind(), ordinal) + ": ONNX Runtime did not copy it there";
}

OrtStatus* compute_attention(const NodeConfig& cfg, const DevicePlumbing& device, int ordinal,
                             OrtKernelContext* context) noexcept {
  return guarded([&]() -> OrtStatus* {
    auto fail = [&](const std::string& rule) { return make_error(core::node_error(cfg.op_type, cfg.name, rule)); };
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
      if (auto why = check_memory(device, ordinal, value, "input", core::kInputNames[i]); !why.empty()) return fail(why);
      FASTATTN_RETURN_IF_ERROR(describe(value, &in[i].desc));
      FASTATTN_RETURN_IF_ERROR(ort().GetTensorMutableData(const_cast<OrtValue*>(value), &in[i].data));
    }
    const LaunchContext launch = device.launch_context(context, ordinal);
    // A bool mask becomes a bias on the host: on an accelerator the mask comes over and the bias
    // goes back to device memory that is freed in stream order after the kernel.
    std::vector<uint8_t> converted_bias;
    std::shared_ptr<void> device_bias;
    core::TensorArg& bias = in[kAttnBias];
    if (cfg.bool_mask_as_bias && bias.desc.present && bias.desc.dtype == DType::kBool) {
      size_t n = 1;
      for (int64_t d : bias.desc.dims) n *= static_cast<size_t>(d);
      const bool* mask = static_cast<const bool*>(bias.data);
      std::vector<uint8_t> host_mask;
      if (device.accelerator()) {
        host_mask.resize(n);
        FASTATTN_RETURN_IF_ERROR(device.copy(ordinal, launch.stream, host_mask.data(), bias.data, n, CopyKind::kDeviceToHost));
        FASTATTN_RETURN_IF_ERROR(device.synchronize(ordinal, launch.stream));
        mask = reinterpret_cast<const bool*>(host_mask.data());
      }
      converted_bias = bool_mask_to_bias(mask, n, in[kQuery].desc.dtype);
      bias.desc.dtype = in[kQuery].desc.dtype;
      bias.data = converted_bias.data();
      if (device.accelerator()) {
        FASTATTN_RETURN_IF_ERROR(device.temporary(ordinal, launch.stream, converted_bias.size(), &device_bias));
        FASTATTN_RETURN_IF_ERROR(device.copy(ordinal, launch.stream, device_bias.get(), converted_bias.data(),
                                             converted_bias.size(), CopyKind::kHostToDevice));
        bias.data = device_bias.get();
      }
    }
    TensorDesc in_desc[kNumInputs], out_desc[kNumOutputs];
    for (int i = 0; i < kNumInputs; ++i) in_desc[i] = in[i].desc;
    if (auto rule = core::infer_outputs(cfg.attrs, in_desc, out_desc); rule.broken()) return fail(rule.text);

    for (int i = 0; i < kNumOutputs; ++i) {
      const int idx = cfg.output_index[i];
      if (idx < 0 || static_cast<size_t>(idx) >= num_outputs) continue;
      OrtValue* value = nullptr;
      const auto& dims = out_desc[i].dims;
      FASTATTN_RETURN_IF_ERROR(ort().KernelContext_GetOutput(context, idx, dims.data(), dims.size(), &value));
      if (!value) continue;
      if (auto why = check_memory(device, ordinal, value, "output", core::kOutputNames[i]); !why.empty()) return fail(why);
      out[i].desc = out_desc[i];
      FASTATTN_RETURN_IF_ERROR(ort().GetTensorMutableData(value, &out[i].data));
    }
    AttentionParams p;
    std::string rule = core::fill_params(cfg.attrs, in, out, launch.device, &p);
    if (rule.empty()) {
      // A device failure (an exception from the backend) names the node too. ORT_FAIL, as before:
      // EP_FAIL would make onnxruntime's Python API rerun the session on the CPU EP quietly.
      try {
        rule = attention_forward(p, launch);
      } catch (const std::exception& e) {
        return make_error(core::node_error(cfg.op_type, cfg.name, e.what()), ORT_FAIL);
      }
    }
    if (!rule.empty()) return fail(rule);
    return nullptr;
  });
}

}  // namespace fastattn::ep
