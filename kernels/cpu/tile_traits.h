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

inline TileTraits tile_traits(Isa isa, int64_t head_dim, int64_t head_dim_v) {
  TileTraits t;
  const int64_t d = head_dim > head_dim_v ? head_dim : head_dim_v;
  t.block_q = 128;
  t.block_k = d <= 64 ? 256 : 128;
  if (isa == Isa::kAvx512 && d <= 64) t.block_k = 512;  // larger L2 (1-2 MiB) on AVX-512 parts
  return t;
}

// Only cpu_attention.cc (the generic, baseline-compiled file) calls these inline functions, so
// no copy compiled for a wider ISA can be picked by the linker for it.

}  // namespace fastattn::cpu
