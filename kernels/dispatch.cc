#include "dispatch.h"

// backend_list.inc is written by kernels/CMakeLists.txt from FASTATTN_BACKENDS: one
// FASTATTN_BACKEND(name) per backend, each a namespace fastattn::name with backend().
#define FASTATTN_BACKEND(name) \
  namespace fastattn::name {   \
  const Backend& backend();    \
  }
#include "backend_list.inc"
#undef FASTATTN_BACKEND

namespace fastattn {

const std::vector<const Backend*>& backends() {
#define FASTATTN_BACKEND(name) &name::backend(),
  static const std::vector<const Backend*> list = {
#include "backend_list.inc"
  };
#undef FASTATTN_BACKEND
  return list;
}

const Backend* backend_for(DeviceKind kind) {
  for (const Backend* b : backends())
    if (b->kind == kind) return b;
  return nullptr;
}

std::string supports(const AttentionParams& p) {
  const Backend* b = backend_for(p.device.kind);
  if (!b) return std::string("no kernel for the ") + device_kind_name(p.device.kind) + " device in this build";
  return b->supports(p);
}

std::string attention_forward(const AttentionParams& p, const LaunchContext& ctx) {
  if (ctx.device.kind != p.device.kind) return "the launch context's device is not the tensors' device";
  if (auto rule = check_params(p); !rule.empty()) return rule;
  if (auto why = supports(p); !why.empty()) return why;
  backend_for(p.device.kind)->run(p, ctx);
  return "";
}

}  // namespace fastattn
