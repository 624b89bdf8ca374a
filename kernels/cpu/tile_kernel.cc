// One query block of one (batch, head) against its visible key tiles, FlashAttention-2 style:
// S = Q K^T and O += P V through OpenBLAS SGEMM (single-threaded inside this worker, strided
// views passed as lda/ldb so 3D and 4D layouts need no copies), online softmax in float32 in
// between. Compiled once per ISA (-DFASTATTN_ISA_NS=isa_<name> plus that ISA's flags).
#include <cblas.h>

#include "tile_kernel.h"
#include "vector_math.h"

#ifndef FASTATTN_ISA_NS
#error "compile tile_kernel.cc with -DFASTATTN_ISA_NS=isa_<name>"
#endif

namespace fastattn::cpu {
namespace {

constexpr int64_t kLanes = 16;  // independent accumulators: whole vectors on every ISA, plus ILP

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

inline int64_t row_offset(const TensorView& v, int64_t b, int64_t h, int64_t j) {
  return b * v.batch_stride + h * v.head_stride + j * v.seq_stride;
}
inline const void* elem_at(const void* base, int64_t idx, ElemType t) {
  return static_cast<const char*>(base) + idx * static_cast<int64_t>(elem_size(t));
}

// Rows of a view as an SGEMM operand: the tensor itself for float32 (no copy), else the rows
// converted into buf.
struct FloatRows {
  const float* data;
  int64_t ld;
};

FloatRows float_rows(const TensorView& v, ElemType t, int64_t b, int64_t h, int64_t j0, int64_t n,
                     int64_t cols, float* buf) {
  if (t == ElemType::kFloat32) return {static_cast<const float*>(v.data) + row_offset(v, b, h, j0), v.seq_stride};
  for (int64_t r = 0; r < n; ++r) to_float(elem_at(v.data, row_offset(v, b, h, j0 + r), t), t, cols, buf + r * cols);
  return {buf, cols};
}

inline bool key_visible(const AttentionParams& p, int64_t b, int64_t j) {
  const int64_t idx = b * p.mask_batch_stride + j;
  switch (p.mask_type) {
    case MaskType::kBool: return static_cast<const uint8_t*>(p.key_padding_mask)[idx] != 0;
    case MaskType::kInt32: return static_cast<const int32_t*>(p.key_padding_mask)[idx] != 0;
    case MaskType::kInt64: return static_cast<const int64_t*>(p.key_padding_mask)[idx] != 0;
    case MaskType::kNone: return true;
  }
  return true;
}

// x[c] += bias[c * col_stride] for c < n.
void add_bias_row(float* __restrict x, const void* bias, int64_t idx0, int64_t col_stride, int64_t n, ElemType t) {
  if (col_stride == 1 && t == ElemType::kFloat32) {
    const float* s = static_cast<const float*>(bias) + idx0;
    for (int64_t c = 0; c < n; ++c) x[c] += s[c];
  } else if (col_stride == 1 && t == ElemType::kFloat16) {
    const half_t* s = static_cast<const half_t*>(bias) + idx0;
    for (int64_t c = 0; c < n; ++c) x[c] += static_cast<float>(s[c]);
  } else if (col_stride == 1) {
    const uint16_t* s = static_cast<const uint16_t*>(bias) + idx0;
    for (int64_t c = 0; c < n; ++c) x[c] += bf16_to_float(s[c]);
  } else {
    for (int64_t c = 0; c < n; ++c) x[c] += load_one(bias, idx0 + c * col_stride, t);
  }
}

inline float max_of(const float* __restrict x, int64_t n_pad) {
  float acc[kLanes];
  for (int64_t l = 0; l < kLanes; ++l) acc[l] = kNegInf;
  for (int64_t c = 0; c < n_pad; c += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) acc[l] = x[c + l] > acc[l] ? x[c + l] : acc[l];
  float m = acc[0];
  for (int64_t l = 1; l < kLanes; ++l) m = acc[l] > m ? acc[l] : m;
  return m;
}

// x[c] = exp(a * x[c] - shift) (an FMA before the exp; the argument is <= 0); returns the sum.
inline float exp_sum(float* __restrict x, int64_t n_pad, float a, float shift) {
  for (int64_t c = 0; c < n_pad; ++c) x[c] = exp_approx(a * x[c] - shift);
  float acc[kLanes];
  for (int64_t l = 0; l < kLanes; ++l) acc[l] = 0.f;
  for (int64_t c = 0; c < n_pad; c += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) acc[l] += x[c + l];
  float s = 0.f;
  for (int64_t l = 0; l < kLanes; ++l) s += acc[l];
  return s;
}

}  // namespace

namespace FASTATTN_ISA_NS {

void attend_query_block(const TilePlan& plan, int64_t b, int64_t h, int64_t q0, float* scratch) {
  const AttentionParams& p = *plan.params;
  const ScratchLayout& sl = plan.scratch;
  const ElemType t = p.dtype;
  const int64_t S = p.seq_total(), D = p.head_dim, Dv = p.head_dim_v, ld_s = sl.score_ld;
  const int64_t kv_h = h / (p.num_heads / p.kv_num_heads);
  const int64_t mq = imin(plan.traits.block_q, p.seq_q - q0), block_k = plan.traits.block_k;
  const int64_t shift = S - p.seq_q;  // query row i sits at key position i + shift
  float* const scores = scratch + sl.scores;
  float* const acc = scratch + sl.out;
  float* const row_max = scratch + sl.row_max;
  float* const row_sum = scratch + sl.row_sum;
  float* const row_tile = scratch + sl.row_tile;  // per row: the rescale factor of this tile
  float* const key_mask = scratch + sl.key_mask;

  const FloatRows q = float_rows(p.q, t, b, h, q0, mq, D, scratch + sl.q);
  for (int64_t i = 0; i < mq * Dv; ++i) acc[i] = 0.f;
  for (int64_t r = 0; r < mq; ++r) { row_max[r] = kNegInf; row_sum[r] = 0.f; }

  // Structural part of the tiling-mask: query row i sees the key interval [lo(i), hi(i)),
  // both ends non-decreasing in i, so a block's union is [lo(first), hi(last)).
  const int64_t window = p.window_size > 0 ? imin(p.window_size, S + p.seq_q) : 0;
  auto lo_of = [&](int64_t i) { return window > 0 ? imax(0, i + shift - window + 1) : int64_t{0}; };
  auto hi_of = [&](int64_t i) {
    int64_t hi = S;
    if (p.causal) hi = imin(hi, i + shift + 1);
    else if (window > 0) hi = imin(hi, i + shift + window);
    return imax(hi, 0);
  };
  int64_t begin = lo_of(q0), end = hi_of(q0 + mq - 1);
  const int32_t* prefix = nullptr;
  if (plan.visible_prefix) {
    prefix = plan.visible_prefix + b * (S + 1);
    begin = imax(begin, plan.first_visible[b]);
    end = imin(end, plan.end_visible[b]);
  }
  const int64_t lo_last = lo_of(q0 + mq - 1), hi_first = hi_of(q0);
  const float scale = p.scale, softcap = p.softcap, inv_softcap = softcap > 0.f ? 1.f / softcap : 0.f;
  const int64_t bias_row0 = p.bias ? b * p.bias_batch_stride + h * p.bias_head_stride + q0 * p.bias_row_stride : 0;

  for (int64_t j0 = begin, j1; j0 < end; j0 = j1) {
    j1 = imin(j0 + block_k, end);
    if (j0 < p.seq_past && j1 > p.seq_past) j1 = p.seq_past;  // a tile reads past or new rows, not both
    const int64_t nk = j1 - j0, n_pad = (nk + kLanes - 1) / kLanes * kLanes;
    bool padding_mixed = false;
    if (prefix) {
      const int64_t visible = prefix[j1] - prefix[j0];
      if (visible == 0) continue;  // fully hidden tile: skipped
      padding_mixed = visible != nk;
    }
    const bool structural_full = lo_last <= j0 && hi_first >= j1;  // no row needs interval checks
    const bool in_past = j0 < p.seq_past;
    const int64_t jt = in_past ? j0 : j0 - p.seq_past;

    const FloatRows k = float_rows(in_past ? p.past_k : p.k, t, b, kv_h, jt, nk, D, scratch + sl.k);
    scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(mq), static_cast<int>(nk),
                static_cast<int>(D), 1.f, q.data, static_cast<int>(q.ld), k.data, static_cast<int>(k.ld), 0.f,
                scores, static_cast<int>(ld_s));

    if (padding_mixed)
      for (int64_t c = 0; c < nk; ++c) key_mask[c] = key_visible(p, b, j0 + c) ? 0.f : kNegInf;

    // Fast path (a fully visible tile, no bias, no softcap): the raw scores stay as they are and
    // the scale is folded into the exp's argument, so each score is touched by max and exp only.
    const bool plain = scale > 0.f && softcap <= 0.f && !p.bias && !padding_mixed && structural_full;
    const float a = plain ? scale : 1.f;
    bool any_visible = false;
    for (int64_t r = 0; r < mq; ++r) {
      float* __restrict x = scores + r * ld_s;
      for (int64_t c = nk; c < n_pad; ++c) x[c] = kNegInf;  // padding columns vanish in exp
      if (!plain) {  // logits = softcap(scale * s) + bias, -inf where the tiling-mask hides a key
        for (int64_t c = 0; c < nk; ++c) x[c] *= scale;
        if (softcap > 0.f)
          for (int64_t c = 0; c < nk; ++c) x[c] = softcap * tanh_approx(x[c] * inv_softcap);
        if (p.bias) add_bias_row(x, p.bias, bias_row0 + r * p.bias_row_stride + j0 * p.bias_col_stride, p.bias_col_stride, nk, t);
        if (padding_mixed)
          for (int64_t c = 0; c < nk; ++c) x[c] += key_mask[c];
        if (!structural_full) {
          const int64_t lo = imin(imax(lo_of(q0 + r) - j0, 0), nk), hi = imax(imin(hi_of(q0 + r) - j0, nk), lo);
          for (int64_t c = 0; c < lo; ++c) x[c] = kNegInf;
          for (int64_t c = hi; c < nk; ++c) x[c] = kNegInf;
        }
      }
      // Online softmax: P = exp(logits - m_new), l = l * e^(m_old - m_new) + rowsum(P).
      const float tile_max = a * max_of(x, n_pad), m_old = row_max[r];
      const float m_new = tile_max > m_old ? tile_max : m_old;
      if (m_new == kNegInf) {  // nothing visible in this row yet (also: bias -inf everywhere)
        for (int64_t c = 0; c < n_pad; ++c) x[c] = 0.f;
        row_tile[r] = 1.f;
        continue;
      }
      any_visible = true;
      const float rescale = exp_approx(m_old - m_new);  // 0 when m_old is -inf
      row_sum[r] = row_sum[r] * rescale + exp_sum(x, n_pad, a, m_new);
      row_max[r] = m_new;
      row_tile[r] = rescale;
    }
    if (!any_visible) continue;
    for (int64_t r = 0; r < mq; ++r) {
      const float rescale = row_tile[r];
      if (rescale == 1.f) continue;
      float* __restrict o = acc + r * Dv;
      for (int64_t d = 0; d < Dv; ++d) o[d] *= rescale;
    }
    const FloatRows v = float_rows(in_past ? p.past_v : p.v, t, b, kv_h, jt, nk, Dv, scratch + sl.v);
    scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(mq), static_cast<int>(Dv),
                static_cast<int>(nk), 1.f, scores, static_cast<int>(ld_s), v.data, static_cast<int>(v.ld), 1.f, acc,
                static_cast<int>(Dv));
  }

  // O = acc / l; a row without any visible key has l == 0 and acc == 0: zeros.
  for (int64_t r = 0; r < mq; ++r) {
    const float inv = row_sum[r] > 0.f ? 1.f / row_sum[r] : 0.f;
    void* dst = const_cast<void*>(elem_at(p.out.data, row_offset(p.out, b, h, q0 + r), t));
    from_float_scaled(acc + r * Dv, inv, Dv, t, dst);
  }
}

}  // namespace FASTATTN_ISA_NS
}  // namespace fastattn::cpu
