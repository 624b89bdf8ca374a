// The factory's one data transfer (ONNX Runtime takes one per EP factory) for every accelerator
// kind of the build: each copy goes to the kind that owns its device side, so a machine with
// both NVIDIA GPUs and Ascend NPUs copies each tensor with its own runtime.
#include "device.h"

namespace fastattn::ep {
namespace {

bool is_host(const OrtMemoryDevice* m) {
  return m && ort_ep().MemoryDevice_GetDeviceType(m) == OrtMemoryInfoDeviceType_CPU;
}

// The accelerator kind that copies src -> dst: it owns one side and the other is its own or the
// host's (one kind's memory to another's is not offered: ORT then goes through the host).
const DevicePlumbing* copier(const OrtMemoryDevice* src, const OrtMemoryDevice* dst) {
  for (const DevicePlumbing* kind : device_plumbings()) {
    if (!kind->accelerator()) continue;
    const bool src_ours = kind->owns(src), dst_ours = kind->owns(dst);
    if ((src_ours || dst_ours) && (src_ours || is_host(src)) && (dst_ours || is_host(dst))) return kind;
  }
  return nullptr;
}

struct AcceleratorDataTransfer : OrtDataTransferImpl {
  AcceleratorDataTransfer() : OrtDataTransferImpl{} {
    ort_version_supported = ORT_API_VERSION;
    Release = ReleaseImpl;
    CanCopy = CanCopyImpl;
    CopyTensors = CopyTensorsImpl;
  }
  static void ORT_API_CALL ReleaseImpl(OrtDataTransferImpl* self) noexcept {
    delete static_cast<AcceleratorDataTransfer*>(self);
  }
  static bool ORT_API_CALL CanCopyImpl(const OrtDataTransferImpl*, const OrtMemoryDevice* src,
                                       const OrtMemoryDevice* dst) noexcept {
    return copier(src, dst) != nullptr;
  }
  static OrtStatus* ORT_API_CALL CopyTensorsImpl(OrtDataTransferImpl*, const OrtValue** src, OrtValue** dst,
                                                 OrtSyncStream** streams, size_t n) noexcept {
    return guarded([&]() -> OrtStatus* {
      for (size_t i = 0; i < n; ++i) {
        const DevicePlumbing* kind =
            copier(ort_ep().Value_GetMemoryDevice(src[i]), ort_ep().Value_GetMemoryDevice(dst[i]));
        if (!kind) return make_error("FastAttentionEP: no copy between these memories", ORT_NOT_IMPLEMENTED);
        void* stream = streams && streams[i] ? ort().SyncStream_GetHandle(streams[i]) : nullptr;
        FASTATTN_RETURN_IF_ERROR(copy_tensor(*kind, src[i], dst[i], stream));
      }
      return nullptr;
    });
  }
};

}  // namespace

OrtStatus* create_data_transfer(OrtDataTransferImpl** transfer) {
  *transfer = nullptr;
  // Without a device of any accelerator kind there is nothing to copy (the CPU's memory is ORT's).
  for (const DevicePlumbing* kind : device_plumbings())
    if (kind->accelerator() && kind->stream_aware()) {
      *transfer = new AcceleratorDataTransfer();
      break;
    }
  return nullptr;
}

}  // namespace fastattn::ep
