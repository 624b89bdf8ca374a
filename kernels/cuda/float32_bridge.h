// float32 attention on the float16 kernels: the inputs are converted to float16 with exact
// power-of-two scaling (so nothing overflows), the float16 kernel runs, and the output is scaled
// back into the float32 tensor. present_key/present_value are copied from the float32 inputs.
// Accuracy: that of float16 inputs (relative 2^-11 per element, P in float16, output in float16);
// raw products |q| * |k| beyond about 2^30 saturate (the documented limit).
#pragma once

#include <functional>

#include "attention_params.h"
#include "dispatch.h"

namespace fastattn::cuda {

// p.dtype == kFloat32 (q, k, v, past, out, presents float32; attn_bias float32 or absent).
// Everything is enqueued on ctx.stream (no host synchronisation). run_half runs the float16
// kernel on the converted params (bias still float32, presents cleared). Throws
// std::runtime_error on a CUDA failure.
void run_float32(const AttentionParams& p, const LaunchContext& ctx, int sms,
                 const std::function<void(const AttentionParams&)>& run_half);

}  // namespace fastattn::cuda
