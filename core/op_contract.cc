#include "op_contract.h"

#include <cmath>

namespace fastattn::core {

const char* const kInputNames[kNumInputs] = {"query",            "key",      "value",     "attn_bias",
                                             "key_padding_mask", "past_key", "past_value"};
const char* const kOutputNames[kNumOutputs] = {"output", "present_key", "present_value"};

namespace {

std::string str(int64_t v) { return std::to_string(v); }

bool known(int64_t d) { return d >= 0; }

// Both known and different.
bool differ(int64_t a, int64_t b) { return known(a) && known(b) && a != b; }

std::string dims_text(const TensorDesc& t) {
  if (t.rank < 0) return "[?]";
  std::string s = "[";
  for (int i = 0; i < t.rank; ++i) s += (i ? ", " : "") + (known(t.dims[i]) ? str(t.dims[i]) : std::string("?"));
  return s + "]";
}

bool is_float_type(DType t) { return t == DType::kFloat32 || t == DType::kFloat16 || t == DType::kBFloat16; }

ElemType elem_type(DType t) {
  if (t == DType::kFloat16) return ElemType::kFloat16;
  if (t == DType::kBFloat16) return ElemType::kBFloat16;
  return ElemType::kFloat32;
}

// Product of known dims divided by a known head count; -1 if unknown.
int64_t div_or_unknown(int64_t a, int64_t b) { return known(a) && b > 0 ? a / b : -1; }

std::string heads_rule(int64_t heads, int64_t kv_heads) {
  return "kv_num_heads must divide num_heads: kv_num_heads = " + str(kv_heads) + ", num_heads = " + str(heads);
}

Rule type_rule(std::string text) { return {std::move(text), true}; }

std::vector<int64_t> dense_strides(const std::vector<int64_t>& dims) {
  std::vector<int64_t> s(dims.size(), 1);
  for (int i = static_cast<int>(dims.size()) - 2; i >= 0; --i) s[i] = s[i + 1] * dims[i + 1];
  return s;
}

std::vector<int64_t> strides_of(const TensorArg& t) {
  return t.strides.size() == t.desc.dims.size() ? t.strides : dense_strides(t.desc.dims);
}

// Logical [B, H, S, D] view of a 3D [B, S, H*D] or 4D [B, H, S, D] tensor.
std::string view_of(const TensorArg& t, const char* name, int64_t heads, TensorView* v) {
  const auto& d = t.desc.dims;
  const std::vector<int64_t> st = strides_of(t);
  bool empty = false;  // NumPy gives empty arrays any strides: nothing to read, nothing to check
  for (int64_t n : d) empty = empty || n == 0;
  if (!empty && d.back() > 1 && st.back() != 1) return std::string(name) + " must be contiguous in its last axis";
  v->data = t.data;
  v->dtype = elem_type(t.desc.dtype);
  v->batch_stride = st[0];
  if (d.size() == 3) {
    v->head_stride = heads > 0 ? d[2] / heads : 0;
    v->seq_stride = st[1];
  } else {
    v->head_stride = st[1];
    v->seq_stride = st[2];
  }
  return "";
}

}  // namespace

const char* dtype_name(DType t) {
  switch (t) {
    case DType::kFloat32: return "float32";
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
    case DType::kFloat64: return "float64";
    case DType::kBool: return "bool";
    case DType::kInt8: return "int8";
    case DType::kUInt8: return "uint8";
    case DType::kInt16: return "int16";
    case DType::kUInt16: return "uint16";
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
    case DType::kUndefined: return "unknown";
    case DType::kOther: break;
  }
  return "an unsupported type";
}

std::string node_error(const std::string& op_type, const std::string& node_name, const std::string& rule) {
  return op_type + " node '" + node_name + "': " + rule;
}

Rule read_attributes(const AttributeSource& source, OpAttributes* a) {
  *a = OpAttributes{};
  auto kind_text = [](AttrKind k) {
    return k == AttrKind::kInt ? "an integer" : k == AttrKind::kFloat ? "a float" : "a string, tensor or list";
  };
  for (const AttributeSpec& spec : kAttributeSpecs) {
    const AttrKind want = spec.is_float ? AttrKind::kFloat : AttrKind::kInt, got = source.kind_of(spec.name);
    if (got != AttrKind::kAbsent && got != want)
      return type_rule(std::string("attribute ") + spec.name + " must be " + kind_text(want) + ", got " + kind_text(got));
  }
  if (source.names) {
    for (const std::string& name : source.names()) {
      bool known_name = false;
      for (const AttributeSpec& spec : kAttributeSpecs) known_name = known_name || name == spec.name;
      if (!known_name)
        return {"unknown attribute '" + name + "' (the op has num_heads, kv_num_heads, scale, causal, window_size, softcap)"};
    }
  }
  auto read_int = [&](const char* name, int64_t* v) {
    if (source.kind_of(name) == AttrKind::kInt) *v = source.get_int(name);
  };
  auto read_float = [&](const char* name, float* v) {
    const bool present = source.kind_of(name) == AttrKind::kFloat;
    if (present) *v = source.get_float(name);
    return present;
  };
  read_int("num_heads", &a->num_heads);
  read_int("kv_num_heads", &a->kv_num_heads);
  a->has_scale = read_float("scale", &a->scale);
  read_int("causal", &a->causal);
  read_int("window_size", &a->window_size);
  read_float("softcap", &a->softcap);
  // 0 in OpAttributes means "not given": a given 0 (or less) is named here, where presence is known.
  for (const char* name : {"num_heads", "kv_num_heads"})
    if (source.kind_of(name) == AttrKind::kInt && source.get_int(name) < 1)
      return {std::string("attribute ") + name + " must be >= 1, got " + std::to_string(source.get_int(name))};
  return {check_attributes(*a)};
}

std::string check_attributes(const OpAttributes& a) {
  if (a.num_heads < 0) return "attribute num_heads must be >= 1, got " + str(a.num_heads);
  if (a.kv_num_heads < 0) return "attribute kv_num_heads must be >= 1, got " + str(a.kv_num_heads);
  if (a.num_heads > 0 && a.kv_num_heads > 0 && a.num_heads % a.kv_num_heads != 0)
    return "attribute " + heads_rule(a.num_heads, a.kv_num_heads);
  if (a.causal != 0 && a.causal != 1) return "attribute causal must be 0 or 1, got " + str(a.causal);
  if (a.window_size != -1 && a.window_size < 1)
    return "attribute window_size must be -1 (none) or >= 1, got " + str(a.window_size);
  if (a.has_scale && !std::isfinite(a.scale)) return "attribute scale must be a finite number";
  if (!std::isfinite(a.softcap) || a.softcap < 0.f)
    return "attribute softcap must be >= 0 (0 = none), got " + std::to_string(a.softcap);
  return "";
}

Rule infer_outputs(const OpAttributes& a, const TensorDesc (&in)[kNumInputs], TensorDesc (&out)[kNumOutputs]) {
  if (auto e = check_attributes(a); !e.empty()) return {e};
  for (int i : {kQuery, kKey, kValue})
    if (!in[i].present) return {std::string("input ") + kInputNames[i] + " is required"};
  const DType t = in[kQuery].dtype;
  if (t != DType::kUndefined && !is_float_type(t))
    return type_rule(std::string("query dtype must be float32, float16 or bfloat16, got ") + dtype_name(t));
  for (int i : {kKey, kValue, kAttnBias, kPastKey, kPastValue}) {
    if (in[i].present && in[i].dtype != DType::kUndefined && t != DType::kUndefined && in[i].dtype != t)
      return type_rule(std::string(kInputNames[i]) + " must have the query's element type " + dtype_name(t) +
                       ", got " + dtype_name(in[i].dtype));
  }
  const auto& m = in[kKeyPaddingMask];
  if (m.present && m.dtype != DType::kUndefined && m.dtype != DType::kBool && m.dtype != DType::kInt32 &&
      m.dtype != DType::kInt64)
    return type_rule(std::string("key_padding_mask must be bool, int32 or int64, got ") + dtype_name(m.dtype));
  if (in[kPastKey].present != in[kPastValue].present) return {"past_key and past_value must be given together"};

  const auto &q = in[kQuery], &k = in[kKey], &v = in[kValue];
  int rank = q.rank;
  if (rank >= 0 && rank != 3 && rank != 4)
    return {"query must be 3D [B, S_q, num_heads*D] or 4D [B, num_heads, S_q, D], got rank " + str(rank)};
  for (const TensorDesc* x : {&k, &v}) {
    if (x->rank >= 0 && x->rank != 3 && x->rank != 4) return {"key and value must be 3D or 4D, got " + dims_text(*x)};
    if (x->rank >= 0 && rank >= 0 && x->rank != rank)
      return {"key and value must have the query's rank " + str(rank) + ", got " + dims_text(*x)};
    if (rank < 0) rank = x->rank;
  }

  int64_t B = -1, H = -1, KVH = -1, Sq = -1, Skv = -1, D = -1, Dv = -1;
  auto dim = [](const TensorDesc& x, int i) { return x.rank > i ? x.dims[i] : int64_t{-1}; };
  if (rank == 3) {
    if (a.num_heads <= 0) return {"attribute num_heads is required for 3D inputs"};
    H = a.num_heads;
    KVH = a.kv_num_heads > 0 ? a.kv_num_heads : H;
    if (known(dim(q, 2)) && dim(q, 2) % H)
      return {"query hidden size " + str(dim(q, 2)) + " is not divisible by num_heads " + str(H)};
    if (known(dim(k, 2)) && dim(k, 2) % KVH)
      return {"key hidden size " + str(dim(k, 2)) + " is not divisible by kv_num_heads " + str(KVH)};
    if (known(dim(v, 2)) && dim(v, 2) % KVH)
      return {"value hidden size " + str(dim(v, 2)) + " is not divisible by kv_num_heads " + str(KVH)};
    D = div_or_unknown(dim(q, 2), H);
    if (differ(div_or_unknown(dim(k, 2), KVH), D))
      return {"key head size " + str(dim(k, 2) / KVH) + " differs from query head size " + str(D)};
    if (!known(D)) D = div_or_unknown(dim(k, 2), KVH);
    Dv = div_or_unknown(dim(v, 2), KVH);
    Sq = dim(q, 1);
    Skv = dim(k, 1);
    if (differ(dim(v, 1), Skv))
      return {"key and value sequence lengths differ (" + str(Skv) + " vs " + str(dim(v, 1)) + ")"};
  } else if (rank == 4) {
    H = dim(q, 1);
    KVH = dim(k, 1);
    if (a.num_heads > 0 && differ(H, a.num_heads))
      return {"attribute num_heads " + str(a.num_heads) + " disagrees with query.shape[1] = " + str(H)};
    if (a.kv_num_heads > 0 && differ(KVH, a.kv_num_heads))
      return {"attribute kv_num_heads " + str(a.kv_num_heads) + " disagrees with key.shape[1] = " + str(KVH)};
    if (!known(H) && a.num_heads > 0) H = a.num_heads;
    if (!known(KVH) && a.kv_num_heads > 0) KVH = a.kv_num_heads;
    if (differ(dim(v, 1), KVH)) return {"value heads " + str(dim(v, 1)) + " differ from key heads " + str(KVH)};
    if (!known(KVH)) KVH = dim(v, 1);
    if (known(H) && known(KVH) && (KVH < 1 || H % KVH)) return {heads_rule(H, KVH) + " (the heads axes of query and key)"};
    D = dim(q, 3);
    if (differ(dim(k, 3), D)) return {"key head size " + str(dim(k, 3)) + " differs from query head size " + str(D)};
    if (!known(D)) D = dim(k, 3);
    Dv = dim(v, 3);
    Sq = dim(q, 2);
    Skv = dim(k, 2);
    if (differ(dim(v, 2), Skv))
      return {"key and value sequence lengths differ (" + str(Skv) + " vs " + str(dim(v, 2)) + ")"};
  }
  B = dim(q, 0);
  for (const TensorDesc* x : {&k, &v}) {
    if (differ(dim(*x, 0), B)) return {"batch sizes of query, key and value differ"};
    if (!known(B)) B = dim(*x, 0);
  }

  int64_t Spast = in[kPastKey].present ? -1 : 0;
  if (in[kPastKey].present) {
    const auto &pk = in[kPastKey], &pv = in[kPastValue];
    if (pk.rank >= 0 && pk.rank != 4) return {"past_key must be 4D [B, kv_num_heads, S_past, D], got " + dims_text(pk)};
    if (pv.rank >= 0 && pv.rank != 4)
      return {"past_value must be 4D [B, kv_num_heads, S_past, Dv], got " + dims_text(pv)};
    if (differ(dim(pk, 0), B) || differ(dim(pk, 1), KVH) || differ(dim(pk, 3), D))
      return {"past_key must be [B, kv_num_heads, S_past, D] = [" + str(B) + ", " + str(KVH) + ", S_past, " + str(D) +
              "], got " + dims_text(pk)};
    Spast = dim(pk, 2);
    if (differ(dim(pv, 0), B) || differ(dim(pv, 1), KVH) || differ(dim(pv, 2), Spast) || differ(dim(pv, 3), Dv))
      return {"past_value must be [B, kv_num_heads, S_past, Dv] = [" + str(B) + ", " + str(KVH) + ", " +
              (known(Spast) ? str(Spast) : std::string("S_past")) + ", " + str(Dv) + "], got " + dims_text(pv)};
    if (!known(Spast)) Spast = dim(pv, 2);
  }
  const int64_t Stotal = known(Spast) && known(Skv) ? Spast + Skv : -1;

  if (in[kAttnBias].present) {
    const auto& b = in[kAttnBias];
    if (b.rank > 4) return {"attn_bias must have rank <= 4, got " + dims_text(b)};
    const int64_t want[4] = {B, H, Sq, Stotal};
    for (int i = 0; i < b.rank; ++i) {
      const int64_t d = b.dims[i], w = want[4 - b.rank + i];
      if (known(d) && d != 1 && differ(d, w))
        return {"attn_bias " + dims_text(b) + " is not broadcastable to [B, num_heads, S_q, S_total] = [" + str(B) +
                ", " + str(H) + ", " + str(Sq) + ", " + str(Stotal) + "]"};
    }
  }
  if (m.present) {
    if (m.rank >= 0 && m.rank != 2) return {"key_padding_mask must be 2D [B, S_total], got " + dims_text(m)};
    if (differ(dim(m, 0), B) || differ(dim(m, 1), Stotal))
      return {"key_padding_mask must be [B, S_total] = [" + str(B) + ", " + str(Stotal) + "], got " + dims_text(m)};
  }

  // Output dims, and the input dims each one always equals (for symbolic names).
  const std::pair<int, int> none{-1, -1}, batch{kQuery, 0};
  const bool r4 = rank == 4;
  out[kOutput] = {true, t, rank, {}, {}};
  if (rank == 3) {
    out[kOutput].dims = {B, Sq, known(Dv) ? H * Dv : -1};
    out[kOutput].same_as = {batch, {kQuery, 1}, none};
  } else if (r4) {
    out[kOutput].dims = {B, H, Sq, Dv};
    out[kOutput].same_as = {batch, {kQuery, 1}, {kQuery, 2}, {kValue, 3}};
  }
  const std::pair<int, int> kv_heads = r4 ? std::pair<int, int>{kKey, 1} : none;
  const std::pair<int, int> total = in[kPastKey].present ? none : std::pair<int, int>{kKey, r4 ? 2 : 1};
  out[kPresentKey] = {true, t, 4, {B, KVH, Stotal, D}, {batch, kv_heads, total, r4 ? std::pair<int, int>{kQuery, 3} : none}};
  out[kPresentValue] = {true, t, 4, {B, KVH, Stotal, Dv}, {batch, kv_heads, total, r4 ? std::pair<int, int>{kValue, 3} : none}};
  return {};
}

std::string fill_params(const OpAttributes& a, const TensorArg (&in)[kNumInputs], const TensorArg (&out)[kNumOutputs],
                        Device device, AttentionParams* pp) {
  AttentionParams& p = *pp;
  const auto &q = in[kQuery].desc.dims, &k = in[kKey].desc.dims, &v = in[kValue].desc.dims;
  p.device = device;
  p.dtype = elem_type(in[kQuery].desc.dtype);
  p.batch = q[0];
  if (q.size() == 3) {
    p.num_heads = a.num_heads;
    p.kv_num_heads = a.kv_num_heads > 0 ? a.kv_num_heads : a.num_heads;
    p.seq_q = q[1];
    p.seq_kv = k[1];
    p.head_dim = p.num_heads > 0 ? q[2] / p.num_heads : 0;
    p.head_dim_v = p.kv_num_heads > 0 ? v[2] / p.kv_num_heads : 0;
  } else {
    p.num_heads = q[1];
    p.kv_num_heads = k[1];
    p.seq_q = q[2];
    p.seq_kv = k[2];
    p.head_dim = q[3];
    p.head_dim_v = v[3];
  }
  std::string rule;
  auto view = [&](const TensorArg& t, const char* name, int64_t heads, TensorView* tv) {
    if (rule.empty() && t.data) rule = view_of(t, name, heads, tv);
  };
  view(in[kQuery], "query", p.num_heads, &p.q);
  view(in[kKey], "key", p.kv_num_heads, &p.k);
  view(in[kValue], "value", p.kv_num_heads, &p.v);
  if (in[kPastKey].desc.present && in[kPastKey].desc.dims[2] > 0) {
    p.seq_past = in[kPastKey].desc.dims[2];
    view(in[kPastKey], "past_key", p.kv_num_heads, &p.past_k);
    view(in[kPastValue], "past_value", p.kv_num_heads, &p.past_v);
  }
  if (in[kAttnBias].desc.present) {
    const auto& b = in[kAttnBias].desc.dims;
    const std::vector<int64_t> st = strides_of(in[kAttnBias]);
    int64_t strides[4] = {0, 0, 0, 0};  // leading axes the bias lacks broadcast
    const int off = 4 - static_cast<int>(b.size());
    for (size_t i = 0; i < b.size(); ++i) strides[off + i] = b[i] == 1 ? 0 : st[i];  // broadcast: same element
    p.bias = in[kAttnBias].data;
    p.bias_dtype = elem_type(in[kAttnBias].desc.dtype);
    p.bias_batch_stride = strides[0];
    p.bias_head_stride = strides[1];
    p.bias_row_stride = strides[2];
    p.bias_col_stride = strides[3];
  }
  if (in[kKeyPaddingMask].desc.present) {
    const DType mt = in[kKeyPaddingMask].desc.dtype;
    const std::vector<int64_t> st = strides_of(in[kKeyPaddingMask]);
    if (in[kKeyPaddingMask].desc.dims[1] > 1 && st[1] != 1) rule = "key_padding_mask must be contiguous in its last axis";
    p.mask_type = mt == DType::kBool ? MaskType::kBool : mt == DType::kInt32 ? MaskType::kInt32 : MaskType::kInt64;
    p.key_padding_mask = in[kKeyPaddingMask].data;
    p.mask_batch_stride = st[0];
  }
  p.scale = a.has_scale ? a.scale
                        : static_cast<float>(1.0 / std::sqrt(static_cast<double>(p.head_dim > 0 ? p.head_dim : 1)));
  set_window(p, a.causal != 0, a.window_size);
  p.softcap = a.softcap;
  view(out[kOutput], "output", p.num_heads, &p.out);
  view(out[kPresentKey], "present_key", p.kv_num_heads, &p.present_k);
  view(out[kPresentValue], "present_value", p.kv_num_heads, &p.present_v);
  return rule;
}

AttentionParams params_for_support_check(const OpAttributes& a, const TensorDesc (&in)[kNumInputs], Device device) {
  static char placeholder;  // marks a present tensor; never read
  int qkv_rank = 3;
  for (int i : {kQuery, kKey, kValue})
    if (in[i].rank == 4) qkv_rank = 4;
  const int rank_of[kNumInputs] = {qkv_rank, qkv_rank, qkv_rank, 4, 2, 4, 4};  // where not known
  TensorArg args[kNumInputs], outs[kNumOutputs];
  for (int i = 0; i < kNumInputs; ++i) {
    if (!in[i].present) continue;
    TensorDesc& d = args[i].desc = in[i];
    if (d.rank < 0) d.dims.assign(rank_of[i], 0);
    for (int64_t& n : d.dims) n = n < 0 ? 0 : n;
    d.rank = static_cast<int>(d.dims.size());
    args[i].data = &placeholder;
  }
  AttentionParams p;
  fill_params(a, args, outs, device, &p);
  return p;
}

}  // namespace fastattn::core
