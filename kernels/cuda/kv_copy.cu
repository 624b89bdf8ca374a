// present = concat(past, new): one (batch, kv head) slice per blockIdx.y, rows over blockIdx.x;
// a row is copied in chunks of the widest size (16, 8, 4 or 2 bytes) that every pointer, stride
// and the row width allow.
#include "kv_copy.h"

#include <cstdint>
#include <stdexcept>
#include <string>

namespace fastattn::cuda {
namespace {

struct CopyArgs {
  const char* past;
  const char* fresh;
  char* present;
  int64_t past_b, past_h, past_s;  // strides in bytes
  int64_t new_b, new_h, new_s;
  int64_t pre_b, pre_h, pre_s;
  int64_t slices;     // batch * kv heads
  int heads, seq_past, seq_total;
  int chunks;         // chunks per row
  int lanes_shift;    // log2 of the threads sharing a row (a power of two <= 32)
};

template <class Chunk>
__global__ void concat_rows_kernel(const __grid_constant__ CopyArgs a) {
  const int lanes = 1 << a.lanes_shift;
  const int sub = threadIdx.x & (lanes - 1);
  const int rows_per_block = blockDim.x >> a.lanes_shift;
  for (int64_t slice = blockIdx.y; slice < a.slices; slice += gridDim.y) {
    const int64_t b = slice / a.heads, h = slice % a.heads;
    for (int64_t j = int64_t(blockIdx.x) * rows_per_block + (threadIdx.x >> a.lanes_shift); j < a.seq_total;
         j += int64_t(gridDim.x) * rows_per_block) {
      const char* src = j < a.seq_past ? a.past + b * a.past_b + h * a.past_h + j * a.past_s
                                       : a.fresh + b * a.new_b + h * a.new_h + (j - a.seq_past) * a.new_s;
      char* dst = a.present + b * a.pre_b + h * a.pre_h + j * a.pre_s;
      for (int c = sub; c < a.chunks; c += lanes)
        reinterpret_cast<Chunk*>(dst)[c] = reinterpret_cast<const Chunk*>(src)[c];
    }
  }
}

}  // namespace

void write_present(const AttentionParams& p, const TensorView& past, const TensorView& fresh, const TensorView& present,
                   int sms, cudaStream_t stream) {
  if (!present.data || p.batch <= 0 || p.kv_num_heads <= 0 || p.seq_total() <= 0) return;
  const bool values = &present == &p.present_v || &fresh == &p.v;  // callers pass p's own views
  const int64_t d = values && p.head_dim_v > 0 ? p.head_dim_v : p.head_dim;
  const int64_t esz = static_cast<int64_t>(elem_size(present.dtype));
  if (d <= 0) return;
  const bool has_past = p.seq_past > 0, has_new = p.seq_kv > 0;
  if ((has_past && !past.data) || (has_new && !fresh.data))
    throw std::runtime_error("fastattn CUDA: present_key/present_value copy is missing its past or new rows");

  // Widest chunk that divides every row start and the row width.
  auto fits = [&](int64_t w) {
    auto ok = [&](const TensorView& v) {
      return (reinterpret_cast<uintptr_t>(v.data) % w == 0) && (v.batch_stride * esz) % w == 0 &&
             (v.head_stride * esz) % w == 0 && (v.seq_stride * esz) % w == 0;
    };
    return (d * esz) % w == 0 && ok(present) && (!has_past || ok(past)) && (!has_new || ok(fresh));
  };
  int64_t w = 16;
  while (w > esz && !fits(w)) w /= 2;

  CopyArgs a;
  a.past = static_cast<const char*>(has_past ? past.data : present.data);  // never read when absent
  a.fresh = static_cast<const char*>(has_new ? fresh.data : present.data);
  a.present = static_cast<char*>(present.data);
  a.past_b = past.batch_stride * esz, a.past_h = past.head_stride * esz, a.past_s = past.seq_stride * esz;
  a.new_b = fresh.batch_stride * esz, a.new_h = fresh.head_stride * esz, a.new_s = fresh.seq_stride * esz;
  a.pre_b = present.batch_stride * esz, a.pre_h = present.head_stride * esz, a.pre_s = present.seq_stride * esz;
  a.slices = p.batch * p.kv_num_heads;
  a.heads = static_cast<int>(p.kv_num_heads);
  a.seq_past = static_cast<int>(p.seq_past);
  a.seq_total = static_cast<int>(p.seq_total());
  a.chunks = static_cast<int>(d * esz / w);
  a.lanes_shift = 0;
  while ((1 << a.lanes_shift) < a.chunks && a.lanes_shift < 5) ++a.lanes_shift;

  constexpr int kThreads = 256;
  const int64_t rows_per_block = kThreads >> a.lanes_shift;
  const int64_t y = a.slices < 65535 ? a.slices : 65535;
  const int64_t want_x = (a.seq_total + rows_per_block - 1) / rows_per_block;
  const int64_t fill_x = (int64_t(sms > 0 ? sms : 1) * 8 + y - 1) / y;  // about 8 blocks per SM in all
  const dim3 grid(static_cast<unsigned>(want_x < fill_x ? want_x : fill_x), static_cast<unsigned>(y));
  switch (w) {
    case 16: concat_rows_kernel<uint4><<<grid, kThreads, 0, stream>>>(a); break;
    case 8: concat_rows_kernel<uint2><<<grid, kThreads, 0, stream>>>(a); break;
    case 4: concat_rows_kernel<uint32_t><<<grid, kThreads, 0, stream>>>(a); break;
    default: concat_rows_kernel<uint16_t><<<grid, kThreads, 0, stream>>>(a); break;
  }
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    throw std::runtime_error(std::string("fastattn CUDA: present_key/present_value copy launch failed: ") +
                             cudaGetErrorString(e));
}

}  // namespace fastattn::cuda
