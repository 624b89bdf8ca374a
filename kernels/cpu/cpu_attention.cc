// CPU FastAttention forward: plans the call (ISA, tile sizes, scratch layout, key-padding
// summary), copies present_k/v, and runs one work item per (batch, head, query block) on the
// caller's ParallelFor. The per-tile math is in tile_kernel.cc, compiled once per ISA.
#include "cpu_attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <stdexcept>
#include <cstring>
#include <new>
#include <string>
#include <tuple>
#include <vector>

#include "tile_kernel.h"
#include "vector_math.h"

namespace fastattn::cpu {
namespace {

Isa detect_isa() {
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  // The levels named as in -march, so the check matches the flags each copy was built with.
#if defined(FASTATTN_HAVE_ISA_AVX512)
  if (__builtin_cpu_supports("x86-64-v4")) return Isa::kAvx512;
#endif
#if defined(FASTATTN_HAVE_ISA_AVX2)
  if (__builtin_cpu_supports("x86-64-v3")) return Isa::kAvx2;
#endif
  return Isa::kBaseline;
#elif defined(FASTATTN_HAVE_ISA_NEON)
  return Isa::kNeon;
#else
  return Isa::kBaseline;
#endif
}

// FASTATTN_CPU_ISA=baseline|avx2|avx512|neon caps the choice (for tests of each compiled
// path); it never selects an ISA the CPU lacks.
Isa selected() {
  static const Isa isa = [] {
    const Isa best = detect_isa();
    const char* cap = std::getenv("FASTATTN_CPU_ISA");
    if (!cap) return best;
    const std::string want(cap);
    const Isa capped = want == "baseline" ? Isa::kBaseline : want == "avx2" ? Isa::kAvx2
                     : want == "avx512" ? Isa::kAvx512 : best;
    if (best == Isa::kNeon) return best;
    return static_cast<int>(capped) < static_cast<int>(best) ? capped : best;
  }();
  return isa;
}

struct IsaKernels {
  AttendQueryBlockFn attend;
  PackKvRowsFn pack;
};
#define FASTATTN_KERNELS(ns) IsaKernels{ns::attend_query_block, ns::pack_kv_rows}

IsaKernels kernels_for(Isa isa) {
  switch (isa) {
#if defined(FASTATTN_HAVE_ISA_AVX512)
    case Isa::kAvx512: return FASTATTN_KERNELS(isa_avx512);
#endif
#if defined(FASTATTN_HAVE_ISA_AVX2)
    case Isa::kAvx2: return FASTATTN_KERNELS(isa_avx2);
#endif
#if defined(FASTATTN_HAVE_ISA_NEON)
    case Isa::kNeon: return FASTATTN_KERNELS(isa_neon);
#endif
    default: break;
  }
#if defined(FASTATTN_HAVE_ISA_BASELINE)
  return FASTATTN_KERNELS(isa_baseline);
#else
  return FASTATTN_KERNELS(isa_neon);
#endif
}
#undef FASTATTN_KERNELS

int64_t round16(int64_t n) { return (n + 15) / 16 * 16; }

constexpr int64_t kItemsPerWave = 64;  // work items per wave of packed (batch, kv head) pairs
constexpr int64_t kPackRows = 512;     // rows per packing work item

ScratchLayout scratch_layout(const AttentionParams& p, const TileTraits& t) {
  ScratchLayout s;
  const bool convert = p.dtype != ElemType::kFloat32;  // only keys need a converted copy
  s.q_ld = (t.block_q + kQueryPad - 1) / kQueryPad * kQueryPad + 16;
  s.o_ld = round16(p.head_dim_v);
  s.v_ld = s.o_ld + 16;
  int64_t at = 0;
  auto take = [&at](int64_t floats) { const int64_t off = at; at += round16(floats); return off; };
  s.qt = take(p.head_dim * s.q_ld);
  s.k_ld = round16(p.head_dim) + 16;
  s.k = take(convert ? t.block_k * p.head_dim : 0);
  s.v = take(t.block_k * s.v_ld);
  s.scores = take(t.block_k * s.q_ld);
  s.out = take(t.block_q * s.o_ld);
  s.rows = take(6 * s.q_ld);
  s.row_bounds = take(3 * 2 * s.q_ld);  // int64: lo, hi, extent in the current tile
  s.qrot = take(p.rotary.cos_cache ? p.head_dim : 0);
  s.total = at;
  return s;
}

// Per-thread scratch, O(tile): reused across work items and calls on the same thread.
float* thread_scratch(int64_t floats) {
  struct Buffer {
    float* data = nullptr;
    int64_t size = 0;
    ~Buffer() { std::free(data); }
  };
  thread_local Buffer buf;
  if (buf.size < floats) {
    std::free(buf.data);
    buf.size = 0;
    buf.data = static_cast<float*>(std::aligned_alloc(64, static_cast<size_t>(floats) * 4));
    if (!buf.data) throw std::bad_alloc();
    buf.size = floats;
  }
  return buf.data;
}

// present = concat(past, new) along the sequence, one (batch, kv head) per work item.
void copy_present(const AttentionParams& p, const ParallelFor& parallel_for) {
  if (!p.present_k.data && !p.present_v.data) return;
  const size_t es = elem_size(p.dtype);
  auto copy_rows = [&](const TensorView& dst, const TensorView& past, const TensorView& cur, int64_t b, int64_t h,
                       int64_t cols) {
    if (!dst.data) return;
    const size_t row_bytes = static_cast<size_t>(cols) * es;
    char* d = static_cast<char*>(dst.data);
    for (int64_t j = 0; j < p.seq_total(); ++j) {
      const bool in_past = j < p.seq_past;
      const TensorView& src = in_past ? past : cur;
      const int64_t js = in_past ? j : j - p.seq_past;
      const char* s = static_cast<const char*>(src.data) + (b * src.batch_stride + h * src.head_stride + js * src.seq_stride) * es;
      char* to = d + (b * dst.batch_stride + h * dst.head_stride + j * dst.seq_stride) * es;
      if (to != s) std::memcpy(to, s, row_bytes);  // (rotated new keys are written in present already)
    }
  };
  parallel_for(p.batch * p.kv_num_heads, [&](int64_t bh) {
    const int64_t b = bh / p.kv_num_heads, h = bh % p.kv_num_heads;
    copy_rows(p.present_k, p.past_k, p.k, b, h, p.head_dim);
    copy_rows(p.present_v, p.past_v, p.v, b, h, p.head_dim_v);
  });
}

// An in-place cache given a past of its own (present = past + new): present's rows [0, past[b])
// come from past, the rest is zeroed (the new rows are written after), as onnxruntime fills it.
void fill_present_from_past(const AttentionParams& p, const std::vector<int64_t>& past,
                            const ParallelFor& parallel_for) {
  const size_t es = elem_size(p.dtype);
  parallel_for(p.batch * p.kv_num_heads, [&](int64_t bh) {
    const int64_t b = bh / p.kv_num_heads, h = bh % p.kv_num_heads;
    for (auto [dst, src, cols] : {std::tuple{&p.present_k, &p.past_k, p.head_dim},
                                  std::tuple{&p.present_v, &p.past_v, p.head_dim_v}}) {
      const size_t row_bytes = static_cast<size_t>(cols) * es;
      for (int64_t j = 0; j < p.kv_capacity; ++j) {
        char* to = static_cast<char*>(dst->data) + (b * dst->batch_stride + h * dst->head_stride + j * dst->seq_stride) * es;
        if (j < past[b])
          std::memcpy(to, static_cast<const char*>(src->data) +
                              (b * src->batch_stride + h * src->head_stride + j * src->seq_stride) * es, row_bytes);
        else
          std::memset(to, 0, row_bytes);
      }
    }
  });
}

// Packing keys and values pays when each row would otherwise be fetched by several query
// blocks from rows that are not consecutive (or converted again each time): 4D float32 keys
// and values are read in place.
bool packs_kv(const AttentionParams& p, int64_t query_blocks) {
  auto apart = [](const TensorView& v, int64_t cols) { return v.data && v.seq_stride != cols; };
  const bool strided = apart(p.k, p.head_dim) || apart(p.v, p.head_dim_v) || apart(p.past_k, p.head_dim) ||
                       apart(p.past_v, p.head_dim_v);
  return query_blocks >= 4 && (strided || p.dtype != ElemType::kFloat32);
}

constexpr int64_t kMinSplitKeys = 512;  // keys per work item when one row block's keys are split

// Reusable buffer of the calling thread (partials of a key split), grown on demand.
float* caller_buffer(size_t floats) {
  thread_local std::vector<float> buf;
  if (buf.size() < floats) buf.resize(floats);
  return buf.data();
}

// Merges the KeySplit partials of `chunks` items (one unit of rows each) into the output:
// m = max m_c, l = sum l_c e^(m_c - m), acc likewise, plus the sink term, as the tile kernel's
// own normalisation.
void merge_partials(const TilePlan& plan, const float* partials, int64_t chunks, int64_t rows, int64_t b, int64_t h,
                    int64_t rows_per_head) {
  const AttentionParams& p = *plan.params;
  const int64_t pld = partial_ld(plan.scratch), Dv = p.head_dim_v;
  const double unit = plan.exact_shift ? 1.0 : 1.4426950408889634;  // row maxima: logits times unit
  auto ex = [&](double x) { return std::exp2(plan.exact_shift ? x * 1.4426950408889634 : x); };
  std::vector<double> acc(static_cast<size_t>(Dv));
  std::vector<float> out(static_cast<size_t>(Dv));
  for (int64_t r = 0; r < rows; ++r) {
    double top = -INFINITY;
    for (int64_t c = 0; c < chunks; ++c) top = std::max<double>(top, partials[(c * rows + r) * pld]);
    const int64_t head = h + r / rows_per_head;
    const double sink = plan.sinks ? plan.sinks[head] * unit : -INFINITY;
    const double m = top;
    top = std::max(top, sink);
    double l = 0;
    std::fill(acc.begin(), acc.end(), 0.0);
    if (m != -INFINITY && top != -INFINITY)
      for (int64_t c = 0; c < chunks; ++c) {
        const float* part = partials + (c * rows + r) * pld;
        if (part[0] == -INFINITY) continue;
        const double f = ex(part[0] - top);
        l += part[1] * f;
        for (int64_t d = 0; d < Dv; ++d) acc[d] += part[2 + d] * f;
      }
    if (sink != -INFINITY) l += ex(sink - top);
    const double inv = l > 0 ? 1.0 / l : 0.0;
    for (int64_t d = 0; d < Dv; ++d) out[d] = static_cast<float>(acc[d] * inv);
    // (a NaN sum, from a NaN query: acc holds NaN and stays NaN)
    if (!(l == l)) std::fill(out.begin(), out.end(), NAN);
    void* dst = static_cast<char*>(p.out.data) +
                (b * p.out.batch_stride + head * p.out.head_stride + (r % rows_per_head) * p.out.seq_stride) *
                    static_cast<int64_t>(elem_size(p.dtype));
    from_float_scaled(out.data(), 1.f, Dv, p.dtype, dst);
  }
}

// Every work item of the call (and the packing of keys and values it needs).
void attend_all(const AttentionParams& p, TilePlan plan, const IsaKernels& kernels, const ParallelFor& parallel_for) {
  const int64_t S = p.seq_total();
  const int64_t block_q = plan.traits.block_q, blocks = (p.seq_q + block_q - 1) / block_q;
  // GQA with few query rows (decode): the query heads of one KV group go into one work item, their
  // rows stacked, so its K and V tiles are read once per group and the GEMMs get more rows.
  // (A per-head bias would need a per-row bias base: not stacked.)
  const int64_t group = p.num_heads / p.kv_num_heads;
  const bool stacked = group > 1 && !p.bias && p.seq_q * group <= block_q;
  // One row block per unit ((batch, kv group) stacked, else (batch, head)) and few units (decode
  // at a small batch): the keys are split too, so that every thread has work; each item leaves
  // its max, sum and accumulator, merged per row afterwards (the log-sum-exp merge of flash
  // decoding). The cache is read in place, each key once.
  const int64_t units = stacked ? p.batch * p.kv_num_heads : p.batch * p.num_heads;
  if ((stacked || blocks == 1) && units < kItemsPerWave && S >= 2 * kMinSplitKeys) {
    const int64_t chunks = std::min((kItemsPerWave + units - 1) / units, S / kMinSplitKeys);
    const int64_t per = (S + chunks - 1) / chunks;
    const int64_t heads = stacked ? group : 1, rows = heads * p.seq_q;
    const int64_t unit_floats = chunks * rows * partial_ld(plan.scratch);
    float* const partials = caller_buffer(static_cast<size_t>(units * unit_floats));
    auto head_of = [&](int64_t u) { return stacked ? u % p.kv_num_heads * group : u % p.num_heads; };
    auto batch_of = [&](int64_t u) { return stacked ? u / p.kv_num_heads : u / p.num_heads; };
    parallel_for(units * chunks, [&](int64_t item) {
      const int64_t u = item / chunks, c = item % chunks;
      KeySplit split;
      split.lo = c * per;
      split.hi = std::min(S, split.lo + per);
      split.partial = partials + u * unit_floats + c * rows * partial_ld(plan.scratch);
      kernels.attend(plan, batch_of(u), head_of(u), heads, 0, split, thread_scratch(plan.scratch.total));
    });
    parallel_for(units, [&](int64_t u) {
      merge_partials(plan, partials + u * unit_floats, chunks, rows, batch_of(u), head_of(u), p.seq_q);
    });
    return;
  }
  const KeySplit whole;
  if (stacked) {
    parallel_for(p.batch * p.kv_num_heads, [&](int64_t item) {
      kernels.attend(plan, item / p.kv_num_heads, item % p.kv_num_heads * group, group, 0, whole,
                     thread_scratch(plan.scratch.total));
    });
    return;
  }
  // Within a head the last query blocks come first: under causal masks they cost the most,
  // so a dynamic scheduler ends with the cheap ones.
  auto attend_pairs = [&](int64_t first_pair, int64_t pairs) {
    parallel_for(pairs * group * blocks, [&](int64_t item) {
      const int64_t bh = first_pair * group + item / blocks, qb = blocks - 1 - item % blocks;
      kernels.attend(plan, bh / p.num_heads, bh % p.num_heads, 1, qb * block_q, whole,
                     thread_scratch(plan.scratch.total));
    });
  };
  const int64_t pairs = p.batch * p.kv_num_heads;
  if (!packs_kv(p, blocks)) {
    attend_pairs(0, pairs);
    return;
  }
  // Keys and values whose rows lie apart (3D [B, S, N*D]: a page holds a row or two, and the
  // hardware prefetcher stays within a page) or need converting are packed once per (batch, kv head)
  // instead of once per tile and query block. Pairs go in waves of enough work items to keep
  // the threads busy; the buffer holds one wave (O(S) memory, never O(S^2)).
  const int64_t wave = std::min(pairs, std::max<int64_t>(1, (kItemsPerWave + group * blocks - 1) / (group * blocks)));
  const int64_t chunks = (S + kPackRows - 1) / kPackRows;
  std::vector<float> packed(static_cast<size_t>(wave * S * (plan.scratch.k_ld + plan.scratch.v_ld)));
  plan.packed_k = packed.data();
  plan.packed_v = packed.data() + wave * S * plan.scratch.k_ld;
  for (int64_t first = 0; first < pairs; first += wave) {
    const int64_t n = std::min(wave, pairs - first);
    plan.packed_first = first;
    parallel_for(n * chunks, [&](int64_t item) {
      const int64_t j0 = item % chunks * kPackRows;
      kernels.pack(plan, first + item / chunks, j0, std::min(S, j0 + kPackRows));
    });
    attend_pairs(first, n);
  }
}

// Rows [row0, row0 + n) of (b, h) in a view, as a byte pointer.
char* row_ptr(const TensorView& v, ElemType t, int64_t b, int64_t h, int64_t row) {
  return static_cast<char*>(v.data) +
         (b * v.batch_stride + h * v.head_stride + row * v.seq_stride) * static_cast<int64_t>(elem_size(t));
}

// The new key and value rows of every (batch, kv head) written to dst_k / dst_v at row
// at_row[b] + s: keys rotated when rotary is on (at their positions), values copied.
// dst_v null: keys only.
void write_new_rows(const AttentionParams& p, const TensorView& dst_k, const TensorView* dst_v,
                    const std::vector<int64_t>& at_row, const std::vector<int64_t>& rot_pos0,
                    const ParallelFor& parallel_for) {
  const ElemType t = p.dtype;
  const size_t es = elem_size(t);
  const RotaryParams& rp = p.rotary;
  parallel_for(p.batch * p.kv_num_heads, [&](int64_t bh) {
    const int64_t b = bh / p.kv_num_heads, h = bh % p.kv_num_heads;
    std::vector<float> row(rp.cos_cache ? static_cast<size_t>(p.head_dim) : 0);
    for (int64_t s = 0; s < p.seq_kv; ++s) {
      const char* k_src = row_ptr(p.k, t, b, h, s);
      char* k_dst = row_ptr(dst_k, t, b, h, at_row[b] + s);
      if (rp.cos_cache) {
        to_float(k_src, t, p.head_dim, row.data());
        rotate_row(row.data(), rp, rp.position_ids ? rp.position_ids[b * rp.position_batch_stride + s] : rot_pos0[b] + s,
                   t);
        from_float_scaled(row.data(), 1.f, p.head_dim, t, k_dst);
      } else if (k_dst != k_src) {
        std::memmove(k_dst, k_src, static_cast<size_t>(p.head_dim) * es);
      }
      if (dst_v) {
        const char* v_src = row_ptr(p.v, t, b, h, s);
        char* v_dst = row_ptr(*dst_v, t, b, h, at_row[b] + s);
        if (v_dst != v_src) std::memmove(v_dst, v_src, static_cast<size_t>(p.head_dim_v) * es);
      }
    }
  });
}

}  // namespace

void attention_forward(const AttentionParams& p_in, const ParallelFor& parallel_for) {
  // The params the tile kernel reads: keys j < seq_past from past_k/past_v, the rest from k/v.
  // An in-place cache becomes "everything from present" (its new rows written first); rotated
  // new keys are read from where they were written.
  AttentionParams p = p_in;
  const int64_t B = p.batch;
  const bool in_place = p.kv_capacity > 0;
  std::vector<int64_t> past(B), key_end(B), q_pos0(B), pos_cap(B);
  for (int64_t b = 0; b < B; ++b) {
    past[b] = in_place && p.past_len ? p.past_len[b] : p.seq_past;
    if (past[b] < 0 || (in_place && past[b] + p.seq_kv > p.kv_capacity))
      throw std::runtime_error("past length " + std::to_string(past[b]) + " of batch " + std::to_string(b) +
                               " leaves no room for " + std::to_string(p.seq_kv) + " new rows in a cache of " +
                               std::to_string(p.kv_capacity));
  }
  std::vector<char> rotated_k;  // rotated new keys when no present tensor takes them
  if (in_place) {
    int64_t space = 0;
    for (int64_t b = 0; b < B; ++b) space = std::max(space, past[b] + p.seq_kv);
    if (p.past_k.data && p.past_k.data != p.present_k.data) fill_present_from_past(p, past, parallel_for);
    const TensorView present_v = p.present_v;
    write_new_rows(p_in, p.present_k, &present_v, past, past, parallel_for);
    p.past_k = p.present_k;
    p.past_v = p.present_v;
    p.seq_past = space;
    p.seq_kv = 0;
    p.k = p.v = TensorView{};
    for (int64_t b = 0; b < B; ++b) {
      key_end[b] = past[b] + p_in.seq_kv;
      q_pos0[b] = past[b];
    }
  } else {
    if (p.rotary.cos_cache && p.seq_kv > 0) {
      TensorView dst;  // present's new rows, else a [B, kv heads, S_kv, D] buffer
      if (p.present_k.data) {
        dst = p.present_k;
        dst.data = row_ptr(p.present_k, p.dtype, 0, 0, p.seq_past);
      } else {
        rotated_k.resize(static_cast<size_t>(B * p.kv_num_heads * p.seq_kv * p.head_dim) * elem_size(p.dtype));
        dst.data = rotated_k.data();
        dst.dtype = p.dtype;
        dst.seq_stride = p.head_dim;
        dst.head_stride = p.seq_kv * p.head_dim;
        dst.batch_stride = p.kv_num_heads * dst.head_stride;
      }
      std::vector<int64_t> zero(B, 0);
      write_new_rows(p_in, dst, nullptr, zero, past, parallel_for);
      p.k = dst;
    }
    copy_present(p, parallel_for);
    for (int64_t b = 0; b < B; ++b) {
      key_end[b] = p.seq_total();
      q_pos0[b] = p.seq_total() - p.seq_q;  // bottom-right
    }
  }
  const int64_t big = std::numeric_limits<int64_t>::max() / 4;
  for (int64_t b = 0; b < B; ++b) {
    pos_cap[b] = big;
    if (p.kv_len) {
      const int64_t valid = std::max<int64_t>(0, p.kv_len[b]);
      key_end[b] = std::min(key_end[b], valid);
      pos_cap[b] = valid - 1;  // a padded query row takes the last valid key's position
    }
  }
  std::vector<float> sinks;
  if (p.head_sink || p.smooth_softmax) {
    sinks.assign(static_cast<size_t>(p.num_heads), 0.f);
    if (p.head_sink)
      for (int64_t h = 0; h < p.num_heads; ++h) sinks[h] = load_one(p.head_sink, h, p.dtype);
  }

  const Isa isa = selected();
  TilePlan plan;
  plan.params = &p;
  plan.traits = tile_traits(isa, p.head_dim, p.head_dim_v, p.causal());
  plan.scratch = scratch_layout(p, plan.traits);
  plan.key_end = key_end.data();
  plan.q_pos0 = q_pos0.data();
  plan.pos_cap = pos_cap.data();
  plan.rot_pos0 = past.data();
  plan.sinks = sinks.empty() ? nullptr : sinks.data();

  // key_padding_mask summary: O(B * S_total) prefix counts plus the visible span per batch.
  const int64_t S = p.seq_total();
  std::vector<int32_t> prefix;
  std::vector<int64_t> first, end;
  if (p.key_padding_mask) {
    prefix.resize(static_cast<size_t>(p.batch * (S + 1)));
    first.assign(static_cast<size_t>(p.batch), S);
    end.assign(static_cast<size_t>(p.batch), 0);
    for (int64_t b = 0; b < p.batch; ++b) {
      int32_t* pre = prefix.data() + b * (S + 1);
      pre[0] = 0;
      for (int64_t j = 0; j < S; ++j) {
        const bool vis = j < key_end[b] && key_visible(p, b, j);
        pre[j + 1] = pre[j] + (vis ? 1 : 0);
        if (vis) {
          if (first[b] == S) first[b] = j;
          end[b] = j + 1;
        }
      }
    }
    plan.visible_prefix = prefix.data();
    plan.first_visible = first.data();
    plan.end_visible = end.data();
  }

  std::atomic<bool> shift_too_coarse{false};
  plan.shift_too_coarse = &shift_too_coarse;
  attend_all(p, plan, kernels_for(isa), parallel_for);
  if (shift_too_coarse.load()) {  // scores too large for the fast shift: again, exactly (tile_kernel.h)
    plan.exact_shift = true;
    attend_all(p, plan, kernels_for(isa), parallel_for);
  }
}

const char* selected_isa() {
  switch (selected()) {
    case Isa::kAvx512: return "x86-64-v4 (avx512)";
    case Isa::kAvx2: return "x86-64-v3 (avx2+fma)";
    case Isa::kNeon: return "aarch64-neon";
    case Isa::kBaseline: break;
  }
  return "baseline";
}

const char* compiled_isas() {
  static const char* const names = ""  // each with a leading space, which is skipped below
#if defined(FASTATTN_HAVE_ISA_BASELINE)
                                   " baseline"
#endif
#if defined(FASTATTN_HAVE_ISA_AVX2)
                                   " x86-64-v3"
#endif
#if defined(FASTATTN_HAVE_ISA_AVX512)
                                   " x86-64-v4"
#endif
#if defined(FASTATTN_HAVE_ISA_NEON)
                                   " aarch64-neon"
#endif
      ;
  return names[0] ? names + 1 : names;
}

}  // namespace fastattn::cpu
