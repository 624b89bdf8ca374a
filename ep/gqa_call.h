// What reading a GroupQueryAttention node (gqa_node.cc) and running it (gqa_compute.cc) share:
// the sizes and pointers of one call, and the AttentionParams made from them.
#pragma once

#include <cstdint>

#include "gqa_node.h"

namespace fastattn::ep {

ElemType gqa_elem_type(DType t);

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
  // The past as a buffer of its own (present = past + new), which the backend copies into present;
  // null: present already holds the past (the shared buffer).
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

// The kernel's params for call c of node g on `device` (views over packed or separate Q/K/V, the
// cache in present, rotary, bias, window, sinks).
AttentionParams make_gqa_params(const GqaConfig& g, const GqaCall& c, Device device);

}  // namespace fastattn::ep
