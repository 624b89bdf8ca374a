// The CPU device: ONNX Runtime's own host memory and allocator, no copies, no stream; nodes run
// on the session's intra-op thread pool (KernelContext_ParallelFor).
#include <atomic>
#include <functional>
#include <stdexcept>

#include "device.h"

namespace fastattn::ep {
namespace {

// fastattn::ParallelFor on ORT's intra-op pool. The kernel's tasks do not throw; the guard keeps
// an unexpected exception from unwinding through ORT's thread pool.
ParallelFor ort_parallel_for(OrtKernelContext* context) {
  return [context](int64_t n, const std::function<void(int64_t)>& fn) {
    struct Job {
      const std::function<void(int64_t)>* fn;
      std::atomic<bool> failed{false};
    } job{&fn};
    auto task = [](void* data, size_t i) {
      auto* j = static_cast<Job*>(data);
      try {
        (*j->fn)(static_cast<int64_t>(i));
      } catch (...) {
        j->failed = true;
      }
    };
    if (n <= 0) return;
    if (OrtStatus* s = ort().KernelContext_ParallelFor(context, task, static_cast<size_t>(n), 0, &job)) {
      ort().ReleaseStatus(s);  // no pool available: run inline
      for (int64_t i = 0; i < n; ++i) fn(i);
    }
    if (job.failed) throw std::runtime_error("CPU attention kernel task failed");
  };
}

class CpuPlumbing final : public DevicePlumbing {
 public:
  DeviceKind kind() const override { return DeviceKind::kCpu; }

  OrtStatus* add_ep_devices(OrtEpFactory* factory, const OrtHardwareDevice* const* devices, size_t count, size_t room,
                            std::vector<OrtEpDevice*>* out) const override {
    for (size_t i = 0; i < count && room > 0; ++i) {
      if (ort().HardwareDevice_Type(devices[i]) != OrtHardwareDeviceType_CPU) continue;
      OrtKeyValuePairs* metadata = nullptr;
      ort().CreateKeyValuePairs(&metadata);
      ort().AddKeyValuePair(metadata, "fastattn.kernel", device_kind_name(kind()));
      ort().AddKeyValuePair(metadata, "fastattn.ordinal", "0");
      OrtEpDevice* ep_device = nullptr;
      OrtStatus* s = ort_ep().CreateEpDevice(factory, devices[i], metadata, nullptr, &ep_device);
      ort().ReleaseKeyValuePairs(metadata);
      FASTATTN_RETURN_IF_ERROR(s);
      out->push_back(ep_device);
      break;  // one CPU device is enough
    }
    return nullptr;
  }

  bool owns(const OrtMemoryDevice*) const override { return false; }

  LaunchContext launch_context(OrtKernelContext* context, int ordinal) const override {
    return {Device{DeviceKind::kCpu, ordinal}, nullptr, ort_parallel_for(context)};
  }
};

}  // namespace

const DevicePlumbing& cpu_plumbing() {
  static const CpuPlumbing plumbing;
  return plumbing;
}

}  // namespace fastattn::ep
