// Custom-op library entry point: SessionOptions.register_custom_ops_library(path) calls this.
#include <mutex>
#include <vector>

#include "custom_op.h"

namespace {
// Domains must outlive every session that uses them; they live until the library unloads.
std::mutex g_domains_mutex;
std::vector<OrtCustomOpDomain*> g_domains;
}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  using namespace fastattn::ep;
  if (OrtStatus* s = init_api(api_base, /*need_ep_api=*/false)) return s;
  return guarded([&]() -> OrtStatus* {
    OrtCustomOpDomain* domain = nullptr;
    FASTATTN_RETURN_IF_ERROR(create_op_domain(&domain));
    {
      std::lock_guard<std::mutex> lock(g_domains_mutex);
      g_domains.push_back(domain);
    }
    return ort().AddCustomOpDomain(options, domain);
  });
}
