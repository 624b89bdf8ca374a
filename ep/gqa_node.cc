#include "gqa_node.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "node_translation.h"

namespace fastattn::ep {
namespace {

constexpr const char* kGqaOpType = "GroupQueryAttention";
// Names in messages, in the schema's order (GqaInput, GqaOutput).
constexpr const char* kInputNames[kGqaNumInputs] = {
    "query", "key", "value", "past_key", "past_value", "seqlens_k", "total_sequence_length", "cos_cache", "sin_cache",
    "position_ids", "attention_bias", "head_sink", "k_scale", "v_scale", "q_norm_weight", "k_norm_weight",
    "query_seqlens"};
constexpr const char* kOutputNames[kGqaNumOutputs] = {"output", "present_key", "present_value", "output_qk"};

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

// Sizes and pointers of one call (or, at session creation, what is known: 0 where not).
struct GqaCall {
  DType dtype = DType::kFloat32;
  int64_t batch = 0, seq = 0, head_dim = 0;
  int64_t capacity = 0;  // rows per (batch, kv head) of present_key / present_value
  int64_t seq_past = 0;  // the largest per-batch past length
  bool packed = false;
  void* query = nullptr;
  void* key = nullptr;
  void* value = nullptr;
  void* out = nullptr;
  void* present_k = nullptr;
  void* present_v = nullptr;
  const int32_t* past_len = nullptr;
  const int32_t* kv_len = nullptr;
  // The past as a buffer of its own (present = past + new) that the backend copies into present
  // itself (accelerators); null: present already holds the past.
  const void* past_k = nullptr;
  const void* past_v = nullptr;
  int64_t past_rows = 0;
  const void* cos = nullptr;
  const void* sin = nullptr;
  int64_t rotary_half = 0;  // cos_cache.shape[1]
  const int64_t* position_ids = nullptr;
  int64_t position_batch_stride = 0;
  const void* bias = nullptr;
  int64_t bias_dims[4] = {0, 0, 0, 0};
  const void* head_sink = nullptr;
};

AttentionParams make_params(const GqaConfig& g, const GqaCall& c, Device device) {
  AttentionParams p;
  p.device = device;
  p.dtype = elem_type(c.dtype);
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

}  // namespace

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
  *probe = make_params(g, c, device);

  for (size_t i = 0; i < in.size(); ++i) g.input_index[i] = has(in, static_cast<int>(i)) ? static_cast<int>(i) : -1;
  for (size_t i = 0; i < out.size(); ++i) g.output_index[i] = has(out, static_cast<int>(i)) ? static_cast<int>(i) : -1;
  cfg->gqa = std::make_shared<const GqaConfig>(g);
  return "";
}

OrtStatus* compute_group_query_attention(const NodeConfig& cfg, const DevicePlumbing& device, int ordinal,
                                         OrtKernelContext* context) noexcept {
  return guarded([&]() -> OrtStatus* {
    const GqaConfig& g = *cfg.gqa;
    auto fail = [&](const std::string& rule) { return make_error(core::node_error(cfg.op_type, cfg.name, rule)); };
    auto s = [](int64_t x) { return std::to_string(x); };
    size_t num_inputs = 0, num_outputs = 0;
    FASTATTN_RETURN_IF_ERROR(ort().KernelContext_GetInputCount(context, &num_inputs));
    FASTATTN_RETURN_IF_ERROR(ort().KernelContext_GetOutputCount(context, &num_outputs));
    TensorDesc desc[kGqaNumInputs];
    void* data[kGqaNumInputs] = {};
    const OrtValue* values[kGqaNumInputs] = {};
    for (int i = 0; i < kGqaNumInputs; ++i) {
      const int idx = g.input_index[i];
      if (idx < 0 || static_cast<size_t>(idx) >= num_inputs) continue;
      const OrtValue* value = nullptr;
      FASTATTN_RETURN_IF_ERROR(ort().KernelContext_GetInput(context, idx, &value));
      if (!value) continue;
      values[i] = value;
      FASTATTN_RETURN_IF_ERROR(describe(value, &desc[i]));
      FASTATTN_RETURN_IF_ERROR(ort().GetTensorMutableData(const_cast<OrtValue*>(value), &data[i]));
    }
    const int64_t N = g.num_heads, KV = g.kv_num_heads;
    // The shapes, as ONNX Runtime's GroupQueryAttention checks them.
    const TensorDesc& q = desc[kGqaQuery];
    if (q.rank != 3) return fail("query must be 3D [B, S, hidden]");
    GqaCall c;
    c.dtype = q.dtype;
    c.packed = !desc[kGqaKey].present;
    const int64_t B = q.dims[0], S = q.dims[1];
    const int64_t D = q.dims[2] / (c.packed ? N + 2 * KV : N);
    if (q.dims[2] != D * (c.packed ? N + 2 * KV : N) || D < 1)
      return fail("query hidden size " + s(q.dims[2]) + " is not a multiple of the head count");
    if (c.packed && desc[kGqaValue].present) return fail("value is given without key");
    if (!c.packed) {
      for (int i : {kGqaKey, kGqaValue}) {
        const TensorDesc& x = desc[i];
        if (!x.present || x.rank != 3 || x.dims[0] != B || x.dims[1] != S || x.dims[2] != KV * D)
          return fail(std::string(i == kGqaKey ? "key" : "value") + " must be [B, S, kv_num_heads * head size] = [" +
                      s(B) + ", " + s(S) + ", " + s(KV * D) + "]");
      }
    }
    const bool has_past = desc[kGqaPastKey].present;
    int64_t P = 0;
    if (has_past) {
      for (int i : {kGqaPastKey, kGqaPastValue}) {
        const TensorDesc& x = desc[i];
        if (!x.present || x.rank != 4 || x.dims[0] != B || x.dims[1] != KV || x.dims[3] != D ||
            x.dims[2] != desc[kGqaPastKey].dims[2])
          return fail("past_key and past_value must be [B, kv_num_heads, P, head size]");
      }
      P = desc[kGqaPastKey].dims[2];
    }
    const TensorDesc& sk = desc[kGqaSeqlensK];
    const TensorDesc& tl = desc[kGqaTotalSequenceLength];
    if (!sk.present || sk.dtype != DType::kInt32 || sk.rank != 1 || sk.dims[0] != B)
      return fail("seqlens_k must be int32 [batch]");
    int64_t tl_count = 1;
    for (int64_t d : tl.dims) tl_count *= d;
    if (!tl.present || tl.dtype != DType::kInt32 || tl_count != 1)
      return fail("total_sequence_length must be an int32 scalar");
    // seqlens_k, total_sequence_length and position_ids steer the checks below and the sizes of
    // the outputs, so they are read on the host: on an accelerator they are copied over (one
    // synchronisation of the node's stream) unless ONNX Runtime left them in host memory.
    const LaunchContext launch = device.launch_context(context, ordinal);
    const bool accel = device.accelerator();
    const TensorDesc& pid = desc[kGqaPositionIds];
    std::vector<int32_t> seqlens_copy, total_copy;
    std::vector<int64_t> ids_copy;
    bool copied = false;
    auto host_view = [&](int i, auto& copy, size_t count) -> OrtStatus* {
      using E = typename std::decay_t<decltype(copy)>::value_type;
      const OrtMemoryDevice* m = ort_ep().Value_GetMemoryDevice(values[i]);
      if (!accel || !m || ort_ep().MemoryDevice_GetDeviceType(m) == OrtMemoryInfoDeviceType_CPU) return nullptr;
      copy.resize(count);
      if (count) FASTATTN_RETURN_IF_ERROR(device.copy(ordinal, launch.stream, copy.data(), data[i], count * sizeof(E),
                                                      CopyKind::kDeviceToHost));
      data[i] = copy.data();
      copied = true;
      return nullptr;
    };
    FASTATTN_RETURN_IF_ERROR(host_view(kGqaSeqlensK, seqlens_copy, static_cast<size_t>(B)));
    FASTATTN_RETURN_IF_ERROR(host_view(kGqaTotalSequenceLength, total_copy, 1));
    if (g.do_rotary && pid.present) {
      if (pid.dtype != DType::kInt64) return fail("position_ids must be int64");
      size_t count = 1;
      for (int64_t d : pid.dims) count *= static_cast<size_t>(d);
      FASTATTN_RETURN_IF_ERROR(host_view(kGqaPositionIds, ids_copy, count));
    }
    if (copied) FASTATTN_RETURN_IF_ERROR(device.synchronize(ordinal, launch.stream));
    const int32_t* seqlens_k = static_cast<const int32_t*>(data[kGqaSeqlensK]);
    const int64_t total = *static_cast<const int32_t*>(data[kGqaTotalSequenceLength]);
    const int64_t C = std::max(total, P);  // present length, as ONNX Runtime sizes it
    // First prompt (every past length 0) when S == total_sequence_length, else past = T - S per batch.
    const bool first_prompt = S == total;
    if (!has_past && !first_prompt)
      return fail("a step after the first prompt (S != total_sequence_length) without past_key/past_value");
    std::vector<int32_t> past_len(B), kv_len(B);
    int64_t seq_past = 0;
    for (int64_t b = 0; b < B; ++b) {
      const int64_t T = static_cast<int64_t>(seqlens_k[b]) + 1;
      const int64_t past = !has_past || first_prompt ? 0 : T - S;
      if (T < 1 || T > C) return fail("seqlens_k[" + s(b) + "] + 1 = " + s(T) + " is not in [1, " + s(C) + "]");
      if (past < 0) return fail("seqlens_k[" + s(b) + "] + 1 = " + s(T) + " is less than the sequence length " + s(S));
      if (past > P) return fail("batch " + s(b) + " has " + s(past) + " past rows but past_key holds " + s(P));
      if (past + S > C)
        return fail("batch " + s(b) + ": " + s(past) + " past + " + s(S) + " new rows exceed the cache length " + s(C));
      past_len[b] = static_cast<int32_t>(past);
      kv_len[b] = static_cast<int32_t>(T);
      seq_past = std::max(seq_past, past);
    }
    if (g.do_rotary) {
      const TensorDesc &cs = desc[kGqaCosCache], &sn = desc[kGqaSinCache];
      if (!cs.present || !sn.present || cs.rank != 2 || sn.rank != 2 || cs.dims != sn.dims)
        return fail("cos_cache and sin_cache must both be 2D of one shape");
      if (D % 16 || cs.dims[1] % 8 || 2 * cs.dims[1] > D || cs.dims[1] < 1)
        return fail("rotary needs a head size that is a multiple of 16 and cos_cache dimension 1 a multiple of 8 "
                    "<= head size / 2");
      if (cs.dims[0] < total) return fail("cos_cache dimension 0 is less than total_sequence_length");
      c.cos = data[kGqaCosCache];
      c.sin = data[kGqaSinCache];
      c.rotary_half = cs.dims[1];
    }
    // Rotary positions: position_ids[b, s] after the first prompt, position_ids[0] + s in it (ONNX
    // Runtime reads only the first element there), else the row's place in the cache.
    std::vector<int64_t> positions;
    if (g.do_rotary) {
      const int64_t max_pos = desc[kGqaCosCache].dims[0];
      if (pid.present) {
        if (pid.rank != 2 || pid.dims[0] != B || pid.dims[1] < S) return fail("position_ids must be [B, >= S]");
        const int64_t* ids = static_cast<const int64_t*>(data[kGqaPositionIds]);
        if (first_prompt) {
          if (ids[0] < 0 || ids[0] > max_pos - S) return fail("position_ids base value out of cos/sin cache range");
          positions.resize(B * S);
          for (int64_t b = 0; b < B; ++b)
            for (int64_t i = 0; i < S; ++i) positions[b * S + i] = ids[0] + i;
          c.position_ids = positions.data();
          c.position_batch_stride = S;
        } else {
          // ONNX Runtime reads row b at b * S, also when position_ids has more than S columns.
          for (int64_t i = 0; i < B * S; ++i)
            if (ids[i] < 0 || ids[i] >= max_pos) return fail("position_ids value out of range");
          c.position_ids = ids;
          c.position_batch_stride = S;
        }
      } else {
        for (int64_t b = 0; b < B; ++b)
          if (past_len[b] + S > max_pos) return fail("a rotary position is beyond cos_cache");
      }
    }
    const TensorDesc& bias = desc[kGqaAttentionBias];
    if (bias.present) {
      if (bias.rank != 4 || (bias.dims[0] != B && bias.dims[0] != 1) || (bias.dims[1] != N && bias.dims[1] != 1) ||
          bias.dims[2] != S || bias.dims[3] != total)
        return fail("attention_bias must be [B or 1, num_heads or 1, S, total_sequence_length]");
      for (int64_t b = 0; b < B; ++b)
        if (kv_len[b] > total) return fail("seqlens_k[" + s(b) + "] + 1 exceeds total_sequence_length");
      c.bias = data[kGqaAttentionBias];
      for (int d = 0; d < 4; ++d) c.bias_dims[d] = bias.dims[d];
    }
    const TensorDesc& sink = desc[kGqaHeadSink];
    if (sink.present) {
      if (sink.rank != 1 || sink.dims[0] != N) return fail("head_sink must be [num_heads]");
      c.head_sink = data[kGqaHeadSink];
    }

    // Outputs: output [B, S, N*D], present [B, KV, C, D].
    void* out_data[3] = {};
    OrtValue* out_values[3] = {};
    std::shared_ptr<void> device_lengths;
    for (int i = 0; i < 3; ++i) {
      const int idx = g.output_index[i];
      if (idx < 0 || static_cast<size_t>(idx) >= num_outputs) return fail("an output is missing");
      const std::vector<int64_t> dims = i == kGqaOutput ? std::vector<int64_t>{B, S, N * D}
                                                        : std::vector<int64_t>{B, KV, C, D};
      OrtValue* value = nullptr;
      FASTATTN_RETURN_IF_ERROR(ort().KernelContext_GetOutput(context, idx, dims.data(), dims.size(), &value));
      if (!value) return fail("an output is missing");
      out_values[i] = value;
      FASTATTN_RETURN_IF_ERROR(ort().GetTensorMutableData(value, &out_data[i]));
    }
    c.batch = B;
    c.seq = S;
    c.head_dim = D;
    c.capacity = C;
    c.seq_past = seq_past;
    c.query = data[kGqaQuery];
    c.key = data[kGqaKey];
    c.value = data[kGqaValue];
    c.out = out_data[kGqaOutput];
    c.present_k = out_data[kGqaPresentKey];
    c.present_v = out_data[kGqaPresentValue];
    c.past_len = past_len.data();
    c.kv_len = kv_len.data();
    if (accel) {
      // Every tensor the kernel reads or writes must be in the device's memory; the per-batch
      // lengths (and rotary positions) go over in one copy, freed in stream order after the node.
      for (int i : {kGqaQuery, kGqaKey, kGqaValue, kGqaPastKey, kGqaPastValue, kGqaCosCache, kGqaSinCache,
                    kGqaAttentionBias, kGqaHeadSink})
        if (values[i])
          if (auto why = check_memory(device, ordinal, values[i], "input", kInputNames[i]); !why.empty())
            return fail(why);
      for (int i = 0; i < 3; ++i)
        if (auto why = check_memory(device, ordinal, out_values[i], "output", kOutputNames[i]); !why.empty())
          return fail(why);
      const size_t len_bytes = (static_cast<size_t>(2 * B) * sizeof(int32_t) + 7) / 8 * 8;
      const size_t pos_count = c.position_ids ? static_cast<size_t>(B * S) : 0;
      std::vector<uint8_t> staging(len_bytes + pos_count * sizeof(int64_t));
      std::memcpy(staging.data(), past_len.data(), B * sizeof(int32_t));
      std::memcpy(staging.data() + B * sizeof(int32_t), kv_len.data(), B * sizeof(int32_t));
      for (size_t r = 0; r < pos_count; ++r) {  // row b of the positions at b * S (the stride is S)
        const int64_t b = static_cast<int64_t>(r) / S, i = static_cast<int64_t>(r) % S;
        const int64_t v = c.position_ids[b * c.position_batch_stride + i];
        std::memcpy(staging.data() + len_bytes + r * sizeof(int64_t), &v, sizeof(int64_t));
      }
      FASTATTN_RETURN_IF_ERROR(device.temporary(ordinal, launch.stream, staging.size(), &device_lengths));
      FASTATTN_RETURN_IF_ERROR(device.copy(ordinal, launch.stream, device_lengths.get(), staging.data(), staging.size(),
                                           CopyKind::kHostToDevice));
      char* base = static_cast<char*>(device_lengths.get());
      c.past_len = reinterpret_cast<const int32_t*>(base);
      c.kv_len = reinterpret_cast<const int32_t*>(base) + B;
      if (pos_count) {
        c.position_ids = reinterpret_cast<const int64_t*>(base + len_bytes);
        c.position_batch_stride = S;
      }
    }

    // The KV cache is updated in place in present. Where past is present's own buffer (genai's
    // past_present_share_buffer: the same OrtValue bound as both), nothing moves; else present is
    // cleared and the valid past rows of each batch copied in first, as ONNX Runtime does.
    const size_t width = elem_size(elem_type(c.dtype));
    const size_t row_bytes = static_cast<size_t>(D) * width;
    const size_t present_bytes = static_cast<size_t>(B * KV * C) * row_bytes;
    const size_t past_bytes = static_cast<size_t>(B * KV * P) * row_bytes;
    // On an accelerator the backend does the same on the device from the past it is given.
    for (int i : {0, 1}) {
      char* present = static_cast<char*>(i == 0 ? c.present_k : c.present_v);
      const char* past = static_cast<const char*>(has_past ? data[i == 0 ? kGqaPastKey : kGqaPastValue] : nullptr);
      if (past == present) continue;
      if (past && past < present + present_bytes && present < past + past_bytes)
        return fail(std::string(i == 0 ? "past_key and present_key" : "past_value and present_value") +
                    " overlap without being the same buffer");
      if (accel) {
        (i == 0 ? c.past_k : c.past_v) = past;
        c.past_rows = P;
        continue;
      }
      std::memset(present, 0, present_bytes);
      if (!past || seq_past == 0) continue;
      launch.parallel_for(B * KV, [&](int64_t bh) {
        const int64_t b = bh / KV;
        std::memcpy(present + static_cast<size_t>(bh * C) * row_bytes, past + static_cast<size_t>(bh * P) * row_bytes,
                    static_cast<size_t>(past_len[b]) * row_bytes);
      });
    }
    AttentionParams p = make_params(g, c, launch.device);
    std::string rule;
    try {
      rule = attention_forward(p, launch);
    } catch (const std::exception& e) {  // a device failure, named with the node (ORT_FAIL: no quiet CPU rerun)
      return make_error(core::node_error(cfg.op_type, cfg.name, e.what()), ORT_FAIL);
    }
    if (!rule.empty()) return fail(rule);
    return nullptr;
  });
}

}  // namespace fastattn::ep
