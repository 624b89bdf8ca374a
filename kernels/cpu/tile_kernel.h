// The per-ISA part of the CPU kernel: one query block of one (batch, head) against all its
// visible key tiles. tile_kernel.cc is compiled once per ISA with its own flags, each copy in
// its own namespace; cpu_attention.cc picks one at run time.
#pragma once

#include <cstddef>
#include <cstdint>

#include "../attention_params.h"
#include "tile_traits.h"

namespace fastattn::cpu {

// Offsets (in floats) of the per-thread scratch buffers; each is a multiple of 16 floats so
// every buffer starts 64-byte aligned. Computed once per call by cpu_attention.cc.
struct ScratchLayout {
  int64_t q = 0;         // block_q x D: the query block as float (unused for float32)
  int64_t k = 0;         // block_k x D: one key tile as float (unused for float32)
  int64_t v = 0;         // block_k x Dv: one value tile as float (unused for float32)
  int64_t scores = 0;    // block_q x score_ld: S, then P, of one tile
  int64_t out = 0;       // block_q x Dv: the float32 output accumulator
  int64_t row_max = 0;   // block_q: running max per row
  int64_t row_sum = 0;   // block_q: running sum per row
  int64_t row_tile = 0;  // block_q: the rescale factor of the current tile
  int64_t key_mask = 0;  // score_ld: 0 / -inf per key of a tile with mixed key padding
  int64_t score_ld = 0;  // row stride of scores
  int64_t total = 0;
};

// Shared, read-only state of one attention_forward call.
struct TilePlan {
  const AttentionParams* params = nullptr;
  TileTraits traits;
  ScratchLayout scratch;
  // key_padding_mask summary, per batch: prefix[b * (S_total + 1) + j] = visible keys in
  // [0, j), so a key tile is classified all-visible / all-hidden / mixed in O(1).
  const int32_t* visible_prefix = nullptr;
  const int64_t* first_visible = nullptr;  // per batch: first visible key (S_total if none)
  const int64_t* end_visible = nullptr;    // per batch: one past the last visible key
};

using AttendQueryBlockFn = void (*)(const TilePlan& plan, int64_t b, int64_t h, int64_t q0, float* scratch);

#define FASTATTN_DECLARE_ISA(ns) \
  namespace ns { void attend_query_block(const TilePlan& plan, int64_t b, int64_t h, int64_t q0, float* scratch); }
FASTATTN_DECLARE_ISA(isa_baseline)
FASTATTN_DECLARE_ISA(isa_avx2)
FASTATTN_DECLARE_ISA(isa_avx512)
FASTATTN_DECLARE_ISA(isa_neon)
#undef FASTATTN_DECLARE_ISA

}  // namespace fastattn::cpu
