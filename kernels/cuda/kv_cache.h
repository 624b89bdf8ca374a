// GroupQueryAttention's KV cache kept in place (AttentionParams::kv_capacity > 0) and its rotary
// embedding, on the device, before the attention kernel reads everything from present.
#pragma once

#include <cuda_runtime.h>

#include "attention_params.h"

namespace fastattn::cuda {

// Writes the new key rows (rotated when p.rotary is on, at their positions) and value rows into
// present_k / present_v at rows [past_len[b], past_len[b] + seq_kv) (seq_past when past_len is
// null). When p.past_k is a buffer of its own (present = past + new), present's rows
// [0, past_len[b]) are copied from it (seq_past rows per slice) and the rows after the new ones
// are zeroed, as onnxruntime's kernel leaves them; when it aliases present (or is null) nothing
// else is touched. float16 / bfloat16 only. Throws std::runtime_error on a launch failure.
void update_kv_cache(const AttentionParams& p, int sms, cudaStream_t stream);

// rotated = q with the rotary embedding applied (p.rotary on), element type p.dtype, laid out
// as rotated_view ([B, S_q, H, D] strides). Positions as for the keys.
void rotate_query(const AttentionParams& p, const TensorView& rotated_view, int sms, cudaStream_t stream);

}  // namespace fastattn::cuda
