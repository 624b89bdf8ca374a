#include "op_contract.h"

#include <cmath>

namespace fastattn::ep {
namespace {

const char* const kInputNames[kNumInputs] = {"query",            "key",      "value",     "attn_bias",
                                             "key_padding_mask", "past_key", "past_value"};

std::string str(int64_t v) { return std::to_string(v); }

bool known(int64_t d) { return d >= 0; }

// Both known and different.
bool differ(int64_t a, int64_t b) { return known(a) && known(b) && a != b; }

std::string dims_text(const TensorInfo& t) {
  if (t.rank < 0) return "[?]";
  std::string s = "[";
  for (int i = 0; i < t.rank; ++i) s += (i ? ", " : "") + (known(t.dims[i]) ? str(t.dims[i]) : std::string("?"));
  return s + "]";
}

bool is_float_type(ONNXTensorElementDataType t) {
  return t == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || t == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 ||
         t == ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16;
}

ElemType elem_type(ONNXTensorElementDataType t) {
  if (t == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16) return ElemType::kFloat16;
  if (t == ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16) return ElemType::kBFloat16;
  return ElemType::kFloat32;
}

// Product of known dims divided by a known head count; -1 if unknown.
int64_t div_or_unknown(int64_t a, int64_t b) { return known(a) && b > 0 ? a / b : -1; }

// Logical [B, H, S, D] view of a dense 3D [B, S, H*D] or 4D [B, H, S, D] tensor.
TensorView view_of(const void* data, const std::vector<int64_t>& d, int64_t heads) {
  TensorView v;
  v.data = const_cast<void*>(data);
  if (d.size() == 3) {
    v.batch_stride = d[1] * d[2];
    v.head_stride = d[2] / heads;
    v.seq_stride = d[2];
  } else {
    v.batch_stride = d[1] * d[2] * d[3];
    v.head_stride = d[2] * d[3];
    v.seq_stride = d[3];
  }
  return v;
}

}  // namespace

const char* type_name(ONNXTensorElementDataType t) {
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return "float32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return "float16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: return "bfloat16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return "float64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL: return "bool";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return "int32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return "int64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8: return "int8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return "uint8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED: return "unknown";
    default: return "an unsupported type";
  }
}

std::string node_error(const char* op_type, const std::string& node_name, const std::string& rule) {
  return std::string(op_type) + " node '" + node_name + "': " + rule;
}

std::string check_attributes(const OpAttributes& a) {
  if (a.num_heads < 0) return "attribute num_heads must be >= 1, got " + str(a.num_heads);
  if (a.kv_num_heads < 0) return "attribute kv_num_heads must be >= 1, got " + str(a.kv_num_heads);
  if (a.num_heads > 0 && a.kv_num_heads > 0 && a.num_heads % a.kv_num_heads != 0)
    return "attribute kv_num_heads (" + str(a.kv_num_heads) + ") must divide num_heads (" + str(a.num_heads) + ")";
  if (a.causal != 0 && a.causal != 1) return "attribute causal must be 0 or 1, got " + str(a.causal);
  if (a.has_scale && !std::isfinite(a.scale)) return "attribute scale must be a finite number";
  if (!std::isfinite(a.softcap) || a.softcap < 0.f)
    return "attribute softcap must be >= 0 (0 = none), got " + std::to_string(a.softcap);
  return "";
}

std::string infer_outputs(const OpAttributes& a, const TensorInfo (&in)[kNumInputs], TensorInfo (&out)[kNumOutputs]) {
  if (auto e = check_attributes(a); !e.empty()) return e;
  for (int i : {kQuery, kKey, kValue})
    if (!in[i].present) return std::string("input ") + kInputNames[i] + " is required";
  const auto t = in[kQuery].type;
  if (t != ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED && !is_float_type(t))
    return std::string("query must be float32, float16 or bfloat16, got ") + type_name(t);
  for (int i : {kKey, kValue, kAttnBias, kPastKey, kPastValue}) {
    if (in[i].present && in[i].type != ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED &&
        t != ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED && in[i].type != t)
      return std::string(kInputNames[i]) + " must have the query's element type " + type_name(t) + ", got " +
             type_name(in[i].type);
  }
  const auto& m = in[kKeyPaddingMask];
  if (m.present && m.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED && m.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL &&
      m.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32 && m.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64)
    return std::string("key_padding_mask must be bool, int32 or int64, got ") + type_name(m.type);
  if (in[kPastKey].present != in[kPastValue].present) return "past_key and past_value must be given together";

  const auto &q = in[kQuery], &k = in[kKey], &v = in[kValue];
  int rank = q.rank;
  if (rank >= 0 && rank != 3 && rank != 4)
    return "query must be 3D [B, S_q, num_heads*D] or 4D [B, num_heads, S_q, D], got rank " + str(rank);
  for (const TensorInfo* x : {&k, &v}) {
    if (x->rank >= 0 && x->rank != 3 && x->rank != 4) return "key and value must be 3D or 4D, got " + dims_text(*x);
    if (x->rank >= 0 && rank >= 0 && x->rank != rank)
      return "key and value must have the query's rank " + str(rank) + ", got " + dims_text(*x);
    if (rank < 0) rank = x->rank;
  }

  int64_t B = -1, H = -1, KVH = -1, Sq = -1, Skv = -1, D = -1, Dv = -1;
  auto dim = [](const TensorInfo& x, int i) { return x.rank > i ? x.dims[i] : int64_t{-1}; };
  if (rank == 3) {
    if (a.num_heads <= 0) return "attribute num_heads is required for 3D inputs";
    H = a.num_heads;
    KVH = a.kv_num_heads > 0 ? a.kv_num_heads : H;
    if (H % KVH) return "kv_num_heads (" + str(KVH) + ") must divide num_heads (" + str(H) + ")";
    if (known(dim(q, 2)) && dim(q, 2) % H)
      return "query hidden size " + str(dim(q, 2)) + " is not divisible by num_heads " + str(H);
    if (known(dim(k, 2)) && dim(k, 2) % KVH)
      return "key hidden size " + str(dim(k, 2)) + " is not divisible by kv_num_heads " + str(KVH);
    if (known(dim(v, 2)) && dim(v, 2) % KVH)
      return "value hidden size " + str(dim(v, 2)) + " is not divisible by kv_num_heads " + str(KVH);
    D = div_or_unknown(dim(q, 2), H);
    if (differ(div_or_unknown(dim(k, 2), KVH), D))
      return "key head size " + str(dim(k, 2) / KVH) + " differs from query head size " + str(D);
    if (!known(D)) D = div_or_unknown(dim(k, 2), KVH);
    Dv = div_or_unknown(dim(v, 2), KVH);
    Sq = dim(q, 1);
    Skv = dim(k, 1);
    if (differ(dim(v, 1), Skv))
      return "key and value sequence lengths differ (" + str(Skv) + " vs " + str(dim(v, 1)) + ")";
  } else if (rank == 4) {
    H = dim(q, 1);
    KVH = dim(k, 1);
    if (a.num_heads > 0 && differ(H, a.num_heads))
      return "attribute num_heads " + str(a.num_heads) + " disagrees with query.shape[1] = " + str(H);
    if (a.kv_num_heads > 0 && differ(KVH, a.kv_num_heads))
      return "attribute kv_num_heads " + str(a.kv_num_heads) + " disagrees with key.shape[1] = " + str(KVH);
    if (!known(H) && a.num_heads > 0) H = a.num_heads;
    if (!known(KVH) && a.kv_num_heads > 0) KVH = a.kv_num_heads;
    if (differ(dim(v, 1), KVH)) return "value heads " + str(dim(v, 1)) + " differ from key heads " + str(KVH);
    if (!known(KVH)) KVH = dim(v, 1);
    if (known(H) && known(KVH) && (KVH < 1 || H % KVH))
      return "key heads (" + str(KVH) + ") must divide query heads (" + str(H) + ")";
    D = dim(q, 3);
    if (differ(dim(k, 3), D)) return "key head size " + str(dim(k, 3)) + " differs from query head size " + str(D);
    if (!known(D)) D = dim(k, 3);
    Dv = dim(v, 3);
    Sq = dim(q, 2);
    Skv = dim(k, 2);
    if (differ(dim(v, 2), Skv))
      return "key and value sequence lengths differ (" + str(Skv) + " vs " + str(dim(v, 2)) + ")";
  }
  B = dim(q, 0);
  for (const TensorInfo* x : {&k, &v}) {
    if (differ(dim(*x, 0), B)) return "batch sizes of query, key and value differ";
    if (!known(B)) B = dim(*x, 0);
  }

  int64_t Spast = in[kPastKey].present ? -1 : 0;
  if (in[kPastKey].present) {
    const auto &pk = in[kPastKey], &pv = in[kPastValue];
    if (pk.rank >= 0 && pk.rank != 4) return "past_key must be 4D [B, kv_num_heads, S_past, D], got " + dims_text(pk);
    if (pv.rank >= 0 && pv.rank != 4) return "past_value must be 4D [B, kv_num_heads, S_past, Dv], got " + dims_text(pv);
    if (differ(dim(pk, 0), B) || differ(dim(pk, 1), KVH) || differ(dim(pk, 3), D))
      return "past_key must be [B, kv_num_heads, S_past, D] = [" + str(B) + ", " + str(KVH) + ", S_past, " + str(D) +
             "], got " + dims_text(pk);
    Spast = dim(pk, 2);
    if (differ(dim(pv, 0), B) || differ(dim(pv, 1), KVH) || differ(dim(pv, 2), Spast) || differ(dim(pv, 3), Dv))
      return "past_value must be [B, kv_num_heads, S_past, Dv] = [" + str(B) + ", " + str(KVH) + ", " +
             (known(Spast) ? str(Spast) : std::string("S_past")) + ", " + str(Dv) + "], got " + dims_text(pv);
    if (!known(Spast)) Spast = dim(pv, 2);
  }
  const int64_t Stotal = known(Spast) && known(Skv) ? Spast + Skv : -1;

  if (in[kAttnBias].present) {
    const auto& b = in[kAttnBias];
    if (b.rank > 4) return "attn_bias must have rank <= 4, got " + dims_text(b);
    const int64_t want[4] = {B, H, Sq, Stotal};
    for (int i = 0; i < b.rank; ++i) {
      const int64_t d = b.dims[i], w = want[4 - b.rank + i];
      if (known(d) && d != 1 && differ(d, w))
        return "attn_bias " + dims_text(b) + " is not broadcastable to [B, num_heads, S_q, S_total] = [" + str(B) +
               ", " + str(H) + ", " + str(Sq) + ", " + str(Stotal) + "]";
    }
  }
  if (m.present) {
    if (m.rank >= 0 && m.rank != 2) return "key_padding_mask must be 2D [B, S_total], got " + dims_text(m);
    if (differ(dim(m, 0), B) || differ(dim(m, 1), Stotal))
      return "key_padding_mask must be [B, S_total] = [" + str(B) + ", " + str(Stotal) + "], got " + dims_text(m);
  }

  out[kOutput] = {true, t, rank, {}};
  if (rank == 3) out[kOutput].dims = {B, Sq, known(Dv) ? H * Dv : -1};
  else if (rank == 4) out[kOutput].dims = {B, H, Sq, Dv};
  out[kPresentKey] = {true, t, 4, {B, KVH, Stotal, D}};
  out[kPresentValue] = {true, t, 4, {B, KVH, Stotal, Dv}};
  return "";
}

void fill_params(const OpAttributes& a, const TensorInfo (&in)[kNumInputs], const void* const (&in_data)[kNumInputs],
                 void* const (&out_data)[kNumOutputs], AttentionParams* pp) {
  AttentionParams& p = *pp;
  const auto &q = in[kQuery].dims, &k = in[kKey].dims, &v = in[kValue].dims;
  p.dtype = elem_type(in[kQuery].type);
  p.batch = q[0];
  if (q.size() == 3) {
    p.num_heads = a.num_heads;
    p.kv_num_heads = a.kv_num_heads > 0 ? a.kv_num_heads : a.num_heads;
    p.seq_q = q[1];
    p.seq_kv = k[1];
    p.head_dim = q[2] / p.num_heads;
    p.head_dim_v = v[2] / p.kv_num_heads;
  } else {
    p.num_heads = q[1];
    p.kv_num_heads = k[1];
    p.seq_q = q[2];
    p.seq_kv = k[2];
    p.head_dim = q[3];
    p.head_dim_v = v[3];
  }
  p.q = view_of(in_data[kQuery], q, p.num_heads);
  p.k = view_of(in_data[kKey], k, p.kv_num_heads);
  p.v = view_of(in_data[kValue], v, p.kv_num_heads);
  if (in[kPastKey].present && in[kPastKey].dims[2] > 0) {
    p.seq_past = in[kPastKey].dims[2];
    p.past_k = view_of(in_data[kPastKey], in[kPastKey].dims, p.kv_num_heads);
    p.past_v = view_of(in_data[kPastValue], in[kPastValue].dims, p.kv_num_heads);
  }
  const int64_t s_total = p.seq_total();
  if (in[kAttnBias].present) {
    const auto& b = in[kAttnBias].dims;
    int64_t strides[4] = {0, 0, 0, 0};  // leading axes the bias lacks broadcast
    const int off = 4 - static_cast<int>(b.size());
    int64_t stride = 1;
    for (int i = static_cast<int>(b.size()) - 1; i >= 0; --i) {
      strides[off + i] = b[i] == 1 ? 0 : stride;  // broadcast axes read the same element
      stride *= b[i];
    }
    p.bias = in_data[kAttnBias];
    p.bias_batch_stride = strides[0];
    p.bias_head_stride = strides[1];
    p.bias_row_stride = strides[2];
    p.bias_col_stride = strides[3];
  }
  if (in[kKeyPaddingMask].present) {
    const auto mt = in[kKeyPaddingMask].type;
    p.mask_type = mt == ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL    ? MaskType::kBool
                  : mt == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32 ? MaskType::kInt32
                                                              : MaskType::kInt64;
    p.key_padding_mask = in_data[kKeyPaddingMask];
    p.mask_batch_stride = s_total;
  }
  p.scale = a.has_scale ? a.scale : static_cast<float>(1.0 / std::sqrt(static_cast<double>(p.head_dim)));
  p.causal = a.causal != 0;
  p.window_size = a.window_size;
  p.softcap = a.softcap;
  const std::vector<int64_t> out_dims =
      q.size() == 3 ? std::vector<int64_t>{p.batch, p.seq_q, p.num_heads * p.head_dim_v}
                    : std::vector<int64_t>{p.batch, p.num_heads, p.seq_q, p.head_dim_v};
  p.out = view_of(out_data[kOutput], out_dims, p.num_heads);
  if (out_data[kPresentKey])
    p.present_k = view_of(out_data[kPresentKey], {p.batch, p.kv_num_heads, s_total, p.head_dim}, p.kv_num_heads);
  if (out_data[kPresentValue])
    p.present_v = view_of(out_data[kPresentValue], {p.batch, p.kv_num_heads, s_total, p.head_dim_v}, p.kv_num_heads);
}

}  // namespace fastattn::ep
