// present = concat(past, new) along the sequence axis, for any element size (2 or 4 bytes) and
// any element strides. The rows are copied bit for bit (no conversion).
#pragma once

#include <cuda_runtime.h>

#include "attention_params.h"

namespace fastattn::cuda {

// Writes present (seq_past + seq_kv rows per (batch, kv head)) from past (seq_past rows; data may
// be null when seq_past == 0) and fresh (seq_kv rows) on `stream`. Row width: head_dim_v when the
// views are p's value tensors, else head_dim; element size: present.dtype's. Returns without a
// launch when there is nothing to copy; throws std::runtime_error on a launch failure.
void write_present(const AttentionParams& p, const TensorView& past, const TensorView& fresh, const TensorView& present,
                   int sms, cudaStream_t stream);

}  // namespace fastattn::cuda
