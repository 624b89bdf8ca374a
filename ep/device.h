// ONNX Runtime plumbing of one device kind, in the shape of ONNX Runtime's example plugin EP
// (onnxruntime/test/autoep/library/example_plugin_ep/): which OrtEpDevices it offers, its
// memory (allocator), its copies (data transfer, Memcpy kernels), its stream, and the launch
// context of a node. One file per kind (cpu_device.cc, cuda_device.cc, ...), each named by the
// backend list (kernels/CMakeLists.txt); the factory and the EP only talk to this interface.
// Accelerator kinds build on AcceleratorPlumbing (accelerator_plumbing.h), which holds what they
// share: memory ownership, allocators, tensor copies, the hardware devices they made.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "dispatch.h"
#include "ort_api.h"

namespace fastattn::ep {

enum class CopyKind { kHostToDevice, kDeviceToHost, kDeviceToDevice };

class DevicePlumbing {
 public:
  virtual ~DevicePlumbing() = default;
  virtual DeviceKind kind() const = 0;

  // Called by GetSupportedDevices, i.e. when the library is registered: appends one OrtEpDevice
  // per device of this kind (from ORT's hardware devices, or made with
  // OrtEpApi::CreateHardwareDevice), at most `room`. Must be cheap and must not start a driver
  // where there is no device: a GPU kind gates on its runtime's device count and starts the rest
  // lazily, at its first allocation or launch. Each OrtEpDevice carries the metadata
  // "fastattn.kernel" = device_kind_name(kind()) and "fastattn.ordinal" (CreateEp reads them).
  virtual OrtStatus* add_ep_devices(OrtEpFactory* factory, const OrtHardwareDevice* const* devices, size_t count,
                                    size_t room, std::vector<OrtEpDevice*>* out) const = 0;
  // Called when the factory is released: frees what add_ep_devices made (hardware devices).
  virtual void release_factory_resources() const {}

  // Whether memory of this device is described by memory_device (allocator and stream calls of
  // the factory are routed by it). The CPU's host memory is ORT's own: false.
  virtual bool owns(const OrtMemoryDevice* memory_device) const = 0;
  // Whether a kernel running on device `ordinal` of this kind can read or write a tensor held in
  // memory_device (compute checks every input and output of an accelerator's node with it).
  virtual bool can_access(const OrtMemoryDevice* memory_device, int ordinal) const;
  // The OrtMemoryDevice of device `ordinal`'s own memory (null: host memory).
  virtual const OrtMemoryDevice* memory_device(int /*ordinal*/) const { return nullptr; }
  // The device's allocator (null: ONNX Runtime's own CPU allocator serves it).
  virtual OrtStatus* create_allocator(const OrtMemoryInfo* info, OrtAllocator** allocator) const;
  virtual void release_allocator(OrtAllocator* allocator) const;
  // Streams: ORT registers them only for non-CPU memory, and only when the factory is stream-aware.
  virtual bool stream_aware() const { return false; }
  virtual OrtStatus* create_stream(const OrtMemoryDevice* memory_device, OrtSyncStreamImpl** stream) const;
  // Blocks until `stream` (null: all of device `ordinal`) has finished the work queued so far.
  virtual OrtStatus* synchronize(int ordinal, void* stream) const;

  // An accelerator's copies and temporary memory, in the order of `stream` (the node's queue;
  // null: synchronously). They serve its MemcpyFromHost / MemcpyToHost kernels (without them
  // ONNX Runtime hands its nodes host memory) and host-side steps of a node (a bool mask made
  // into a bias). The CPU has none: accelerator() is false and these return errors.
  virtual bool accelerator() const { return false; }
  virtual OrtStatus* copy(int ordinal, void* stream, void* dst, const void* src, size_t bytes, CopyKind kind) const;
  // Device memory that lives until the returned pointer is released, freed in stream order.
  virtual OrtStatus* temporary(int ordinal, void* stream, size_t bytes, std::shared_ptr<void>* out) const;

  // How a node's kernel is launched on device `ordinal` inside a compute call.
  virtual LaunchContext launch_context(OrtKernelContext* context, int ordinal) const = 0;
};

// The device kinds of this build, accelerators first (selecting the EP by name then picks an
// accelerator where one exists), the CPU last.
const std::vector<const DevicePlumbing*>& device_plumbings();
const DevicePlumbing* plumbing_for(DeviceKind kind);
const DevicePlumbing& cpu_plumbing();

// The MemcpyFromHost / MemcpyToHost kernels of an accelerator's EP (memcpy_kernels.cc), for
// OrtEp::GetKernelRegistry: ONNX Runtime inserts these nodes where host tensors meet the EP's
// nodes, and without the EP's own kernels its nodes get host memory. They copy with
// device.copy() on the node's stream. Release the registry with OrtEpApi::ReleaseKernelRegistry.
OrtStatus* create_memcpy_kernel_registry(const char* ep_name, const DevicePlumbing& device,
                                         OrtKernelRegistry** registry);

// Appends the OrtEpDevice of accelerator `ordinal` on hardware device hw (reused: ONNX Runtime's
// own, else one the kind created) with the metadata every kind carries ("fastattn.kernel",
// "fastattn.ordinal", "fastattn.hardware_device") plus the kind's own `extra` pairs, the provider
// option device_id = ordinal (ORT's Python API picks a plugin EP's device for
// providers=[(name, {"device_id": N})] by it) and the allocator info of its memory.
OrtStatus* append_accelerator_ep_device(OrtEpFactory* factory, const OrtHardwareDevice* hw, bool reused, DeviceKind kind,
                                        int ordinal, const std::vector<std::pair<const char*, std::string>>& extra,
                                        const OrtMemoryInfo* memory_info, std::vector<OrtEpDevice*>* out);

// The factory's data transfer for every accelerator kind (data_transfer.cc): null when no kind has
// a device. Each copy goes to the kind that owns its device side, through that kind's copy().
OrtStatus* create_data_transfer(OrtDataTransferImpl** transfer);

// The device ordinal of an accelerator's memory: ORT's device id of it.
inline int ordinal_of(const OrtMemoryDevice* m) { return static_cast<int>(ort_ep().MemoryDevice_GetDeviceId(m)); }

// Copies tensor src into dst (same size) with kind.copy() on `stream` (null: synchronously); the
// direction and the device ordinal come from which side kind owns (at least one must be).
OrtStatus* copy_tensor(const DevicePlumbing& kind, const OrtValue* src, OrtValue* dst, void* stream);

// The device's name in messages: "CUDA device 0", "the CPU".
std::string device_label(DeviceKind kind, int ordinal);

}  // namespace fastattn::ep
