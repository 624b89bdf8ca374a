// One parameter struct for every backend (CPU now; CUDA and Ascend later), in the spirit of
// flash-attention's Flash_fwd_params: raw pointers, shapes, element strides and a mask
// description. ONNX Runtime plumbing (ep/) and the Python bindings translate their tensors
// into this; kernels never see framework types.
#pragma once

#include <cstdint>
#include <string>

namespace fastattn {

enum class ElemType : int32_t { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };
enum class MaskType : int32_t { kNone = 0, kBool = 1, kInt32 = 2, kInt64 = 3 };

size_t elem_size(ElemType t);
const char* elem_name(ElemType t);

// A logical [batch, heads, seq, dim] view. Strides are in elements; the last (dim) axis is
// contiguous. A 3D [B, S, H*D] tensor is the view {b: S*H*D, h: D, s: H*D}; a 4D
// [B, H, S, D] tensor is {b: H*S*D, h: S*D, s: D}. No transposing copies are needed.
struct TensorView {
  void* data = nullptr;
  int64_t batch_stride = 0;
  int64_t head_stride = 0;
  int64_t seq_stride = 0;
};

struct AttentionParams {
  ElemType dtype = ElemType::kFloat32;  // of q, k, v, past, bias, out, present

  int64_t batch = 0;
  int64_t num_heads = 0;     // query heads
  int64_t kv_num_heads = 0;  // divides num_heads (GQA; MQA when 1)
  int64_t seq_q = 0;
  int64_t seq_kv = 0;        // new keys/values in k, v
  int64_t seq_past = 0;      // cached keys/values in past_k, past_v (0: none)
  int64_t head_dim = 0;      // D of q and k
  int64_t head_dim_v = 0;    // Dv of v and out

  TensorView q, k, v;            // k, v hold seq_kv rows
  TensorView past_k, past_v;     // seq_past rows; data == nullptr when seq_past == 0
  TensorView out;                // seq_q rows of head_dim_v
  TensorView present_k, present_v;  // optional (data may be null): seq_total rows = concat(past, new)

  // Additive bias, logical [B, num_heads, S_q, S_total], same dtype as q; broadcast axes
  // have stride 0. Null when absent.
  const void* bias = nullptr;
  int64_t bias_batch_stride = 0, bias_head_stride = 0, bias_row_stride = 0, bias_col_stride = 0;

  // key_padding_mask [B, S_total]: nonzero = key visible. O(B*S) instead of an S x S mask.
  const void* key_padding_mask = nullptr;
  MaskType mask_type = MaskType::kNone;
  int64_t mask_batch_stride = 0;

  float scale = 0.f;          // already resolved (default 1/sqrt(D) applied by the caller)
  bool causal = false;        // bottom-right aligned: row i sees j <= i + S_total - S_q
  int64_t window_size = -1;   // <= 0: none
  float softcap = 0.f;        // <= 0: none

  int64_t seq_total() const { return seq_past + seq_kv; }
};

// Checks the shape relations every backend relies on. Returns "" when the params are
// consistent, else a sentence naming the rule that is broken (callers add the node name).
std::string check_params(const AttentionParams& p);

}  // namespace fastattn
