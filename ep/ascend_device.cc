// The Ascend NPU device kind: one OrtEpDevice per device aclrtGetDeviceCount reports, aclrtMalloc
// memory, copies with aclrtMemcpyAsync on the node's stream, ACL streams with event notifications,
// and the launch context of a node. CANN is bound with dlopen (kernels/ascend/cann_api.h), never
// linked: where it is absent the library loads, lists no NPU device, and the CPU path works.
// Registering the library loads CANN, calls aclInit and asks the device count; streams, memory and
// aclrtSetDevice come at first use.
#include <cstring>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "ascend/ascend_backend.h"
#include "ascend/cann_api.h"
#include "device.h"

namespace fastattn::ep {
namespace {

constexpr uint32_t kHuaweiVendorId = 0x19E5;  // PCI vendor id of Huawei (Ascend cards)

struct NpuDeviceInfo {
  int ordinal = 0;
  OrtMemoryInfo* memory_info = nullptr;  // NPU / 0x19E5 / ordinal, DEFAULT memory
};

OrtStatus* acl_status(int code, const char* what, int ordinal) {
  if (code == 0) return nullptr;
  return make_error("FastAttentionEP on " + device_label(DeviceKind::kNpu, ordinal) + ": " +
                        cann::error_text(what, code),
                    ORT_EP_FAIL);
}

// aclrtSetDevice for this thread, as a status.
OrtStatus* select(int ordinal) {
  return guarded([&]() -> OrtStatus* {
    cann::set_device(ordinal);
    return nullptr;
  });
}

// The NPUs, read once from CANN's runtime (not found, or aclInit failed: none).
const std::vector<NpuDeviceInfo>& npu_devices() {
  static const std::vector<NpuDeviceInfo> list = [] {
    std::vector<NpuDeviceInfo> out;
    const cann::Runtime& rt = cann::runtime();
    if (!rt.api) return out;
    for (uint32_t i = 0; i < rt.device_count; ++i) {
      NpuDeviceInfo d;
      d.ordinal = static_cast<int>(i);
      if (OrtStatus* s = ort().CreateMemoryInfo_V2("FastAttentionNpu", OrtMemoryInfoDeviceType_NPU, kHuaweiVendorId,
                                                   i, OrtDeviceMemoryType_DEFAULT, 0, OrtDeviceAllocator,
                                                   &d.memory_info)) {
        ort().ReleaseStatus(s);
        continue;
      }
      out.push_back(d);
    }
    return out;
  }();
  return list;
}

const NpuDeviceInfo* npu_device(int ordinal) {
  for (const NpuDeviceInfo& d : npu_devices())
    if (d.ordinal == ordinal) return &d;
  return nullptr;
}

bool is_host(const OrtMemoryDevice* m) {
  return m && ort_ep().MemoryDevice_GetDeviceType(m) == OrtMemoryInfoDeviceType_CPU;
}
bool is_npu_memory(const OrtMemoryDevice* m) {
  return m && ort_ep().MemoryDevice_GetDeviceType(m) == OrtMemoryInfoDeviceType_NPU &&
         ort_ep().MemoryDevice_GetVendorId(m) == kHuaweiVendorId &&
         ort_ep().MemoryDevice_GetMemoryType(m) == OrtDeviceMemoryType_DEFAULT &&
         npu_device(static_cast<int>(ort_ep().MemoryDevice_GetDeviceId(m))) != nullptr;
}
int ordinal_of(const OrtMemoryDevice* m) { return static_cast<int>(ort_ep().MemoryDevice_GetDeviceId(m)); }

int32_t memcpy_kind(CopyKind kind) {
  return kind == CopyKind::kHostToDevice   ? cann::kAclMemcpyHostToDevice
         : kind == CopyKind::kDeviceToHost ? cann::kAclMemcpyDeviceToHost
                                           : cann::kAclMemcpyDeviceToDevice;
}

// On `stream` (queued; pageable host memory is staged by ACL), or synchronously when null.
OrtStatus* copy_bytes(int ordinal, void* stream, void* dst, const void* src, size_t bytes, CopyKind kind) {
  if (bytes == 0 || dst == src) return nullptr;
  FASTATTN_RETURN_IF_ERROR(select(ordinal));
  const cann::Api& acl = cann::api();
  if (stream)
    return acl_status(acl.aclrtMemcpyAsync(dst, bytes, src, bytes, memcpy_kind(kind), stream), "aclrtMemcpyAsync",
                      ordinal);
  return acl_status(acl.aclrtMemcpy(dst, bytes, src, bytes, memcpy_kind(kind)), "aclrtMemcpy", ordinal);
}

// --- memory --------------------------------------------------------------------------------------
// aclrtMalloc (huge pages first, as ONNX Runtime's CANN EP allocates) and aclrtFree; no arena.
struct NpuAllocator : OrtAllocator {
  int ordinal;
  const OrtMemoryInfo* info;

  NpuAllocator(int o, const OrtMemoryInfo* i) : OrtAllocator{}, ordinal(o), info(i) {
    version = ORT_API_VERSION;
    Alloc = AllocImpl;
    Free = FreeImpl;
    Info = InfoImpl;
    Reserve = AllocImpl;
    AllocOnStream = AllocOnStreamImpl;
  }
  static void* ORT_API_CALL AllocImpl(OrtAllocator* self, size_t size) noexcept {
    auto* a = static_cast<NpuAllocator*>(self);
    void* p = nullptr;
    if (size == 0) return nullptr;
    if (OrtStatus* s = select(a->ordinal)) {
      ort().ReleaseStatus(s);
      return nullptr;
    }
    if (cann::api().aclrtMalloc(&p, size, cann::kAclMemMallocHugeFirst) != 0) return nullptr;  // ORT reports it
    return p;
  }
  static void* ORT_API_CALL AllocOnStreamImpl(OrtAllocator* self, size_t size, OrtSyncStream*) noexcept {
    return AllocImpl(self, size);
  }
  static void ORT_API_CALL FreeImpl(OrtAllocator* self, void* p) noexcept {
    if (!p) return;
    if (OrtStatus* s = select(static_cast<NpuAllocator*>(self)->ordinal)) ort().ReleaseStatus(s);
    cann::api().aclrtFree(p);
  }
  static const OrtMemoryInfo* ORT_API_CALL InfoImpl(const OrtAllocator* self) noexcept {
    return static_cast<const NpuAllocator*>(self)->info;
  }
};

// --- copies --------------------------------------------------------------------------------------
struct NpuDataTransfer : OrtDataTransferImpl {
  NpuDataTransfer() : OrtDataTransferImpl{} {
    ort_version_supported = ORT_API_VERSION;
    Release = ReleaseImpl;
    CanCopy = CanCopyImpl;
    CopyTensors = CopyTensorsImpl;
  }
  static void ORT_API_CALL ReleaseImpl(OrtDataTransferImpl* self) noexcept {
    delete static_cast<NpuDataTransfer*>(self);
  }
  static bool ORT_API_CALL CanCopyImpl(const OrtDataTransferImpl*, const OrtMemoryDevice* src,
                                       const OrtMemoryDevice* dst) noexcept {
    const bool src_npu = is_npu_memory(src), dst_npu = is_npu_memory(dst);
    return (src_npu || dst_npu) && (src_npu || is_host(src)) && (dst_npu || is_host(dst));
  }
  static OrtStatus* ORT_API_CALL CopyTensorsImpl(OrtDataTransferImpl*, const OrtValue** src, OrtValue** dst,
                                                 OrtSyncStream** streams, size_t n) noexcept {
    return guarded([&]() -> OrtStatus* {
      for (size_t i = 0; i < n; ++i) {
        const OrtMemoryDevice* from = ort_ep().Value_GetMemoryDevice(src[i]);
        const OrtMemoryDevice* to = ort_ep().Value_GetMemoryDevice(dst[i]);
        const bool from_npu = is_npu_memory(from), to_npu = is_npu_memory(to);
        const CopyKind kind = from_npu && to_npu ? CopyKind::kDeviceToDevice
                              : to_npu           ? CopyKind::kHostToDevice
                                                 : CopyKind::kDeviceToHost;
        size_t bytes = 0;
        const void* from_data = nullptr;
        void* to_data = nullptr;
        FASTATTN_RETURN_IF_ERROR(ort().GetTensorSizeInBytes(src[i], &bytes));
        FASTATTN_RETURN_IF_ERROR(ort().GetTensorData(src[i], &from_data));
        FASTATTN_RETURN_IF_ERROR(ort().GetTensorMutableData(dst[i], &to_data));
        void* stream = streams && streams[i] ? ort().SyncStream_GetHandle(streams[i]) : nullptr;
        FASTATTN_RETURN_IF_ERROR(copy_bytes(ordinal_of(to_npu ? to : from), stream, to_data, from_data, bytes, kind));
      }
      return nullptr;
    });
  }
};

// --- streams -------------------------------------------------------------------------------------
// An event recorded on the producer's stream; a consumer's stream waits for it on the device.
struct NpuNotification : OrtSyncNotificationImpl {
  cann::aclrtStream stream;
  cann::aclrtEvent event = nullptr;
  int ordinal;

  NpuNotification(cann::aclrtStream s, int o) : OrtSyncNotificationImpl{}, stream(s), ordinal(o) {
    ort_version_supported = ORT_API_VERSION;
    Release = ReleaseImpl;
    Activate = ActivateImpl;
    WaitOnDevice = WaitOnDeviceImpl;
    WaitOnHost = WaitOnHostImpl;
  }
  static void ORT_API_CALL ReleaseImpl(OrtSyncNotificationImpl* self) noexcept {
    auto* n = static_cast<NpuNotification*>(self);
    if (n->event) cann::api().aclrtDestroyEvent(n->event);
    delete n;
  }
  static OrtStatus* ORT_API_CALL ActivateImpl(OrtSyncNotificationImpl* self) noexcept {
    auto* n = static_cast<NpuNotification*>(self);
    return acl_status(cann::api().aclrtRecordEvent(n->event, n->stream), "aclrtRecordEvent", n->ordinal);
  }
  static OrtStatus* ORT_API_CALL WaitOnDeviceImpl(OrtSyncNotificationImpl* self, OrtSyncStream* consumer) noexcept {
    auto* n = static_cast<NpuNotification*>(self);
    void* handle = consumer ? ort().SyncStream_GetHandle(consumer) : nullptr;
    if (!handle) return WaitOnHostImpl(self);
    return acl_status(cann::api().aclrtStreamWaitEvent(handle, n->event), "aclrtStreamWaitEvent", n->ordinal);
  }
  static OrtStatus* ORT_API_CALL WaitOnHostImpl(OrtSyncNotificationImpl* self) noexcept {
    auto* n = static_cast<NpuNotification*>(self);
    return acl_status(cann::api().aclrtSynchronizeEvent(n->event), "aclrtSynchronizeEvent", n->ordinal);
  }
};

struct NpuStream : OrtSyncStreamImpl {
  cann::aclrtStream stream = nullptr;
  int ordinal;

  explicit NpuStream(int o) : OrtSyncStreamImpl{}, ordinal(o) {
    ort_version_supported = ORT_API_VERSION;
    Release = ReleaseImpl;
    GetHandle = GetHandleImpl;
    CreateNotification = CreateNotificationImpl;
    Flush = SynchronizeImpl;  // ORT flushes at the end of a run: outputs must then be complete
    OnSessionRunEnd = SynchronizeImpl;
  }
  static void ORT_API_CALL ReleaseImpl(OrtSyncStreamImpl* self) noexcept {
    auto* s = static_cast<NpuStream*>(self);
    if (s->stream) {
      ascend::release_stream(s->ordinal, s->stream);  // the backend's workspace for this stream
      if (OrtStatus* st = select(s->ordinal)) ort().ReleaseStatus(st);
      cann::api().aclrtDestroyStream(s->stream);
    }
    delete s;
  }
  static void* ORT_API_CALL GetHandleImpl(OrtSyncStreamImpl* self) noexcept {
    return static_cast<NpuStream*>(self)->stream;
  }
  static OrtStatus* ORT_API_CALL CreateNotificationImpl(OrtSyncStreamImpl* self,
                                                        OrtSyncNotificationImpl** notification) noexcept {
    return guarded([&]() -> OrtStatus* {
      auto* s = static_cast<NpuStream*>(self);
      *notification = nullptr;
      FASTATTN_RETURN_IF_ERROR(select(s->ordinal));
      auto n = std::make_unique<NpuNotification>(s->stream, s->ordinal);
      FASTATTN_RETURN_IF_ERROR(acl_status(cann::api().aclrtCreateEvent(&n->event), "aclrtCreateEvent", s->ordinal));
      *notification = n.release();
      return nullptr;
    });
  }
  static OrtStatus* ORT_API_CALL SynchronizeImpl(OrtSyncStreamImpl* self) noexcept {
    auto* s = static_cast<NpuStream*>(self);
    return guarded([&]() -> OrtStatus* {
      return acl_status(cann::api().aclrtSynchronizeStream(s->stream), "aclrtSynchronizeStream", s->ordinal);
    });
  }
};

// --- the plumbing ----------------------------------------------------------------------------------
class AscendPlumbing final : public DevicePlumbing {
 public:
  DeviceKind kind() const override { return DeviceKind::kNpu; }

  // ORT's discovery may list an NPU of Huawei's vendor id: reuse those in order, else make one.
  OrtStatus* add_ep_devices(OrtEpFactory* factory, const OrtHardwareDevice* const* devices, size_t count, size_t room,
                            std::vector<OrtEpDevice*>* out) const override {
    const cann::Runtime& rt = cann::runtime();
    std::vector<bool> taken(count, false);
    for (const NpuDeviceInfo& npu : npu_devices()) {
      if (room == 0) break;
      const OrtHardwareDevice* hw = nullptr;
      for (size_t i = 0; i < count && !hw; ++i)
        if (!taken[i] && ort().HardwareDevice_Type(devices[i]) == OrtHardwareDeviceType_NPU &&
            ort().HardwareDevice_VendorId(devices[i]) == kHuaweiVendorId)
          hw = devices[i], taken[i] = true;
      const bool reused = hw != nullptr;
      if (!hw) FASTATTN_RETURN_IF_ERROR(create_hardware_device(npu, rt.soc_name, &hw));

      FASTATTN_RETURN_IF_ERROR(append_accelerator_ep_device(
          factory, hw, reused, kind(), npu.ordinal,
          {{"fastattn.npu.soc_name", rt.soc_name}, {"fastattn.npu.cann_version", rt.cann_version}}, npu.memory_info,
          out));
      --room;
    }
    return nullptr;
  }

  void release_factory_resources() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    for (OrtHardwareDevice* hw : created_) ort_ep().ReleaseHardwareDevice(hw);
    created_.clear();
  }

  bool owns(const OrtMemoryDevice* m) const override { return is_npu_memory(m); }
  bool can_access(const OrtMemoryDevice* m, int ordinal) const override {
    return is_npu_memory(m) && ordinal_of(m) == ordinal;
  }
  const OrtMemoryDevice* memory_device(int ordinal) const override {
    const NpuDeviceInfo* d = npu_device(ordinal);
    return d ? ort_ep().MemoryInfo_GetMemoryDevice(d->memory_info) : nullptr;
  }

  OrtStatus* create_allocator(const OrtMemoryInfo* info, OrtAllocator** allocator) const override {
    *allocator = nullptr;
    const int ordinal = ordinal_of(ort_ep().MemoryInfo_GetMemoryDevice(info));
    const NpuDeviceInfo* d = npu_device(ordinal);
    if (!d) return make_error("FastAttentionEP: no " + device_label(kind(), ordinal) + " for an allocator");
    auto* a = new NpuAllocator(ordinal, d->memory_info);
    std::lock_guard<std::mutex> lock(mutex_);
    allocators_.insert(a);
    *allocator = a;
    return nullptr;
  }
  void release_allocator(OrtAllocator* allocator) const override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (allocators_.erase(allocator)) delete static_cast<NpuAllocator*>(allocator);
  }

  OrtStatus* create_data_transfer(OrtDataTransferImpl** transfer) const override {
    *transfer = npu_devices().empty() ? nullptr : new NpuDataTransfer();
    return nullptr;
  }
  bool stream_aware() const override { return !npu_devices().empty(); }
  OrtStatus* create_stream(const OrtMemoryDevice* m, OrtSyncStreamImpl** stream) const override {
    *stream = nullptr;
    const int ordinal = ordinal_of(m);
    FASTATTN_RETURN_IF_ERROR(select(ordinal));
    auto s = std::make_unique<NpuStream>(ordinal);
    FASTATTN_RETURN_IF_ERROR(acl_status(cann::api().aclrtCreateStream(&s->stream), "aclrtCreateStream", ordinal));
    *stream = s.release();
    return nullptr;
  }
  OrtStatus* synchronize(int ordinal, void* stream) const override {
    FASTATTN_RETURN_IF_ERROR(select(ordinal));
    if (stream) return acl_status(cann::api().aclrtSynchronizeStream(stream), "aclrtSynchronizeStream", ordinal);
    return acl_status(cann::api().aclrtSynchronizeDevice(), "aclrtSynchronizeDevice", ordinal);
  }

  bool accelerator() const override { return true; }
  OrtStatus* copy(int ordinal, void* stream, void* dst, const void* src, size_t bytes, CopyKind kind) const override {
    return guarded([&] { return copy_bytes(ordinal, stream, dst, src, bytes, kind); });
  }
  // ACL has no stream-ordered free: the memory is freed after the stream has drained.
  OrtStatus* temporary(int ordinal, void* stream, size_t bytes, std::shared_ptr<void>* out) const override {
    return guarded([&]() -> OrtStatus* {
      FASTATTN_RETURN_IF_ERROR(select(ordinal));
      void* p = nullptr;
      FASTATTN_RETURN_IF_ERROR(acl_status(cann::api().aclrtMalloc(&p, bytes ? bytes : 1, cann::kAclMemMallocHugeFirst),
                                          "aclrtMalloc", ordinal));
      *out = std::shared_ptr<void>(p, [ordinal, stream](void* q) {
        const cann::Api& acl = cann::api();
        if (OrtStatus* s = select(ordinal)) ort().ReleaseStatus(s);
        if (stream) acl.aclrtSynchronizeStream(stream);
        acl.aclrtFree(q);
      });
      return nullptr;
    });
  }

  LaunchContext launch_context(OrtKernelContext* context, int ordinal) const override {
    if (OrtStatus* s = select(ordinal)) ort().ReleaseStatus(s);  // the backend selects again and throws
    void* stream = nullptr;
    if (OrtStatus* s = ort().KernelContext_GetGPUComputeStream(context, &stream)) {
      ort().ReleaseStatus(s);
      stream = nullptr;
    }
    ParallelFor serial = [](int64_t n, const std::function<void(int64_t)>& fn) {
      for (int64_t i = 0; i < n; ++i) fn(i);
    };
    return {Device{DeviceKind::kNpu, ordinal}, stream, serial};
  }

 private:
  OrtStatus* create_hardware_device(const NpuDeviceInfo& npu, const std::string& soc,
                                    const OrtHardwareDevice** hw) const {
    OrtKeyValuePairs* md = nullptr;
    ort().CreateKeyValuePairs(&md);
    ort().AddKeyValuePair(md, "Description", soc.empty() ? "Ascend NPU" : ("Ascend " + soc).c_str());
    OrtHardwareDevice* made = nullptr;
    // ACL reports no PCI ids: the ordinal keeps the devices apart.
    OrtStatus* s = ort_ep().CreateHardwareDevice(OrtHardwareDeviceType_NPU, kHuaweiVendorId,
                                                 static_cast<uint32_t>(npu.ordinal), "Huawei", md, &made);
    ort().ReleaseKeyValuePairs(md);
    FASTATTN_RETURN_IF_ERROR(s);
    std::lock_guard<std::mutex> lock(mutex_);
    created_.push_back(made);
    *hw = made;
    return nullptr;
  }

  mutable std::mutex mutex_;
  mutable std::vector<OrtHardwareDevice*> created_;
  mutable std::set<OrtAllocator*> allocators_;
};

}  // namespace

const DevicePlumbing& ascend_plumbing() {
  static const AscendPlumbing plumbing;
  return plumbing;
}

}  // namespace fastattn::ep
