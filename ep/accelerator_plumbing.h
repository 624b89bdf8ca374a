// What the plumbing of every accelerator kind shares (cuda_device.cc, ascend_device.cc): which
// memory is its own, allocators over the runtime's malloc and free, and the hardware devices it
// made (tensor copies go through the factory's data transfer, data_transfer.cc, to copy()). A kind
// keeps what talks to its runtime: its device list, malloc / free, copies, streams and the launch
// context of a node.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <set>
#include <vector>

#include "device.h"

namespace fastattn::ep {

// DeviceInfo: one device of the kind, with at least `int ordinal` and `OrtMemoryInfo* memory_info`
// (its DEFAULT memory; lives as long as the process, ORT refers to it from its allocators).
// DeviceMemory: the runtime's `static void* allocate(int ordinal, size_t bytes) noexcept` (null:
// failed, ORT reports it) and `static void free(int ordinal, void* p) noexcept`. Static, so that an
// allocator holds no pointer to the plumbing object, however late ORT frees with it.
template <class DeviceInfo, class DeviceMemory>
class AcceleratorPlumbing : public DevicePlumbing {
 public:
  AcceleratorPlumbing(OrtMemoryInfoDeviceType memory_type, uint32_t vendor_id)
      : memory_type_(memory_type), vendor_id_(vendor_id) {}

  // The devices of this kind, read once from the runtime (no runtime or no device: empty).
  virtual const std::vector<DeviceInfo>& device_infos() const = 0;

  const DeviceInfo* device(int ordinal) const {
    for (const DeviceInfo& d : device_infos())
      if (d.ordinal == ordinal) return &d;
    return nullptr;
  }

  // Our memory: the kind's device type and vendor, DEFAULT (not pinned host memory), a listed ordinal.
  bool owns(const OrtMemoryDevice* m) const override {
    return m && ort_ep().MemoryDevice_GetDeviceType(m) == memory_type_ &&
           ort_ep().MemoryDevice_GetVendorId(m) == vendor_id_ &&
           ort_ep().MemoryDevice_GetMemoryType(m) == OrtDeviceMemoryType_DEFAULT && device(ordinal_of(m)) != nullptr;
  }
  bool can_access(const OrtMemoryDevice* m, int ordinal) const override { return owns(m) && ordinal_of(m) == ordinal; }
  const OrtMemoryDevice* memory_device(int ordinal) const override {
    const DeviceInfo* d = device(ordinal);
    return d ? ort_ep().MemoryInfo_GetMemoryDevice(d->memory_info) : nullptr;
  }

  OrtStatus* create_allocator(const OrtMemoryInfo* info, OrtAllocator** allocator) const override {
    *allocator = nullptr;
    const int ordinal = ordinal_of(ort_ep().MemoryInfo_GetMemoryDevice(info));
    const DeviceInfo* d = device(ordinal);
    if (!d) return make_error("FastAttentionEP: no " + device_label(kind(), ordinal) + " for an allocator");
    auto* a = new Allocator(ordinal, d->memory_info);
    std::lock_guard<std::mutex> lock(mutex_);
    allocators_.insert(a);
    *allocator = a;
    return nullptr;
  }
  // The factory offers every allocator to every kind: delete only ours.
  void release_allocator(OrtAllocator* allocator) const override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (allocators_.erase(allocator)) delete static_cast<Allocator*>(allocator);
  }

  // Without a device there is nothing to copy and no stream (and no runtime call beyond listing
  // the devices); the factory's data transfer (data_transfer.cc) asks this too.
  bool stream_aware() const override { return !device_infos().empty(); }
  bool accelerator() const override { return true; }

  void release_factory_resources() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    for (OrtHardwareDevice* hw : created_) ort_ep().ReleaseHardwareDevice(hw);
    created_.clear();
  }

 protected:
  // A hardware device the kind made (ORT's discovery did not list it); released with the factory.
  void keep_created(OrtHardwareDevice* hw) const {
    std::lock_guard<std::mutex> lock(mutex_);
    created_.push_back(hw);
  }

  // A node's kernel runs on ORT's stream for this EP (the kind's own stream), from this thread.
  static LaunchContext node_launch_context(OrtKernelContext* context, Device device) {
    void* stream = nullptr;
    if (OrtStatus* s = ort().KernelContext_GetGPUComputeStream(context, &stream)) {
      ort().ReleaseStatus(s);
      stream = nullptr;
    }
    ParallelFor serial = [](int64_t n, const std::function<void(int64_t)>& fn) {
      for (int64_t i = 0; i < n; ++i) fn(i);
    };
    return {device, stream, serial};
  }

 private:
  // Plain runtime malloc / free, not an arena (ORT refuses arena allocators from a plugin EP).
  struct Allocator : OrtAllocator {
    int ordinal;
    const OrtMemoryInfo* info;

    Allocator(int o, const OrtMemoryInfo* i) : OrtAllocator{}, ordinal(o), info(i) {
      version = ORT_API_VERSION;
      Alloc = AllocImpl;
      Free = FreeImpl;
      Info = InfoImpl;
      Reserve = AllocImpl;
      AllocOnStream = AllocOnStreamImpl;
    }
    static void* ORT_API_CALL AllocImpl(OrtAllocator* self, size_t size) noexcept {
      return DeviceMemory::allocate(static_cast<Allocator*>(self)->ordinal, size);
    }
    static void* ORT_API_CALL AllocOnStreamImpl(OrtAllocator* self, size_t size, OrtSyncStream*) noexcept {
      return AllocImpl(self, size);
    }
    static void ORT_API_CALL FreeImpl(OrtAllocator* self, void* p) noexcept {
      if (p) DeviceMemory::free(static_cast<Allocator*>(self)->ordinal, p);
    }
    static const OrtMemoryInfo* ORT_API_CALL InfoImpl(const OrtAllocator* self) noexcept {
      return static_cast<const Allocator*>(self)->info;
    }
  };

  const OrtMemoryInfoDeviceType memory_type_;
  const uint32_t vendor_id_;
  mutable std::mutex mutex_;
  mutable std::vector<OrtHardwareDevice*> created_;  // by keep_created
  mutable std::set<OrtAllocator*> allocators_;      // by create_allocator
};

}  // namespace fastattn::ep
