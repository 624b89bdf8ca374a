// A test double of the CANN C API, for tests only (never installed, never in the wheel): it
// exports the functions kernels/ascend/cann_api.h binds, with host memory standing in for device
// memory and synchronous streams, and evaluates aclnnFusedInferAttentionScore (V1) by the
// operator's documented rules (../shared/notes/ascend-cann.md; CANN's mask golden
// generate_cpu_mask; the operator's aclnn document) through our CPU kernel: each batch's visible
// keys become an additive -inf bias over the keys the operator reads.
//
// It is strict where the runtime could be wrong unnoticed: calls before aclInit or on a thread
// without aclrtSetDevice fail, copies check their direction against the allocations, the operator
// checks that every tensor lies in device memory, the documented limits, and that a sparse mode
// 2/3/4 mask is the compressed triu(ones(2048, 2048), 1); fully masked rows come out as NaN
// unless innerPrecise asks for zeros (2 or 3), so a plan that forgets it is caught.
//
// Environment (read at each call): FASTATTN_CANN_DOUBLE_DEVICES (default 1),
// FASTATTN_CANN_DOUBLE_SOC (default Ascend910B4), FASTATTN_CANN_DOUBLE_VERSION (default 8.0.RC3;
// "none": no version query answers), FASTATTN_CANN_DOUBLE_FAIL=name=code[,name=code] (that
// function returns code, aclGetRecentErrMsg says so).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "ascend/cann_api.h"
#include "attention_params.h"
#include "cpu/cpu_attention.h"
#include "cpu/vector_math.h"

using fastattn::cann::aclCANNPackageVersion;
using aclError = int;
using aclnnStatus = int32_t;
using aclrtStream = void*;
using aclrtEvent = void*;

#define API extern "C" __attribute__((visibility("default")))

// ---- the handles ----------------------------------------------------------------------------------
struct aclTensor {
  std::vector<int64_t> dims, strides, storage;
  int32_t dtype = 0, format = 0;
  int64_t offset = 0;
  void* data = nullptr;
};
struct aclIntArray {
  std::vector<int64_t> values;
};
struct aclTensorList {
  std::vector<aclTensor*> tensors;
};
struct Stream {
  int device;
};
struct Event {
  int device;
};

namespace {

constexpr aclError kNotInitialised = 100000;   // ACL_ERROR_UNINITIALIZE
constexpr aclError kInvalidParam = 100000 + 1; // ACL_ERROR_INVALID_PARAM
constexpr aclError kInvalidDevice = 107001;    // ACL_ERROR_RT_INVALID_DEVICEID
constexpr aclError kContextNull = 107002;      // ACL_ERROR_RT_CONTEXT_NULL
constexpr aclError kBadMemory = 107003;        // a copy or free that does not match the allocations
constexpr aclnnStatus kParamNull = 161001;     // ACLNN_ERR_PARAM_NULLPTR
constexpr aclnnStatus kParamInvalid = 161002;  // ACLNN_ERR_PARAM_INVALID

std::mutex g_mutex;
bool g_initialised = false;
int64_t g_operator_runs = 0;  // successful aclnnFusedInferAttentionScore calls (for the tests)
int64_t g_copy_runs = 0;      // successful aclnnInplaceCopy calls
std::string g_last_layout;      // inputLayout, sparse mode and mask kind of the last run
std::map<uintptr_t, size_t> g_allocations;  // device memory: start -> bytes
thread_local int t_device = -1;
thread_local std::string t_error;

int device_count() {
  const char* v = std::getenv("FASTATTN_CANN_DOUBLE_DEVICES");
  return v && *v ? std::atoi(v) : 1;
}

aclError fail(aclError code, const std::string& why) {
  t_error = "test double: " + why;
  return code;
}

// The injected failure of `name`, or 0.
aclError injected(const char* name) {
  const char* spec = std::getenv("FASTATTN_CANN_DOUBLE_FAIL");
  if (!spec) return 0;
  std::string s = spec;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t end = s.find(',', pos);
    if (end == std::string::npos) end = s.size();
    const std::string item = s.substr(pos, end - pos);
    const size_t eq = item.find('=');
    if (eq != std::string::npos && item.substr(0, eq) == name)
      return fail(std::atoi(item.c_str() + eq + 1), std::string("EZ9999 injected failure of ") + name);
    pos = end + 1;
  }
  return 0;
}

// Whether [p, p + bytes) lies inside one allocation.
bool in_device(const void* p, size_t bytes) {
  std::lock_guard<std::mutex> lock(g_mutex);
  const auto a = reinterpret_cast<uintptr_t>(p);
  auto it = g_allocations.upper_bound(a);
  if (it == g_allocations.begin()) return false;
  --it;
  return a >= it->first && a + bytes <= it->first + it->second;
}

aclError ready(const char* name, bool needs_device = true) {
  if (aclError e = injected(name)) return e;
  if (!g_initialised) return fail(kNotInitialised, std::string(name) + " before aclInit");
  if (needs_device && t_device < 0)
    return fail(kContextNull, std::string(name) + " on a thread without aclrtSetDevice");
  return 0;
}

aclError copy(void* dst, size_t dst_max, const void* src, size_t count, int32_t kind, const char* name) {
  if (aclError e = ready(name)) return e;
  if (count > dst_max) return fail(kInvalidParam, std::string(name) + ": count > destMax");
  if (count == 0) return 0;
  const bool src_dev = in_device(src, count), dst_dev = in_device(dst, count);
  const bool ok = kind == 1   ? (!src_dev && dst_dev)
                  : kind == 2 ? (src_dev && !dst_dev)
                  : kind == 3 ? (src_dev && dst_dev)
                              : false;
  if (!ok)
    return fail(kBadMemory, std::string(name) + ": kind " + std::to_string(kind) +
                                " does not match the memory (source " + (src_dev ? "device" : "host") +
                                ", destination " + (dst_dev ? "device" : "host") + ")");
  std::memmove(dst, src, count);
  return 0;
}

}  // namespace

// ---- runtime ------------------------------------------------------------------------------------
API aclError aclInit(const char*) {
  if (aclError e = injected("aclInit")) return e;
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_initialised) return fastattn::cann::kAclErrorRepeatInitialize;
  g_initialised = true;
  return 0;
}
API aclError aclrtSetDevice(int32_t device) {
  if (aclError e = ready("aclrtSetDevice", false)) return e;
  if (device < 0 || device >= device_count()) return fail(kInvalidDevice, "no device " + std::to_string(device));
  t_device = device;
  return 0;
}
API aclError aclrtGetDevice(int32_t* device) {
  if (aclError e = ready("aclrtGetDevice", false)) return e;
  if (t_device < 0) return fail(kContextNull, "aclrtGetDevice: no device set on this thread");
  *device = t_device;
  return 0;
}
API aclError aclrtGetDeviceCount(uint32_t* count) {
  if (aclError e = ready("aclrtGetDeviceCount", false)) return e;
  *count = static_cast<uint32_t>(device_count());
  return 0;
}
API const char* aclrtGetSocName() {
  const char* v = std::getenv("FASTATTN_CANN_DOUBLE_SOC");
  return v ? v : "Ascend910B4";
}
API aclError aclrtCreateStream(aclrtStream* stream) {
  if (aclError e = ready("aclrtCreateStream")) return e;
  *stream = new Stream{t_device};
  return 0;
}
API aclError aclrtDestroyStream(aclrtStream stream) {
  delete static_cast<Stream*>(stream);
  return 0;
}
API aclError aclrtSynchronizeStream(aclrtStream) { return ready("aclrtSynchronizeStream"); }
API aclError aclrtSynchronizeDevice() { return ready("aclrtSynchronizeDevice"); }
API aclError aclrtMalloc(void** ptr, size_t size, int32_t policy) {
  if (aclError e = ready("aclrtMalloc")) return e;
  if (policy != fastattn::cann::kAclMemMallocHugeFirst) return fail(kInvalidParam, "aclrtMalloc: unexpected policy");
  void* p = std::aligned_alloc(512, (size + 511) / 512 * 512);
  if (!p) return fail(207001, "aclrtMalloc: out of memory");
  std::memset(p, 0x7f, size);  // not zeros: memory is never handed out clean
  std::lock_guard<std::mutex> lock(g_mutex);
  g_allocations[reinterpret_cast<uintptr_t>(p)] = size;
  *ptr = p;
  return 0;
}
API aclError aclrtFree(void* ptr) {
  if (aclError e = ready("aclrtFree")) return e;
  std::lock_guard<std::mutex> lock(g_mutex);
  if (!g_allocations.erase(reinterpret_cast<uintptr_t>(ptr)))
    return fail(kBadMemory, "aclrtFree of memory aclrtMalloc did not return");
  std::free(ptr);
  return 0;
}
API aclError aclrtMemcpy(void* dst, size_t dst_max, const void* src, size_t count, int32_t kind) {
  return copy(dst, dst_max, src, count, kind, "aclrtMemcpy");
}
API aclError aclrtMemcpyAsync(void* dst, size_t dst_max, const void* src, size_t count, int32_t kind, aclrtStream) {
  return copy(dst, dst_max, src, count, kind, "aclrtMemcpyAsync");
}
API aclError aclrtMemsetAsync(void* dst, size_t dst_max, int32_t value, size_t count, aclrtStream) {
  if (aclError e = ready("aclrtMemsetAsync")) return e;
  if (count > dst_max) return fail(kInvalidParam, "aclrtMemsetAsync: count > destMax");
  if (count && !in_device(dst, count)) return fail(kBadMemory, "aclrtMemsetAsync: the destination is not device memory");
  std::memset(dst, value, count);
  return 0;
}
API aclError aclrtCreateEvent(aclrtEvent* event) {
  if (aclError e = ready("aclrtCreateEvent")) return e;
  *event = new Event{t_device};
  return 0;
}
API aclError aclrtDestroyEvent(aclrtEvent event) {
  delete static_cast<Event*>(event);
  return 0;
}
API aclError aclrtRecordEvent(aclrtEvent, aclrtStream) { return ready("aclrtRecordEvent"); }
API aclError aclrtStreamWaitEvent(aclrtStream, aclrtEvent) { return ready("aclrtStreamWaitEvent"); }
API aclError aclrtSynchronizeEvent(aclrtEvent) { return ready("aclrtSynchronizeEvent"); }
API const char* aclGetRecentErrMsg() { return t_error.empty() ? nullptr : t_error.c_str(); }
API aclError aclsysGetCANNVersion(int32_t package, aclCANNPackageVersion* version) {
  const char* v = std::getenv("FASTATTN_CANN_DOUBLE_VERSION");
  const std::string text = v ? v : "8.0.RC3";
  if (text == "none" || package != fastattn::cann::kAclPkgNameCann) return fail(100003, "no version.info");
  std::memset(version, 0, sizeof *version);
  std::snprintf(version->version, sizeof version->version, "%s", text.c_str());
  return 0;
}

API aclError aclsysGetVersionStr(char* package, char* version) {
  aclCANNPackageVersion v;
  if (aclError e = aclsysGetCANNVersion(fastattn::cann::kAclPkgNameCann, &v)) return e;
  if (std::strcmp(package, "cann") != 0 && std::strcmp(package, "runtime") != 0) return fail(100003, "no such package");
  std::snprintf(version, 128, "%s", v.version);
  return 0;
}

// ---- meta API -----------------------------------------------------------------------------------
API aclTensor* aclCreateTensor(const int64_t* view_dims, uint64_t view_rank, int32_t dtype, const int64_t* strides,
                               int64_t offset, int32_t format, const int64_t* storage_dims, uint64_t storage_rank,
                               void* data) {
  auto* t = new aclTensor;
  t->dims.assign(view_dims, view_dims + view_rank);
  t->strides.assign(strides, strides + view_rank);
  t->storage.assign(storage_dims, storage_dims + storage_rank);
  t->dtype = dtype;
  t->format = format;
  t->offset = offset;
  t->data = data;
  return t;
}
API aclIntArray* aclCreateIntArray(const int64_t* values, uint64_t size) {
  return new aclIntArray{{values, values + size}};
}
API aclTensorList* aclCreateTensorList(const aclTensor* const* tensors, uint64_t size) {
  auto* l = new aclTensorList;
  for (uint64_t i = 0; i < size; ++i) l->tensors.push_back(const_cast<aclTensor*>(tensors[i]));
  return l;
}
API int aclDestroyTensor(const aclTensor* t) {
  delete t;
  return 0;
}
API int aclDestroyIntArray(const aclIntArray* a) {
  delete a;
  return 0;
}
API int aclDestroyTensorList(const aclTensorList* l) {
  if (l)
    for (aclTensor* t : l->tensors) delete t;
  delete l;
  return 0;
}

// ---- the operator ---------------------------------------------------------------------------------
#include "fia_emulation.inc"

// The documented prototypes (ops-transformer aclnn_fused_infer_attention_score.h), written out
// here from the document, not from cann_api.h; the asserts below compare the two.
API aclnnStatus aclnnFusedInferAttentionScoreGetWorkspaceSize(
    const aclTensor* query, const aclTensorList* key, const aclTensorList* value, const aclTensor* pseShift,
    const aclTensor* attenMask, const aclIntArray* actualSeqLengths, const aclIntArray* actualSeqLengthsKv,
    const aclTensor* deqScale1, const aclTensor* quantScale1, const aclTensor* deqScale2, const aclTensor* quantScale2,
    const aclTensor* quantOffset2, const aclTensor* antiquantScale, const aclTensor* antiquantOffset,
    const aclTensor* blockTable, const aclTensor* queryPaddingSize, const aclTensor* kvPaddingSize, int64_t numHeads,
    double scaleValue, int64_t preTokens, int64_t nextTokens, char* inputLayout, int64_t numKeyValueHeads,
    int64_t sparseMode, int64_t innerPrecise, int64_t blockSize, int64_t antiquantMode, bool softmaxLseFlag,
    const aclTensor* attentionOut, const aclTensor* softmaxLse, uint64_t* workspaceSize, aclOpExecutor** executor) {
  if (aclError e = ready("aclnnFusedInferAttentionScoreGetWorkspaceSize")) return e;
  if (!query || !key || !value || !attentionOut || !inputLayout || !workspaceSize || !executor)
    return fail(kParamNull, "query, key, value, attentionOut, inputLayout, workspaceSize and executor are required");
  for (const aclTensor* t : {deqScale1, quantScale1, deqScale2, quantScale2, quantOffset2, antiquantScale,
                             antiquantOffset, blockTable, queryPaddingSize, softmaxLse})
    if (t) return fail(kParamInvalid, "quantisation, paged KV, queryPaddingSize and softmaxLse are not emulated");
  if (blockSize != 0 || antiquantMode != 0 || softmaxLseFlag)
    return fail(kParamInvalid, "blockSize, antiquantMode and softmaxLseFlag must be 0 / false here");
  auto* ex = new aclOpExecutor;
  const std::string why = fia_prepare(query, key, value, pseShift, attenMask, actualSeqLengths, actualSeqLengthsKv,
                                      kvPaddingSize, numHeads, scaleValue, preTokens, nextTokens, inputLayout,
                                      numKeyValueHeads, sparseMode, innerPrecise, attentionOut, ex);
  if (!why.empty()) {
    delete ex;
    return fail(kParamInvalid, "aclnnFusedInferAttentionScoreGetWorkspaceSize: " + why);
  }
  ex->summary += " device=" + std::to_string(t_device);
  *workspaceSize = ex->workspace_bytes;
  *executor = ex;
  return 0;
}

API aclnnStatus aclnnFusedInferAttentionScore(void* workspace, uint64_t workspaceSize, aclOpExecutor* executor,
                                              const aclrtStream stream) {
  (void)stream;
  if (aclError e = ready("aclnnFusedInferAttentionScore")) {
    delete executor;
    return e;
  }
  if (!executor || executor->is_copy) return fail(kParamNull, "aclnnFusedInferAttentionScore: not its executor");
  std::string why;
  if (workspaceSize < executor->workspace_bytes || !in_device(workspace, executor->workspace_bytes))
    why = "the workspace is smaller than asked for or not device memory";
  else
    why = fia_execute(*executor);
  const std::string summary = executor->summary;
  delete executor;  // an executor serves one call
  if (!why.empty()) return fail(kParamInvalid, "aclnnFusedInferAttentionScore: " + why);
  std::lock_guard<std::mutex> lock(g_mutex);
  ++g_operator_runs;
  g_last_layout = summary;
  return 0;
}

// aclnnInplaceCopy: selfRef = src, both possibly strided views (offset and strides in elements).
namespace {
int64_t storage_elems(const aclTensor& t) {
  int64_t n = 1;
  for (int64_t d : t.storage) n *= d;
  return n;
}
}  // namespace

API aclnnStatus aclnnInplaceCopyGetWorkspaceSize(aclTensor* selfRef, const aclTensor* src, uint64_t* workspaceSize,
                                                 aclOpExecutor** executor) {
  if (aclError e = ready("aclnnInplaceCopyGetWorkspaceSize")) return e;
  if (!selfRef || !src || !workspaceSize || !executor) return fail(kParamNull, "aclnnInplaceCopy: null argument");
  if (selfRef->dims != src->dims || selfRef->dtype != src->dtype)
    return fail(kParamInvalid, "aclnnInplaceCopy: shapes or dtypes differ (casts are not emulated)");
  for (const aclTensor* t : {static_cast<const aclTensor*>(selfRef), src}) {
    int64_t last = t->offset;
    for (size_t i = 0; i < t->dims.size(); ++i) last += (t->dims[i] - 1) * t->strides[i];
    if (t->offset < 0 || last >= storage_elems(*t) ||
        !in_device(t->data, static_cast<size_t>(storage_elems(*t)) * dtype_bytes(t->dtype)))
      return fail(kParamInvalid, "aclnnInplaceCopy: a view outside its storage or outside device memory");
  }
  auto* ex = new aclOpExecutor;
  ex->is_copy = true;
  ex->copy_dst = *selfRef;
  ex->copy_src = *src;
  ex->workspace_bytes = 0;
  *workspaceSize = 0;
  *executor = ex;
  return 0;
}

API aclnnStatus aclnnInplaceCopy(void*, uint64_t, aclOpExecutor* executor, const aclrtStream) {
  if (aclError e = ready("aclnnInplaceCopy")) {
    delete executor;
    return e;
  }
  if (!executor || !executor->is_copy) return fail(kParamInvalid, "aclnnInplaceCopy: not a copy executor");
  const aclTensor& d = executor->copy_dst;
  const aclTensor& s = executor->copy_src;
  const size_t es = dtype_bytes(d.dtype);
  const size_t rank = d.dims.size();
  std::vector<int64_t> idx(rank, 0);
  const int64_t n = numel(d);
  for (int64_t e = 0; e < n; ++e) {
    int64_t od = d.offset, os = s.offset;
    for (size_t i = 0; i < rank; ++i) od += idx[i] * d.strides[i], os += idx[i] * s.strides[i];
    std::memcpy(static_cast<char*>(d.data) + od * es, static_cast<const char*>(s.data) + os * es, es);
    for (size_t i = rank; i-- > 0;) {
      if (++idx[i] < d.dims[i]) break;
      idx[i] = 0;
    }
  }
  delete executor;
  std::lock_guard<std::mutex> lock(g_mutex);
  ++g_copy_runs;
  return 0;
}

// Test hooks (ctypes): how many operator runs succeeded, how much device memory is held, and a
// summary of the last run's arguments.
API int64_t cann_double_operator_runs() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_operator_runs;
}
API int64_t cann_double_copy_runs() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_copy_runs;
}
API int64_t cann_double_live_allocations() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return static_cast<int64_t>(g_allocations.size());
}
API const char* cann_double_last_run() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_last_layout.c_str();
}

// Our table's types against the definitions above (for the operator: against the document).
#define FASTATTN_DOUBLE_SAME(lib, name, ret, params, required, source)                            \
  static_assert(std::is_same_v<decltype(&::name), fastattn::cann::name##_fn>,                    \
                #name ": cann_api.h and the documented prototype differ");
FASTATTN_CANN_FUNCTIONS(FASTATTN_DOUBLE_SAME)
#undef FASTATTN_DOUBLE_SAME
