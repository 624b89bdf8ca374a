#include "scratch_pool.h"

#include <mutex>
#include <vector>

namespace fastattn::cuda {
namespace {

// The pool of `device`, made on first use; null where the device has no memory pools (then the
// default pool serves). Pools live as long as the process: destroying one at exit could run
// after the driver is gone.
cudaMemPool_t pool_of(int device) {
  static std::mutex mutex;
  static std::vector<cudaMemPool_t> pools;
  static std::vector<bool> made;
  std::lock_guard<std::mutex> lock(mutex);
  if (device >= static_cast<int>(pools.size())) {
    pools.resize(device + 1, nullptr);
    made.resize(device + 1, false);
  }
  if (!made[device]) {
    made[device] = true;
    int supported = 0;
    if (cudaDeviceGetAttribute(&supported, cudaDevAttrMemoryPoolsSupported, device) == cudaSuccess && supported) {
      cudaMemPoolProps props = {};
      props.allocType = cudaMemAllocationTypePinned;
      props.handleTypes = cudaMemHandleTypeNone;
      props.location.type = cudaMemLocationTypeDevice;
      props.location.id = device;
      cudaMemPool_t pool = nullptr;
      if (cudaMemPoolCreate(&pool, &props) == cudaSuccess) {
        uint64_t threshold = kRetainedBytes;
        cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold);
        pools[device] = pool;
      }
    }
    cudaGetLastError();  // a refused pool is not an error of the caller's next call
  }
  return pools[device];
}

}  // namespace

cudaError_t scratch_malloc(void** ptr, size_t bytes, cudaStream_t stream) {
  int device = 0;
  if (cudaError_t e = cudaGetDevice(&device); e != cudaSuccess) return e;
  if (cudaMemPool_t pool = pool_of(device)) return cudaMallocFromPoolAsync(ptr, bytes, pool, stream);
  return cudaMallocAsync(ptr, bytes, stream);
}

cudaError_t scratch_free(void* ptr, cudaStream_t stream) { return cudaFreeAsync(ptr, stream); }

}  // namespace fastattn::cuda
