// One parameter struct for every backend (CPU now; CUDA and Ascend next), in the spirit of
// flash-attention's Flash_fwd_params: device pointers, 64-bit element strides, the element type
// of each tensor and a mask description. The op's contract (core/op_contract.h) fills it from
// ONNX Runtime's or NumPy's tensors; kernels never see framework types.
#pragma once

#include <cstdint>
#include <string>

namespace fastattn {

enum class ElemType : int32_t { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };
enum class MaskType : int32_t { kNone = 0, kBool = 1, kInt32 = 2, kInt64 = 3 };
enum class DeviceKind : int32_t { kCpu = 0, kCuda = 1, kNpu = 2 };

size_t elem_size(ElemType t);
const char* elem_name(ElemType t);
const char* device_kind_name(DeviceKind k);

// Where the tensors of one call live. Every pointer in AttentionParams is on this device.
struct Device {
  DeviceKind kind = DeviceKind::kCpu;
  int32_t ordinal = 0;  // CUDA ordinal / NPU device id; 0 on the CPU
};

// A logical [batch, heads, seq, dim] view. Strides are in elements; the last (dim) axis is
// contiguous. A 3D [B, S, H*D] tensor is the view {b: S*H*D, h: D, s: H*D}; a 4D
// [B, H, S, D] tensor is {b: H*S*D, h: S*D, s: D}. No transposing copies are needed.
struct TensorView {
  void* data = nullptr;
  ElemType dtype = ElemType::kFloat32;
  int64_t batch_stride = 0;
  int64_t head_stride = 0;
  int64_t seq_stride = 0;
};

// Rotary embedding applied to Q and K before attention (onnxruntime's GroupQueryAttention
// `do_rotary`). cos/sin caches are [max_position, rotary_dim / 2] of q's dtype; the position of
// row s of batch b is position_ids[b * position_batch_stride + s] when given, else its row in
// the cache (past_len[b] or seq_past, + s). Null cos_cache: no rotary.
// Q is rotated on the way into the kernel (the q tensor is never written); the NEW key rows
// (seq_kv of them) are rotated and the rotated rows are what present (or the in-place cache)
// receives; past rows are taken as already rotated. Values are not rotated. Each rotated value
// is rounded to the element type, as onnxruntime stores it. The struct has no max_position:
// the caller guarantees every position (position_ids or the default) lies in [0, max_position).
struct RotaryParams {
  const void* cos_cache = nullptr;
  const void* sin_cache = nullptr;
  int64_t rotary_dim = 0;          // leading dims of each head rotated (<= head_dim, even)
  int64_t cache_row_stride = 0;    // elements between positions in the caches
  bool interleaved = false;        // pairs (2i, 2i+1) instead of (i, i + rotary_dim / 2)
  const int64_t* position_ids = nullptr;
  int64_t position_batch_stride = 0;
};

struct AttentionParams {
  Device device;
  ElemType dtype = ElemType::kFloat32;  // compute type; every view's dtype says what it holds

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

  // KV cache kept in place (GroupQueryAttention's shared past/present buffers): when
  // kv_capacity > 0, present_k/present_v are buffers of kv_capacity rows per (batch, kv head)
  // that already hold the past (past_k/past_v alias them, or are null: they are never read);
  // only the new rows are written, at rows [past_len[b], past_len[b] + seq_kv) (seq_past for
  // every batch when past_len is null), and batch b attends to rows [0, past_len[b] + seq_kv)
  // of present (further limited by kv_len). Rows past that may hold anything (NaN, inf): they
  // are never read into a result. seq_past is the largest past_len[b]. 0: present is written
  // whole. past_k/past_v may also be buffers of their own (present = past + new, seq_past rows
  // per slice): the backend then copies rows [0, past_len[b]) into present and zeroes the rows
  // after the new ones, as onnxruntime's kernel leaves them.
  // Alignment: with an in-place cache, query row i of batch b sits at key position
  // past_len[b] + i (per batch; NOT the uniform bottom-right i + S_total - S_q used otherwise)
  // for the causal/window bounds below; seq_past then only bounds kv_capacity in check_params.
  int64_t kv_capacity = 0;
  const int32_t* past_len = nullptr;  // per batch, on the device

  // Per-batch count of valid keys, from key 0 (right padding, as GroupQueryAttention's
  // seqlens_k + 1 and Ascend's actual_seq_lengths_kv): keys j >= kv_len[b] are hidden. Null: all.
  // A query row whose position is >= kv_len[b] (a padded row) takes position kv_len[b] - 1 for
  // the causal/window bounds, as GroupQueryAttention's CPU kernel caps a row's causal length at
  // the valid length: it attends like the last valid row. kv_len[b] <= 0: no keys, zero rows.
  const int32_t* kv_len = nullptr;

  RotaryParams rotary;

  // Additive bias, logical [B, num_heads, S_q, S_total], of bias_dtype; broadcast axes have
  // stride 0. Null when absent.
  const void* bias = nullptr;
  ElemType bias_dtype = ElemType::kFloat32;
  int64_t bias_batch_stride = 0, bias_head_stride = 0, bias_row_stride = 0, bias_col_stride = 0;

  // key_padding_mask [B, S_total]: nonzero = key visible. O(B*S) instead of an S x S mask.
  const void* key_padding_mask = nullptr;
  MaskType mask_type = MaskType::kNone;
  int64_t mask_batch_stride = 0;

  float scale = 0.f;  // already resolved (default 1/sqrt(D) applied by the caller)
  // Visible keys of query row i, aligned bottom-right (i' = i + S_total - S_q), as
  // FlashAttention-2's window_size_left/right and Ascend's pre/next tokens express them:
  // i' - window_left <= j <= i' + window_right; -1: unbounded on that side. Causal is
  // window_right == 0.
  int64_t window_left = -1;
  int64_t window_right = -1;
  float softcap = 0.f;  // <= 0: none

  // Extra softmax denominator terms (GroupQueryAttention): each row's softmax gets one more
  // virtual key with logit sink_h (head h) and no value: smooth_softmax uses sink_h = 0 for every
  // head; head_sink, when given ([num_heads], element type `dtype`, on the device), supplies
  // sink_h per head and takes precedence. A row's weights then sum to less than 1:
  //   m = max(sink_h, max_j x_j), w_j = e^(x_j - m) / (e^(sink_h - m) + sum_k e^(x_k - m))
  // (onnxruntime's ComputeSmoothSoftmaxInplace / MlasComputeSoftmax with a sink). A row with no
  // visible key puts all its weight on the sink: zeros.
  bool smooth_softmax = false;
  const void* head_sink = nullptr;

  int64_t seq_total() const { return seq_past + seq_kv; }
  bool causal() const { return window_right == 0; }
};

// The op's causal flag and window_size (-1 or <= 0: none) as window extents: window w keeps
// i' - j < w (and j - i' < w without causal).
inline void set_window(AttentionParams& p, bool causal, int64_t window_size) {
  p.window_left = window_size > 0 ? window_size - 1 : -1;
  p.window_right = causal ? 0 : window_size > 0 ? window_size - 1 : -1;
}

// Checks the shape relations every backend relies on. Returns "" when the params are
// consistent, else a sentence naming the rule that is broken (callers add the node name).
std::string check_params(const AttentionParams& p);

}  // namespace fastattn
