// The KV cache update and rotary embedding of GroupQueryAttention (kv_cache.h): one warp per row,
// lanes over the row's elements; rotary pairs are (i, i + rotary_dim / 2), or (2i, 2i + 1) when
// interleaved, computed in float32 and rounded once to the element type, as onnxruntime does.
// Bandwidth-bound and small next to the attention (a prompt's Q, K and V once; a decode step's
// one row per head), so plain element loads keep it simple.
#include "kv_cache.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace fastattn::cuda {
namespace {

struct Rows {  // a [batch, heads, rows, dim] view, strides in elements
  const void* data = nullptr;
  int64_t b = 0, h = 0, s = 0;
};

struct Rotary {
  const void* cos = nullptr;  // null: no rotary
  const void* sin = nullptr;
  int rotary_dim = 0, cache_stride = 0;
  bool interleaved = false;
  const int64_t* position_ids = nullptr;
  int64_t position_batch_stride = 0;
};

struct UpdateArgs {
  Rows key, value, past_k, past_v, present_k, present_v;
  Rotary rot;
  const int* past_len = nullptr;  // device, per batch; null: seq_past for all
  int seq_past = 0, seq_kv = 0, capacity = 0, heads = 0, dim = 0, dim_v = 0;
  int64_t slices = 0;  // batch * heads
  bool whole = false;  // present = past + new: every row of present is written
};

template <class T>
__device__ float to_f(T x) {
  if constexpr (std::is_same_v<T, __half>) return __half2float(x);
  else return __bfloat162float(x);
}
template <class T>
__device__ T from_f(float x) {
  if constexpr (std::is_same_v<T, __half>) return __float2half_rn(x);
  else return __float2bfloat16_rn(x);
}

template <class T>
__device__ const T* row_of(const Rows& v, int64_t b, int64_t h, int64_t s) {
  return static_cast<const T*>(v.data) + b * v.b + h * v.h + s * v.s;
}

// dst[0, dim) = src rotated at position pos (or copied when rot.cos is null), lanes over elements.
template <class T>
__device__ void rotate_row(const T* src, T* dst, int dim, const Rotary& rot, int64_t pos, int lane) {
  const int half = rot.rotary_dim / 2;
  for (int e = lane; e < dim; e += 32) {
    if (rot.cos == nullptr || e >= rot.rotary_dim) {
      dst[e] = src[e];
      continue;
    }
    const bool first = rot.interleaved ? (e % 2 == 0) : e < half;
    const int i = rot.interleaved ? e / 2 : (first ? e : e - half);
    const int partner = rot.interleaved ? (e ^ 1) : (first ? e + half : e - half);
    const float c = to_f(static_cast<const T*>(rot.cos)[pos * rot.cache_stride + i]);
    const float s = to_f(static_cast<const T*>(rot.sin)[pos * rot.cache_stride + i]);
    const float x = to_f(src[e]), y = to_f(src[partner]);
    dst[e] = from_f<T>(first ? x * c - y * s : x * c + y * s);  // (x0, x1) -> (x0 c - x1 s, x1 c + x0 s)
  }
}

// One warp per (slice, row); row j is a new row (j < seq_kv) or, when whole, a row of present.
template <class T>
__global__ void update_cache_kernel(const __grid_constant__ UpdateArgs a) {
  const int lane = threadIdx.x % 32;
  const int warps = blockDim.x / 32;
  const int rows = a.whole ? a.capacity : a.seq_kv;
  for (int64_t slice = blockIdx.y; slice < a.slices; slice += gridDim.y) {
    const int64_t b = slice / a.heads, h = slice % a.heads;
    const int past = a.past_len ? a.past_len[b] : a.seq_past;
    for (int64_t j = int64_t(blockIdx.x) * warps + threadIdx.x / 32; j < rows; j += int64_t(gridDim.x) * warps) {
      const int64_t at = a.whole ? j : past + j;  // row of present
      T* dk = const_cast<T*>(row_of<T>(a.present_k, b, h, at));
      T* dv = const_cast<T*>(row_of<T>(a.present_v, b, h, at));
      const int64_t s = at - past;  // new row index when in [0, seq_kv)
      if (s >= 0 && s < a.seq_kv) {
        const int64_t pos = a.rot.position_ids ? a.rot.position_ids[b * a.rot.position_batch_stride + s] : past + s;
        rotate_row(row_of<T>(a.key, b, h, s), dk, a.dim, a.rot, pos, lane);
        const T* v = row_of<T>(a.value, b, h, s);
        for (int e = lane; e < a.dim_v; e += 32) dv[e] = v[e];
      } else if (at < past) {  // whole: the valid past rows
        const T* pk = row_of<T>(a.past_k, b, h, at);
        const T* pv = row_of<T>(a.past_v, b, h, at);
        for (int e = lane; e < a.dim; e += 32) dk[e] = pk[e];
        for (int e = lane; e < a.dim_v; e += 32) dv[e] = pv[e];
      } else {  // whole: rows after the new ones
        for (int e = lane; e < a.dim; e += 32) dk[e] = from_f<T>(0.f);
        for (int e = lane; e < a.dim_v; e += 32) dv[e] = from_f<T>(0.f);
      }
    }
  }
}

struct QueryArgs {
  Rows q, out;
  Rotary rot;
  const int* past_len = nullptr;
  int seq_past = 0, seq_q = 0, heads = 0, dim = 0;
  int64_t slices = 0;
};

template <class T>
__global__ void rotate_query_kernel(const __grid_constant__ QueryArgs a) {
  const int lane = threadIdx.x % 32;
  const int warps = blockDim.x / 32;
  for (int64_t slice = blockIdx.y; slice < a.slices; slice += gridDim.y) {
    const int64_t b = slice / a.heads, h = slice % a.heads;
    const int past = a.past_len ? a.past_len[b] : a.seq_past;
    for (int64_t s = int64_t(blockIdx.x) * warps + threadIdx.x / 32; s < a.seq_q; s += int64_t(gridDim.x) * warps) {
      const int64_t pos = a.rot.position_ids ? a.rot.position_ids[b * a.rot.position_batch_stride + s] : past + s;
      rotate_row(row_of<T>(a.q, b, h, s), const_cast<T*>(row_of<T>(a.out, b, h, s)), a.dim, a.rot, pos, lane);
    }
  }
}

Rows rows_of(const TensorView& v) { return {v.data, v.batch_stride, v.head_stride, v.seq_stride}; }

Rotary rotary_of(const AttentionParams& p) {
  Rotary r;
  r.cos = p.rotary.cos_cache;
  r.sin = p.rotary.sin_cache;
  r.rotary_dim = static_cast<int>(p.rotary.rotary_dim);
  r.cache_stride = static_cast<int>(p.rotary.cache_row_stride);
  r.interleaved = p.rotary.interleaved;
  r.position_ids = p.rotary.position_ids;
  r.position_batch_stride = p.rotary.position_batch_stride;
  return r;
}

dim3 grid_for(int64_t rows, int64_t slices, int warps, int sms) {
  const int64_t y = slices < 65535 ? slices : 65535;
  const int64_t want_x = (rows + warps - 1) / warps;
  const int64_t fill_x = (int64_t(sms > 0 ? sms : 1) * 16 + y - 1) / y;  // about 16 blocks per SM in all
  return dim3(static_cast<unsigned>(want_x < fill_x ? want_x : fill_x), static_cast<unsigned>(y));
}

void check_launch(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw std::runtime_error(std::string("fastattn CUDA: ") + what + " launch failed: " + cudaGetErrorString(e));
}

constexpr int kThreads = 256;

}  // namespace

void update_kv_cache(const AttentionParams& p, int sms, cudaStream_t stream) {
  UpdateArgs a;
  a.key = rows_of(p.k);
  a.value = rows_of(p.v);
  a.present_k = rows_of(p.present_k);
  a.present_v = rows_of(p.present_v);
  a.whole = p.past_k.data != nullptr && p.past_k.data != p.present_k.data;
  a.past_k = a.whole ? rows_of(p.past_k) : a.present_k;
  a.past_v = a.whole ? rows_of(p.past_v) : a.present_v;
  a.rot = rotary_of(p);
  a.past_len = p.past_len;
  a.seq_past = static_cast<int>(p.seq_past);
  a.seq_kv = static_cast<int>(p.seq_kv);
  a.capacity = static_cast<int>(p.kv_capacity);
  a.heads = static_cast<int>(p.kv_num_heads);
  a.dim = static_cast<int>(p.head_dim);
  a.dim_v = static_cast<int>(p.head_dim_v);
  a.slices = p.batch * p.kv_num_heads;
  const int rows = a.whole ? a.capacity : a.seq_kv;
  if (rows <= 0 || a.slices <= 0) return;
  const dim3 grid = grid_for(rows, a.slices, kThreads / 32, sms);
  if (p.dtype == ElemType::kFloat16) update_cache_kernel<__half><<<grid, kThreads, 0, stream>>>(a);
  else if (p.dtype == ElemType::kBFloat16) update_cache_kernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(a);
  else throw std::runtime_error("fastattn CUDA: the in-place KV cache takes float16 or bfloat16");
  check_launch("KV cache update");
}

void rotate_query(const AttentionParams& p, const TensorView& rotated_view, int sms, cudaStream_t stream) {
  QueryArgs a;
  a.q = rows_of(p.q);
  a.out = rows_of(rotated_view);
  a.rot = rotary_of(p);
  a.past_len = p.past_len;
  a.seq_past = static_cast<int>(p.seq_past);
  a.seq_q = static_cast<int>(p.seq_q);
  a.heads = static_cast<int>(p.num_heads);
  a.dim = static_cast<int>(p.head_dim);
  a.slices = p.batch * p.num_heads;
  if (a.seq_q <= 0 || a.slices <= 0) return;
  const dim3 grid = grid_for(a.seq_q, a.slices, kThreads / 32, sms);
  if (p.dtype == ElemType::kFloat16) rotate_query_kernel<__half><<<grid, kThreads, 0, stream>>>(a);
  else if (p.dtype == ElemType::kBFloat16) rotate_query_kernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(a);
  else throw std::runtime_error("fastattn CUDA: rotary embeddings take float16 or bfloat16");
  check_launch("rotary embedding");
}

}  // namespace fastattn::cuda
