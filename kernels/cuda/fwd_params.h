// The forward kernel's parameters: plain values and device pointers, filled on the host from
// AttentionParams (cuda_backend.cu) and passed by value to every launch. Strides are in
// elements; every (batch, head) slice is a [rows, head_dim] matrix with unit column stride.
#pragma once

#include <cstdint>

namespace fastattn::cuda {

struct SliceStrides {
  int64_t batch = 0, head = 0, row = 0;
};

struct FwdParams {
  const void* q = nullptr;
  const void* k = nullptr;       // seq_kv new rows
  const void* v = nullptr;
  const void* past_k = nullptr;  // seq_past cached rows (null when seq_past == 0)
  const void* past_v = nullptr;
  void* out = nullptr;
  // present = concat(past, new) [seq_total rows per (batch, kv head)], written by the attention
  // kernel from the K/V tiles it holds in shared memory (traits with kWritesPresent: the decode
  // tiles); null: not written by it. Set only where every key tile is loaded by some query tile
  // of the KV group's first head (no window_left, key_padding_mask or per-batch lengths).
  void* present_k = nullptr;
  void* present_v = nullptr;
  SliceStrides q_st, k_st, v_st, pk_st, pv_st, o_st, prk_st, prv_st;

  int batch = 0, heads = 0, kv_group = 1;  // kv head = head / kv_group
  int seq_q = 0, seq_kv = 0, seq_past = 0, seq_total = 0;
  // Query row r is at position r / rows_per_token + query_shift. rows_per_token is 1, except when
  // the heads of a GQA group are packed as the rows of one tile (S_q == 1: every row is the same
  // token, and the group's K/V tiles are read once instead of once per head).
  int rows_per_token = 1;
  int query_shift = 0;  // S_total - S_q of the node
  // Per-batch lengths (GroupQueryAttention's KV cache; null: none). With past_len, the query
  // rows of batch b start at position past_len[b] (instead of query_shift) and its keys end at
  // past_len[b] + new_rows; with kv_len, keys j >= kv_len[b] are hidden and a row past the last
  // valid key takes position kv_len[b] - 1 (it attends like the last valid row). Keys past a
  // batch's end are never loaded, whatever their bits.
  const int* past_len = nullptr;
  const int* kv_len = nullptr;
  int new_rows = 0;
  int head_dim = 0;                        // <= the kernel's padded head size, multiple of 8
  int window_left = -1, window_right = -1; // -1: unbounded; causal is window_right == 0

  float scale = 0.f;       // on Q K^T
  float scale_log2 = 0.f;  // scale * log2(e)
  float softcap = 0.f;     // <= 0: none
  // One more softmax denominator term per row, exp(sink_h) of the row's head h (no value):
  // head_sink [heads] in the element type, or 0 for every head with smooth_softmax. The rows'
  // weights then sum to less than 1. The full variant only.
  const void* head_sink = nullptr;
  bool smooth_softmax = false;

  // Additive bias [B, H, S_q, S_total] in the element type, or float32 when bias_f32 (float32
  // nodes run through the 16-bit kernels; their bias is read as it is); broadcast axes have stride 0.
  const void* bias = nullptr;
  bool bias_f32 = false;
  int64_t bias_b = 0, bias_h = 0, bias_r = 0, bias_c = 0;

  // key_padding_mask [B, S_total]: nonzero = visible. 1: uint8/bool, 4: int32, 8: int64 bytes.
  const void* mask = nullptr;
  int mask_bytes = 0;
  int64_t mask_b = 0;

  // Split-KV (decode, and any call with too few blocks to fill the GPU): blockIdx.z is
  // batch * num_splits + split; split s covers key tiles [s * split_tiles, (s + 1) * split_tiles)
  // and writes its normalised output and log2-sum-exp to o_partial [splits, B, heads, seq_q, D]
  // and lse_partial [splits, B, heads, seq_q] (float32), merged by the combine kernel.
  int num_splits = 1, split_tiles = 0;
  float* o_partial = nullptr;
  float* lse_partial = nullptr;

  // Host-side launch hints (not read by the kernels).
  bool decode = false;  // S_q <= 16: the small-tile traits
  int sms = 0;          // multiprocessors of the device
};

}  // namespace fastattn::cuda
