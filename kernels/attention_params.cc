#include "attention_params.h"

namespace fastattn {

size_t elem_size(ElemType t) { return t == ElemType::kFloat32 ? 4 : 2; }

const char* elem_name(ElemType t) {
  switch (t) {
    case ElemType::kFloat32: return "float32";
    case ElemType::kFloat16: return "float16";
    case ElemType::kBFloat16: return "bfloat16";
  }
  return "unknown";
}

const char* device_kind_name(DeviceKind k) {
  switch (k) {
    case DeviceKind::kCpu: return "cpu";
    case DeviceKind::kCuda: return "cuda";
    case DeviceKind::kNpu: return "npu";
  }
  return "unknown";
}

std::string check_params(const AttentionParams& p) {
  auto s = [](int64_t v) { return std::to_string(v); };
  if (p.batch < 1) return "batch size must be >= 1, got " + s(p.batch);
  if (p.num_heads < 1) return "num_heads must be >= 1, got " + s(p.num_heads);
  if (p.kv_num_heads < 1) return "kv_num_heads must be >= 1, got " + s(p.kv_num_heads);
  if (p.num_heads % p.kv_num_heads != 0)
    return "kv_num_heads must divide num_heads: kv_num_heads = " + s(p.kv_num_heads) + ", num_heads = " +
           s(p.num_heads);
  if (p.seq_q < 1) return "query sequence length must be >= 1, got " + s(p.seq_q);
  if (p.seq_kv < 0 || p.seq_past < 0) return "key/past sequence lengths must be >= 0";
  if (p.seq_total() < 1) return "total key sequence length (past + new) must be >= 1";
  if (p.head_dim < 1 || p.head_dim_v < 1) return "head sizes must be >= 1";
  if (!p.q.data || !p.out.data || (p.seq_kv > 0 && (!p.k.data || !p.v.data)))
    return "query, key, value and output must be present";
  if (p.seq_past > 0 && p.kv_capacity == 0 && (!p.past_k.data || !p.past_v.data))
    return "past_key and past_value must both be given";
  if (p.kv_capacity > 0 && (!p.present_k.data || !p.present_v.data || p.kv_capacity < p.seq_total()))
    return "an in-place KV cache needs present_key and present_value with room for past + new rows";
  if (p.past_len && p.kv_capacity <= 0)
    return "per-batch past lengths (past_len) belong to an in-place KV cache: kv_capacity must be > 0";
  if (p.kv_capacity < 0) return "kv_capacity must be >= 0, got " + s(p.kv_capacity);
  if (p.key_padding_mask && p.mask_type == MaskType::kNone) return "key_padding_mask has no type";
  if (p.rotary.cos_cache && (!p.rotary.sin_cache || p.rotary.rotary_dim < 2 || p.rotary.rotary_dim % 2 ||
                             p.rotary.rotary_dim > p.head_dim))
    return "rotary embedding needs cos and sin caches and an even rotary_dim <= head size";
  if (p.rotary.cos_cache && p.rotary.cache_row_stride < p.rotary.rotary_dim / 2)
    return "rotary cos/sin cache rows must hold rotary_dim / 2 values (cache_row_stride >= rotary_dim / 2)";
  if (p.rotary.position_ids && p.rotary.position_batch_stride < 0)
    return "rotary position_ids need a batch stride >= 0";
  if (!(p.scale == p.scale)) return "scale must be a number";
  if (p.window_left < -1 || p.window_right < -1) return "window extents must be >= 0, or -1 for none";
  if (p.softcap < 0.f) return "softcap must be >= 0, got " + std::to_string(p.softcap);
  return "";
}

}  // namespace fastattn
