// Custom-op library entry point: SessionOptions.register_custom_ops_library(path) calls this.
#include <mutex>

#include "custom_op.h"

namespace {
// One domain serves every session options object; it must outlive all sessions using it, so it
// lives until the library unloads.
std::mutex g_domain_mutex;
OrtCustomOpDomain* g_domain = nullptr;
}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  using namespace fastattn::ep;
  if (OrtStatus* s = init_api(api_base, /*need_ep_api=*/false)) return s;
  return guarded([&]() -> OrtStatus* {
    std::lock_guard<std::mutex> lock(g_domain_mutex);
    if (!g_domain) FASTATTN_RETURN_IF_ERROR(create_op_domain(&g_domain));
    return ort().AddCustomOpDomain(options, g_domain);
  });
}
