// One query block of one (batch, head) against its visible key tiles, FlashAttention-2 style,
// with the scores held transposed (S^T: keys x query rows):
//   S^T = K Q^T and O += P V by the register-blocked micro-kernels of micro_gemm.h (K read in
//   place from the strided 3D/4D views, V copied into an L1-friendly stride); the online
//   softmax in float32 runs down the columns of S^T.
// Compiled once per ISA (-DFASTATTN_ISA_NS=isa_<name> plus that ISA's flags).
#include "micro_gemm.h"
#include "tile_kernel.h"
#include "vector_math.h"

#ifndef FASTATTN_ISA_NS
#error "compile tile_kernel.cc with -DFASTATTN_ISA_NS=isa_<name>"
#endif

namespace fastattn::cpu {
namespace {

constexpr float kLog2e = 1.44269504088896341f;
constexpr float kCoarseShift = 16777216.f;  // 2^24: past it the fused shift's offset nears exp2's range (tile_kernel.h)

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

inline int64_t row_offset(const TensorView& v, int64_t b, int64_t h, int64_t j) {
  return b * v.batch_stride + h * v.head_stride + j * v.seq_stride;
}
inline const void* elem_at(const void* base, int64_t idx, ElemType t) {
  return static_cast<const char*>(base) + idx * static_cast<int64_t>(elem_size(t));
}

// True when x[0, n) holds a NaN or an infinity (all exponent bits set).
inline bool any_nonfinite(const float* x, int64_t n) {
  uint32_t worst = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t e = float_to_bits(x[i]) & 0x7f800000u;
    worst = e > worst ? e : worst;
  }
  return worst == 0x7f800000u;
}

// Rows of a view as a GEMM operand: the tensor itself for float32 (no copy), else the rows
// converted into buf.
struct FloatRows {
  const float* data;
  int64_t ld;
};

// copy: always copy (into rows of stride buf_ld), even float32.
FloatRows float_rows(const TensorView& v, ElemType t, int64_t b, int64_t h, int64_t j0, int64_t n,
                     int64_t cols, float* buf, int64_t buf_ld, bool copy) {
  if (t == ElemType::kFloat32 && !copy)
    return {static_cast<const float*>(v.data) + row_offset(v, b, h, j0), v.seq_stride};
  for (int64_t r = 0; r < n; ++r) to_float(elem_at(v.data, row_offset(v, b, h, j0 + r), t), t, cols, buf + r * buf_ld);
  return {buf, buf_ld};
}

}  // namespace

namespace FASTATTN_ISA_NS {

void attend_query_block(const TilePlan& plan, int64_t b, int64_t h, int64_t heads, int64_t q0, const KeySplit& split,
                        float* scratch) {
  const bool exact = plan.exact_shift;
  const AttentionParams& p = *plan.params;
  const ScratchLayout& sl = plan.scratch;
  const ElemType t = p.dtype;
  const int64_t S = p.seq_total(), D = p.head_dim, Dv = p.head_dim_v, ld = sl.q_ld, o_ld = sl.o_ld;
  const int64_t kv_h = h / (p.num_heads / p.kv_num_heads);
  const int64_t packed_row0 = (b * p.kv_num_heads + kv_h - plan.packed_first) * p.seq_total();
  const float* const packed_k = plan.packed_k ? plan.packed_k + packed_row0 * sl.k_ld : nullptr;
  const float* const packed_v = plan.packed_v ? plan.packed_v + packed_row0 * sl.v_ld : nullptr;
  // Rows of the block: `heads` query heads of one KV group stacked, each with rows_per_head
  // query positions from q0; row r is head h + r / rows_per_head, position q0 + r % rows_per_head.
  const int64_t rows_per_head = heads > 1 ? p.seq_q - q0 : imin(plan.traits.block_q, p.seq_q - q0);
  const int64_t mq = heads * rows_per_head, block_k = plan.traits.block_k;
  const int64_t mq_pad = (mq + kVecFloats - 1) / kVecFloats * kVecFloats;  // columns of S^T in use
  // Keys [0, Sb) exist for this batch; query row i sits at key position min(i + shift, cap).
  const int64_t Sb = plan.key_end[b], shift = plan.q_pos0[b], cap = plan.pos_cap[b];
  float* const qt = scratch + sl.qt;
  float* const scores = scratch + sl.scores;
  float* const acc = scratch + sl.out;
  float* const row_max = scratch + sl.rows;        // running max of the logits, times log2 e
  float* const row_sum = row_max + ld;             // running sum of exp
  float* const row_shift = row_sum + ld;           // this tile: the max subtracted in exp
  float* const row_rescale = row_shift + ld;       // this tile: e^(m_old - m_new)
  float* const tile_max = row_rescale + ld;
  float* const tile_sum = tile_max + ld;
  int64_t* const row_lo = reinterpret_cast<int64_t*>(scratch + sl.row_bounds);
  int64_t* const row_hi = row_lo + ld;
  int64_t* const row_extent = row_hi + ld;  // per row: keys of the current tile it can see

  // Q^T (D x mq_pad), zero in the padding columns; rotary rotates each row on the way (the
  // query tensor itself is never written).
  const RotaryParams& rp = p.rotary;
  for (int64_t r = 0; r < mq; ++r) {
    const int64_t s = q0 + r % rows_per_head;
    const void* src = elem_at(p.q.data, row_offset(p.q, b, h + r / rows_per_head, s), t);
    if (!rp.cos_cache) {
      for (int64_t d = 0; d < D; ++d) qt[d * ld + r] = load_one(src, d, t);
      continue;
    }
    float* row = scratch + sl.qrot;
    to_float(src, t, D, row);
    rotate_row(row, rp, rp.position_ids ? rp.position_ids[b * rp.position_batch_stride + s] : plan.rot_pos0[b] + s, t);
    for (int64_t d = 0; d < D; ++d) qt[d * ld + r] = row[d];
  }
  for (int64_t d = 0; d < D; ++d)
    for (int64_t r = mq; r < mq_pad; ++r) qt[d * ld + r] = 0.f;
  for (int64_t i = 0; i < mq * o_ld; ++i) acc[i] = 0.f;
  for (int64_t r = 0; r < mq_pad; ++r) { row_max[r] = kNegInf; row_sum[r] = 0.f; }

  // Structural part of the tiling-mask: query position i sees the key interval [lo(i), hi(i)),
  // both ends non-decreasing in i, so a block's union is [lo(first), hi(last)) (stacked heads
  // repeat the same positions).
  // (extents capped at S + S_q: no overflow, same intervals)
  const int64_t left = p.window_left >= 0 ? imin(p.window_left, S + p.seq_q) : -1;
  const int64_t right = p.window_right >= 0 ? imin(p.window_right, S + p.seq_q) : -1;
  auto pos_of = [&](int64_t i) { return imin(i + shift, cap); };
  auto lo_of = [&](int64_t i) { return left >= 0 ? imax(0, pos_of(i) - left) : int64_t{0}; };
  auto hi_of = [&](int64_t i) { return right >= 0 ? imax(imin(Sb, pos_of(i) + right + 1), 0) : Sb; };
  for (int64_t r = 0; r < mq_pad; ++r) {
    row_lo[r] = r < mq ? lo_of(q0 + r % rows_per_head) : 0;
    row_hi[r] = r < mq ? hi_of(q0 + r % rows_per_head) : 0;  // padding rows see nothing
  }
  int64_t begin = imax(lo_of(q0), split.lo), end = imin(hi_of(q0 + rows_per_head - 1), split.hi);
  const int32_t* prefix = nullptr;
  if (plan.visible_prefix) {
    prefix = plan.visible_prefix + b * (S + 1);
    begin = imax(begin, plan.first_visible[b]);
    end = imin(end, plan.end_visible[b]);
  }
  const int64_t lo_last = lo_of(q0 + rows_per_head - 1), hi_first = hi_of(q0);
  const float scale = p.scale, softcap = p.softcap, inv_softcap = softcap > 0.f ? 1.f / softcap : 0.f;
  const int64_t bias_base = p.bias ? b * p.bias_batch_stride + h * p.bias_head_stride + q0 * p.bias_row_stride : 0;

  // Key tiles: the span every row sees in full, [full_lo, full_hi), is split into even tiles of
  // at most block_k; the rest (under causal: the diagonal) is tiled on its own, so only tiles
  // that need interval checks leave the fast path.
  const int64_t full_lo = imin(imax(begin, lo_last), end);
  int64_t full_hi = imax(imin(end, hi_first), full_lo);
  // Under causal, the block's first row sees one key past a whole number of tiles (its own):
  // that key joins the diagonal tile instead of splitting the full span into uneven tiles.
  const int64_t spare = (full_hi - full_lo) % block_k;
  if (full_hi < end && spare > 0 && spare <= block_k / 8) full_hi -= spare;
  auto tile_end = [&](int64_t j0) {
    if (j0 < full_lo) return imin(j0 + block_k, full_lo);
    if (j0 < full_hi) {
      const int64_t left = full_hi - j0, tiles = (left + block_k - 1) / block_k;
      return j0 + (left + tiles - 1) / tiles;
    }
    return imin(j0 + block_k, end);
  };
  for (int64_t j0 = begin, j1; j0 < end; j0 = j1) {
    j1 = tile_end(j0);
    if (j0 < p.seq_past && j1 > p.seq_past) j1 = p.seq_past;  // a tile reads past or new rows, not both
    const int64_t nk = j1 - j0;
    bool padding_mixed = false;
    if (prefix) {
      const int64_t visible = prefix[j1] - prefix[j0];
      if (visible == 0) continue;  // fully hidden tile: skipped
      padding_mixed = visible != nk;
    }
    const bool structural_full = lo_last <= j0 && hi_first >= j1;  // no row needs interval checks
    const bool in_past = j0 < p.seq_past;
    const int64_t jt = in_past ? j0 : j0 - p.seq_past;

    // Fast path (a fully visible tile, no bias, no softcap): the raw scores stay as they are,
    // their column maxima come from the GEMM's registers, and the scale is folded into the
    // exp's argument, so each score is touched by the exp pass only.
    const bool plain =
        !exact && scale > 0.f && softcap <= 0.f && !p.bias && !padding_mixed && structural_full;
    const float a = plain ? scale : 1.f;

    // S^T (nk x mq_pad) = K Q^T.
    const FloatRows k = packed_k ? FloatRows{packed_k + j0 * sl.k_ld, sl.k_ld}
                                 : float_rows(in_past ? p.past_k : p.k, t, b, kv_h, jt, nk, D, scratch + sl.k, D, false);
    for (int64_t r = 0; r < mq_pad; ++r) tile_max[r] = kNegInf;
    // A tile past every row's lower bound (the causal diagonal) skips the keys above each row's
    // upper bound in both GEMMs: they are masked to -inf below and get P = 0.
    const bool triangle = !structural_full && lo_last <= j0 && heads == 1;  // extents must not decrease
    if (triangle) {
      for (int64_t r = 0; r < mq; ++r) row_extent[r] = imax(0, imin(row_hi[r], j1) - j0);
      for (int64_t r = mq; r < mq_pad; ++r) row_extent[r] = row_extent[mq - 1];
    }
    small_gemm<false>(nk, mq_pad, D, k.data, k.ld, qt, ld, scores, ld, /*accumulate=*/false, plain ? tile_max : nullptr,
                      triangle ? row_extent : nullptr);

    if (!plain) {  // logits = softcap(scale * s) + bias, -inf where the tiling-mask hides a key
      for (int64_t c = 0; c < nk; ++c) {
        float* __restrict x = scores + c * ld;
        const int64_t j = j0 + c;
        if (padding_mixed && !key_visible(p, b, j)) {
          for (int64_t r = 0; r < mq_pad; ++r) x[r] = kNegInf;
          continue;
        }
        for (int64_t r = 0; r < mq_pad; ++r) x[r] *= scale;
        if (softcap > 0.f)
          for (int64_t r = 0; r < mq_pad; ++r) x[r] = softcap * tanh_approx(x[r] * inv_softcap);
        if (p.bias)
          for (int64_t r = 0; r < mq; ++r)
            x[r] += load_one(p.bias, bias_base + r * p.bias_row_stride + j * p.bias_col_stride, t);
        if (!structural_full)
          for (int64_t r = 0; r < mq_pad; ++r) x[r] = (j >= row_lo[r] && j < row_hi[r]) ? x[r] : kNegInf;
      }
    }

    // Online softmax, per query row (a column of S^T): P = exp(logits - m_new),
    // l = l * e^(m_old - m_new) + colsum(P).
    if (!plain)
      for (int64_t c = 0; c < nk; ++c) {
        const float* __restrict x = scores + c * ld;
        for (int64_t r = 0; r < mq_pad; ++r) tile_max[r] = x[r] > tile_max[r] ? x[r] : tile_max[r];
      }
    // Maxima and shifts are kept in log2 units (scaled by log2 e), so the exp of the hot loop
    // is one FMA and a 2^t; the common rounding of a shift cancels with its own rescale.
    const float a2 = exact ? 1.f : a * kLog2e;  // exact_shift: maxima in logit units
    for (int64_t r = 0; r < mq; ++r) {
      const float m_old = row_max[r], m_tile = a2 * tile_max[r];
      const float m_new = m_tile > m_old ? m_tile : m_old;
      // A row with nothing visible yet (also: bias -inf everywhere) keeps P = 2^-inf = 0; its
      // NaN logits (a NaN query, say: the max skips NaN) still give P = NaN: NaN in, NaN out, at
      // every S_q (the tile is not skipped when no row has a finite maximum).
      row_shift[r] = m_new == kNegInf ? 0.f : m_new;
      // An unchanged max (most rows after the first few tiles) rescales by exactly 1, which the
      // accumulator pass below then skips: exp2_approx(0) is 1 + 1 ulp, not 1.
      row_rescale[r] = m_new == kNegInf || m_new == m_old ? 1.f
                                                          : exp2_approx(exact ? kLog2e * (m_old - m_new) : m_old - m_new);
      row_max[r] = m_new;  // (the rescale is 0 when m_old is -inf)
      const float magnitude = m_new < 0.f ? -m_new : m_new;
      if (!exact && magnitude > kCoarseShift && magnitude <= 3.4e38f)  // finite and past 2^24
        plan.shift_too_coarse->store(true, std::memory_order_relaxed);
    }
    for (int64_t r = mq; r < mq_pad; ++r) row_shift[r] = 0.f;  // padding columns: finite, unused
    for (int64_t r = 0; r < mq_pad; ++r) tile_sum[r] = 0.f;
    for (int64_t c = 0; c < nk; ++c) {
      float* __restrict x = scores + c * ld;
      if (exact)
        for (int64_t r = 0; r < mq_pad; ++r) {
          const float e = exp2_approx(kLog2e * (x[r] - row_shift[r]));
          x[r] = e;
          tile_sum[r] += e;
        }
      else
        for (int64_t r = 0; r < mq_pad; ++r) {
          const float e = exp2_approx(a2 * x[r] - row_shift[r]);
          x[r] = e;
          tile_sum[r] += e;
        }
    }
    for (int64_t r = 0; r < mq; ++r) {
      row_sum[r] = row_sum[r] * row_rescale[r] + tile_sum[r];
      const float rescale = row_rescale[r];
      if (rescale == 1.f) continue;
      float* __restrict o = acc + r * o_ld;
      for (int64_t d = 0; d < Dv; ++d) o[d] *= rescale;
    }

    // O (mq x Dv) += P V, with P read as (P^T)^T.
    // V is copied even for float32: into rows of a stride that L1 can hold a whole panel of,
    // zero-padded to o_ld columns so the micro-kernel needs no column tail.
    FloatRows v{packed_v + j0 * sl.v_ld, sl.v_ld};
    if (!packed_v) {
      v = float_rows(in_past ? p.past_v : p.v, t, b, kv_h, jt, nk, Dv, scratch + sl.v, sl.v_ld, true);
      if (o_ld > Dv)
        for (int64_t c = 0; c < nk; ++c)
          for (int64_t d = Dv; d < o_ld; ++d) scratch[sl.v + c * sl.v_ld + d] = 0.f;
    }
    // Hidden keys must not contribute, whatever their bits: in P V, 0 * NaN (or inf) would. In a
    // tile with hidden (row, key) pairs, a value row holding a NaN or an inf is added by hand to
    // the rows that see its key, and zeroed for the GEMM (in a scratch copy if the tile is the
    // shared packed one). Only such tiles scan, only such rows pay.
    if (padding_mixed || !structural_full) {
      for (int64_t c = 0; c < nk; ++c) {
        const float* row = v.data + c * v.ld;
        if (!any_nonfinite(row, Dv)) continue;
        const int64_t j = j0 + c;
        const bool key_shown = !padding_mixed || key_visible(p, b, j);
        for (int64_t r = 0; r < mq; ++r) {
          if (!key_shown || j < row_lo[r] || j >= row_hi[r]) continue;
          const float pr = scores[c * ld + r];
          for (int64_t d = 0; d < Dv; ++d) acc[r * o_ld + d] += pr * row[d];
        }
        if (v.data != scratch + sl.v) {  // the packed tile is shared: take a copy to change
          for (int64_t i = 0; i < nk; ++i)
            for (int64_t d = 0; d < o_ld; ++d) scratch[sl.v + i * sl.v_ld + d] = v.data[i * v.ld + d];
          v = FloatRows{scratch + sl.v, sl.v_ld};
        }
        for (int64_t d = 0; d < Dv; ++d) scratch[sl.v + c * sl.v_ld + d] = 0.f;
      }
    }
    small_gemm<true>(mq, o_ld, nk, scores, ld, v.data, v.ld, acc, o_ld, /*accumulate=*/true, nullptr,
                     triangle ? row_extent : nullptr);
  }

  if (split.partial) {  // this item's keys only: max, sum and accumulator, merged by the caller
    const int64_t pld = partial_ld(sl);
    for (int64_t r = 0; r < mq; ++r) {
      float* dst = split.partial + r * pld;
      dst[0] = row_max[r];
      dst[1] = row_sum[r];
      for (int64_t d = 0; d < Dv; ++d) dst[2 + d] = acc[r * o_ld + d];
    }
    return;
  }
  // O = acc / l; a row without any visible key has l == 0 and acc == 0: zeros. A sink (logit
  // sink_h, no value) adds e^(sink_h - m) to l, computed against max(m, sink_h) so that neither
  // term overflows; a row without visible keys still gives zeros.
  for (int64_t r = 0; r < mq; ++r) {
    float inv = row_sum[r] > 0.f ? 1.f / row_sum[r] : 0.f;
    if (plan.sinks) {
      const float sink = plan.sinks[h + r / rows_per_head] * (exact ? 1.f : kLog2e), m = row_max[r];
      const float top = m > sink ? m : sink;
      auto ex = [&](float x) { return exp2_approx(exact ? kLog2e * x : x); };
      const float f = m == kNegInf ? 0.f : ex(m - top);
      const float denom = row_sum[r] * f + (sink == kNegInf ? 0.f : ex(sink - top));
      inv = top == kNegInf || !(denom > 0.f) ? 0.f : f / denom;  // (NaN sums: acc is NaN too)
    }
    void* dst = const_cast<void*>(elem_at(p.out.data, row_offset(p.out, b, h + r / rows_per_head, q0 + r % rows_per_head), t));
    from_float_scaled(acc + r * o_ld, inv, Dv, t, dst);
  }
}

void pack_kv_rows(const TilePlan& plan, int64_t bkv, int64_t j0, int64_t j1) {
  const AttentionParams& p = *plan.params;
  const ScratchLayout& sl = plan.scratch;
  const int64_t b = bkv / p.kv_num_heads, kv_h = bkv % p.kv_num_heads;
  const int64_t row0 = (bkv - plan.packed_first) * p.seq_total();
  j1 = imin(j1, plan.key_end[b]);  // rows past the batch's keys are never read
  for (int64_t j = j0; j < j1; ++j) {
    const bool in_past = j < p.seq_past;
    const int64_t jt = in_past ? j : j - p.seq_past;
    const TensorView& k = in_past ? p.past_k : p.k;
    const TensorView& v = in_past ? p.past_v : p.v;
    to_float(elem_at(k.data, row_offset(k, b, kv_h, jt), p.dtype), p.dtype, p.head_dim,
             plan.packed_k + (row0 + j) * sl.k_ld);
    float* v_row = plan.packed_v + (row0 + j) * sl.v_ld;
    to_float(elem_at(v.data, row_offset(v, b, kv_h, jt), p.dtype), p.dtype, p.head_dim_v, v_row);
    for (int64_t d = p.head_dim_v; d < sl.o_ld; ++d) v_row[d] = 0.f;
  }
}

}  // namespace FASTATTN_ISA_NS
}  // namespace fastattn::cpu
