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
OrtStatus* DevicePlumbing::create_data_transfer(OrtDataTransferImpl** transfer) const {
  *transfer = nullptr;
  return nullptr;
}
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
