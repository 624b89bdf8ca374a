#include "ep_factory.h"

#include <cctype>
#include <cstring>
#include <memory>
#include <string>
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
  for (const DevicePlumbing* kind : device_plumbings()) kind->release_factory_resources();
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

// The metadata value `key` of an OrtEpDevice ORT handed us ("" if absent).
std::string metadata_value(const OrtKeyValuePairs* metadata, const char* key) {
  const char* v = metadata ? ort().GetKeyValue(metadata, key) : nullptr;
  return v ? v : "";
}

// Provider option `key`: ONNX Runtime stores a plugin EP's options in the session config as
// "ep.<lower-case EP name>.<key>" ("" if absent).
std::string provider_option(const OrtSessionOptions* options, const char* key) {
  if (!options) return "";
  std::string name = std::string("ep.") + kEpName + "." + key;
  for (size_t i = 3; i < 3 + std::strlen(kEpName); ++i) name[i] = static_cast<char>(std::tolower(name[i]));
  int has = 0;
  if (OrtStatus* s = ort().HasSessionConfigEntry(options, name.c_str(), &has)) {
    ort().ReleaseStatus(s);
    return "";
  }
  if (!has) return "";
  size_t size = 0;
  if (OrtStatus* s = ort().GetSessionConfigEntry(options, name.c_str(), nullptr, &size)) ort().ReleaseStatus(s);
  std::string value(size, '\0');
  if (OrtStatus* s = ort().GetSessionConfigEntry(options, name.c_str(), value.data(), &size)) {
    ort().ReleaseStatus(s);
    return "";
  }
  value.resize(value.empty() ? 0 : size - 1);  // size counts the terminating NUL
  return value;
}

// What the provider options ask for: "device" (cpu, cuda, npu) and "device_id" (a CUDA or NPU ordinal).
struct DeviceRequest {
  bool any_kind = true;
  DeviceKind kind = DeviceKind::kCpu;
  int ordinal = -1;  // -1: any
  std::string text;  // for messages
};

OrtStatus* read_request(const OrtSessionOptions* options, DeviceRequest* r) {
  const std::string device = provider_option(options, "device");
  const std::string id = provider_option(options, "device_id");
  if (!device.empty()) {
    if (device == "cpu") r->kind = DeviceKind::kCpu;
    else if (device == "cuda" || device == "gpu") r->kind = DeviceKind::kCuda;
    else if (device == "npu" || device == "ascend") r->kind = DeviceKind::kNpu;
    else
      return make_error(std::string(kEpName) + ": provider option device='" + device +
                        "' is not one of 'cpu', 'cuda' (or 'gpu'), 'npu' (or 'ascend')");
    r->any_kind = false;
    r->text = "device=" + device;
  }
  if (!id.empty()) {
    size_t used = 0;
    int ordinal = -1;
    try {
      ordinal = std::stoi(id, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != id.size() || ordinal < 0)
      return make_error(std::string(kEpName) + ": provider option device_id='" + id +
                        "' is not a device number (0, 1, ...)");
    r->ordinal = ordinal;
    r->text += (r->text.empty() ? "" : ", ") + std::string("device_id=") + id;
  }
  return nullptr;
}

const DevicePlumbing* plumbing_named(const std::string& kind) {
  for (const DevicePlumbing* device : device_plumbings())
    if (kind == device_kind_name(device->kind())) return device;
  return nullptr;
}

}  // namespace

// ORT hands CreateEp the OrtEpDevices the session selected: by name (providers=[...]) the first
// one listed, or the one whose option device_id matches; by add_provider_for_devices those given.
// The provider options pick among them; "device": "cpu" when ORT handed only a GPU makes the EP
// claim nothing, so that the op runs on ORT's CPU EP (the same kernel, as a custom op).
OrtStatus* ORT_API_CALL EpFactory::CreateEpImpl(OrtEpFactory*, const OrtHardwareDevice* const*,
                                                const OrtKeyValuePairs* const* ep_metadata, size_t num_devices,
                                                const OrtSessionOptions* session_options, const OrtLogger* logger,
                                                OrtEp** ep) noexcept {
  return guarded([&]() -> OrtStatus* {
    *ep = nullptr;
    if (num_devices == 0 || !ep_metadata) return make_error(std::string(kEpName) + ": ONNX Runtime handed it no device");
    DeviceRequest want;
    FASTATTN_RETURN_IF_ERROR(read_request(session_options, &want));
    std::string handed;
    EpConfig config;
    for (size_t i = 0; i < num_devices; ++i) {
      const std::string kind = metadata_value(ep_metadata[i], "fastattn.kernel");
      const std::string ordinal_text = metadata_value(ep_metadata[i], "fastattn.ordinal");
      const DevicePlumbing* device = plumbing_named(kind);
      if (!device) return make_error(std::string(kEpName) + ": no device kind '" + kind + "' in this build");
      const int ordinal = ordinal_text.empty() ? 0 : std::stoi(ordinal_text);
      handed += (handed.empty() ? "" : ", ") + device_label(device->kind(), ordinal);
      if (config.device) continue;
      if (!want.any_kind && device->kind() != want.kind) continue;
      if (want.ordinal >= 0 && device->kind() != DeviceKind::kCpu && ordinal != want.ordinal) continue;
      config.device = device;
      config.ordinal = ordinal;
      config.device_index = i;
    }
    if (!config.device) {
      if (want.any_kind || want.kind != DeviceKind::kCpu)
        return make_error(std::string(kEpName) + ": provider options " + want.text + " ask for a device that ONNX Runtime " +
                          "did not hand it (it handed: " + handed + "); list its devices with " +
                          "onnxruntime.get_ep_devices() and select one with SessionOptions.add_provider_for_devices");
      config.device = plumbing_named(metadata_value(ep_metadata[0], "fastattn.kernel"));
      config.claims_nodes = false;
    }
    auto made = std::make_unique<Ep>(logger, config);
    if (!config.claims_nodes)
      made->log(ORT_LOGGING_LEVEL_WARNING,
                std::string(kEpName) + ": provider option device=cpu, but ONNX Runtime handed it " + handed +
                    "; it claims no node in this session, and FastAttention nodes run on ONNX Runtime's CPU EP (the "
                    "same CPU kernel, as a custom op). To run FastAttentionEP itself on the CPU, select its CPU "
                    "OrtEpDevice with SessionOptions.add_provider_for_devices.");
    *ep = made.release();
    return nullptr;
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

// ORT takes one data transfer per factory: one for all accelerator kinds (data_transfer.cc).
OrtStatus* ORT_API_CALL EpFactory::CreateDataTransferImpl(OrtEpFactory*, OrtDataTransferImpl** data_transfer) noexcept {
  return guarded([&]() -> OrtStatus* { return create_data_transfer(data_transfer); });
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
