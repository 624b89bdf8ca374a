// CPU FastAttention forward: FlashAttention-2 tiling with online softmax and a tiling-mask.
#pragma once

#include <cstdint>

#include "../attention_params.h"
#include "../dispatch.h"

namespace fastattn::cpu {

// Computes p.out (and p.present_k / p.present_v when given) for params that passed
// check_params() and the backend's supports() (cpu_backend.cc). Never allocates an
// S_q x S_total buffer.
void attention_forward(const AttentionParams& p, const ParallelFor& parallel_for);

// What this build compiled in and what the running CPU selects ("avx2+fma", "neon", ...).
const char* selected_isa();
const char* compiled_isas();

}  // namespace fastattn::cpu
