// Tile sizes of the CPU kernel: one small struct instead of copies of the kernel per ISA.
// The outer query/key blocks are sized so that the Q block, one K and one V tile, the score
// tile and the output accumulator stay in L2 (512 KiB on Zen 3, 1-2 MiB on recent Intel/ARM);
// the inner micro-tiles (registers and L1) are the register blocking of micro_gemm.h (chosen
// per ISA there: it depends on the register file) and the column-vectorized softmax loops.
#pragma once

#include <cstdint>

namespace fastattn::cpu {

enum class Isa : int32_t { kBaseline = 0, kAvx2 = 1, kAvx512 = 2, kNeon = 3 };

struct TileTraits {
  int64_t block_q = 0;  // query rows per work item (outer block)
  int64_t block_k = 0;  // keys per tile (inner loop of a work item)
};

// Only cpu_attention.cc (the generic, baseline-compiled file) calls these inline functions, so
// no copy compiled for a wider ISA can be picked by the linker for it.
//
// Measured on Zen 3 (AVX2, 512 KiB L2): 128 x 256 beat 128 x 128 for D = 128 by about 7% and
// matched the other shapes tried (64 x 256, 128 x 384, 96 x 256, 192 x 128) within the noise.
// Causal with D <= 64: 128 x 128 beat 128 x 256 by about 5% (S = 4096, N = 8, in-process A/B;
// 128 x 192 and 256 x 128 within the noise of it), but was ~2% slower without the causal mask.
// No AVX-512 or ARM machine was available to tune on, so every ISA starts from the same sizes.
inline TileTraits tile_traits(Isa isa, int64_t head_dim, int64_t head_dim_v, bool causal) {
  (void)isa, (void)head_dim_v;
  TileTraits t;
  t.block_q = 128;
  t.block_k = causal && head_dim <= 64 ? 128 : 256;
  return t;
}

}  // namespace fastattn::cpu
