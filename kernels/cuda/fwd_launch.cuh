// Host-side launch of the forward kernel for one (element type, padded head size): picks the
// traits of the device's architecture family. Each generated file fwd_<dtype>_hd<D>.cu
// (CMakeLists.txt, tests/build_check.sh) includes this and instantiates run_fwd<Element, D> once.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "attention_kernel.cuh"
#include "fwd_launch.h"

namespace fastattn::cuda {

template <class Tr, bool kFull>
void launch_variant(const FwdParams& p, cudaStream_t stream) {
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
  const dim3 grid((p.seq_q + Tr::kBlockM - 1) / Tr::kBlockM, p.heads, p.batch);
  kernel<<<grid, Tr::kNThreads, kSmem, stream>>>(p);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    throw std::runtime_error(std::string("fastattn CUDA: attention kernel launch failed: ") + cudaGetErrorString(e));
}

template <class Tr>
void launch_traits(const FwdParams& p, cudaStream_t stream) {
  // The lean variant folds the scale into the exponent, which needs scale > 0.
  if (p.bias != nullptr || p.softcap > 0.f || p.mask != nullptr || !(p.scale > 0.f)) launch_variant<Tr, true>(p, stream);
  else launch_variant<Tr, false>(p, stream);
}

template <class Element, int kHeadDim>
void run_fwd(const FwdParams& p, int family, cudaStream_t stream) {
  if (family >= 80) {
    launch_traits<Sm80Traits<Element, kHeadDim>>(p, stream);
    return;
  }
  if constexpr (std::is_same_v<Element, cutlass::half_t>) {
    if (family == 75) {
      launch_traits<Sm75Traits<Element, kHeadDim>>(p, stream);
      return;
    }
  }
  throw std::runtime_error("fastattn CUDA: no kernel traits for architecture family " + std::to_string(family));
}

template <class Element, int kHeadDim>
int smem_bytes(int family) {
  if (family >= 80) return Sm80Traits<Element, kHeadDim>::kSmemBytes;
  if constexpr (std::is_same_v<Element, cutlass::half_t>) return Sm75Traits<Element, kHeadDim>::kSmemBytes;
  return 0;
}

}  // namespace fastattn::cuda

#define FASTATTN_CUDA_INSTANTIATE(Element, kHeadDim)                                                              \
  template void fastattn::cuda::run_fwd<Element, kHeadDim>(const FwdParams&, int, cudaStream_t);                \
  template int fastattn::cuda::smem_bytes<Element, kHeadDim>(int);
