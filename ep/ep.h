// The OrtEp of "FastAttentionEP": claims FastAttention nodes and exactly-reproducible ONNX
// Attention nodes one by one (GetCapability) where the backend of its device runs them, and
// compiles each into a call of the kernel dispatch on that device.
#pragma once

#include "device.h"

namespace fastattn::ep {

class Ep : public OrtEp {
 public:
  Ep(const OrtLogger* logger, const DevicePlumbing& device, int ordinal);

 private:
  static const char* ORT_API_CALL GetNameImpl(const OrtEp*) noexcept;
  static OrtStatus* ORT_API_CALL GetCapabilityImpl(OrtEp*, const OrtGraph* graph,
                                                   OrtEpGraphSupportInfo* support) noexcept;
  static OrtStatus* ORT_API_CALL CompileImpl(OrtEp*, const OrtGraph** graphs, const OrtNode** fused_nodes,
                                             size_t count, OrtNodeComputeInfo** infos,
                                             OrtNode** ep_context_nodes) noexcept;
  static void ORT_API_CALL ReleaseNodeComputeInfosImpl(OrtEp*, OrtNodeComputeInfo** infos, size_t count) noexcept;

  void log(OrtLoggingLevel level, const std::string& msg) const;

  const OrtLogger* logger_;
  const DevicePlumbing& device_;  // the device this session's nodes run on
  const int ordinal_;
};

}  // namespace fastattn::ep
