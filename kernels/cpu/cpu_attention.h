// CPU FastAttention forward: FlashAttention-2 tiling with online softmax and a tiling-mask.
#pragma once

#include <cstdint>
#include <functional>

#include "../attention_params.h"

namespace fastattn::cpu {

// Runs fn(i) for every i in [0, n), possibly concurrently, and returns when all are done.
// ONNX Runtime passes its intra-op thread pool through this; the Python bindings pass their own.
using ParallelFor = std::function<void(int64_t n, const std::function<void(int64_t)>& fn)>;

// Computes p.out (and p.present_k / p.present_v when given) for params that passed
// check_params(). Never allocates an S_q x S_total buffer.
void attention_forward(const AttentionParams& p, const ParallelFor& parallel_for);

// What this build compiled in and what the running CPU selects ("avx2+fma", "neon", ...).
const char* selected_isa();
const char* compiled_isas();

}  // namespace fastattn::cpu
