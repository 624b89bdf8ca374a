#include "ep_factory.h"

#include <vector>

#include "custom_op.h"
#include "device.h"
#include "ep.h"

namespace fastattn::ep {

using core::kEpName;

EpFactory::EpFactory(const OrtLogger* default_logger) : OrtEpFactory{}, default_logger_(default_logger) {
  ort_version_supported = ORT_API_VERSION;
  GetName = GetNameImpl;
  GetVendor = GetVendorImpl;
  GetVendorId = GetVendorIdImpl;
  GetVersion = GetVersionImpl;
  GetSupportedDevices = GetSupportedDevicesImpl;
  CreateEp = CreateEpImpl;
  ReleaseEp = ReleaseEpImpl;
  CreateAllocator = CreateAllocatorImpl;
  ReleaseAllocator = ReleaseAllocatorImpl;
  CreateDataTransfer = CreateDataTransferImpl;
  IsStreamAware = IsStreamAwareImpl;
  CreateSyncStreamForDevice = CreateSyncStreamForDeviceImpl;
  GetNumCustomOpDomains = GetNumCustomOpDomainsImpl;
  GetCustomOpDomains = GetCustomOpDomainsImpl;
}

EpFactory::~EpFactory() {
  if (op_domain_) ort().ReleaseCustomOpDomain(op_domain_);
}

const char* ORT_API_CALL EpFactory::GetNameImpl(const OrtEpFactory*) noexcept { return kEpName; }
const char* ORT_API_CALL EpFactory::GetVendorImpl(const OrtEpFactory*) noexcept { return kEpVendor; }
uint32_t ORT_API_CALL EpFactory::GetVendorIdImpl(const OrtEpFactory*) noexcept { return 0; }
const char* ORT_API_CALL EpFactory::GetVersionImpl(const OrtEpFactory*) noexcept { return kEpVersion; }

OrtStatus* ORT_API_CALL EpFactory::GetSupportedDevicesImpl(OrtEpFactory* this_ptr,
                                                           const OrtHardwareDevice* const* devices,
                                                           size_t num_devices, OrtEpDevice** ep_devices,
                                                           size_t max_ep_devices, size_t* num_ep_devices) noexcept {
  return guarded([&]() -> OrtStatus* {
    *num_ep_devices = 0;
    std::vector<OrtEpDevice*> found;
    for (const DevicePlumbing* kind : device_plumbings())
      FASTATTN_RETURN_IF_ERROR(
          kind->add_ep_devices(this_ptr, devices, num_devices, max_ep_devices - found.size(), &found));
    for (OrtEpDevice* d : found) ep_devices[(*num_ep_devices)++] = d;
    return nullptr;
  });
}

namespace {

// The metadata value `key` of the OrtEpDevice ORT chose ("" if absent).
std::string metadata_value(const OrtKeyValuePairs* metadata, const char* key) {
  const char* v = metadata ? ort().GetKeyValue(metadata, key) : nullptr;
  return v ? v : "";
}

}  // namespace

OrtStatus* ORT_API_CALL EpFactory::CreateEpImpl(OrtEpFactory*, const OrtHardwareDevice* const*,
                                                const OrtKeyValuePairs* const* ep_metadata, size_t num_devices,
                                                const OrtSessionOptions*, const OrtLogger* logger,
                                                OrtEp** ep) noexcept {
  return guarded([&]() -> OrtStatus* {
    *ep = nullptr;
    if (num_devices != 1)
      return make_error(std::string(kEpName) + " runs on one device per session, got " + std::to_string(num_devices));
    const std::string kind = metadata_value(ep_metadata ? ep_metadata[0] : nullptr, "fastattn.kernel");
    const std::string ordinal = metadata_value(ep_metadata ? ep_metadata[0] : nullptr, "fastattn.ordinal");
    for (const DevicePlumbing* device : device_plumbings()) {
      if (kind != device_kind_name(device->kind())) continue;
      *ep = new Ep(logger, *device, ordinal.empty() ? 0 : std::stoi(ordinal));
      return nullptr;
    }
    return make_error(std::string(kEpName) + ": no device kind '" + kind + "' in this build");
  });
}

void ORT_API_CALL EpFactory::ReleaseEpImpl(OrtEpFactory*, OrtEp* ep) noexcept { delete static_cast<Ep*>(ep); }

// Memory, copies and streams belong to the device kind whose memory they concern; where none
// owns it (host memory), ONNX Runtime's own CPU allocator serves and nothing is copied.
namespace {
const DevicePlumbing* owner_of(const OrtMemoryDevice* memory_device) {
  for (const DevicePlumbing* kind : device_plumbings())
    if (memory_device && kind->owns(memory_device)) return kind;
  return nullptr;
}
}  // namespace

OrtStatus* ORT_API_CALL EpFactory::CreateAllocatorImpl(OrtEpFactory*, const OrtMemoryInfo* info,
                                                       const OrtKeyValuePairs*, OrtAllocator** allocator) noexcept {
  return guarded([&]() -> OrtStatus* {
    *allocator = nullptr;
    const DevicePlumbing* kind = info ? owner_of(ort_ep().MemoryInfo_GetMemoryDevice(info)) : nullptr;
    return kind ? kind->create_allocator(info, allocator) : nullptr;
  });
}

void ORT_API_CALL EpFactory::ReleaseAllocatorImpl(OrtEpFactory*, OrtAllocator* allocator) noexcept {
  // Each kind releases only allocators it made (the CPU kind makes none).
  for (const DevicePlumbing* kind : device_plumbings()) kind->release_allocator(allocator);
}

// ORT takes one data transfer per factory: the accelerator's (one accelerator kind per build).
OrtStatus* ORT_API_CALL EpFactory::CreateDataTransferImpl(OrtEpFactory*, OrtDataTransferImpl** data_transfer) noexcept {
  return guarded([&]() -> OrtStatus* {
    *data_transfer = nullptr;
    for (const DevicePlumbing* kind : device_plumbings()) {
      FASTATTN_RETURN_IF_ERROR(kind->create_data_transfer(data_transfer));
      if (*data_transfer) break;
    }
    return nullptr;
  });
}

bool ORT_API_CALL EpFactory::IsStreamAwareImpl(const OrtEpFactory*) noexcept {
  for (const DevicePlumbing* kind : device_plumbings())
    if (kind->stream_aware()) return true;
  return false;
}

OrtStatus* ORT_API_CALL EpFactory::CreateSyncStreamForDeviceImpl(OrtEpFactory*, const OrtMemoryDevice* memory_device,
                                                                 const OrtKeyValuePairs*,
                                                                 OrtSyncStreamImpl** stream) noexcept {
  return guarded([&]() -> OrtStatus* {
    *stream = nullptr;
    const DevicePlumbing* kind = owner_of(memory_device);
    return kind ? kind->create_stream(memory_device, stream) : nullptr;
  });
}

OrtStatus* ORT_API_CALL EpFactory::GetNumCustomOpDomainsImpl(OrtEpFactory*, size_t* num_domains) noexcept {
  *num_domains = 1;
  return nullptr;
}

OrtStatus* ORT_API_CALL EpFactory::GetCustomOpDomainsImpl(OrtEpFactory* this_ptr, OrtCustomOpDomain** domains,
                                                          size_t num_domains) noexcept {
  return guarded([&]() -> OrtStatus* {
    auto* factory = static_cast<EpFactory*>(this_ptr);
    if (num_domains < 1) return make_error("GetCustomOpDomains: no room for the com.fastattention domain");
    std::lock_guard<std::mutex> lock(factory->op_domain_mutex_);
    if (!factory->op_domain_) FASTATTN_RETURN_IF_ERROR(create_op_domain(&factory->op_domain_));
    domains[0] = factory->op_domain_;
    return nullptr;
  });
}

}  // namespace fastattn::ep

extern "C" {

__attribute__((visibility("default"))) OrtStatus* CreateEpFactories(const char* /*registered_name*/,
                                                                     const OrtApiBase* api_base,
                                                                     const OrtLogger* default_logger,
                                                                     OrtEpFactory** factories, size_t max_factories,
                                                                     size_t* num_factories) {
  using namespace fastattn::ep;
  *num_factories = 0;
  if (OrtStatus* s = init_api(api_base, /*need_ep_api=*/true)) return s;
  return guarded([&]() -> OrtStatus* {
    if (max_factories < 1) return make_error("CreateEpFactories: no room for a factory");
    factories[0] = new EpFactory(default_logger);
    *num_factories = 1;
    return nullptr;
  });
}

__attribute__((visibility("default"))) OrtStatus* ReleaseEpFactory(OrtEpFactory* factory) {
  delete static_cast<fastattn::ep::EpFactory*>(factory);
  return nullptr;
}

}  // extern "C"
