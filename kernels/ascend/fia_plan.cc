// The plan for CANN's aclnnFusedInferAttentionScore (fia_plan.h). Each rule below names the
// operator's documented behaviour it relies on ("doc": aclnnFusedInferAttentionScore_en.md of
// hicann/ops-transformer; "notes": ../shared/notes/ascend-cann.md). tests/ascend/ checks every
// plan against an emulator of those rules and our float64 reference.
#include "ascend/fia_plan.h"

#include <algorithm>
#include <cstring>
#include <sstream>

namespace fastattn::ascend {
namespace {

std::string str(int64_t v) { return std::to_string(v); }

// Our contract's visibility (attention_params.h): key j of batch b is visible to query row i iff
// the key is valid (key_padding_mask, kv_len) and lies in the row's causal/window band, the row
// sitting at i + S_total - S_q (bottom-right), capped at kv_len[b] - 1 for padded rows.
struct Visibility {
  const AttentionParams& p;
  const PlanInputs& in;
  int64_t T, Sq;

  bool key_ok(int64_t b, int64_t j) const {
    if (!in.key_visible.empty() && !in.key_visible[static_cast<size_t>(b * T + j)]) return false;
    return in.kv_len.empty() || j < in.kv_len[static_cast<size_t>(b)];
  }
  int64_t row_pos(int64_t b, int64_t i) const {
    int64_t pos = i + T - Sq;
    if (!in.kv_len.empty()) pos = std::min<int64_t>(pos, std::max<int32_t>(0, in.kv_len[static_cast<size_t>(b)]) - 1);
    return pos;
  }
  // The band [lo, hi] (inclusive, may be empty or reach outside [0, T)) of row i.
  void band(int64_t b, int64_t i, int64_t* lo, int64_t* hi) const {
    const int64_t pos = row_pos(b, i);
    *lo = p.window_left >= 0 ? pos - p.window_left : 0;
    *hi = p.window_right >= 0 ? pos + p.window_right : T - 1;
  }
  bool visible(int64_t b, int64_t i, int64_t j) const {
    int64_t lo, hi;
    band(b, i, &lo, &hi);
    return j >= lo && j <= hi && key_ok(b, j);
  }
};

// Dense strides of a [B, H, S, D] tensor stored as BNSD or as BSH (= BSND); axes of size 1 may
// have any stride (so at S == 1 or H == 1 both layouts describe the same memory).
bool dense_as(const TensorView& v, int64_t B, int64_t H, int64_t S, int64_t D, bool bnsd) {
  const int64_t ss = bnsd ? D : H * D, hs = bnsd ? S * D : D, bs = H * S * D;
  return (B == 1 || v.batch_stride == bs) && (H == 1 || v.head_stride == hs) && (S == 1 || v.seq_stride == ss);
}

const char* layout_name(bool bnsd) { return bnsd ? "BNSD" : "BSH"; }

}  // namespace

size_t key_padding_mask_bytes(const AttentionParams& p) {
  if (!p.key_padding_mask || p.batch < 1) return 0;
  const size_t elem = p.mask_type == MaskType::kBool ? 1 : p.mask_type == MaskType::kInt32 ? 4 : 8;
  return static_cast<size_t>((p.batch - 1) * p.mask_batch_stride + p.seq_total()) * elem;
}

std::string read_key_padding_mask(const AttentionParams& p, const void* host_copy, PlanInputs* in) {
  in->key_visible.clear();
  if (!p.key_padding_mask) return "";
  if (!host_copy) return "read_key_padding_mask: no host copy of key_padding_mask";
  const int64_t T = p.seq_total();
  in->key_visible.resize(static_cast<size_t>(p.batch * T));
  const auto* bytes = static_cast<const unsigned char*>(host_copy);
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t j = 0; j < T; ++j) {
      const int64_t e = b * p.mask_batch_stride + j;
      bool vis;
      if (p.mask_type == MaskType::kBool) {
        vis = bytes[e] != 0;
      } else if (p.mask_type == MaskType::kInt32) {
        int32_t v;
        std::memcpy(&v, bytes + e * 4, 4);
        vis = v != 0;
      } else if (p.mask_type == MaskType::kInt64) {
        int64_t v;
        std::memcpy(&v, bytes + e * 8, 8);
        vis = v != 0;
      } else {
        return "read_key_padding_mask: key_padding_mask has no type";
      }
      in->key_visible[static_cast<size_t>(b * T + j)] = vis ? 1 : 0;
    }
  return "";
}

std::string static_decline(const AttentionParams& p, const PlanInputs& in) {
  if (p.rotary.cos_cache)
    return "rotary: rotary embedding is not planned on the operator (its rope inputs exist only in later versions)";
  if (p.kv_capacity > 0 || p.past_len)
    return "kv_capacity: an in-place KV cache (GroupQueryAttention's shared past/present buffers) is not planned";
  if (p.softcap > 0.f) return "softcap: the operator has no tanh soft-capping of the logits";
  if (p.smooth_softmax || p.head_sink)
    return "sink: smooth_softmax / head_sink (an extra softmax denominator term) is not in operator V1";
  if (p.dtype == ElemType::kFloat32) {
    if (!in.allow_low_precision)
      return "float32: the operator computes in float16/bfloat16 only (allow_low_precision computes float32 nodes "
             "in one of them)";
    if (in.low_precision_type == ElemType::kFloat32)
      return "float32: low_precision_type must be float16 or bfloat16";
  }
  if (p.head_dim > 0 && p.head_dim_v > 0 && p.head_dim != p.head_dim_v)
    return "head_dim_v: the operator needs equal key and value head sizes (got D = " + str(p.head_dim) +
           ", Dv = " + str(p.head_dim_v) + ")";
  if (p.num_heads > 0 && p.kv_num_heads > 0 && p.num_heads / p.kv_num_heads > 64)
    return "head_ratio: num_heads / kv_num_heads must be <= 64 on the operator (got " +
           str(p.num_heads / p.kv_num_heads) + ")";
  if (p.num_heads > 256) return "num_heads: the operator takes at most 256 query heads (got " + str(p.num_heads) + ")";
  if (p.head_dim > 512) return "head_dim: the operator takes head sizes up to 512 (got " + str(p.head_dim) + ")";
  // S_q unknown (0, session creation) counts as S_q > 1: the same node usually runs prefill too.
  if (p.seq_q != 1 && p.head_dim > 0 && p.head_dim % 16)
    return "head_dim: with S_q > 1 the operator needs a head size that is a multiple of 16 (got " +
           str(p.head_dim) + ")";
  if (p.batch > 65536) return "batch: the operator takes at most 65536 batches (got " + str(p.batch) + ")";
  return "";
}

std::string make_plan(const AttentionParams& p, const PlanInputs& in, FiaPlan* plan) {
  if (std::string why = static_decline(p, in); !why.empty()) return why;
  const int64_t B = p.batch, N = p.num_heads, KVH = p.kv_num_heads, Sq = p.seq_q, T = p.seq_total(),
                D = p.head_dim;
  if (B < 1 || N < 1 || KVH < 1 || N % KVH || Sq < 1 || T < 1 || D < 1)
    return "plan: sizes must be known and consistent (B, heads, S_q, S_total, D >= 1; kv heads divide heads)";
  if (p.key_padding_mask ? in.key_visible.size() != static_cast<size_t>(B * T) : !in.key_visible.empty())
    return "plan: PlanInputs.key_visible must hold batch * S_total entries exactly when key_padding_mask is given";
  if (p.kv_len ? in.kv_len.size() != static_cast<size_t>(B) : !in.kv_len.empty())
    return "plan: PlanInputs.kv_len must hold batch entries exactly when kv_len is given";

  FiaPlan r;
  r.num_heads = N;
  r.num_key_value_heads = KVH;
  r.scale_value = p.scale;
  r.compute_dtype = p.dtype == ElemType::kFloat32 ? in.low_precision_type : p.dtype;
  r.cast_inputs = r.compute_dtype != p.dtype;
  r.write_present = p.present_k.data != nullptr;

  // Layout (doc: "inputLayout" one string for query, key, value and the output; Q, K, V not
  // non-contiguous). Query and output must already be dense in it; key/value may be staged.
  auto kv_source_for = [&](bool bnsd) {
    if (r.cast_inputs) return KvSource::kScratch;
    if (p.seq_past > 0) {
      const bool ok = r.write_present && dense_as(p.present_k, B, KVH, T, D, bnsd) &&
                      dense_as(p.present_v, B, KVH, T, D, bnsd);
      return ok ? KvSource::kPresent : KvSource::kScratch;
    }
    const bool ok = dense_as(p.k, B, KVH, T, D, bnsd) && dense_as(p.v, B, KVH, T, D, bnsd);
    return ok ? KvSource::kInputs : KvSource::kScratch;
  };
  auto hidden_ok = [&](bool bnsd) { return bnsd || Sq == 1 || (N * D < 65535 && KVH * D < 65535); };
  int chosen = -1;  // 1: BNSD, 0: BSH
  for (int bnsd : {1, 0}) {
    const bool q_ok = dense_as(p.q, B, N, Sq, D, bnsd) && (!p.out.data || dense_as(p.out, B, N, Sq, D, bnsd));
    if (!q_ok || !hidden_ok(bnsd)) continue;
    if (chosen < 0 || (kv_source_for(chosen) == KvSource::kScratch && kv_source_for(bnsd) != KvSource::kScratch))
      chosen = bnsd;
  }
  if (chosen < 0) {
    const bool bsh_only = dense_as(p.q, B, N, Sq, D, false) && (!p.out.data || dense_as(p.out, B, N, Sq, D, false));
    if (bsh_only && !hidden_ok(false))
      return "hidden_size: with S_q > 1 and layout BSH the operator needs heads * D < 65535";
    return "layout: query and output must be dense [B, N, S, D] (BNSD) or [B, S, N*D] (BSH) in the same layout; "
           "the operator takes no strided tensors";
  }
  const bool bnsd = chosen == 1;
  r.input_layout = layout_name(bnsd);
  r.kv_source = kv_source_for(bnsd);
  r.query_shape = bnsd ? std::vector<int64_t>{B, N, Sq, D} : std::vector<int64_t>{B, Sq, N * D};
  r.out_shape = r.query_shape;
  r.key_shape = bnsd ? std::vector<int64_t>{B, KVH, T, D} : std::vector<int64_t>{B, T, KVH * D};
  r.value_shape = r.key_shape;

  // pseShift (doc: shape (B, N, Q_S, KV_S) or (1, N, Q_S, KV_S), the query's dtype; notes:
  // a [1, 1, 1, S] pse gave wrong results in vllm-ascend #15503, so heads are always expanded).
  if (p.bias) {
    r.has_pse = true;
    const int64_t Bp = B > 1 && p.bias_batch_stride != 0 ? B : 1;
    r.pse_shape = {Bp, N, Sq, T};
    const bool dense = (T == 1 || p.bias_col_stride == 1) && (Sq == 1 || p.bias_row_stride == T) &&
                       (N == 1 || p.bias_head_stride == Sq * T) && (Bp == 1 || p.bias_batch_stride == N * Sq * T);
    r.pse_copy = !dense || p.bias_dtype != r.compute_dtype;
  }

  // Per-batch summaries of our contract's visibility.
  const Visibility vis{p, in, T, Sq};
  const bool structural = p.window_left >= 0 || p.window_right >= 0;
  std::vector<int64_t> prefix(static_cast<size_t>(T + 1));
  std::vector<int64_t> lo(static_cast<size_t>(B)), hi(static_cast<size_t>(B));  // contiguous range, half-open
  std::vector<bool> dead(static_cast<size_t>(B), false);  // decode: the batch's one row sees no key
  bool contiguous = true, empty_row = false;
  for (int64_t b = 0; b < B; ++b) {
    prefix[0] = 0;
    for (int64_t j = 0; j < T; ++j) prefix[static_cast<size_t>(j + 1)] = prefix[static_cast<size_t>(j)] + vis.key_ok(b, j);
    auto count = [&](int64_t a, int64_t z) {  // visible keys in [a, z] clipped to [0, T)
      a = std::max<int64_t>(a, 0);
      z = std::min<int64_t>(z, T - 1);
      return z < a ? 0 : prefix[static_cast<size_t>(z + 1)] - prefix[static_cast<size_t>(a)];
    };
    for (int64_t i = 0; i < Sq && !empty_row; ++i) {
      int64_t a, z;
      vis.band(b, i, &a, &z);
      empty_row = count(a, z) == 0;
    }
    // The key range the operator would be given: the single row's visible keys at decode (doc:
    // preTokens/nextTokens/sparseMode are invalid when Q_S is 1), else the valid keys.
    int64_t a = 0, z = T - 1;
    if (Sq == 1) vis.band(b, 0, &a, &z);
    a = std::max<int64_t>(a, 0);
    z = std::min<int64_t>(z, T - 1);
    int64_t first = -1, last = -2;
    for (int64_t j = a; j <= z; ++j)
      if (vis.key_ok(b, j)) {
        if (first < 0) first = j;
        last = j;
      }
    const int64_t n = count(a, z);
    if (Sq == 1 && n == 0) {
      dead[static_cast<size_t>(b)] = true;  // zeroed after the call; any range will do (below)
      r.zero_out_batches.push_back(b);
      continue;
    }
    if (n == 0 || n != last - first + 1) contiguous = false;
    lo[static_cast<size_t>(b)] = first;
    hi[static_cast<size_t>(b)] = last + 1;
  }
  if (Sq == 1) {
    // Dead batches take the range of a live one (or all keys), so they never break a route.
    int64_t live = -1;
    for (int64_t b = 0; b < B && live < 0; ++b)
      if (!dead[static_cast<size_t>(b)]) live = b;
    for (int64_t b = 0; b < B; ++b)
      if (dead[static_cast<size_t>(b)]) {
        lo[static_cast<size_t>(b)] = live < 0 ? 0 : lo[static_cast<size_t>(live)];
        hi[static_cast<size_t>(b)] = live < 0 ? T : hi[static_cast<size_t>(live)];
      }
    empty_row = false;  // decode has no invalid-row correction: zero_out_batches instead
  }

  auto all = [&](auto pred) {
    for (int64_t b = 0; b < B; ++b)
      if (!pred(lo[static_cast<size_t>(b)], hi[static_cast<size_t>(b)])) return false;
    return true;
  };
  const bool full = contiguous && all([&](int64_t l, int64_t h) { return l == 0 && h == T; });
  const bool left_aligned = contiguous && all([&](int64_t, int64_t h) { return h == T; });
  const bool right_padded = contiguous && all([&](int64_t l, int64_t) { return l == 0; });
  const bool common_end = contiguous && all([&](int64_t, int64_t h) { return h == hi[0]; });
  auto lengths = [&](bool from_start) {
    std::vector<int64_t> v;
    for (int64_t b = 0; b < B; ++b) v.push_back(hi[static_cast<size_t>(b)] - (from_start ? 0 : lo[static_cast<size_t>(b)]));
    return v;
  };
  // With a pse, kv left padding is not used: the docs do not say whether pse (or mask) columns
  // follow the shifted key start, so such cases take the explicit mask (keys never shifted).
  bool routed = false;
  if (Sq > 1 && structural) {
    // Sparse modes 3/4 align the band bottom-right on each batch's actual KV length (notes: CANN's
    // mask golden), which is ours only when every batch's valid keys end at S_total: no padding,
    // or left padding (kvPaddingSize 0: keys [S_kv - L_b, S_kv); doc "Left padding for kv").
    if (full || (left_aligned && !p.bias)) {
      routed = true;
      if (!full) {
        r.has_kv_padding_size = true;
        r.kv_padding_size = 0;
        r.actual_seq_lengths_kv = lengths(false);
      }
      r.mask = MaskKind::kCompressed;
      r.mask_shape = {kCompressedMaskSize, kCompressedMaskSize};
      if (p.window_left < 0 && p.window_right == 0) {
        r.sparse_mode = 3;  // rightDownCausal: j <= i + Skv - Sq
      } else {
        r.sparse_mode = 4;  // band: -pre <= j - (i + Skv - Sq) <= next; our window W keeps i' - j < W: pre = W - 1
        r.pre_tokens = p.window_left >= 0 ? p.window_left : kUnboundedTokens;
        r.next_tokens = p.window_right >= 0 ? p.window_right : kUnboundedTokens;
      }
    }
  } else if (full) {
    routed = true;  // sparse 0, no mask: every key of every row
  } else if (right_padded) {
    routed = true;  // actualSeqLengthsKv alone: keys [0, L_b) (doc: default right padding)
    r.actual_seq_lengths_kv = lengths(true);
  } else if (common_end && !p.bias) {
    routed = true;  // kvPaddingSize: keys [S_kv - pad - L_b, S_kv - pad)
    r.has_kv_padding_size = true;
    r.kv_padding_size = T - hi[0];
    r.actual_seq_lengths_kv = lengths(false);
  }
  if (!routed) {
    // The documented fallback: a full mask (B, 1, Q_S, KV_S), sparse mode 0 (pre/next unbounded).
    r.mask = MaskKind::kExplicit;
    r.mask_shape = {B, 1, Sq, T};
  }
  // doc, innerPrecise: 2 = high precision with invalid-row correction (rows whose keys are all
  // masked come out as zeros, as ours do); 0 = high precision. torch_npu 2.13.0's docs: at
  // Q_S = 1 only 0 and 1 are taken (decode's empty rows are zero_out_batches).
  r.inner_precise = empty_row ? 2 : 0;
  *plan = std::move(r);
  return "";
}

std::vector<uint8_t> compressed_causal_mask() {
  std::vector<uint8_t> m(static_cast<size_t>(kCompressedMaskSize * kCompressedMaskSize), 0);
  for (int64_t i = 0; i < kCompressedMaskSize; ++i)
    for (int64_t j = i + 1; j < kCompressedMaskSize; ++j) m[static_cast<size_t>(i * kCompressedMaskSize + j)] = 1;
  return m;
}

std::vector<uint8_t> explicit_mask(const AttentionParams& p, const PlanInputs& in) {
  const int64_t B = p.batch, Sq = p.seq_q, T = p.seq_total();
  const Visibility vis{p, in, T, Sq};
  std::vector<uint8_t> m(static_cast<size_t>(B * Sq * T), 1);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < Sq; ++i) {
      int64_t a, z;
      vis.band(b, i, &a, &z);
      uint8_t* row = m.data() + (b * Sq + i) * T;
      for (int64_t j = std::max<int64_t>(a, 0); j <= std::min<int64_t>(z, T - 1); ++j)
        if (vis.key_ok(b, j)) row[j] = 0;
    }
  return m;
}

std::string describe(const FiaPlan& r) {
  std::ostringstream s;
  auto dims = [&](const std::vector<int64_t>& v) {
    std::string t = "[";
    for (size_t i = 0; i < v.size(); ++i) t += (i ? "," : "") + std::to_string(v[i]);
    return t + "]";
  };
  s << "aclnnFusedInferAttentionScore " << r.input_layout << " q" << dims(r.query_shape) << " kv"
    << dims(r.key_shape) << " heads " << r.num_heads << "/" << r.num_key_value_heads << " sparse " << r.sparse_mode;
  if (r.sparse_mode == 4) s << " pre " << r.pre_tokens << " next " << r.next_tokens;
  s << " inner_precise " << r.inner_precise;
  if (!r.actual_seq_lengths_kv.empty()) s << " kv_lengths " << dims(r.actual_seq_lengths_kv);
  if (r.has_kv_padding_size) s << " kv_padding " << r.kv_padding_size;
  s << " mask " << (r.mask == MaskKind::kNone ? "none" : r.mask == MaskKind::kCompressed ? "compressed" : "explicit");
  if (r.has_pse) s << " pse" << dims(r.pse_shape) << (r.pse_copy ? " (materialised)" : "");
  s << " kv " << (r.kv_source == KvSource::kInputs ? "inputs" : r.kv_source == KvSource::kPresent ? "present" : "scratch");
  if (r.cast_inputs) s << " computed in " << elem_name(r.compute_dtype);
  if (!r.zero_out_batches.empty()) s << " zeroed batches " << dims(r.zero_out_batches);
  return s.str();
}

}  // namespace fastattn::ascend
