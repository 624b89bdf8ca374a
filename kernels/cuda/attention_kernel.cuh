// The forward attention kernel template, FlashAttention-2 structure: one thread block per
// (query tile, head, batch); K and V tiles streamed through shared memory from the last visible
// key tile down to the first; online softmax in float32; P cast to the element type for P @ V.
// Everything that depends on the GPU generation comes from the traits (kernel_traits.cuh),
// including which of two schedules the key loop runs: synchronous products (mma.sync), or the
// softmax of one tile overlapping the asynchronous products of the next (wgmma).
//
// Visibility (README "The op"): query row i sits at i' = i + S_total - S_q; key j is visible iff
// j < S_total, i' - window_left <= j (window_left >= 0), j <= i' + window_right (window_right
// >= 0), and key_padding_mask[b, j] != 0. Key tiles no row of the block can see are skipped
// (their loads too); the key_padding_mask is classified per block from its visible range inside
// the block's key range: contiguous (left or right padding: only the edge tiles need per-element
// work) or general (every tile checks each key). Rows with no visible key output zeros.
#pragma once

#include <cfloat>
#include <climits>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cute/tensor.hpp>

#include "fwd_params.h"
#include "kernel_traits.cuh"

namespace fastattn::cuda {

using namespace cute;

namespace detail {

// 2^x with the MUFU unit. CUDA exposes ex2.approx only through -use_fast_math, which would change
// every other math call of the file: raw PTX. ex2.approx.ftz(-inf) = +0, NaN stays NaN.
CUTE_DEVICE float exp2_fast(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// tanh from one MUFU exponential: tanh(x) = 1 - 2 / (e^{2x} + 1). Absolute error about 1e-7
// (tanh.approx.f32 is ~5e-4 relative, too coarse once multiplied by a softcap of 30 or 50);
// saturates to +-1, NaN stays NaN.
CUTE_DEVICE float tanh_fast(float x) {
  const float e = exp2_fast(x * 2.8853900817779268f);  // 2 log2(e)
  return 1.f - __fdividef(2.f, e + 1.f);
}

struct MaxOp {
  CUTE_DEVICE float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct SumOp {
  CUTE_DEVICE float operator()(float a, float b) const { return a + b; }
};

// Element-type conversion of a compact float fragment (adjacent values in pairs).
template <class To, class Frag>
CUTE_DEVICE auto to_element(Frag const& f) {
  auto out = make_tensor<To>(f.layout());
  static_assert(decltype(size(f))::value % 2 == 0);
  CUTE_UNROLL
  for (int i = 0; i < size(f); i += 2) {
    const float2 v = make_float2(f(i), f(i + 1));
    if constexpr (std::is_same_v<To, cutlass::half_t>) {
      *reinterpret_cast<__half2*>(&out(i)) = __float22half2_rn(v);
    } else {
      *reinterpret_cast<__nv_bfloat162*>(&out(i)) = __float22bfloat162_rn(v);
    }
  }
  return out;
}

CUTE_DEVICE bool mask_value(const FwdParams& p, int b, int j) {
  const int64_t at = b * p.mask_b + j;
  switch (p.mask_bytes) {
    case 1: return static_cast<const uint8_t*>(p.mask)[at] != 0;
    case 4: return static_cast<const int32_t*>(p.mask)[at] != 0;
    default: return static_cast<const int64_t*>(p.mask)[at] != 0;
  }
}

struct AllRows {
  CUTE_DEVICE bool operator()(int) const { return true; }
};

// Loads one (rows x kHeadDim) tile whose global row r comes from `first` when r < split, else
// from `second` (past then new keys; a query tile passes the same tensor twice). Rows at or past
// `rows`, rows row_ok rejects and columns at or past `cols` are zero-filled.
template <class Loader, class TiledCopy, class Src, class Dst, class Stage, class Crd, class RowOk>
CUTE_DEVICE void load_tile(TiledCopy const& tc, Src const& first, Src const& second, Dst& dst, Stage& stage,
                           Crd const& crd, int row0, int split, int rows, int cols, RowOk const& row_ok) {
  // This thread's rows wholly inside one tensor, every row and column live (all but the edge
  // tiles): one copy without per-vector checks.
  if constexpr (std::is_same_v<RowOk, AllRows> && !Loader::kStaged) {
    constexpr int kM = decltype(size<1>(dst))::value, kK = decltype(size<2>(dst))::value;
    const int first_row = row0 + get<0>(crd(0, 0, 0)), last_row = row0 + get<0>(crd(0, kM - 1, 0));
    if (last_row < rows && get<1>(crd(0, 0, kK - 1)) < cols) {
      if (last_row < split) { cute::copy(tc, first, dst); return; }
      if (first_row >= split) { cute::copy(tc, second, dst); return; }
    }
  }
  CUTE_UNROLL
  for (int m = 0; m < size<1>(dst); ++m) {
    const int row = row0 + get<0>(crd(0, m, 0));
    const bool live = row < rows && row_ok(row);
    CUTE_UNROLL
    for (int k = 0; k < size<2>(dst); ++k) {
      auto d = dst(_, m, k);
      auto s = stage(_, m, k);
      if (live && get<1>(crd(0, m, k)) < cols) {
        if (row < split) Loader::copy_vec(tc, first(_, m, k), d, s);
        else Loader::copy_vec(tc, second(_, m, k), d, s);
      } else {
        Loader::clear_vec(d, s);
      }
    }
  }
}

}  // namespace detail

// 2^lse / (2^lse + e^sink_h) for query row r of block head h (packed GQA rows: head
// h * rows_per_token + r), lse the row's log2-sum-exp of its visible scores.
template <class T>
CUTE_DEVICE float sink_factor_of(const FwdParams& p, int h, int r, float lse) {
  const int head = h * p.rows_per_token + (p.rows_per_token == 1 ? 0 : r % p.rows_per_token);
  const float sink = p.head_sink ? static_cast<float>(static_cast<const T*>(p.head_sink)[head]) : 0.f;
  return 1.f / (1.f + exp2f(sink * 1.4426950408889634f - lse));
}

// kFull: the variant for calls with attn_bias, softcap or a key_padding_mask. Without them the
// lean variant keeps those paths (and their registers) out of the main loop.
template <class Tr, bool kFull>
CUTE_DEVICE void attention_tile(const FwdParams& p) {
  using T = typename Tr::Element;
  using Loader = typename Tr::Loader;
  using Frag = typename Tr::Fragments;
  using Gemm = typename Tr::Gemm;
  constexpr int kBlockM = Tr::kBlockM;
  constexpr int kBlockN = Tr::kBlockN;
  constexpr int kHeadDim = Tr::kHeadDim;
  constexpr int kNThreads = Tr::kNThreads;

  extern __shared__ __align__(128) char smem[];
  __shared__ int mask_info[3];  // first visible key, last visible key, count
  // key_padding_mask of the key tile in flight (1: visible, in range), staged once per tile so that
  // the masking and the V loads read shared memory instead of the mask tensor.
  // One per K/V stage (Tr::kStages): the pipelined schedule stages tile t into key_ok[t % 2].
  __shared__ uint8_t key_ok[Tr::kStages][kBlockN];

  const int tid = threadIdx.x;
  // Heaviest query tiles (the last ones under causal masks) start first.
  const int m_block = gridDim.x - 1 - blockIdx.x;
  const int h = blockIdx.y, kvh = h / p.kv_group;
  const int b = blockIdx.z / p.num_splits, split = blockIdx.z % p.num_splits;
  const int row0 = m_block * kBlockM;
  const int rows_here = min(kBlockM, p.seq_q - row0);
  // This batch's keys end at seq_total (per-batch lengths: GroupQueryAttention's KV cache); its
  // first query row sits at query_shift; a row past the last valid key is held at pos_cap.
  int seq_total = p.seq_total, query_shift = p.query_shift, pos_cap = INT_MAX;
  if (p.past_len != nullptr) {
    query_shift = p.past_len[b];
    seq_total = min(seq_total, query_shift + p.new_rows);
  }
  if (p.kv_len != nullptr) {
    pos_cap = p.kv_len[b] - 1;
    seq_total = min(seq_total, p.kv_len[b]);
  }
  // Position i' of query row r (packed GQA rows share one token).
  auto row_pos = [&](int r) {
    return min((p.rows_per_token == 1 ? r : r / p.rows_per_token) + query_shift, pos_cap);
  };
  const int pos_first = row_pos(row0), pos_last = row_pos(row0 + rows_here - 1);
  const bool has_left = p.window_left >= 0, has_right = p.window_right >= 0;

  // Keys any row of this block may see (inclusive), within this block's split.
  int key_lo = 0, key_hi = seq_total - 1;
  if (has_left) key_lo = max(key_lo, pos_first - p.window_left);
  if (has_right) key_hi = min(key_hi, pos_last + p.window_right);
  if (p.num_splits > 1) {
    key_lo = max(key_lo, split * p.split_tiles * kBlockN);
    key_hi = min(key_hi, (split + 1) * p.split_tiles * kBlockN - 1);
  }

  // key_padding_mask: visible range and count inside [key_lo, key_hi].
  int vis_first = key_lo, vis_last = key_hi;
  bool mask_general = false;
  const bool has_mask = kFull && p.mask != nullptr;
  if (has_mask && key_lo <= key_hi) {
    if (tid == 0) { mask_info[0] = INT_MAX; mask_info[1] = -1; mask_info[2] = 0; }
    __syncthreads();
    int first = INT_MAX, last = -1, count = 0;
    for (int j = key_lo + tid; j <= key_hi; j += kNThreads) {
      if (detail::mask_value(p, b, j)) { first = min(first, j); last = j; ++count; }
    }
    if (count > 0) {
      atomicMin(&mask_info[0], first);
      atomicMax(&mask_info[1], last);
      atomicAdd(&mask_info[2], count);
    }
    __syncthreads();
    vis_first = mask_info[0];
    vis_last = mask_info[1];
    const int visible = mask_info[2];
    key_lo = max(key_lo, vis_first);
    key_hi = min(key_hi, vis_last);
    mask_general = visible != vis_last - vis_first + 1;
  }

  // Global tensors: one [rows, head_dim] slice per (batch, head).
  auto slice = [&](const void* base, const SliceStrides& st, int head, int rows, int row_shift) {
    const T* ptr = static_cast<const T*>(base) + b * st.batch + head * st.head - int64_t(row_shift) * st.row;
    return make_tensor(make_gmem_ptr(ptr), make_shape(rows, Int<kHeadDim>{}), make_stride(st.row, _1{}));
  };
  Tensor mO = make_tensor(make_gmem_ptr(static_cast<T*>(p.out) + b * p.o_st.batch + h * p.o_st.head),
                          make_shape(p.seq_q, Int<kHeadDim>{}), make_stride(p.o_st.row, _1{}));
  Tensor gO = local_tile(mO, Shape<Int<kBlockM>, Int<kHeadDim>>{}, make_coord(m_block, 0));

  typename Tr::GmemTiledCopyO gcopy_o;
  auto gthr_o = gcopy_o.get_thread_slice(tid);
  Tensor tOgO = gthr_o.partition_D(gO);
  Tensor tOcO = gthr_o.partition_D(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{}));
  auto store_out = [&](auto const& regs) {
    CUTE_UNROLL
    for (int m = 0; m < size<1>(tOgO); ++m) {
      if (get<0>(tOcO(0, m, 0)) >= rows_here) continue;
      CUTE_UNROLL
      for (int k = 0; k < size<2>(tOgO); ++k)
        if (get<1>(tOcO(0, m, k)) < p.head_dim) cute::copy(gcopy_o, regs(_, m, k), tOgO(_, m, k));
    }
  };

  // Split-KV: this block's share of the output, normalised, with each row's log2-sum-exp
  // (-inf and zeros for rows that saw no key).
  typename Tr::TiledMmaS mma_s;
  typename Tr::TiledMmaO mma_o;
  auto thr_mma_o = mma_o.get_thread_slice(tid);
  auto store_partial = [&](auto const& acc_rc, auto const& lse_of_row) {
    Tensor cO = thr_mma_o.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{}));
    Tensor cO_rc = make_tensor(cO.data(), Frag::acc_rowcol(cO.layout()));
    const int64_t row_base = ((int64_t(split) * p.batch + b) * p.heads + h) * p.seq_q + row0;
    CUTE_UNROLL
    for (int mi = 0; mi < size<0>(cO_rc); ++mi) {
      const int r = get<0>(cO_rc(mi, 0));
      if (r >= rows_here) continue;
      float* dst = p.o_partial + (row_base + r) * p.head_dim;
      CUTE_UNROLL
      for (int c = 0; c < size<1>(cO_rc); c += 2) {  // columns come in adjacent pairs
        const int col = get<1>(cO_rc(mi, c));
        if (col < p.head_dim) *reinterpret_cast<float2*>(dst + col) = make_float2(acc_rc(mi, c), acc_rc(mi, c + 1));
      }
      if (get<1>(cO_rc(mi, 0)) == 0) p.lse_partial[row_base + r] = lse_of_row(mi);
    }
  };

  if (key_lo > key_hi) {  // no row of this block sees any key: zeros
    if (p.num_splits > 1) {
      Tensor acc = partition_fragment_C(mma_o, Shape<Int<kBlockM>, Int<kHeadDim>>{});
      clear(acc);
      store_partial(make_tensor(acc.data(), Frag::acc_rowcol(acc.layout())), [](int) { return -INFINITY; });
      return;
    }
    Tensor zeros = make_tensor<T>(shape(tOgO));
    clear(zeros);
    store_out(zeros);
    return;
  }
  const int n_lo = key_lo / kBlockN, n_hi = key_hi / kBlockN;

  Tensor gQ = local_tile(slice(p.q, p.q_st, h, p.seq_q, 0), Shape<Int<kBlockM>, Int<kHeadDim>>{},
                         make_coord(m_block, 0));
  auto kv_tiles = [&](const void* base, const SliceStrides& st, int row_shift) {
    return local_tile(slice(base, st, kvh, p.seq_total, row_shift), Shape<Int<kBlockN>, Int<kHeadDim>>{},
                      make_coord(_, 0));  // (kBlockN, kHeadDim, n tiles), indexed by key position
  };
  Tensor gKp = kv_tiles(p.past_k, p.pk_st, 0);
  Tensor gKn = kv_tiles(p.k, p.k_st, p.seq_past);
  Tensor gVp = kv_tiles(p.past_v, p.pv_st, 0);
  Tensor gVn = kv_tiles(p.v, p.v_st, p.seq_past);

  // Tiles from kSmemAlign (kSmemBytes holds the slack): wgmma's 128-byte swizzle repeats every
  // 1024 bytes of address. The array itself is 128-byte aligned: other traits take it as it is,
  // since the integer round trip hides the shared address space from the compiler (on sm_70 it
  // turned the tiles' loads generic, 64-bit addresses: 226 -> 254 registers).
  T* smem_q = reinterpret_cast<T*>(smem);
  if constexpr (Tr::kSmemAlign > 128)
    smem_q = reinterpret_cast<T*>((reinterpret_cast<uintptr_t>(smem) + Tr::kSmemAlign - 1) &
                                  ~uintptr_t(Tr::kSmemAlign - 1));
  // Q, then kStages K tiles, then kStages V tiles.
  constexpr int kTileKV = cosize(typename Tr::SmemLayoutKV{});
  T* smem_k = smem_q + cosize(typename Tr::SmemLayoutQ{});
  T* smem_v = smem_k + Tr::kStages * kTileKV;
  Tensor sQ = make_tensor(make_smem_ptr(smem_q), typename Tr::SmemLayoutQ{});
  Tensor sK = make_tensor(make_smem_ptr(smem_k), typename Tr::SmemLayoutKV{});
  Tensor sV = make_tensor(make_smem_ptr(smem_v), typename Tr::SmemLayoutKV{});
  Tensor sVt = make_tensor(make_smem_ptr(smem_v), typename Tr::SmemLayoutVt{});
  void* smem_scratch = smem_v + Tr::kStages * kTileKV;

  // Global -> shared partitions.
  typename Tr::GmemTiledCopy gcopy;
  auto gthr = gcopy.get_thread_slice(tid);
  Tensor tQgQ = gthr.partition_S(gQ);
  Tensor tQsQ = gthr.partition_D(sQ);
  Tensor tKgKp = gthr.partition_S(gKp);
  Tensor tKgKn = gthr.partition_S(gKn);
  Tensor tVgVp = gthr.partition_S(gVp);
  Tensor tVgVn = gthr.partition_S(gVn);
  Tensor tKsK = gthr.partition_D(sK);
  Tensor tVsV = gthr.partition_D(sV);
  Tensor tQcQ = gthr.partition_S(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{}));
  Tensor tKVcKV = gthr.partition_S(make_identity_tensor(Shape<Int<kBlockN>, Int<kHeadDim>>{}));
  Tensor stage_q = make_tensor<T>(shape(tQsQ));    // used by register-staged loaders only
  Tensor stage_kv = make_tensor<T>(shape(tKsK));

  Tensor acc_o = partition_fragment_C(mma_o, Shape<Int<kBlockM>, Int<kHeadDim>>{});
  Tensor acc_o_rc = make_tensor(acc_o.data(), Frag::acc_rowcol(acc_o.layout()));
  // (row, col) of every score this thread holds, in tile coordinates.
  Tensor tScS = mma_s.get_thread_slice(tid).partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{}));
  Tensor tScS_rc = make_tensor(tScS.data(), Frag::acc_rowcol(tScS.layout()));
  constexpr int kRows = decltype(size<0>(acc_o_rc))::value;
  constexpr int kCols = decltype(size<1>(tScS_rc))::value;
  float row_max[kRows], row_sum[kRows];
  CUTE_UNROLL
  for (int i = 0; i < kRows; ++i) { row_max[i] = -INFINITY; row_sum[i] = 0.f; }
  clear(acc_o);

  auto key_ok_of = [&](int t) -> uint8_t* { return key_ok[Tr::kStages == 1 ? 0 : t & 1]; };
  // Writes key_ok for tile t; a __syncthreads() must pass before it is read.
  auto stage_key_mask = [&](int t) {
    if (!has_mask) return;
    uint8_t* ok = key_ok_of(t);
    for (int i = tid; i < kBlockN; i += kNThreads) {
      const int j = t * kBlockN + i;
      ok[i] = j < seq_total && j >= vis_first && j <= vis_last && (!mask_general || detail::mask_value(p, b, j));
    }
  };
  // Tiles whose keys are not all visible to every row of the block need per-element masks.
  auto needs_mask = [&](int n) {
    const int lo = n * kBlockN, hi = lo + kBlockN - 1;
    return hi >= seq_total || (has_right && hi > pos_first + p.window_right) ||
           (has_left && lo < pos_last - p.window_left) ||
           (has_mask && (mask_general || lo < vis_first || hi > vis_last));
  };
  // Tiles holding keys that the key_padding_mask hides: those V rows are zero-filled so that
  // whatever they hold (NaN, inf) cannot reach a row through 0 * V.
  auto hides_v_rows = [&](int n) {
    const int lo = n * kBlockN, hi = lo + kBlockN - 1;
    return has_mask && (mask_general || lo < vis_first || hi > vis_last);
  };

  const bool plain_scores = !kFull || (p.bias == nullptr && !(p.softcap > 0.f));
  const int64_t bias_at = b * p.bias_b + h * p.bias_h;
  const T* bias = static_cast<const T*>(p.bias) + bias_at;
  const float* bias_f = static_cast<const float*>(p.bias) + bias_at;
  constexpr float kLog2e = 1.4426950408889634f;
  const float exp_scale = kFull ? 1.f : p.scale_log2;

  // Scores of key tile n as the softmax takes them. The lean variant keeps raw scores (scale > 0:
  // the launcher checks) and folds scale * log2(e) into the exponent; the full variant rewrites
  // them in the log2 domain: (softcap(scale * qk) + bias) * log2(e). Hidden keys: -inf.
  auto finish_scores = [&](auto& s, int n) {
    if constexpr (kFull) {
      if (plain_scores) {
        CUTE_UNROLL
        for (int i = 0; i < size(s); ++i) s(i) *= p.scale_log2;
      } else {
        CUTE_UNROLL
        for (int mi = 0; mi < kRows; ++mi) {
          const int qi = row0 + get<0>(tScS_rc(mi, 0));
          CUTE_UNROLL
          for (int ni = 0; ni < kCols; ++ni) {
            float x = s(mi, ni) * p.scale;
            if (p.softcap > 0.f) x = p.softcap * detail::tanh_fast(x / p.softcap);
            const int kj = n * kBlockN + get<1>(tScS_rc(0, ni));
            if (p.bias != nullptr && qi < p.seq_q && kj < seq_total) {
              const int64_t at = qi * p.bias_r + kj * p.bias_c;
              x += p.bias_f32 ? bias_f[at] : static_cast<float>(bias[at]);
            }
            s(mi, ni) = x * kLog2e;
          }
        }
      }
    }
    if (needs_mask(n)) {
      const uint8_t* ok_n = key_ok_of(n);
      // Row by row: the row's visible key range once (its position may take a division), then
      // two compares per score.
      CUTE_UNROLL
      for (int mi = 0; mi < kRows; ++mi) {
        const int64_t qi = row_pos(row0 + get<0>(tScS_rc(mi, 0)));
        const int key_first = has_left ? int(max<int64_t>(qi - p.window_left, 0)) : 0;
        const int key_last = has_right ? int(min<int64_t>(qi + p.window_right, seq_total - 1)) : seq_total - 1;
        CUTE_UNROLL
        for (int ni = 0; ni < kCols; ++ni) {
          const int kj = n * kBlockN + get<1>(tScS_rc(0, ni));
          const bool ok = kj >= key_first && kj <= key_last && (!has_mask || ok_n[kj - n * kBlockN] != 0);
          if (!ok) s(mi, ni) = -INFINITY;
        }
      }
    }
  };

  // Online softmax of one tile's scores: new running max, exponentiate in place, row sums. corr:
  // the factor for what was accumulated before (unset on the first tile), applied to acc_o here
  // when kRescaleNow, else by the caller (rescale_o) once the tensor cores are done with acc_o.
  // The rows are independent, and each row's max and sum run as two interleaved chains: with 8
  // warps per SM the dependent-latency chains, not the tensor cores, set the pace otherwise.
  auto online_softmax = [&](auto& s, bool first, float* corr, auto rescale_now) {
    constexpr bool kRescaleNow = decltype(rescale_now)::value;
    float mx[kRows], mx2[kRows];
    CUTE_UNROLL
    for (int mi = 0; mi < kRows; ++mi) { mx[mi] = row_max[mi]; mx2[mi] = s(mi, 0); }
    CUTE_UNROLL
    for (int ni = 1; ni < kCols; ++ni) {
      CUTE_UNROLL
      for (int mi = 0; mi < kRows; ++mi) {
        if (ni % 2) mx[mi] = fmaxf(mx[mi], s(mi, ni));
        else mx2[mi] = fmaxf(mx2[mi], s(mi, ni));
      }
    }
    float base[kRows];
    CUTE_UNROLL
    for (int mi = 0; mi < kRows; ++mi) {
      const float m = Frag::row_allreduce(fmaxf(mx[mi], mx2[mi]), detail::MaxOp{});
      // A row with no visible key so far keeps max -inf; exponents then use 0 so that every
      // -inf score gives exactly 0 (never -inf - -inf).
      base[mi] = (m == -INFINITY ? 0.f : m) * exp_scale;
      if (!first) {
        corr[mi] = detail::exp2_fast(row_max[mi] * exp_scale - base[mi]);
        row_sum[mi] *= corr[mi];
        if constexpr (kRescaleNow) {
          CUTE_UNROLL
          for (int c = 0; c < size<1>(acc_o_rc); ++c) acc_o_rc(mi, c) *= corr[mi];
        }
      }
      row_max[mi] = m;
    }
    float sum2[kRows];
    CUTE_UNROLL
    for (int mi = 0; mi < kRows; ++mi) sum2[mi] = 0.f;
    CUTE_UNROLL
    for (int ni = 0; ni < kCols; ++ni) {
      CUTE_UNROLL
      for (int mi = 0; mi < kRows; ++mi) {
        const float e = detail::exp2_fast(s(mi, ni) * exp_scale - base[mi]);
        s(mi, ni) = e;
        if (ni % 2) sum2[mi] += e;
        else row_sum[mi] += e;
      }
    }
    CUTE_UNROLL
    for (int mi = 0; mi < kRows; ++mi) row_sum[mi] += sum2[mi];
  };
  auto rescale_o = [&](const float* corr) {
    CUTE_UNROLL
    for (int mi = 0; mi < kRows; ++mi) {
      CUTE_UNROLL
      for (int c = 0; c < size<1>(acc_o_rc); ++c) acc_o_rc(mi, c) *= corr[mi];
    }
  };
  // Loads of key tile t into K (V) stage buffers: V rows the key_padding_mask hides are zero-filled.
  auto load_k = [&](int t, auto& dst) {
    detail::load_tile<Loader>(gcopy, tKgKp(_, _, _, t), tKgKn(_, _, _, t), dst, stage_kv, tKVcKV, t * kBlockN,
                              p.seq_past, seq_total, p.head_dim, detail::AllRows{});
  };
  auto load_v = [&](int t, auto& dst) {
    if (kFull && hides_v_rows(t)) {
      const uint8_t* ok_t = key_ok_of(t);
      detail::load_tile<Loader>(gcopy, tVgVp(_, _, _, t), tVgVn(_, _, _, t), dst, stage_kv, tKVcKV, t * kBlockN,
                                p.seq_past, seq_total, p.head_dim,
                                [&](int row) { return ok_t[row - t * kBlockN] != 0; });
    } else {
      detail::load_tile<Loader>(gcopy, tVgVp(_, _, _, t), tVgVn(_, _, _, t), dst, stage_kv, tKVcKV, t * kBlockN,
                                p.seq_past, seq_total, p.head_dim, detail::AllRows{});
    }
  };

  // present = concat(past, new) written here (FwdParams::present_k; decode tiles, full variant).
  // The host sets it only where every query tile of the grid loads every key tile of its split:
  // no window_left, mask or per-batch lengths, and decode tiles (one query tile, or the packed
  // rows of one token). Key tile t is then written by the KV group's first head at query tile
  // t mod the largest power of two <= their count (no division), from the shared-memory buffer it
  // landed in, between the barrier that hands it over and the one before the buffer's next load.
  // Rows past the keys and columns past head_dim are not written.
  const bool present_head =
      kFull && Tr::kWritesPresent && (p.present_k != nullptr || p.present_v != nullptr) && h % p.kv_group == 0;
  auto writes_present = [&](int t) {
    return present_head && m_block == (t & ((1 << (31 - __clz(int(gridDim.x)))) - 1));
  };
  auto write_present = [&](void* base, const SliceStrides& st, const T* tile, int t) {
    if (base == nullptr || !writes_present(t)) return;
    T* slice = static_cast<T*>(base) + b * st.batch + kvh * st.head;
    Tensor sT = make_tensor(make_smem_ptr(tile), typename Tr::SmemLayoutKV{});
    constexpr int kRowVecs = kHeadDim / 8;  // 16-byte vectors per row
    const int rows = min(kBlockN, p.seq_total - t * kBlockN);
#pragma unroll 1
    for (int v = tid; v < kBlockN * kRowVecs; v += kNThreads) {
      const int r = v / kRowVecs, c = v % kRowVecs * 8;
      if (r < rows && c < p.head_dim)
        *reinterpret_cast<uint4*>(slice + int64_t(t * kBlockN + r) * st.row + c) =
            *reinterpret_cast<const uint4*>(raw_pointer_cast(&sT(r, c)));
    }
  };

  detail::load_tile<Loader>(gcopy, tQgQ, tQgQ, tQsQ, stage_q, tQcQ, row0, INT_MAX, p.seq_q, p.head_dim,
                            detail::AllRows{});
  Loader::land(gcopy, stage_q, tQsQ);
  if constexpr (!Tr::kOverlapSoftmax) {
    // One K and one V buffer: V(n) loads while S = Q K(n)^T is computed, K(n-1) while the
    // softmax and P V(n) run.
    auto gemm = Gemm::bind(tid, sQ, sK, sVt);
    int n = n_hi;
    load_k(n, tKsK);
    Loader::commit();
    stage_key_mask(n);
    for (bool first = true; n >= n_lo; --n, first = false) {
      Tensor acc_s = partition_fragment_C(mma_s, Shape<Int<kBlockM>, Int<kBlockN>>{});
      Loader::wait_all();
      Loader::land(gcopy, stage_kv, tKsK);
      __syncthreads();  // K(n) (and Q) in shared memory; V(n-1)'s readers are done
      load_v(n, tVsV);
      Loader::commit();
      write_present(p.present_k, p.prk_st, smem_k, n);  // K(n) stays until K(n-1) loads, after the next barrier

      gemm.qk(acc_s);
      Tensor s = make_tensor(acc_s.data(), Frag::acc_rowcol(acc_s.layout()));
      finish_scores(s, n);

      Loader::wait_all();
      Loader::land(gcopy, stage_kv, tVsV);
      __syncthreads();  // V(n) in shared memory; every warp is done reading K(n)
      if (n > n_lo) {
        load_k(n - 1, tKsK);
        Loader::commit();
        stage_key_mask(n - 1);  // every thread has passed this tile's masking (barrier above)
      }
      write_present(p.present_v, p.prv_st, smem_v, n);  // V(n) stays until the next iteration's barrier

      float corr[kRows];
      online_softmax(s, first, corr, std::true_type{});
      Tensor rP = detail::to_element<T>(acc_s);
      gemm.pv(acc_o, rP, smem_scratch);
    }
  } else {
    // Two K and two V buffers, tensor cores asynchronous (wgmma): while the softmax of S(n-1)
    // runs, S(n-1) = Q K(n-1)^T has finished and O += P(n) V(n) is still on the tensor cores.
    // Tile t lives in buffer t % 2; the loads of K(n-2) and V(n-1) run for a whole iteration.
    static_assert(Tr::kStages == 2 && !Loader::kStaged && !Tr::kWritesPresent);
    auto sK_of = [&](int t) { return make_tensor(make_smem_ptr(smem_k + (t & 1) * kTileKV), typename Tr::SmemLayoutKV{}); };
    auto sVt_of = [&](int t) { return make_tensor(make_smem_ptr(smem_v + (t & 1) * kTileKV), typename Tr::SmemLayoutVt{}); };
    auto gK_of = [&](int t) { return gthr.partition_D(sK_of(t)); };
    auto gV_of = [&](int t) {
      return gthr.partition_D(make_tensor(make_smem_ptr(smem_v + (t & 1) * kTileKV), typename Tr::SmemLayoutKV{}));
    };
    int n = n_hi;
    {
      auto dk = gK_of(n);
      load_k(n, dk);
      stage_key_mask(n);
      Loader::commit();
    }
    __syncthreads();  // key_ok of tile n_hi, for V's zero-fill
    {
      auto dv = gV_of(n);
      load_v(n, dv);
      if (n > n_lo) {
        auto dk = gK_of(n - 1);
        load_k(n - 1, dk);
        stage_key_mask(n - 1);
      }
      Loader::commit();
    }
    Loader::template wait_pending<1>();
    __syncthreads();  // Q and K(n_hi) in shared memory (V(n_hi) and K(n_hi - 1) may still be in flight)
    Tensor acc_s = partition_fragment_C(mma_s, Shape<Int<kBlockM>, Int<kBlockN>>{});
    Tensor s = make_tensor(acc_s.data(), Frag::acc_rowcol(acc_s.layout()));
    Gemm::qk(acc_s, sQ, sK_of(n), tid);
    finish_scores(s, n);
    float corr[kRows];
    online_softmax(s, true, corr, std::false_type{});
    CUTE_UNROLL
    for (int mi = 0; mi < kRows; ++mi) corr[mi] = 1.f;  // nothing accumulated yet
    Tensor rP = detail::to_element<T>(acc_s);
    // No branch between a product's issue and its wait (ptxas serialises wgmma otherwise): the
    // last tile, which has no next S, is peeled off the loop.
    for (; n > n_lo; --n) {
      Loader::wait_all();
      __syncthreads();  // K(n-1), V(n) landed; QK(n) and P(n+1) V(n+1) are done in every warp
      // The products first, so that the tensor cores start while this thread issues its loads
      // (into the other buffers: V(n-1)'s and K(n)'s, which no product in flight reads).
      // The output's rescale (the previous tile's softmax) runs while Q K(n-1)^T is computed.
      Gemm::qk_issue(acc_s, sQ, sK_of(n - 1), tid);
      rescale_o(corr);
      Gemm::pv_issue(acc_o, rP, sVt_of(n), tid);
      {
        auto dv = gV_of(n - 1);
        load_v(n - 1, dv);  // key_ok of n - 1: staged with K(n - 1), a barrier ago
      }
      if (n - 2 >= n_lo) {
        auto dk = gK_of(n - 2);
        load_k(n - 2, dk);
        stage_key_mask(n - 2);  // tile n's masking (this buffer's last reader) is done
      }
      Loader::commit();
      Gemm::template wait<1>(acc_s);
      finish_scores(s, n - 1);
      online_softmax(s, false, corr, std::false_type{});
      // Pin the softmax before the wait for P V: otherwise ptxas moves the wait above it (seen
      // in the SASS) and the softmax no longer overlaps the product.
      Gemm::fence(acc_s);
      Gemm::pin_before_wait(row_sum[0] + row_sum[kRows - 1]);
      Gemm::template wait<0>(acc_o, rP);
      rP = detail::to_element<T>(acc_s);
    }
    rescale_o(corr);
    Loader::wait_all();
    __syncthreads();  // V(n_lo) landed
    Gemm::pv(acc_o, rP, sVt_of(n_lo), tid, smem_scratch);
  }

  // Epilogue: divide by the row sums (rows that saw no key: exactly zero), via shared memory
  // (the Q buffer) to full-width global stores.
  float lse[kRows];
  // A softmax sink (full variant; applied by the merge under split-KV) scales a row by
  // 2^lse / (2^lse + e^sink).
  const bool has_sink = kFull && p.num_splits == 1 && (p.head_sink != nullptr || p.smooth_softmax);
  CUTE_UNROLL
  for (int mi = 0; mi < kRows; ++mi) {
    const float l = Frag::row_allreduce(row_sum[mi], detail::SumOp{});
    float inv = 1.f / l;
    lse[mi] = l == 0.f ? -INFINITY : row_max[mi] * exp_scale + __log2f(l);
    if (has_sink) inv *= sink_factor_of<T>(p, h, row0 + get<0>(tScS_rc(mi, 0)), lse[mi]);
    CUTE_UNROLL
    for (int c = 0; c < size<1>(acc_o_rc); ++c) acc_o_rc(mi, c) = l == 0.f ? 0.f : acc_o_rc(mi, c) * inv;
  }
  if (p.num_splits > 1) {
    store_partial(acc_o_rc, [&](int mi) { return lse[mi]; });
    return;
  }
  Tensor rO = detail::to_element<T>(acc_o);
  Tensor sO = make_tensor(make_smem_ptr(smem_q), typename Tr::SmemLayoutO{});
  auto r2s_o = make_tiled_copy_C(typename Tr::SmemCopyAtomO{}, mma_o);
  auto r2s_o_thr = r2s_o.get_thread_slice(tid);
  __syncthreads();  // every warp is done reading sQ
  cute::copy(r2s_o, r2s_o_thr.retile_S(rO), r2s_o_thr.partition_D(sO));
  __syncthreads();
  Tensor tOsO = gthr_o.partition_S(sO);
  Tensor tOrO = make_tensor<T>(shape(tOgO));
  cute::copy(gcopy_o, tOsO, tOrO);
  store_out(tOrO);
}

// Whether this device pass compiles sm_90a (arch-specific features: wgmma).
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
inline constexpr bool kPassHasSm90a = true;
#else
inline constexpr bool kPassHasSm90a = false;
#endif

// The __CUDA_ARCH__ range a traits compiles its body for: outside it the kernel is empty, so each
// architecture's code holds one traits per (element type, head size). The stand-alone check
// builds with FASTATTN_CUDA_ALL_TRAITS to also run older traits on newer GPUs.
template <class Tr>
constexpr bool traits_builds_for(int arch) {
  if (Tr::kNeedsSm90a && !kPassHasSm90a) return false;
#if defined(FASTATTN_CUDA_ALL_TRAITS)
  return arch >= Tr::kArchMin;
#else
  return arch >= Tr::kArchMin && arch < Tr::kArchMax && !(Tr::kReplacedOnSm90a && kPassHasSm90a);
#endif
}

template <class Tr, bool kFull>
__global__ void __launch_bounds__(Tr::kNThreads) attention_fwd_kernel(const __grid_constant__ FwdParams p) {
#if defined(__CUDA_ARCH__)
  if constexpr (traits_builds_for<Tr>(__CUDA_ARCH__)) {
    attention_tile<Tr, kFull>(p);
  } else {
    __trap();  // the host launches a traits only on the architectures it was built for
  }
#endif
}

}  // namespace fastattn::cuda
