// Reading a com.microsoft::GroupQueryAttention node (gqa_node.h): which attributes and inputs it
// uses, whether the device's backend runs it (else the reason), and the params of one call.
#include "gqa_node.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "gqa_call.h"
#include "node_translation.h"

namespace fastattn::ep {
namespace {

constexpr const char* kGqaOpType = "GroupQueryAttention";

// The attributes of the schema of onnxruntime 1.32; a node with another one (a newer
// onnxruntime's) is left to ONNX Runtime.
constexpr const char* kKnownAttributes[] = {
    "num_heads", "kv_num_heads", "scale", "softcap", "local_window_size", "do_rotary", "rotary_interleaved",
    "smooth_softmax", "causal", "qk_output", "sliding_window_cache", "k_quant_type", "v_quant_type",
    "kv_cache_bit_width", "qk_norm_epsilon", "q_norm_epsilon", "k_norm_epsilon"};

bool has(const std::vector<std::string>& names, int i) {
  return i >= 0 && static_cast<size_t>(i) < names.size() && !names[i].empty();
}

bool is_float_type(DType t) { return t == DType::kFloat32 || t == DType::kFloat16 || t == DType::kBFloat16; }

ElemType elem_type(DType t) {
  return t == DType::kFloat16 ? ElemType::kFloat16 : t == DType::kBFloat16 ? ElemType::kBFloat16 : ElemType::kFloat32;
}

// A string attribute ("" when absent or not a string).
std::string attr_string(const OrtNode* node, const char* name) {
  const OrtOpAttr* attr = nullptr;
  if (OrtStatus* s = ort().Node_GetAttributeByName(node, name, &attr)) {
    ort().ReleaseStatus(s);
    return "";
  }
  OrtOpAttrType type = ORT_OP_ATTR_UNDEFINED;
  if (!attr) return "";
  if (OrtStatus* s = ort().OpAttr_GetType(attr, &type)) {
    ort().ReleaseStatus(s);
    return "";
  }
  if (type != ORT_OP_ATTR_STRING) return "";
  size_t n = 0;
  if (OrtStatus* s = ort().ReadOpAttr(attr, ORT_OP_ATTR_STRING, nullptr, 0, &n)) ort().ReleaseStatus(s);
  std::string out(n, '\0');
  if (n == 0) return out;
  if (OrtStatus* s = ort().ReadOpAttr(attr, ORT_OP_ATTR_STRING, out.data(), n, &n)) {
    ort().ReleaseStatus(s);
    return "";
  }
  out.resize(n);
  while (!out.empty() && out.back() == '\0') out.pop_back();
  return out;
}


}  // namespace

ElemType gqa_elem_type(DType t) {
  return t == DType::kFloat16 ? ElemType::kFloat16 : t == DType::kBFloat16 ? ElemType::kBFloat16 : ElemType::kFloat32;
}

AttentionParams make_gqa_params(const GqaConfig& g, const GqaCall& c, Device device) {
  AttentionParams p;
  p.device = device;
  p.dtype = gqa_elem_type(c.dtype);
  p.batch = c.batch;
  p.num_heads = g.num_heads;
  p.kv_num_heads = g.kv_num_heads;
  p.seq_q = c.seq;
  p.seq_kv = c.seq;
  p.seq_past = c.seq_past;
  p.head_dim = p.head_dim_v = c.head_dim;
  const int64_t D = c.head_dim, N = g.num_heads, KV = g.kv_num_heads;
  const int64_t row = c.packed ? (N + 2 * KV) * D : N * D;  // elements between query rows
  auto view = [&](void* data, int64_t batch_stride, int64_t head_stride, int64_t seq_stride) {
    TensorView v;
    v.data = data;
    v.dtype = p.dtype;
    v.batch_stride = batch_stride;
    v.head_stride = head_stride;
    v.seq_stride = seq_stride;
    return v;
  };
  const size_t width = elem_size(p.dtype);
  p.q = view(c.query, c.seq * row, D, row);
  if (c.packed) {
    // [B, S, (N + 2 KV) * D]: K starts after the N query heads, V after the KV key heads.
    char* base = static_cast<char*>(c.query);
    p.k = view(base ? base + N * D * width : nullptr, c.seq * row, D, row);
    p.v = view(base ? base + (N + KV) * D * width : nullptr, c.seq * row, D, row);
  } else {
    p.k = view(c.key, c.seq * KV * D, D, KV * D);
    p.v = view(c.value, c.seq * KV * D, D, KV * D);
  }
  p.out = view(c.out, c.seq * N * D, D, N * D);
  p.present_k = view(c.present_k, KV * c.capacity * D, c.capacity * D, D);
  p.present_v = view(c.present_v, KV * c.capacity * D, c.capacity * D, D);
  if (c.past_k) {
    p.past_k = view(const_cast<void*>(c.past_k), KV * c.past_rows * D, c.past_rows * D, D);
    p.past_v = view(const_cast<void*>(c.past_v), KV * c.past_rows * D, c.past_rows * D, D);
  } else if (c.seq_past > 0) {  // the past lives in present (copied there first unless it is the same buffer)
    p.past_k = p.present_k;
    p.past_v = p.present_v;
  }
  p.kv_capacity = c.capacity;
  p.past_len = c.past_len;
  p.kv_len = c.kv_len;
  if (g.do_rotary) {
    p.rotary.cos_cache = c.cos;
    p.rotary.sin_cache = c.sin;
    p.rotary.rotary_dim = 2 * c.rotary_half;
    p.rotary.cache_row_stride = c.rotary_half;
    p.rotary.interleaved = g.rotary_interleaved;
    p.rotary.position_ids = c.position_ids;
    p.rotary.position_batch_stride = c.position_batch_stride;
  }
  if (c.bias) {
    // [B or 1, N or 1, S, total_sequence_length], columns indexed by absolute key position.
    const int64_t* d = c.bias_dims;
    p.bias = c.bias;
    p.bias_dtype = p.dtype;
    p.bias_col_stride = 1;
    p.bias_row_stride = d[3];
    p.bias_head_stride = d[1] == 1 ? 0 : d[2] * d[3];
    p.bias_batch_stride = d[0] == 1 ? 0 : d[1] * d[2] * d[3];
  }
  p.scale = g.scale != 0.f ? g.scale
                           : static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.head_dim > 0 ? c.head_dim : 1)));
  // ONNX Runtime's GQA (1.32): a row sees itself and the local_window_size - 1 keys before it.
  set_window(p, /*causal=*/true, g.local_window_size);
  p.softcap = g.softcap;
  p.smooth_softmax = g.smooth_softmax;
  p.head_sink = c.head_sink;
  return p;
}

bool is_group_query_attention(const NodeView& v) {
  return v.domain == "com.microsoft" && v.op_type == kGqaOpType && v.since_version == 1;
}

std::string translate_group_query_attention(const OrtNode* node, const NodeView& v, Device device, NodeConfig* cfg,
                                            AttentionParams* probe) {
  cfg->op_type = kGqaOpType;
  cfg->name = v.name;
  GqaConfig g;
  const core::AttributeSource attrs = attributes_of(node);
  for (const std::string& name : attrs.names()) {
    bool known = false;
    for (const char* k : kKnownAttributes) known = known || name == k;
    if (!known) return "attribute '" + name + "' is not mapped";
  }
  auto get_int = [&](const char* name, int64_t fallback) {
    return attrs.kind_of(name) == core::AttrKind::kInt ? attrs.get_int(name) : fallback;
  };
  auto get_float = [&](const char* name, float fallback) {
    return attrs.kind_of(name) == core::AttrKind::kFloat ? attrs.get_float(name) : fallback;
  };
  g.num_heads = get_int("num_heads", 0);
  g.kv_num_heads = get_int("kv_num_heads", 0);
  if (g.num_heads < 1 || g.kv_num_heads < 1 || g.num_heads % g.kv_num_heads)
    return "num_heads / kv_num_heads missing or kv_num_heads does not divide num_heads";
  g.scale = get_float("scale", 0.f);
  g.softcap = get_float("softcap", 0.f);
  if (!std::isfinite(g.scale) || g.scale < 0.f) return "scale < 0 or not finite";
  if (!std::isfinite(g.softcap) || g.softcap < 0.f) return "softcap < 0 or not finite";
  g.local_window_size = get_int("local_window_size", -1);
  if (g.local_window_size == 0 || g.local_window_size < -1) return "local_window_size is neither -1 nor > 0";
  const int64_t do_rotary = get_int("do_rotary", 0), interleaved = get_int("rotary_interleaved", 0);
  if (do_rotary != 0 && do_rotary != 1) return "do_rotary is neither 0 nor 1";
  if (interleaved != 0 && interleaved != 1) return "rotary_interleaved is neither 0 nor 1";
  g.do_rotary = do_rotary == 1;
  g.rotary_interleaved = interleaved == 1;
  const int64_t smooth = get_int("smooth_softmax", 0);
  if (smooth != 0 && smooth != 1 && smooth != -1) return "smooth_softmax is not -1, 0 or 1";
  g.smooth_softmax = smooth == 1;
  if (get_int("causal", 1) != 1) return "causal != 1 (non-causal GroupQueryAttention is not mapped)";
  if (get_int("qk_output", 0) != 0) return "qk_output != 0";
  if (get_int("sliding_window_cache", 0) != 0)
    return "sliding_window_cache != 0 (a window-sized KV cache is not mapped)";
  if (get_int("kv_cache_bit_width", 0) != 0) return "quantized KV cache (kv_cache_bit_width is set)";
  for (const char* q : {"k_quant_type", "v_quant_type"}) {
    const std::string t = attr_string(node, q);
    if (!t.empty() && t != "NONE") return std::string("quantized KV cache (") + q + " = " + t + ")";
  }

  const auto& in = v.input_names;
  const auto& out = v.output_names;
  if (in.size() > kGqaNumInputs) return "has " + std::to_string(in.size()) + " inputs (the schema has 17)";
  if (out.size() > kGqaNumOutputs) return "has " + std::to_string(out.size()) + " outputs (the schema has 4)";
  if (has(in, kGqaKScale) || has(in, kGqaVScale)) return "k_scale / v_scale are given (quantized KV cache)";
  if (has(in, kGqaQNormWeight) || has(in, kGqaKNormWeight)) return "q_norm_weight / k_norm_weight are given";
  if (has(in, kGqaQuerySeqlens)) return "query_seqlens is given (right-padded query chunks are not mapped)";
  if (has(out, kGqaOutputQk)) return "the output_qk output is used";
  if (!has(in, kGqaQuery) || !has(in, kGqaSeqlensK) || !has(in, kGqaTotalSequenceLength))
    return "query, seqlens_k or total_sequence_length is missing";
  if (has(in, kGqaKey) != has(in, kGqaValue)) return "key and value are not given together";
  if (has(in, kGqaPastKey) != has(in, kGqaPastValue)) return "past_key and past_value are not given together";
  if (!has(out, kGqaOutput) || !has(out, kGqaPresentKey) || !has(out, kGqaPresentValue))
    return "present_key / present_value outputs are not both used";
  if (g.do_rotary && (!has(in, kGqaCosCache) || !has(in, kGqaSinCache)))
    return "do_rotary without cos_cache and sin_cache";
  if (has(in, kGqaHeadSink) && g.smooth_softmax)
    return "head_sink together with smooth_softmax (ONNX Runtime rejects it)";

  const TensorDesc& q = v.inputs[kGqaQuery];
  const DType t = q.dtype;
  if (!is_float_type(t)) return std::string("element type ") + core::dtype_name(t) + " is not supported";
  if (q.rank >= 0 && q.rank != 3) return "query is not 3D";
  auto same_type = [&](int i) { return !has(in, i) || v.inputs[i].dtype == t; };
  for (int i : {kGqaKey, kGqaValue, kGqaCosCache, kGqaSinCache, kGqaAttentionBias, kGqaHeadSink})
    if (!same_type(i)) return std::string("an input's element type differs from the query's (") +
                              core::dtype_name(v.inputs[i].dtype) + ")";
  for (int i : {kGqaPastKey, kGqaPastValue})
    if (!same_type(i))
      return std::string("KV cache of element type ") + core::dtype_name(v.inputs[i].dtype) +
             " (quantized or not the query's type)";
  if (has(in, kGqaSeqlensK) && v.inputs[kGqaSeqlensK].dtype != DType::kInt32) return "seqlens_k is not int32";
  if (has(in, kGqaPositionIds) && v.inputs[kGqaPositionIds].dtype != DType::kInt64) return "position_ids is not int64";
  if (has(in, kGqaAttentionBias) && v.inputs[kGqaAttentionBias].rank >= 0 && v.inputs[kGqaAttentionBias].rank != 4)
    return "attention_bias is not 4D";

  // Sizes known now (the rest are 0 in the probe).
  auto dim = [&](int i, int d) -> int64_t {
    const TensorDesc& x = v.inputs[i];
    return has(in, i) && x.rank > d && x.dims[d] >= 0 ? x.dims[d] : -1;
  };
  GqaCall c;
  c.dtype = t;
  c.packed = !has(in, kGqaKey);
  const int64_t heads = c.packed ? g.num_heads + 2 * g.kv_num_heads : g.num_heads;
  const int64_t hidden = dim(kGqaQuery, 2);
  if (hidden >= 0 && hidden % heads) return "the query's hidden size is not a multiple of the head count";
  const int64_t D = hidden >= 0 ? hidden / heads : -1;
  if (D >= 0 && D % 8) return "head size is not a multiple of 8 (ONNX Runtime's GroupQueryAttention rejects it)";
  if (!c.packed) {
    const int64_t kvh = dim(kGqaKey, 2);
    if (D >= 0 && kvh >= 0 && kvh != g.kv_num_heads * D) return "key hidden size is not kv_num_heads * head size";
    const int64_t sq = dim(kGqaQuery, 1), skv = dim(kGqaKey, 1);
    if (sq >= 0 && skv >= 0 && sq != skv)
      return "key sequence length differs from the query's (shared-KV mode is not mapped)";
  }
  if (g.do_rotary) {
    const int64_t half = dim(kGqaCosCache, 1);
    if (D >= 0 && D % 16) return "do_rotary with a head size that is not a multiple of 16 (ONNX Runtime rejects it)";
    if (half >= 0 && D >= 0 && (half % 8 || 2 * half > D))
      return "cos_cache dimension 1 is not a multiple of 8 <= head size / 2 (ONNX Runtime rejects it)";
    c.rotary_half = std::max<int64_t>(half, 0);
  }
  static char placeholder;  // marks a present tensor at session creation; never read
  static const int32_t placeholder_len[1] = {0};
  c.batch = std::max<int64_t>(dim(kGqaQuery, 0), 0);
  c.seq = std::max<int64_t>(dim(kGqaQuery, 1), 0);
  c.head_dim = std::max<int64_t>(D, 0);
  c.capacity = std::max<int64_t>(dim(kGqaPastKey, 2), 1);  // > 0: the cache is updated in place
  c.query = c.out = c.present_k = c.present_v = &placeholder;
  if (!c.packed) c.key = c.value = &placeholder;
  c.past_len = c.kv_len = placeholder_len;
  if (g.do_rotary) c.cos = c.sin = &placeholder;
  if (has(in, kGqaPositionIds)) c.position_ids = reinterpret_cast<const int64_t*>(&placeholder);
  if (has(in, kGqaAttentionBias)) {
    c.bias = &placeholder;
    for (int d = 0; d < 4; ++d) c.bias_dims[d] = std::max<int64_t>(dim(kGqaAttentionBias, d), 0);
  }
  if (has(in, kGqaHeadSink)) c.head_sink = &placeholder;
  *probe = make_gqa_params(g, c, device);

  for (size_t i = 0; i < in.size(); ++i) g.input_index[i] = has(in, static_cast<int>(i)) ? static_cast<int>(i) : -1;
  for (size_t i = 0; i < out.size(); ++i) g.output_index[i] = has(out, static_cast<int>(i)) ? static_cast<int>(i) : -1;
  cfg->gqa = std::make_shared<const GqaConfig>(g);
  return "";
}


}  // namespace fastattn::ep
