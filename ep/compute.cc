#include "compute.h"

#include <atomic>
#include <cstring>
#include <functional>
#include <limits>
#include <stdexcept>
#include <vector>

#include "cpu/cpu_attention.h"

namespace fastattn::ep {
namespace {

OrtStatus* tensor_info(const OrtValue* value, TensorInfo* info) {
  OrtTensorTypeAndShapeInfo* raw = nullptr;
  FASTATTN_RETURN_IF_ERROR(ort().GetTensorTypeAndShape(value, &raw));
  TypeShapeInfoPtr ts(raw);
  size_t rank = 0;
  FASTATTN_RETURN_IF_ERROR(ort().GetTensorElementType(ts.get(), &info->type));
  FASTATTN_RETURN_IF_ERROR(ort().GetDimensionsCount(ts.get(), &rank));
  info->present = true;
  info->rank = static_cast<int>(rank);
  info->dims.resize(rank);
  return ort().GetDimensions(ts.get(), info->dims.data(), rank);
}

// cpu::ParallelFor on ORT's intra-op pool. The kernel's tasks do not throw; the guard keeps
// an unexpected exception from unwinding through ORT's thread pool.
cpu::ParallelFor ort_parallel_for(OrtKernelContext* context) {
  return [context](int64_t n, const std::function<void(int64_t)>& fn) {
    struct Job {
      const std::function<void(int64_t)>* fn;
      std::atomic<bool> failed{false};
    } job{&fn};
    auto task = [](void* data, size_t i) {
      auto* j = static_cast<Job*>(data);
      try {
        (*j->fn)(static_cast<int64_t>(i));
      } catch (...) {
        j->failed = true;
      }
    };
    if (n <= 0) return;
    if (OrtStatus* s = ort().KernelContext_ParallelFor(context, task, static_cast<size_t>(n), 0, &job)) {
      ort().ReleaseStatus(s);  // no pool available: run inline
      for (int64_t i = 0; i < n; ++i) fn(i);
    }
    if (job.failed) throw std::runtime_error("CPU attention kernel task failed");
  };
}

// 0 / -inf in the query's element type, as raw bits (float32 uses 4 bytes, the halves 2).
std::vector<uint8_t> bool_mask_to_bias(const bool* mask, size_t n, ONNXTensorElementDataType t) {
  const size_t width = t == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT ? 4 : 2;
  std::vector<uint8_t> out(n * width, 0);
  const float neg_inf = -std::numeric_limits<float>::infinity();
  const uint16_t half_neg_inf = t == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 ? 0xFC00 : 0xFF80;  // fp16 / bf16
  for (size_t i = 0; i < n; ++i) {
    if (mask[i]) continue;
    if (width == 4) std::memcpy(&out[i * 4], &neg_inf, 4);
    else std::memcpy(&out[i * 2], &half_neg_inf, 2);
  }
  return out;
}

}  // namespace

OrtStatus* compute_attention(const NodeConfig& cfg, OrtKernelContext* context) noexcept {
  return guarded([&]() -> OrtStatus* {
    size_t num_inputs = 0, num_outputs = 0;
    FASTATTN_RETURN_IF_ERROR(ort().KernelContext_GetInputCount(context, &num_inputs));
    FASTATTN_RETURN_IF_ERROR(ort().KernelContext_GetOutputCount(context, &num_outputs));
    TensorInfo in[kNumInputs];
    const void* in_data[kNumInputs] = {};
    for (int i = 0; i < kNumInputs; ++i) {
      const int idx = cfg.input_index[i];
      if (idx < 0 || static_cast<size_t>(idx) >= num_inputs) continue;
      const OrtValue* value = nullptr;
      FASTATTN_RETURN_IF_ERROR(ort().KernelContext_GetInput(context, idx, &value));
      if (!value) continue;  // optional input left empty
      FASTATTN_RETURN_IF_ERROR(tensor_info(value, &in[i]));
      FASTATTN_RETURN_IF_ERROR(ort().GetTensorMutableData(const_cast<OrtValue*>(value), const_cast<void**>(&in_data[i])));
    }
    std::vector<uint8_t> converted_bias;
    if (cfg.bool_mask_as_bias && in[kAttnBias].present && in[kAttnBias].type == ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL) {
      size_t n = 1;
      for (int64_t d : in[kAttnBias].dims) n *= static_cast<size_t>(d);
      converted_bias = bool_mask_to_bias(static_cast<const bool*>(in_data[kAttnBias]), n, in[kQuery].type);
      in[kAttnBias].type = in[kQuery].type;
      in_data[kAttnBias] = converted_bias.data();
    }
    TensorInfo out[kNumOutputs];
    if (auto rule = infer_outputs(cfg.attrs, in, out); !rule.empty())
      return make_error(node_error(cfg.op_type.c_str(), cfg.name, rule));

    void* out_data[kNumOutputs] = {};
    for (int i = 0; i < kNumOutputs; ++i) {
      const int idx = cfg.output_index[i];
      if (idx < 0 || static_cast<size_t>(idx) >= num_outputs) continue;
      OrtValue* value = nullptr;
      FASTATTN_RETURN_IF_ERROR(
          ort().KernelContext_GetOutput(context, idx, out[i].dims.data(), out[i].dims.size(), &value));
      if (value) FASTATTN_RETURN_IF_ERROR(ort().GetTensorMutableData(value, &out_data[i]));
    }
    AttentionParams p;
    fill_params(cfg.attrs, in, in_data, out_data, &p);
    if (auto rule = check_params(p); !rule.empty()) return make_error(node_error(cfg.op_type.c_str(), cfg.name, rule));
    cpu::attention_forward(p, ort_parallel_for(context));
    return nullptr;
  });
}

}  // namespace fastattn::ep
