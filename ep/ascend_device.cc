// The Ascend NPU device kind: one OrtEpDevice per device aclrtGetDeviceCount reports, aclrtMalloc
// memory, copies with aclrtMemcpyAsync on the node's stream, ACL streams with event notifications,
// and the launch context of a node. CANN is bound with dlopen (kernels/ascend/cann_api.h), never
// linked: where it is absent the library loads, lists no NPU device, and the CPU path works.
// Registering the library loads CANN, calls aclInit and asks the device count; streams, memory and
// aclrtSetDevice come at first use.
#include <memory>
#include <string>
#include <vector>

#include "accelerator_plumbing.h"
#include "ascend/ascend_backend.h"
#include "ascend/cann_api.h"

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
// aclrtMalloc (huge pages first, as ONNX Runtime's CANN EP allocates) and aclrtFree.
struct NpuMemory {
  static void* allocate(int ordinal, size_t size) noexcept {
    void* p = nullptr;
    if (size == 0) return nullptr;
    if (OrtStatus* s = select(ordinal)) {
      ort().ReleaseStatus(s);
      return nullptr;
    }
    if (cann::api().aclrtMalloc(&p, size, cann::kAclMemMallocHugeFirst) != 0) return nullptr;  // ORT reports it
    return p;
  }
  static void free(int ordinal, void* p) noexcept {
    if (OrtStatus* s = select(ordinal)) ort().ReleaseStatus(s);
    cann::api().aclrtFree(p);
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
class AscendPlumbing final : public AcceleratorPlumbing<NpuDeviceInfo, NpuMemory> {
 public:
  AscendPlumbing() : AcceleratorPlumbing(OrtMemoryInfoDeviceType_NPU, kHuaweiVendorId) {}
  DeviceKind kind() const override { return DeviceKind::kNpu; }
  const std::vector<NpuDeviceInfo>& device_infos() const override { return npu_devices(); }

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
    return node_launch_context(context, Device{DeviceKind::kNpu, ordinal});
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
    keep_created(made);
    *hw = made;
    return nullptr;
  }
};

}  // namespace

const DevicePlumbing& ascend_plumbing() {
  static const AscendPlumbing plumbing;
  return plumbing;
}

}  // namespace fastattn::ep
