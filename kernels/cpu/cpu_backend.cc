// The CPU backend of the dispatch seam: what the CPU kernel runs, and how it is launched (on the
// launch context's ParallelFor: ONNX Runtime's intra-op pool or the bindings' worker pool).
#include <string>

#include "cpu_attention.h"

namespace fastattn::cpu {
namespace {

constexpr int64_t kMaxHeadDim = 4096;  // scratch about 4 MiB per thread; real models use <= 576

std::string supports(const AttentionParams& p) {
  if (p.device.kind != DeviceKind::kCpu) return "the CPU kernel reads host memory only";
  for (const TensorView* v : {&p.q, &p.k, &p.v, &p.past_k, &p.past_v, &p.out, &p.present_k, &p.present_v})
    if (v->data && v->dtype != p.dtype)
      return std::string("the CPU kernel needs every tensor in one element type (") + elem_name(p.dtype) + "), got " +
             elem_name(v->dtype);
  if (p.bias && p.bias_dtype != p.dtype) return "the CPU kernel needs attn_bias in the query's element type";
  // Per-thread scratch holds a few tiles of head_dim columns (about 256 * D floats): bounded here
  // so that an absurd head size is an error, not gigabytes of scratch.
  if (p.head_dim > kMaxHeadDim || p.head_dim_v > kMaxHeadDim)
    return "head sizes above " + std::to_string(kMaxHeadDim) + " are not supported by the CPU kernel, got " +
           std::to_string(p.head_dim) + " / " + std::to_string(p.head_dim_v);
  return "";
}

void run(const AttentionParams& p, const LaunchContext& ctx) { attention_forward(p, ctx.parallel_for); }

std::string describe() { return std::string("vector ISA ") + selected_isa() + " (compiled: " + compiled_isas() + ")"; }

}  // namespace

const Backend& backend() {
  static const Backend b{"cpu", DeviceKind::kCpu, supports, run, describe};
  return b;
}

}  // namespace fastattn::cpu
