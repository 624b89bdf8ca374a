// The per-ISA part of the CPU kernel: one query block of one (batch, head) against all its
// visible key tiles. tile_kernel.cc is compiled once per ISA with its own flags, each copy in
// its own namespace; cpu_attention.cc picks one at run time.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "../attention_params.h"
#include "tile_traits.h"

namespace fastattn::cpu {

// Offsets (in floats) of the per-thread scratch buffers; each is a multiple of 16 floats so
// every buffer starts 64-byte aligned. Computed once per call by cpu_attention.cc. Scores are
// kept transposed (keys x query rows) so that the softmax reductions run down columns:
// plain vector code, no horizontal reductions.
struct ScratchLayout {
  // Row strides are padded off powers of two: a micro-kernel walks a column panel of these
  // buffers, and a 512-byte stride would put all its rows into 8 of L1's 64 sets.
  int64_t q_ld = 0;       // row stride of qt and scores: block_q rounded up to kQueryPad, + 16
  int64_t o_ld = 0;       // row stride of out, columns of v in use: Dv rounded up to 16
  int64_t v_ld = 0;       // row stride of v: o_ld + 16
  int64_t k_ld = 0;       // row stride of packed keys (TilePlan::packed_k): D rounded up to 16, + 16
  int64_t qt = 0;         // D x q_ld: the query block transposed (and converted to float)
  int64_t k = 0;          // block_k x D: one key tile as float (unused for float32)
  int64_t v = 0;          // block_k x v_ld: one value tile, copied (and converted to float)
  int64_t scores = 0;     // block_k x q_ld: S^T, then P^T, of one tile
  int64_t out = 0;        // block_q x o_ld: the float32 output accumulator
  int64_t rows = 0;       // 6 x q_ld per-row floats: max, sum, shift, rescale, tile max, tile sum
  int64_t row_bounds = 0; // 3 x q_ld int64: each query row's visible key interval [lo, hi), its keys in a tile
  int64_t qrot = 0;       // D floats: one query row, rotated (rotary only)
  int64_t total = 0;
};
constexpr int64_t kQueryPad = 32;  // the widest micro-tile (AVX-512: 2 x 16 floats)

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
  // Keys and values packed by pack_kv_rows for the current wave of (batch, kv head) pairs,
  // rows [0, S_total) each, float32, row strides k_ld and v_ld (values zero-padded to o_ld);
  // null: tiles are read (keys) and copied (values) from the tensors themselves.
  float* packed_k = nullptr;
  float* packed_v = nullptr;
  int64_t packed_first = 0;  // b * kv_num_heads + kv_h of the wave's first pair
  // The hot exp computes fma(a, x, -round(a * max)): its offset, up to half an ulp of the
  // maximum, cancels in the normalisation, but past |max| ~ 2^24 (log2 units: scale 1e10, or
  // |Q K^T| near 1e9) it leaves exp2's range. A block that meets such a row sets shift_too_coarse,
  // and the call is run again with exact_shift: maxima kept in logit units and log2e * (x - max)
  // in the exp (one more multiply, no fast path).
  bool exact_shift = false;
  std::atomic<bool>* shift_too_coarse = nullptr;
  // Per batch (always set, batch entries each): keys [0, key_end[b]) exist for batch b (its
  // past and new rows, limited by kv_len); query row i sits at position min(q_pos0[b] + i,
  // pos_cap[b]) for the causal/window bounds (pos_cap: kv_len[b] - 1 when kv_len is given, as
  // GroupQueryAttention caps a padded row's causal length at the valid length); rot_pos0[b] + i
  // is its rotary position when position_ids is null.
  const int64_t* key_end = nullptr;
  const int64_t* q_pos0 = nullptr;
  const int64_t* pos_cap = nullptr;
  const int64_t* rot_pos0 = nullptr;
  // Per query head: the softmax sink (smooth_softmax / head_sink) in logit units; null: none.
  const float* sinks = nullptr;
};

// One work item's share of the keys, and where its unnormalised result goes.
struct KeySplit {
  int64_t lo = 0;             // keys [lo, hi) only
  int64_t hi = INT64_MAX;
  float* partial = nullptr;   // non-null: per row (stacked rows in order) max, sum, then o_ld
                              // accumulator floats (partial_ld in all), instead of the output
};
// Floats per row of a KeySplit partial.
inline int64_t partial_ld(const ScratchLayout& s) { return s.o_ld + 2; }

// Rows [q0, S_q) of query heads h .. h + heads - 1 (one KV group) when heads > 1, else rows
// [q0, q0 + block_q) of head h.
// key_padding_mask[b, j] != 0. static, not inline: every per-ISA copy of tile_kernel.cc keeps its
// own, so the linker cannot pick one built for an ISA the running CPU lacks.
static inline bool key_visible(const AttentionParams& p, int64_t b, int64_t j) {
  const int64_t idx = b * p.mask_batch_stride + j;
  switch (p.mask_type) {
    case MaskType::kBool: return static_cast<const uint8_t*>(p.key_padding_mask)[idx] != 0;
    case MaskType::kInt32: return static_cast<const int32_t*>(p.key_padding_mask)[idx] != 0;
    case MaskType::kInt64: return static_cast<const int64_t*>(p.key_padding_mask)[idx] != 0;
    case MaskType::kNone: return true;
  }
  return true;
}

using AttendQueryBlockFn = void (*)(const TilePlan& plan, int64_t b, int64_t h, int64_t heads, int64_t q0,
                                    const KeySplit& split, float* scratch);
// Rows [j0, j1) of keys and values (past, then new) of pair bkv = b * kv_num_heads + kv_h into
// plan.packed_k / packed_v.
using PackKvRowsFn = void (*)(const TilePlan& plan, int64_t bkv, int64_t j0, int64_t j1);

#define FASTATTN_DECLARE_ISA(ns)                                                                               \
  namespace ns {                                                                                               \
  void attend_query_block(const TilePlan& plan, int64_t b, int64_t h, int64_t heads, int64_t q0,                 \
                          const KeySplit& split, float* scratch);                                              \
  void pack_kv_rows(const TilePlan& plan, int64_t bkv, int64_t j0, int64_t j1);                                \
  }
FASTATTN_DECLARE_ISA(isa_baseline)
FASTATTN_DECLARE_ISA(isa_avx2)
FASTATTN_DECLARE_ISA(isa_avx512)
FASTATTN_DECLARE_ISA(isa_neon)
#undef FASTATTN_DECLARE_ISA

}  // namespace fastattn::cpu
