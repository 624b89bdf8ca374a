#include "ep_factory.h"

#include "custom_op.h"
#include "ep.h"

namespace fastattn::ep {

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
    // Accelerator devices (GPU/NPU kernels, not built yet) go here, before the CPU.
    for (size_t i = 0; i < num_devices && *num_ep_devices < max_ep_devices; ++i) {
      if (ort().HardwareDevice_Type(devices[i]) != OrtHardwareDeviceType_CPU) continue;
      OrtKeyValuePairs* metadata = nullptr;
      ort().CreateKeyValuePairs(&metadata);
      ort().AddKeyValuePair(metadata, "fastattn.kernel", "cpu");
      OrtEpDevice* ep_device = nullptr;
      OrtStatus* s = ort_ep().CreateEpDevice(this_ptr, devices[i], metadata, nullptr, &ep_device);
      ort().ReleaseKeyValuePairs(metadata);
      FASTATTN_RETURN_IF_ERROR(s);
      ep_devices[(*num_ep_devices)++] = ep_device;
      break;  // one CPU device is enough
    }
    return nullptr;
  });
}

OrtStatus* ORT_API_CALL EpFactory::CreateEpImpl(OrtEpFactory*, const OrtHardwareDevice* const*,
                                                const OrtKeyValuePairs* const*, size_t num_devices,
                                                const OrtSessionOptions*, const OrtLogger* logger,
                                                OrtEp** ep) noexcept {
  return guarded([&]() -> OrtStatus* {
    *ep = nullptr;
    if (num_devices != 1)
      return make_error(std::string(kEpName) + " runs on one device per session, got " + std::to_string(num_devices));
    *ep = new Ep(logger);
    return nullptr;
  });
}

void ORT_API_CALL EpFactory::ReleaseEpImpl(OrtEpFactory*, OrtEp* ep) noexcept { delete static_cast<Ep*>(ep); }

// CPU memory: ORT's default CPU allocator serves the EP and no data transfer is needed.
OrtStatus* ORT_API_CALL EpFactory::CreateAllocatorImpl(OrtEpFactory*, const OrtMemoryInfo*,
                                                       const OrtKeyValuePairs*, OrtAllocator** allocator) noexcept {
  *allocator = nullptr;
  return nullptr;
}
void ORT_API_CALL EpFactory::ReleaseAllocatorImpl(OrtEpFactory*, OrtAllocator*) noexcept {}
OrtStatus* ORT_API_CALL EpFactory::CreateDataTransferImpl(OrtEpFactory*, OrtDataTransferImpl** data_transfer) noexcept {
  *data_transfer = nullptr;
  return nullptr;
}
bool ORT_API_CALL EpFactory::IsStreamAwareImpl(const OrtEpFactory*) noexcept { return false; }
OrtStatus* ORT_API_CALL EpFactory::CreateSyncStreamForDeviceImpl(OrtEpFactory*, const OrtMemoryDevice*,
                                                                 const OrtKeyValuePairs*,
                                                                 OrtSyncStreamImpl** stream) noexcept {
  *stream = nullptr;
  return nullptr;
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
