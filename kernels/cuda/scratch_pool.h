// Stream-ordered scratch memory of the CUDA backend and the EP (split-KV partials, the float32
// bridge's float16 copies, temporaries of a node), from a memory pool of our own per device.
// Why not cudaMallocAsync's default pool: its release threshold is 0, so every synchronisation
// (a decode loop synchronises once per token) returns the memory to the driver and the next
// step maps it again; on the H200 that cost a decode step about as much as its attention
// kernel. Our pool keeps up to kRetainedBytes mapped between calls.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace fastattn::cuda {

inline constexpr uint64_t kRetainedBytes = uint64_t(256) << 20;

// cudaMallocAsync / cudaFreeAsync on the current device's pool, in the order of `stream`.
cudaError_t scratch_malloc(void** ptr, size_t bytes, cudaStream_t stream);
cudaError_t scratch_free(void* ptr, cudaStream_t stream);

}  // namespace fastattn::cuda
