// Host-side launch of the forward kernel for one (element type, padded head size): picks the
// traits of the device's architecture family. Each generated file fwd_<dtype>_hd<D>.cu
// (CMakeLists.txt, tests/build_check.sh) includes this and instantiates run_fwd<Element, D> once.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "attention_kernel.cuh"
#include "fwd_launch.h"
#include "scratch_pool.h"

namespace fastattn::cuda {

// Merges the splits of split-KV: out = sum_s 2^(lse_s - lse) O_s with lse = log2 sum_s 2^lse_s;
// rows that no split saw a key for are zeros. One warp per output row, lane-strided columns.
template <class Element, int kHeadDim>
__global__ void combine_splits_kernel(const __grid_constant__ FwdParams p) {
  const int64_t rows = int64_t(p.batch) * p.heads * p.seq_q;
  const int64_t row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  float m = -INFINITY;
  for (int s = lane; s < p.num_splits; s += 32) m = fmaxf(m, p.lse_partial[s * rows + row]);
  for (int o = 16; o > 0; o /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  float sum = 0.f;
  if (m != -INFINITY)
    for (int s = lane; s < p.num_splits; s += 32) sum += exp2f(p.lse_partial[s * rows + row] - m);
  for (int o = 16; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, o);

  const int r = int(row % p.seq_q);
  const int64_t bh = row / p.seq_q;
  const int h = int(bh % p.heads), b = int(bh / p.heads);
  constexpr int kPer = kHeadDim / 32;
  float acc[kPer];
  for (int i = 0; i < kPer; ++i) acc[i] = 0.f;
  if (m != -INFINITY) {
    float inv = 1.f / sum;
    if (p.head_sink != nullptr || p.smooth_softmax) inv *= sink_factor_of<Element>(p, h, r, m + __log2f(sum));
    for (int s = 0; s < p.num_splits; ++s) {
      const float w = exp2f(p.lse_partial[s * rows + row] - m) * inv;
      if (w == 0.f) continue;  // a split with no visible key holds zeros: skip its reads
      const float* src = p.o_partial + (s * rows + row) * p.head_dim;
      for (int i = 0; i < kPer; ++i)
        if (lane + 32 * i < p.head_dim) acc[i] += w * src[lane + 32 * i];
    }
  }
  Element* dst = static_cast<Element*>(p.out) + b * p.o_st.batch + h * p.o_st.head + r * p.o_st.row;
  for (int i = 0; i < kPer; ++i)
    if (lane + 32 * i < p.head_dim) dst[lane + 32 * i] = Element(acc[i]);
}

inline void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("fastattn CUDA: ") + what + ": " + cudaGetErrorString(e));
}

// How many key-range splits fill the GPU: none while the plain grid already fills 4/5 of a wave,
// else the fewest splits whose grid fills its last wave nearly as well as the best count does
// (a grid of 1.1 waves takes as long as 2), with at least 2 key tiles per split.
// FASTATTN_CUDA_SPLITS=N forces N (benchmarks); FASTATTN_CUDA_DEBUG=1 prints the choice.
template <class Tr>
void choose_splits(FwdParams& p, int blocks_per_sm) {
  p.num_splits = 1;
  p.split_tiles = 0;
  const int64_t m_blocks = (p.seq_q + Tr::kBlockM - 1) / Tr::kBlockM;
  const int64_t base = m_blocks * p.heads * p.batch;
  const int64_t wave = int64_t(p.sms) * blocks_per_sm;
  const int64_t n_tiles = (int64_t(p.seq_total) + Tr::kBlockN - 1) / Tr::kBlockN;
  const int64_t most = std::min<int64_t>({n_tiles / 2, 128, 65535 / p.batch});
  int64_t splits = 1;
  if (const char* force = std::getenv("FASTATTN_CUDA_SPLITS")) {
    splits = std::max<int64_t>(1, std::min<int64_t>(std::atoll(force), std::max<int64_t>(most, 1)));
  } else if (p.sms > 0 && base * 5 < wave * 4 && most >= 2) {
    auto efficiency = [&](int64_t s) {
      const double waves = double(base * s) / double(wave);
      return waves / std::ceil(waves);
    };
    double best = 0.;
    for (int64_t s = 1; s <= most; ++s) best = std::max(best, efficiency(s));
    for (splits = 1; splits < most && efficiency(splits) < 0.85 * best; ++splits) {}
  }
  if (splits > 1) {
    const int64_t tiles = (n_tiles + splits - 1) / splits;
    p.split_tiles = static_cast<int>(tiles);
    p.num_splits = static_cast<int>((n_tiles + tiles - 1) / tiles);
    if (p.num_splits < 2) p.num_splits = 1;
  }
  if (std::getenv("FASTATTN_CUDA_DEBUG"))
    std::fprintf(stderr, "fastattn CUDA: block %dx%d, %d warps, %lld blocks, %d per SM x %d SMs, %d split(s) of %d tiles\n",
                 Tr::kBlockM, Tr::kBlockN, Tr::kNWarps, (long long)base, blocks_per_sm, p.sms, p.num_splits,
                 p.split_tiles);
}

template <class Tr, bool kFull>
void launch_variant(FwdParams p, cudaStream_t stream) {
  auto kernel = attention_fwd_kernel<Tr, kFull>;
  constexpr int kSmem = Tr::kSmemBytes;
  // Static shared memory (a few hundred bytes) counts against the 48 KiB default too: raise the
  // dynamic limit for every kernel of 40 KiB or more, once per device.
  if (kSmem >= 40 * 1024) {
    static std::atomic<uint64_t> raised{0};
    int device = 0;
    cudaGetDevice(&device);
    const uint64_t bit = uint64_t(1) << (device & 63);
    if (!(raised.load(std::memory_order_relaxed) & bit)) {
      const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
      if (e != cudaSuccess)
        throw std::runtime_error(std::string("fastattn CUDA: cannot raise the shared-memory limit to ") +
                                 std::to_string(kSmem) + " bytes: " + cudaGetErrorString(e));
      raised.fetch_or(bit);
    }
  }
  // Resident blocks per SM (same on every device of one build's architectures, near enough).
  static std::atomic<int> occupancy{0};
  if (occupancy.load(std::memory_order_relaxed) == 0) {
    int n = 0;
    check_cuda(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, Tr::kNThreads, kSmem),
               "occupancy query failed");
    occupancy.store(n > 0 ? n : 1, std::memory_order_relaxed);
  }
  choose_splits<Tr>(p, occupancy.load(std::memory_order_relaxed));

  // Split partials live in stream-ordered scratch: O(splits * B * H * S_q * D) floats.
  void* scratch = nullptr;
  if (p.num_splits > 1) {
    const size_t rows = size_t(p.batch) * p.heads * p.seq_q * p.num_splits;
    const size_t o_bytes = (rows * p.head_dim * sizeof(float) + 255) / 256 * 256;
    check_cuda(scratch_malloc(&scratch, o_bytes + rows * sizeof(float), stream), "split-KV scratch allocation failed");
    p.o_partial = static_cast<float*>(scratch);
    p.lse_partial = reinterpret_cast<float*>(static_cast<char*>(scratch) + o_bytes);
  }
  const dim3 grid((p.seq_q + Tr::kBlockM - 1) / Tr::kBlockM, p.heads, p.batch * p.num_splits);
  kernel<<<grid, Tr::kNThreads, kSmem, stream>>>(p);
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess && p.num_splits > 1) {
    const int64_t rows = int64_t(p.batch) * p.heads * p.seq_q;
    combine_splits_kernel<typename Tr::Element, Tr::kHeadDim><<<int((rows + 3) / 4), 128, 0, stream>>>(p);
    e = cudaGetLastError();
  }
  if (scratch) scratch_free(scratch, stream);
  check_cuda(e, "attention kernel launch failed");
}

template <class Tr>
void launch_traits(const FwdParams& p, cudaStream_t stream) {
  // The lean variant folds the scale into the exponent, which needs scale > 0.
  // Presents written by the kernel: the full variant (the lean one keeps the code out of its loop).
  if (p.bias != nullptr || p.softcap > 0.f || p.mask != nullptr || !(p.scale > 0.f) || p.head_sink != nullptr ||
      p.smooth_softmax || p.present_k != nullptr || p.present_v != nullptr)
    launch_variant<Tr, true>(p, stream);
  else launch_variant<Tr, false>(p, stream);
}

template <class Element, int kHeadDim>
void run_fwd(const FwdParams& p, int family, cudaStream_t stream) {
  if constexpr (Sm90Tiles<kHeadDim>::kEnabled) {
    // Hopper with sm_90a code: wgmma; decode keeps its one-warp mma.sync tiles.
    if (family == 90 && !runs_decode_tiles(p, family)) {
      launch_traits<Sm90Traits<Element, kHeadDim>>(p, stream);
      return;
    }
  }
  if (family >= 80) {
    if (runs_decode_tiles(p, family)) launch_traits<Sm80DecodeTraits<Element, kHeadDim>>(p, stream);
    else launch_traits<Sm80Traits<Element, kHeadDim>>(p, stream);
    return;
  }
  if constexpr (std::is_same_v<Element, cutlass::half_t>) {
    if (family == 75) {
      launch_traits<Sm75Traits<Element, kHeadDim>>(p, stream);
      return;
    }
    if (family == 70) {  // Volta: float16 only, no decode tiles (the full tile runs decode too)
#if defined(FASTATTN_CUDA_ALL_TRAITS)
      // The bank-conflict baseline (kernel_traits_sm70.cuh), for the driver's ncu comparison.
      if (const char* s = std::getenv("FASTATTN_CUDA_SM70_SMEM"); s && std::string(s) == "plain") {
        launch_traits<Sm70Traits<Element, kHeadDim, sm70::SmemScheme::kPlainRowMajor>>(p, stream);
        return;
      }
#endif
      launch_traits<Sm70Traits<Element, kHeadDim>>(p, stream);
      return;
    }
  }
  throw std::runtime_error("fastattn CUDA: no kernel traits for architecture family " + std::to_string(family));
}

template <class Element, int kHeadDim>
int smem_bytes(int family) {
  if constexpr (Sm90Tiles<kHeadDim>::kEnabled)
    if (family == 90) return Sm90Traits<Element, kHeadDim>::kSmemBytes;
  if (family >= 80) return Sm80Traits<Element, kHeadDim>::kSmemBytes;
  if constexpr (std::is_same_v<Element, cutlass::half_t>) {
    if (family == 70) return Sm70Traits<Element, kHeadDim>::kSmemBytes;
    return Sm75Traits<Element, kHeadDim>::kSmemBytes;
  }
  return 0;
}

}  // namespace fastattn::cuda

#define FASTATTN_CUDA_INSTANTIATE(Element, kHeadDim)                                                              \
  template void fastattn::cuda::run_fwd<Element, kHeadDim>(const FwdParams&, int, cudaStream_t);                \
  template int fastattn::cuda::smem_bytes<Element, kHeadDim>(int);
