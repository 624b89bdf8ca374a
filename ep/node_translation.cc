#include "node_translation.h"

namespace fastattn::ep {
namespace {

using core::kAttnBias;
using core::kKey;
using core::kNumInputs;
using core::kNumOutputs;
using core::kPastKey;
using core::kPastValue;
using core::kPresentKey;
using core::kQuery;
using core::kValue;

OrtStatus* value_info(const OrtValueInfo* vi, TensorDesc* t, std::string* name) {
  if (!vi) return nullptr;
  const char* n = nullptr;
  FASTATTN_RETURN_IF_ERROR(ort().GetValueInfoName(vi, &n));
  *name = n ? n : "";
  if (name->empty()) return nullptr;
  t->present = true;
  const OrtTypeInfo* type_info = nullptr;
  FASTATTN_RETURN_IF_ERROR(ort().GetValueInfoTypeInfo(vi, &type_info));
  const OrtTensorTypeAndShapeInfo* ts = nullptr;
  if (!type_info) return nullptr;
  FASTATTN_RETURN_IF_ERROR(ort().CastTypeInfoToTensorInfo(type_info, &ts));
  if (!ts) return nullptr;
  FASTATTN_RETURN_IF_ERROR(describe(ts, t));
  if (t->rank == 0) t->rank = -1;  // unknown shape (no input of the op is a scalar)
  return nullptr;
}

// ONNX Attention's own integer and float attributes (its names are not FastAttention's).
bool attr_int(const OrtNode* node, const char* name, int64_t* out) {
  const core::AttributeSource source = attributes_of(node);
  if (source.kind_of(name) != core::AttrKind::kInt) return false;
  *out = source.get_int(name);
  return true;
}
bool attr_float(const OrtNode* node, const char* name, float* out) {
  const core::AttributeSource source = attributes_of(node);
  if (source.kind_of(name) != core::AttrKind::kFloat) return false;
  *out = source.get_float(name);
  return true;
}

bool has_input(const NodeView& v, size_t i) { return i < v.input_names.size() && !v.input_names[i].empty(); }
bool has_output(const NodeView& v, size_t i) { return i < v.output_names.size() && !v.output_names[i].empty(); }

}  // namespace

OrtStatus* read_node(const OrtNode* node, NodeView* v) {
  const char* s = nullptr;
  FASTATTN_RETURN_IF_ERROR(ort().Node_GetName(node, &s));
  v->name = s ? s : "";
  FASTATTN_RETURN_IF_ERROR(ort().Node_GetOperatorType(node, &s));
  v->op_type = s ? s : "";
  FASTATTN_RETURN_IF_ERROR(ort().Node_GetDomain(node, &s));
  v->domain = s ? s : "";
  FASTATTN_RETURN_IF_ERROR(ort().Node_GetSinceVersion(node, &v->since_version));
  size_t n = 0;
  FASTATTN_RETURN_IF_ERROR(ort().Node_GetNumInputs(node, &n));
  std::vector<const OrtValueInfo*> infos(n);
  FASTATTN_RETURN_IF_ERROR(ort().Node_GetInputs(node, infos.data(), n));
  v->inputs.assign(n, TensorDesc{});
  v->input_names.assign(n, "");
  for (size_t i = 0; i < n; ++i) FASTATTN_RETURN_IF_ERROR(value_info(infos[i], &v->inputs[i], &v->input_names[i]));
  FASTATTN_RETURN_IF_ERROR(ort().Node_GetNumOutputs(node, &n));
  infos.assign(n, nullptr);
  FASTATTN_RETURN_IF_ERROR(ort().Node_GetOutputs(node, infos.data(), n));
  v->output_names.assign(n, "");
  for (size_t i = 0; i < n; ++i) {
    TensorDesc unused;
    FASTATTN_RETURN_IF_ERROR(value_info(infos[i], &unused, &v->output_names[i]));
  }
  return nullptr;
}

bool is_fast_attention(const NodeView& v) { return v.domain == core::kOpDomain && v.op_type == core::kOpType; }
bool is_onnx_attention(const NodeView& v) {
  return (v.domain.empty() || v.domain == "ai.onnx") && v.op_type == "Attention" && v.since_version >= 23;
}

std::string translate_fast_attention(const OrtNode* node, const NodeView& v, NodeConfig* cfg,
                                     TensorDesc (&in)[kNumInputs]) {
  cfg->op_type = core::kOpType;
  cfg->name = v.name;
  if (auto rule = core::read_attributes(attributes_of(node), &cfg->attrs); rule.broken()) return rule.text;
  if (v.inputs.size() > kNumInputs) return "has " + std::to_string(v.inputs.size()) + " inputs, at most 7 allowed";
  if (v.output_names.size() > kNumOutputs)
    return "has " + std::to_string(v.output_names.size()) + " outputs, at most 3 allowed";
  TensorDesc out[kNumOutputs];
  for (size_t i = 0; i < v.inputs.size(); ++i) {
    in[i] = v.inputs[i];
    cfg->input_index[i] = has_input(v, i) ? static_cast<int>(i) : -1;
  }
  for (size_t i = 0; i < v.output_names.size(); ++i) cfg->output_index[i] = has_output(v, i) ? static_cast<int>(i) : -1;
  return core::infer_outputs(cfg->attrs, in, out).text;
}

std::string translate_onnx_attention(const OrtNode* node, const NodeView& v, NodeConfig* cfg,
                                     TensorDesc (&in)[kNumInputs]) {
  cfg->op_type = "Attention";
  cfg->name = v.name;
  int64_t mode = 0, is_causal = 0;
  attr_int(node, "qk_matmul_output_mode", &mode);
  if (mode != 0) return "qk_matmul_output_mode != 0";
  if (has_output(v, 3)) return "the qk_matmul_output output is used";
  if (has_input(v, 6)) return "nonpad_kv_seqlen is given";
  OpAttributes& a = cfg->attrs;
  attr_int(node, "q_num_heads", &a.num_heads);
  attr_int(node, "kv_num_heads", &a.kv_num_heads);
  a.has_scale = attr_float(node, "scale", &a.scale);
  if (a.has_scale && !(a.scale > 0.f)) return "scale <= 0 (ONNX Runtime's own Attention kernel rejects it)";
  attr_int(node, "is_causal", &is_causal);
  attr_float(node, "softcap", &a.softcap);
  a.causal = is_causal;
  a.window_size = -1;

  // Attention's inputs in contract slots: Q, K, V, attn_mask -> attn_bias, past_key, past_value.
  const int slot_of_input[6] = {kQuery, kKey, kValue, kAttnBias, kPastKey, kPastValue};
  TensorDesc out[kNumOutputs];
  for (size_t i = 0; i < v.inputs.size() && i < 6; ++i) {
    if (!has_input(v, i)) continue;
    in[slot_of_input[i]] = v.inputs[i];
    cfg->input_index[slot_of_input[i]] = static_cast<int>(i);
  }
  for (size_t i = 0; i < v.output_names.size() && i < 3; ++i) cfg->output_index[i] = has_output(v, i) ? int(i) : -1;
  const TensorDesc& q = in[kQuery];
  if (q.rank < 0) return "the query's rank is unknown";
  if (q.dtype != DType::kFloat32 && q.dtype != DType::kFloat16 && q.dtype != DType::kBFloat16)
    return std::string("element type ") + core::dtype_name(q.dtype) + " is not supported";
  if (q.rank == 3 && (a.num_heads <= 0 || a.kv_num_heads <= 0)) return "3D inputs without q_num_heads/kv_num_heads";
  TensorDesc& mask = in[kAttnBias];
  if (mask.present) {
    // A float mask is an additive bias; a bool mask is exactly a 0/-inf bias (ONNX Runtime, like
    // us, outputs zeros for a row with no visible key). A mask shorter than S_total is padded by
    // Attention, so the last dim must be known to equal S_total.
    if (mask.dtype == DType::kBool) {
      cfg->bool_mask_as_bias = true;
      mask.dtype = q.dtype;
    } else if (mask.dtype != q.dtype) {
      return std::string("attn_mask of type ") + core::dtype_name(mask.dtype) +
             " (only bool and the query's type are mapped)";
    }
    if (mask.rank != 2 && mask.rank != 4) return "attn_mask rank is not 2 or 4";
  }
  if (auto rule = core::infer_outputs(a, in, out); rule.broken()) return rule.text;
  const int64_t s_total = out[kPresentKey].dims[2];
  if (mask.present) {
    const int64_t last = mask.dims[mask.rank - 1];
    if (s_total < 0 || last != s_total) return "attn_mask's last dim is not known to equal S_total";
  }
  if (a.causal) {
    // ONNX Runtime's CPU Attention aligns is_causal at offset S_past (query i sees keys
    // j <= i + S_past); ours at S_total - S_q. They agree iff S_q == S_kv (new keys), checked
    // against ONNX Runtime in tests/test_attention23.py.
    const int64_t sq = q.rank == 3 ? q.dims[1] : q.dims[2];
    const TensorDesc& k = in[kKey];
    const int64_t skv = k.rank == 3 ? k.dims[1] : k.rank == 4 ? k.dims[2] : -1;
    if (sq < 0 || skv < 0 || sq != skv) return "is_causal with S_q != S_kv (ONNX Runtime aligns it differently)";
  }
  return "";
}

}  // namespace fastattn::ep
