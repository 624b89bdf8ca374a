// The OrtEp of "FastAttentionEP": claims FastAttention nodes and exactly-reproducible ONNX
// Attention and com.microsoft::GroupQueryAttention nodes (gqa_node.h) one by one (GetCapability) where the backend of its device runs them, and
// compiles each into a call of the kernel dispatch on that device. On an accelerator it also
// brings its own Memcpy kernels (kernel registry) and a real Sync.
#pragma once

#include <mutex>

#include "device.h"

namespace fastattn::ep {

struct EpConfig {
  const DevicePlumbing* device = nullptr;  // the device this session's nodes run on
  int ordinal = 0;
  // false: the provider options asked for a device ORT did not hand us (e.g. device=cpu when
  // ORT chose the GPU); the EP then claims nothing and the op runs on ORT's CPU EP.
  bool claims_nodes = true;
  // Where the chosen OrtEpDevice is among those ORT handed CreateEp (ORT takes the EP's memory
  // from the first unless told otherwise).
  size_t device_index = 0;
};

class Ep : public OrtEp {
 public:
  Ep(const OrtLogger* logger, const EpConfig& config);
  ~Ep();

  void log(OrtLoggingLevel level, const std::string& msg) const;

 private:
  static const char* ORT_API_CALL GetNameImpl(const OrtEp*) noexcept;
  static OrtStatus* ORT_API_CALL GetCapabilityImpl(OrtEp*, const OrtGraph* graph,
                                                   OrtEpGraphSupportInfo* support) noexcept;
  static OrtStatus* ORT_API_CALL CompileImpl(OrtEp*, const OrtGraph** graphs, const OrtNode** fused_nodes,
                                             size_t count, OrtNodeComputeInfo** infos,
                                             OrtNode** ep_context_nodes) noexcept;
  static void ORT_API_CALL ReleaseNodeComputeInfosImpl(OrtEp*, OrtNodeComputeInfo** infos, size_t count) noexcept;
  static OrtStatus* ORT_API_CALL GetKernelRegistryImpl(OrtEp*, const OrtKernelRegistry** registry) noexcept;
  static OrtStatus* ORT_API_CALL SyncImpl(OrtEp*) noexcept;
  static OrtStatus* ORT_API_CALL GetDefaultMemoryDeviceImpl(const OrtEp*, const OrtMemoryDevice** device) noexcept;

  const OrtLogger* logger_;
  const DevicePlumbing& device_;  // the device this session's nodes run on
  const int ordinal_;
  const bool claims_nodes_;
  std::mutex registry_mutex_;
  OrtKernelRegistry* kernel_registry_ = nullptr;  // accelerators: the Memcpy kernels
};

}  // namespace fastattn::ep
