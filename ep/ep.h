// The OrtEp of "FastAttentionEP": claims FastAttention nodes and exactly-reproducible ONNX
// Attention nodes one by one (GetCapability), and compiles each into a call of the kernel.
#pragma once

#include "ort_api.h"

namespace fastattn::ep {

class Ep : public OrtEp {
 public:
  explicit Ep(const OrtLogger* logger);

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
};

}  // namespace fastattn::ep
