// The list of device kinds, from the same backend list as the kernels (backend_list.inc,
// written by kernels/CMakeLists.txt): backend <name> has its plumbing in ep/<name>_device.cc.
#include "device.h"

#include <algorithm>

#define FASTATTN_BACKEND(name) const DevicePlumbing& name##_plumbing();
namespace fastattn::ep {
#include "backend_list.inc"
}  // namespace fastattn::ep
#undef FASTATTN_BACKEND

namespace fastattn::ep {

OrtStatus* DevicePlumbing::create_allocator(const OrtMemoryInfo*, OrtAllocator** allocator) const {
  *allocator = nullptr;
  return nullptr;
}
void DevicePlumbing::release_allocator(OrtAllocator*) const {}
OrtStatus* DevicePlumbing::create_stream(const OrtMemoryDevice*, OrtSyncStreamImpl** stream) const {
  *stream = nullptr;
  return nullptr;
}
// Host memory only: ORT never hands the CPU kind anything else.
bool DevicePlumbing::can_access(const OrtMemoryDevice*, int) const { return true; }
OrtStatus* DevicePlumbing::synchronize(int, void*) const { return nullptr; }
OrtStatus* DevicePlumbing::copy(int, void*, void*, const void*, size_t, CopyKind) const {
  return make_error(std::string("no device copies on ") + device_kind_name(kind()), ORT_NOT_IMPLEMENTED);
}
OrtStatus* DevicePlumbing::temporary(int, void*, size_t, std::shared_ptr<void>*) const {
  return make_error(std::string("no device memory on ") + device_kind_name(kind()), ORT_NOT_IMPLEMENTED);
}

OrtStatus* copy_tensor(const DevicePlumbing& kind, const OrtValue* src, OrtValue* dst, void* stream) {
  const OrtMemoryDevice* from = ort_ep().Value_GetMemoryDevice(src);
  const OrtMemoryDevice* to = ort_ep().Value_GetMemoryDevice(dst);
  const bool from_ours = kind.owns(from), to_ours = kind.owns(to);
  if (!from_ours && !to_ours)
    return make_error(std::string("FastAttentionEP: a copy with neither side on ") + device_kind_name(kind.kind()));
  const CopyKind direction = from_ours && to_ours ? CopyKind::kDeviceToDevice
                             : to_ours            ? CopyKind::kHostToDevice
                                                  : CopyKind::kDeviceToHost;
  size_t bytes = 0;
  const void* from_data = nullptr;
  void* to_data = nullptr;
  FASTATTN_RETURN_IF_ERROR(ort().GetTensorSizeInBytes(src, &bytes));
  FASTATTN_RETURN_IF_ERROR(ort().GetTensorData(src, &from_data));
  FASTATTN_RETURN_IF_ERROR(ort().GetTensorMutableData(dst, &to_data));
  return kind.copy(ordinal_of(to_ours ? to : from), stream, to_data, from_data, bytes, direction);
}

OrtStatus* append_accelerator_ep_device(OrtEpFactory* factory, const OrtHardwareDevice* hw, bool reused, DeviceKind kind,
                                        int ordinal, const std::vector<std::pair<const char*, std::string>>& extra,
                                        const OrtMemoryInfo* memory_info, std::vector<OrtEpDevice*>* out) {
  OrtKeyValuePairs* metadata = nullptr;
  OrtKeyValuePairs* options = nullptr;
  ort().CreateKeyValuePairs(&metadata);
  ort().CreateKeyValuePairs(&options);
  ort().AddKeyValuePair(metadata, "fastattn.kernel", device_kind_name(kind));
  ort().AddKeyValuePair(metadata, "fastattn.ordinal", std::to_string(ordinal).c_str());
  for (const auto& [key, value] : extra) ort().AddKeyValuePair(metadata, key, value.c_str());
  ort().AddKeyValuePair(metadata, "fastattn.hardware_device", reused ? "onnxruntime" : "created");
  ort().AddKeyValuePair(options, "device_id", std::to_string(ordinal).c_str());
  OrtEpDevice* ep_device = nullptr;
  OrtStatus* s = ort_ep().CreateEpDevice(factory, hw, metadata, options, &ep_device);
  ort().ReleaseKeyValuePairs(metadata);
  ort().ReleaseKeyValuePairs(options);
  if (s) return s;
  if ((s = ort_ep().EpDevice_AddAllocatorInfo(ep_device, memory_info))) {
    ort_ep().ReleaseEpDevice(ep_device);
    return s;
  }
  out->push_back(ep_device);
  return nullptr;
}

std::string device_label(DeviceKind kind, int ordinal) {
  switch (kind) {
    case DeviceKind::kCpu: return "the CPU";
    case DeviceKind::kCuda: return "CUDA device " + std::to_string(ordinal);
    case DeviceKind::kNpu: return "NPU " + std::to_string(ordinal);
  }
  return device_kind_name(kind);
}

const std::vector<const DevicePlumbing*>& device_plumbings() {
#define FASTATTN_BACKEND(name) &name##_plumbing(),
  static const std::vector<const DevicePlumbing*> list = [] {
    std::vector<const DevicePlumbing*> l = {
#include "backend_list.inc"
    };
    std::stable_partition(l.begin(), l.end(), [](const DevicePlumbing* d) { return d->kind() != DeviceKind::kCpu; });
    return l;
  }();
#undef FASTATTN_BACKEND
  return list;
}

const DevicePlumbing* plumbing_for(DeviceKind kind) {
  for (const DevicePlumbing* d : device_plumbings())
    if (d->kind() == kind) return d;
  return nullptr;
}

}  // namespace fastattn::ep
