// OrtEpFactory for "FastAttentionEP". Its devices, memory, copies and streams come from the
// device kinds of this build (device.h: one file per kind, accelerators listed before the CPU
// so that selecting the EP by name picks an accelerator when there is one).
// The factory also carries the com.fastattention custom-op domain, so a model that uses the
// op loads with only the EP registered.
#pragma once

#include <mutex>
#include <string>

#include "op_contract.h"
#include "ort_api.h"

namespace fastattn::ep {

inline constexpr const char* kEpVendor = "fastattn-onnx";
inline constexpr const char* kEpVersion = "0.1.0";

class EpFactory : public OrtEpFactory {
 public:
  explicit EpFactory(const OrtLogger* default_logger);
  ~EpFactory();
  const OrtLogger* default_logger() const { return default_logger_; }

 private:
  static const char* ORT_API_CALL GetNameImpl(const OrtEpFactory*) noexcept;
  static const char* ORT_API_CALL GetVendorImpl(const OrtEpFactory*) noexcept;
  static uint32_t ORT_API_CALL GetVendorIdImpl(const OrtEpFactory*) noexcept;
  static const char* ORT_API_CALL GetVersionImpl(const OrtEpFactory*) noexcept;
  static OrtStatus* ORT_API_CALL GetSupportedDevicesImpl(OrtEpFactory*, const OrtHardwareDevice* const* devices,
                                                         size_t num_devices, OrtEpDevice** ep_devices,
                                                         size_t max_ep_devices, size_t* num_ep_devices) noexcept;
  static OrtStatus* ORT_API_CALL CreateEpImpl(OrtEpFactory*, const OrtHardwareDevice* const* devices,
                                              const OrtKeyValuePairs* const* ep_metadata, size_t num_devices,
                                              const OrtSessionOptions* session_options, const OrtLogger* logger,
                                              OrtEp** ep) noexcept;
  static void ORT_API_CALL ReleaseEpImpl(OrtEpFactory*, OrtEp* ep) noexcept;
  static OrtStatus* ORT_API_CALL CreateAllocatorImpl(OrtEpFactory*, const OrtMemoryInfo*, const OrtKeyValuePairs*,
                                                     OrtAllocator** allocator) noexcept;
  static void ORT_API_CALL ReleaseAllocatorImpl(OrtEpFactory*, OrtAllocator*) noexcept;
  static OrtStatus* ORT_API_CALL CreateDataTransferImpl(OrtEpFactory*, OrtDataTransferImpl** data_transfer) noexcept;
  static bool ORT_API_CALL IsStreamAwareImpl(const OrtEpFactory*) noexcept;
  static OrtStatus* ORT_API_CALL CreateSyncStreamForDeviceImpl(OrtEpFactory*, const OrtMemoryDevice*,
                                                               const OrtKeyValuePairs*,
                                                               OrtSyncStreamImpl** stream) noexcept;
  static OrtStatus* ORT_API_CALL GetNumCustomOpDomainsImpl(OrtEpFactory*, size_t* num_domains) noexcept;
  static OrtStatus* ORT_API_CALL GetCustomOpDomainsImpl(OrtEpFactory*, OrtCustomOpDomain** domains,
                                                        size_t num_domains) noexcept;

  const OrtLogger* default_logger_;
  std::mutex op_domain_mutex_;  // sessions may be created concurrently
  OrtCustomOpDomain* op_domain_ = nullptr;
};

}  // namespace fastattn::ep
