// The plan: AttentionParams (our contract) -> the arguments of CANN's
// aclnnFusedInferAttentionScoreGetWorkspaceSize (V1), or the reason the operator cannot compute
// the node exactly. Pure host code (no CANN, no device memory), so that it is tested alone
// (tests/ascend/: an emulator of the operator's documented semantics) and shared by the EP's NPU
// backend and the Python torch_npu path (fastattn_onnx.ascend). Facts and sources:
// ../shared/notes/ascend-cann.md and the operator's docs (hicann/ops-transformer,
// attention/fused_infer_attention_score/docs/aclnnFusedInferAttentionScore_en.md).
//
// What the caller (the runtime) does with a plan, in order:
//   1. write_present: copy past (if any) and the new rows into present_k / present_v (our
//      contract's outputs, exact copies in the node's dtype);
//   2. key/value operand (kv_source): the node's k / v, or present, or a scratch buffer of
//      key_shape in compute_dtype filled with concat(past, new) (cast when cast_inputs);
//   3. cast_inputs: query (and the operand above) converted to compute_dtype into scratch, the
//      output computed into scratch of out_shape and converted back into p.out;
//   4. attenMask: none, the compressed 2048 x 2048 mask (compressed_causal_mask(), built once
//      per device), or the explicit mask (explicit_mask(p, in), built per run, copied);
//   5. pseShift: attn_bias as a dense [pse_shape] tensor of compute_dtype (pse_copy: the bias is
//      not already that dense tensor; broadcast axes are expanded);
//   6. kvPaddingSize: a device int64 tensor [1] holding kv_padding_size when has_kv_padding_size;
//   7. the two-phase call with the scalar arguments below (blockSize 0, antiquantMode 0,
//      softmaxLseFlag false, every quantisation tensor and blockTable nullptr);
//   8. zero_out_batches: set those batches' output rows to zero after the call (decode only).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "attention_params.h"

namespace fastattn::ascend {

// preTokens / nextTokens meaning "unbounded" (the operator's documented default).
inline constexpr int64_t kUnboundedTokens = 2147483647;
// The compressed mask sparse modes 2/3/4 take: triu(ones(2048, 2048), 1), 1 = hidden.
inline constexpr int64_t kCompressedMaskSize = 2048;

enum class MaskKind : int32_t {
  kNone = 0,        // attenMask nullptr
  kCompressed = 1,  // compressed_causal_mask(), shape {2048, 2048}, uint8
  kExplicit = 2,    // explicit_mask(p, in), shape {B, 1, S_q, S_kv}, uint8, 1 = hidden
};

enum class KvSource : int32_t {
  kInputs = 0,   // p.k / p.v as they are (no past; their memory already has input_layout)
  kPresent = 1,  // p.present_k / p.present_v after step 1 (past + new, already in input_layout)
  kScratch = 2,  // a dense scratch of key_shape in compute_dtype: concat(past, new), cast if needed
};

struct FiaPlan {
  std::string input_layout;            // inputLayout: "BNSD" or "BSH"
  int64_t num_heads = 0;               // numHeads
  int64_t num_key_value_heads = 0;     // numKeyValueHeads
  double scale_value = 1.0;            // scaleValue (p.scale)
  int64_t pre_tokens = kUnboundedTokens;   // preTokens (read by sparse modes 0 and 4 only)
  int64_t next_tokens = kUnboundedTokens;  // nextTokens (idem)
  int64_t sparse_mode = 0;             // sparseMode: 0 (none / explicit mask), 3 (causal), 4 (band)
  int64_t inner_precise = 0;           // innerPrecise: 0 high precision; 2 also zeroes rows with no visible key (S_q > 1)
  std::vector<int64_t> actual_seq_lengths;     // actualSeqLengths (host aclIntArray); empty: nullptr (always, now)
  std::vector<int64_t> actual_seq_lengths_kv;  // actualSeqLengthsKv (host aclIntArray, one per batch); empty: nullptr
  bool has_kv_padding_size = false;    // kvPaddingSize passed (device int64 [1]); false: nullptr
  int64_t kv_padding_size = 0;         // its value: batch b reads keys [S_kv - pad - L_b, S_kv - pad)
  MaskKind mask = MaskKind::kNone;     // attenMask
  std::vector<int64_t> mask_shape;     // attenMask dims ({} when kNone)
  bool has_pse = false;                // pseShift passed (attn_bias given)
  bool pse_copy = false;               // pseShift must be materialised (bias not already dense [pse_shape])
  std::vector<int64_t> pse_shape;      // pseShift dims: {B or 1, N, S_q, S_kv}
  bool write_present = false;          // step 1: present outputs requested
  KvSource kv_source = KvSource::kInputs;  // key / value tensor lists (one tensor each)
  ElemType compute_dtype = ElemType::kFloat16;  // dtype of query/key/value/pseShift/attentionOut as passed
  bool cast_inputs = false;            // compute_dtype != p.dtype (float32 node, allow_low_precision)
  std::vector<int64_t> query_shape;    // query dims (BNSD {B,N,S_q,D}; BSH {B,S_q,N*D})
  std::vector<int64_t> key_shape;      // key dims (BNSD {B,KVH,S_kv,D}; BSH {B,S_kv,KVH*D}); S_kv = past + new
  std::vector<int64_t> value_shape;    // value dims (= key_shape: the operator needs Dv == D)
  std::vector<int64_t> out_shape;      // attentionOut dims (= query_shape)
  // Decode (S_q = 1) batches with no visible key: our contract gives zeros, but the incremental
  // kernel takes innerPrecise 0/1 only (no invalid-row correction; torch_npu 2.13.0 docs), so
  // the runtime zeroes these batches' N * D output values (contiguous in both layouts) after
  // the call; what the operator wrote there is undefined. Empty when none.
  std::vector<int64_t> zero_out_batches;
};

// What the host must know per run about data-dependent inputs, read back from the device by the
// caller (a few bytes per batch; the whole key_padding_mask because masks with holes need it).
struct PlanInputs {
  // key_padding_mask normalised: [batch * seq_total], 1 = key visible, 0 = hidden. Empty: the
  // node has no key_padding_mask (p.key_padding_mask is null). See read_key_padding_mask.
  std::vector<uint8_t> key_visible;
  // A host copy of p.kv_len[0..batch) (GroupQueryAttention's valid key counts). Empty: p.kv_len
  // is null.
  std::vector<int32_t> kv_len;
  // Provider option: float32 nodes are computed in low_precision_type (the operator has no
  // float32). Off: float32 nodes are declined.
  bool allow_low_precision = false;
  ElemType low_precision_type = ElemType::kFloat16;  // kFloat16 or kBFloat16
};

// Bytes of p.key_padding_mask the caller copies to the host (from p.key_padding_mask on):
// (batch - 1) * mask_batch_stride + seq_total elements of p.mask_type; 0 when there is none.
size_t key_padding_mask_bytes(const AttentionParams& p);
// Fills in->key_visible from that host copy. Returns "" or what is wrong.
std::string read_key_padding_mask(const AttentionParams& p, const void* host_copy, PlanInputs* in);

// The node's properties that the operator cannot take whatever the data (session creation:
// sizes may be 0 = unknown, and are then not checked, except that an unknown S_q counts as
// S_q > 1). "" or the reason; make_plan calls it.
std::string static_decline(const AttentionParams& p, const PlanInputs& in);

// The plan for p. Returns "" (plan filled) or the reason the operator cannot compute p exactly
// (declined; the reason starts with a short tag: "softcap: ...", "float32: ...", ...). Beyond
// static_decline only strides and sizes decline ("layout", "hidden_size"); the data in PlanInputs
// never does (every mask pattern has a route). "plan: ..." means the arguments are inconsistent.
std::string make_plan(const AttentionParams& p, const PlanInputs& in, FiaPlan* plan);

// Host masks, 1 = hidden (uint8; the operator also takes bool of the same bytes).
// triu(ones(2048, 2048), 1).
std::vector<uint8_t> compressed_causal_mask();
// [B, 1, S_q, S_total]: our contract's visibility of every (batch, row, key) inverted.
std::vector<uint8_t> explicit_mask(const AttentionParams& p, const PlanInputs& in);

// One line for verbose logs: layout, heads, sparse mode, pre/next, lengths, mask, pse, casts.
std::string describe(const FiaPlan& plan);

}  // namespace fastattn::ascend
