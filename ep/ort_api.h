// The OrtApi/OrtEpApi this library was handed at load, and small helpers for the C API.
#pragma once

#include <exception>
#include <memory>
#include <string>

#include "onnxruntime_c_api.h"

namespace fastattn::ep {

// Set once by RegisterCustomOps or CreateEpFactories (after the version check).
const OrtApi& ort();
const OrtEpApi& ort_ep();

// Picks the API version this library was compiled against (ORT_API_VERSION) from api_base.
// On a runtime that is too old, returns an error status made with the oldest API, which every
// runtime has, and leaves the API unset.
OrtStatus* init_api(const OrtApiBase* api_base, bool need_ep_api);

inline OrtStatus* make_error(const std::string& msg, OrtErrorCode code = ORT_INVALID_ARGUMENT) {
  return ort().CreateStatus(code, msg.c_str());
}

// Every exported entry point and callback runs its body through this: a C++ exception never
// crosses into ONNX Runtime (that would abort the host process); it becomes an OrtStatus.
template <typename Fn>
OrtStatus* guarded(Fn&& fn) noexcept {
  try {
    return fn();
  } catch (const std::exception& e) {
    return make_error(std::string("fastattn_onnx: ") + e.what(), ORT_FAIL);
  } catch (...) {
    return make_error("fastattn_onnx: unknown C++ exception", ORT_FAIL);
  }
}

#define FASTATTN_RETURN_IF_ERROR(expr)        \
  do {                                        \
    if (OrtStatus* _status = (expr)) return _status; \
  } while (0)

struct TypeShapeInfoDeleter {
  void operator()(OrtTensorTypeAndShapeInfo* p) const { ort().ReleaseTensorTypeAndShapeInfo(p); }
};
using TypeShapeInfoPtr = std::unique_ptr<OrtTensorTypeAndShapeInfo, TypeShapeInfoDeleter>;

}  // namespace fastattn::ep
