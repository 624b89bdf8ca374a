#include "ort_api.h"

namespace fastattn::ep {
namespace {
const OrtApi* g_api = nullptr;
const OrtEpApi* g_ep_api = nullptr;
}  // namespace

const OrtApi& ort() { return *g_api; }
const OrtEpApi& ort_ep() { return *g_ep_api; }

OrtStatus* init_api(const OrtApiBase* api_base, bool need_ep_api) {
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (!api) {
    const OrtApi* oldest = api_base->GetApi(1);
    const std::string msg = std::string("fastattn_onnx needs ONNX Runtime >= 1.") + std::to_string(ORT_API_VERSION) +
                            " (C API version " + std::to_string(ORT_API_VERSION) + "); this runtime is " +
                            api_base->GetVersionString() + ". Upgrade onnxruntime.";
    return oldest ? oldest->CreateStatus(ORT_NOT_IMPLEMENTED, msg.c_str()) : nullptr;
  }
  g_api = api;
  if (need_ep_api) {
    g_ep_api = api->GetEpApi();
    if (!g_ep_api) return api->CreateStatus(ORT_NOT_IMPLEMENTED, "fastattn_onnx: this ONNX Runtime has no plugin-EP API");
  }
  return nullptr;
}

}  // namespace fastattn::ep
