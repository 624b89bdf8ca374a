// ONNX Runtime plumbing of one device kind, in the shape of ONNX Runtime's example plugin EP
// (onnxruntime/test/autoep/library/example_plugin_ep/): which OrtEpDevices it offers, its
// memory (allocator), its copies (data transfer), its stream, and the launch context of a node.
// One file per kind (cpu_device.cc, ...), each named by the backend list (kernels/CMakeLists.txt);
// the factory and the EP only talk to this interface.
#pragma once

#include <string>
#include <vector>

#include "dispatch.h"
#include "ort_api.h"

namespace fastattn::ep {

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

  // Whether memory of this device is described by memory_device (allocator and stream calls of
  // the factory are routed by it). The CPU's host memory is ORT's own: false.
  virtual bool owns(const OrtMemoryDevice* memory_device) const = 0;
  // The device's allocator (null: ONNX Runtime's own CPU allocator serves it).
  virtual OrtStatus* create_allocator(const OrtMemoryInfo* info, OrtAllocator** allocator) const;
  virtual void release_allocator(OrtAllocator* allocator) const;
  // Copies between the host and this device (null: none needed).
  virtual OrtStatus* create_data_transfer(OrtDataTransferImpl** transfer) const;
  // Streams: ORT registers them only for non-CPU memory, and only when the factory is stream-aware.
  virtual bool stream_aware() const { return false; }
  virtual OrtStatus* create_stream(const OrtMemoryDevice* memory_device, OrtSyncStreamImpl** stream) const;
  // (An accelerator also needs its own MemcpyFromHost / MemcpyToHost kernels, or ONNX Runtime
  // hands its nodes host memory: the first accelerator kind adds a kernel-registry hook here and
  // wires it into OrtEp::GetKernelRegistry.)

  // How a node's kernel is launched on device `ordinal` inside a compute call.
  virtual LaunchContext launch_context(OrtKernelContext* context, int ordinal) const = 0;
};

// The device kinds of this build, accelerators first (selecting the EP by name then picks an
// accelerator where one exists), the CPU last.
const std::vector<const DevicePlumbing*>& device_plumbings();
const DevicePlumbing* plumbing_for(DeviceKind kind);
const DevicePlumbing& cpu_plumbing();

}  // namespace fastattn::ep
