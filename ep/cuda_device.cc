// The NVIDIA GPU device kind: one OrtEpDevice per CUDA device, cudaMalloc memory, copies with
// cudaMemcpyAsync on the given stream, a non-blocking stream with event notifications, and the
// launch context of a node (its stream from ONNX Runtime). The CUDA runtime is linked statically
// (only the driver is needed at run time). CUDA starts lazily: registering the library asks
// cudaGetDeviceCount and the devices' properties, nothing else; with no driver or no visible GPU
// that fails or says 0, no GPU device is listed and the CPU path works as before.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <string>
#include <vector>

#include "accelerator_plumbing.h"
#include "cuda/scratch_pool.h"

namespace fastattn::ep {
namespace {

constexpr uint32_t kNvidiaVendorId = 0x10DE;

struct CudaDeviceInfo {
  int ordinal = 0;
  std::string name, pci_bus_id, compute_capability;
  OrtMemoryInfo* memory_info = nullptr;  // GPU / 0x10DE / ordinal, DEFAULT memory
};

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// "0000:00:06.0" and "00:06.0" name the same device (ORT may leave out the PCI domain).
bool same_pci_bus_id(std::string a, std::string b) {
  a = lower(a), b = lower(b);
  if (a.empty() || b.empty()) return false;
  auto strip_domain = [](const std::string& s) { return std::count(s.begin(), s.end(), ':') == 2 ? s.substr(s.find(':') + 1) : s; };
  return strip_domain(a) == strip_domain(b);
}

OrtStatus* cuda_status(cudaError_t e, const char* what, int ordinal) {
  if (e == cudaSuccess) return nullptr;
  cudaGetLastError();  // clear the (non-sticky) error so that later calls start clean
  return make_error(std::string("FastAttentionEP on ") + device_label(DeviceKind::kCuda, ordinal) + ": " + what +
                        " failed: " + cudaGetErrorString(e),
                    ORT_EP_FAIL);
}

// The CUDA devices, read once: cudaGetDeviceCount decides (no driver or none visible: empty).
// Their memory infos live as long as the process (ORT refers to them from its allocators).
const std::vector<CudaDeviceInfo>& cuda_devices() {
  static const std::vector<CudaDeviceInfo> list = [] {
    std::vector<CudaDeviceInfo> out;
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
      cudaGetLastError();
      return out;
    }
    for (int i = 0; i < count; ++i) {
      CudaDeviceInfo d;
      d.ordinal = i;
      char bus[64] = {};
      if (cudaDeviceGetPCIBusId(bus, sizeof bus, i) == cudaSuccess) d.pci_bus_id = bus;
      cudaDeviceProp prop{};
      if (cudaGetDeviceProperties(&prop, i) == cudaSuccess) {
        d.name = prop.name;
        d.compute_capability = std::to_string(prop.major) + "." + std::to_string(prop.minor);
      }
      cudaGetLastError();
      if (OrtStatus* s = ort().CreateMemoryInfo_V2("FastAttentionCuda", OrtMemoryInfoDeviceType_GPU, kNvidiaVendorId, i,
                                                   OrtDeviceMemoryType_DEFAULT, 0, OrtDeviceAllocator,
                                                   &d.memory_info)) {
        ort().ReleaseStatus(s);
        continue;  // a device ORT cannot describe is not offered
      }
      out.push_back(std::move(d));
    }
    return out;
  }();
  return list;
}

OrtStatus* copy_bytes(int ordinal, void* stream, void* dst, const void* src, size_t bytes, CopyKind kind) {
  if (bytes == 0 || dst == src) return nullptr;
  FASTATTN_RETURN_IF_ERROR(cuda_status(cudaSetDevice(ordinal), "cudaSetDevice", ordinal));
  // Device to device goes through unified addressing, which also covers two GPUs.
  const cudaMemcpyKind k = kind == CopyKind::kHostToDevice   ? cudaMemcpyHostToDevice
                           : kind == CopyKind::kDeviceToHost ? cudaMemcpyDeviceToHost
                                                             : cudaMemcpyDefault;
  if (stream)
    return cuda_status(cudaMemcpyAsync(dst, src, bytes, k, static_cast<cudaStream_t>(stream)), "cudaMemcpyAsync",
                       ordinal);
  FASTATTN_RETURN_IF_ERROR(cuda_status(cudaMemcpy(dst, src, bytes, k), "cudaMemcpy", ordinal));
  // cudaMemcpy returns before a device-to-device copy is done; "synchronous" must mean done.
  if (kind == CopyKind::kDeviceToDevice)
    return cuda_status(cudaDeviceSynchronize(), "cudaDeviceSynchronize", ordinal);
  return nullptr;
}

// --- memory --------------------------------------------------------------------------------------
// Plain cudaMalloc / cudaFree. cudaFree waits for the device, so ORT may free an intermediate
// right after the launch.
struct CudaMemory {
  static void* allocate(int ordinal, size_t size) noexcept {
    void* p = nullptr;
    if (size == 0 || cudaSetDevice(ordinal) != cudaSuccess || cudaMalloc(&p, size) != cudaSuccess) {
      cudaGetLastError();
      return nullptr;  // ORT reports the failed allocation
    }
    return p;
  }
  static void free(int ordinal, void* p) noexcept {
    cudaSetDevice(ordinal);
    cudaFree(p);
    cudaGetLastError();
  }
};

// --- streams -------------------------------------------------------------------------------------
// An event recorded on the producer's stream; a consumer's stream waits for it on the device.
struct CudaNotification : OrtSyncNotificationImpl {
  cudaStream_t stream;
  cudaEvent_t event = nullptr;
  int ordinal;

  CudaNotification(cudaStream_t s, int o) : OrtSyncNotificationImpl{}, stream(s), ordinal(o) {
    ort_version_supported = ORT_API_VERSION;
    Release = ReleaseImpl;
    Activate = ActivateImpl;
    WaitOnDevice = WaitOnDeviceImpl;
    WaitOnHost = WaitOnHostImpl;
  }
  static void ORT_API_CALL ReleaseImpl(OrtSyncNotificationImpl* self) noexcept {
    auto* n = static_cast<CudaNotification*>(self);
    if (n->event) cudaEventDestroy(n->event);
    delete n;
  }
  static OrtStatus* ORT_API_CALL ActivateImpl(OrtSyncNotificationImpl* self) noexcept {
    auto* n = static_cast<CudaNotification*>(self);
    return cuda_status(cudaEventRecord(n->event, n->stream), "cudaEventRecord", n->ordinal);
  }
  static OrtStatus* ORT_API_CALL WaitOnDeviceImpl(OrtSyncNotificationImpl* self, OrtSyncStream* consumer) noexcept {
    auto* n = static_cast<CudaNotification*>(self);
    void* handle = consumer ? ort().SyncStream_GetHandle(consumer) : nullptr;
    if (!handle) return WaitOnHostImpl(self);  // a consumer without a CUDA stream waits on the host
    return cuda_status(cudaStreamWaitEvent(static_cast<cudaStream_t>(handle), n->event, 0), "cudaStreamWaitEvent",
                       n->ordinal);
  }
  static OrtStatus* ORT_API_CALL WaitOnHostImpl(OrtSyncNotificationImpl* self) noexcept {
    auto* n = static_cast<CudaNotification*>(self);
    return cuda_status(cudaEventSynchronize(n->event), "cudaEventSynchronize", n->ordinal);
  }
};

struct CudaStream : OrtSyncStreamImpl {
  cudaStream_t stream = nullptr;
  int ordinal;

  explicit CudaStream(int o) : OrtSyncStreamImpl{}, ordinal(o) {
    ort_version_supported = ORT_API_VERSION;
    Release = ReleaseImpl;
    GetHandle = GetHandleImpl;
    CreateNotification = CreateNotificationImpl;
    Flush = SynchronizeImpl;  // ORT flushes at the end of a run: outputs must then be complete
    OnSessionRunEnd = SynchronizeImpl;
  }
  static void ORT_API_CALL ReleaseImpl(OrtSyncStreamImpl* self) noexcept {
    auto* s = static_cast<CudaStream*>(self);
    if (s->stream) {
      cudaSetDevice(s->ordinal);
      cudaStreamDestroy(s->stream);
      cudaGetLastError();
    }
    delete s;
  }
  static void* ORT_API_CALL GetHandleImpl(OrtSyncStreamImpl* self) noexcept { return static_cast<CudaStream*>(self)->stream; }
  static OrtStatus* ORT_API_CALL CreateNotificationImpl(OrtSyncStreamImpl* self,
                                                        OrtSyncNotificationImpl** notification) noexcept {
    return guarded([&]() -> OrtStatus* {
      auto* s = static_cast<CudaStream*>(self);
      *notification = nullptr;
      FASTATTN_RETURN_IF_ERROR(cuda_status(cudaSetDevice(s->ordinal), "cudaSetDevice", s->ordinal));
      auto n = std::make_unique<CudaNotification>(s->stream, s->ordinal);
      FASTATTN_RETURN_IF_ERROR(cuda_status(cudaEventCreateWithFlags(&n->event, cudaEventDisableTiming),
                                           "cudaEventCreateWithFlags", s->ordinal));
      *notification = n.release();
      return nullptr;
    });
  }
  static OrtStatus* ORT_API_CALL SynchronizeImpl(OrtSyncStreamImpl* self) noexcept {
    auto* s = static_cast<CudaStream*>(self);
    return cuda_status(cudaStreamSynchronize(s->stream), "cudaStreamSynchronize", s->ordinal);
  }
};

// --- the plumbing ----------------------------------------------------------------------------------
class CudaPlumbing final : public AcceleratorPlumbing<CudaDeviceInfo, CudaMemory> {
 public:
  CudaPlumbing() : AcceleratorPlumbing(OrtMemoryInfoDeviceType_GPU, kNvidiaVendorId) {}
  DeviceKind kind() const override { return DeviceKind::kCuda; }
  const std::vector<CudaDeviceInfo>& device_infos() const override { return cuda_devices(); }

  // ORT's own discovery may or may not list a GPU (it did on the H200 machine, also under
  // CUDA_VISIBLE_DEVICES=""; it did not on an H100 machine): reuse its device when the PCI bus id
  // matches the CUDA ordinal's, else make one. cudaGetDeviceCount decides which GPUs exist.
  OrtStatus* add_ep_devices(OrtEpFactory* factory, const OrtHardwareDevice* const* devices, size_t count, size_t room,
                            std::vector<OrtEpDevice*>* out) const override {
    std::vector<bool> taken(count, false);
    for (const CudaDeviceInfo& gpu : cuda_devices()) {
      if (room == 0) break;
      const OrtHardwareDevice* hw = nullptr;
      for (size_t i = 0; i < count && !hw; ++i) {
        if (taken[i] || ort().HardwareDevice_Type(devices[i]) != OrtHardwareDeviceType_GPU) continue;
        const uint32_t vendor = ort().HardwareDevice_VendorId(devices[i]);
        if (vendor != 0 && vendor != kNvidiaVendorId) continue;
        if (same_pci_bus_id(pci_bus_id_of(devices[i]), gpu.pci_bus_id)) hw = devices[i], taken[i] = true;
      }
      const bool reused = hw != nullptr;
      if (!hw) FASTATTN_RETURN_IF_ERROR(create_hardware_device(gpu, &hw));

      FASTATTN_RETURN_IF_ERROR(append_accelerator_ep_device(
          factory, hw, reused, kind(), gpu.ordinal,
          {{"fastattn.cuda.name", gpu.name},
           {"fastattn.cuda.compute_capability", gpu.compute_capability},
           {"fastattn.cuda.pci_bus_id", gpu.pci_bus_id}},
          gpu.memory_info, out));
      --room;
    }
    return nullptr;
  }

  OrtStatus* create_stream(const OrtMemoryDevice* m, OrtSyncStreamImpl** stream) const override {
    *stream = nullptr;
    const int ordinal = ordinal_of(m);
    FASTATTN_RETURN_IF_ERROR(cuda_status(cudaSetDevice(ordinal), "cudaSetDevice", ordinal));
    auto s = std::make_unique<CudaStream>(ordinal);
    // Non-blocking: no implicit ordering with the legacy default stream, which other libraries use.
    FASTATTN_RETURN_IF_ERROR(
        cuda_status(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking), "cudaStreamCreate", ordinal));
    *stream = s.release();
    return nullptr;
  }
  OrtStatus* synchronize(int ordinal, void* stream) const override {
    FASTATTN_RETURN_IF_ERROR(cuda_status(cudaSetDevice(ordinal), "cudaSetDevice", ordinal));
    if (stream)
      return cuda_status(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)), "cudaStreamSynchronize", ordinal);
    return cuda_status(cudaDeviceSynchronize(), "cudaDeviceSynchronize", ordinal);
  }

  OrtStatus* copy(int ordinal, void* stream, void* dst, const void* src, size_t bytes, CopyKind kind) const override {
    return copy_bytes(ordinal, stream, dst, src, bytes, kind);
  }
  OrtStatus* temporary(int ordinal, void* stream, size_t bytes, std::shared_ptr<void>* out) const override {
    FASTATTN_RETURN_IF_ERROR(cuda_status(cudaSetDevice(ordinal), "cudaSetDevice", ordinal));
    void* p = nullptr;
    auto s = static_cast<cudaStream_t>(stream);
    FASTATTN_RETURN_IF_ERROR(
        cuda_status(cuda::scratch_malloc(&p, bytes ? bytes : 1, s), "cudaMallocFromPoolAsync", ordinal));
    *out = std::shared_ptr<void>(p, [ordinal, s](void* q) {
      cudaSetDevice(ordinal);
      cuda::scratch_free(q, s);  // after the work queued on s so far, i.e. the node's kernel
      cudaGetLastError();
    });
    return nullptr;
  }

  // The node's kernel runs on ORT's stream for this EP (our CudaStream), on this thread's device.
  LaunchContext launch_context(OrtKernelContext* context, int ordinal) const override {
    cudaSetDevice(ordinal);
    return node_launch_context(context, Device{DeviceKind::kCuda, ordinal});
  }

 private:
  // ORT's metadata key for the PCI bus id is "pci_bus_id"; any value shaped like one is accepted.
  static std::string pci_bus_id_of(const OrtHardwareDevice* hw) {
    const OrtKeyValuePairs* md = ort().HardwareDevice_Metadata(hw);
    if (!md) return "";
    if (const char* v = ort().GetKeyValue(md, "pci_bus_id")) return v;
    const char* const* keys = nullptr;
    const char* const* values = nullptr;
    size_t n = 0;
    ort().GetKeyValuePairs(md, &keys, &values, &n);
    for (size_t i = 0; i < n; ++i)
      if (lower(keys[i]).find("pci") != std::string::npos && values[i] && std::strchr(values[i], ':')) return values[i];
    return "";
  }

  // A GPU that ORT's discovery did not list; kept until the factory is released.
  OrtStatus* create_hardware_device(const CudaDeviceInfo& gpu, const OrtHardwareDevice** hw) const {
    OrtKeyValuePairs* md = nullptr;
    ort().CreateKeyValuePairs(&md);
    ort().AddKeyValuePair(md, "pci_bus_id", gpu.pci_bus_id.c_str());
    ort().AddKeyValuePair(md, "Description", gpu.name.c_str());
    OrtHardwareDevice* made = nullptr;
    // The CUDA runtime knows no PCI product id; the ordinal keeps the devices apart.
    OrtStatus* s = ort_ep().CreateHardwareDevice(OrtHardwareDeviceType_GPU, kNvidiaVendorId,
                                                 static_cast<uint32_t>(gpu.ordinal), "NVIDIA", md, &made);
    ort().ReleaseKeyValuePairs(md);
    FASTATTN_RETURN_IF_ERROR(s);
    keep_created(made);
    *hw = made;
    return nullptr;
  }
};

}  // namespace

const DevicePlumbing& cuda_plumbing() {
  static const CudaPlumbing plumbing;
  return plumbing;
}

}  // namespace fastattn::ep
