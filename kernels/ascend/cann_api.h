// The CANN functions the Ascend path calls, bound with dlopen/dlsym at run time (never linked), so
// that the package loads and its other paths work where CANN is absent. Types are declared here by
// hand: opaque handles, int32 for ACL's enums (same ABI), values from the ACL headers of the
// torch-npu 2.13.0 wheel. cmake/check_acl_prototypes.py compiles this list against those headers
// (FASTATTN_CHECK_ACL_PROTOTYPES=ON); the operator's two functions, which no wheel header has, follow
// the documented prototype (ops-transformer aclnn_fused_infer_attention_score.h), and the test
// double (tests/ascend/cann_double) defines them from that document and asserts the same types.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

// Opaque handles of the aclnn meta API (libnnopbase.so), at global scope as CANN declares them.
struct aclTensor;
struct aclIntArray;
struct aclTensorList;
struct aclOpExecutor;

namespace fastattn::cann {

using aclError = int;
using aclnnStatus = int32_t;
using aclrtStream = void*;
using aclrtEvent = void*;

// aclDataType
constexpr int32_t kAclFloat = 0, kAclFloat16 = 1, kAclInt8 = 2, kAclInt32 = 3, kAclUint8 = 4, kAclInt64 = 9,
                  kAclBool = 12, kAclBf16 = 27;
constexpr int32_t kAclFormatNd = 2;                     // aclFormat ACL_FORMAT_ND
constexpr int32_t kAclMemMallocHugeFirst = 0;           // aclrtMemMallocPolicy
constexpr int32_t kAclMemcpyHostToDevice = 1, kAclMemcpyDeviceToHost = 2,
                  kAclMemcpyDeviceToDevice = 3;         // aclrtMemcpyKind
constexpr int32_t kAclPkgNameCann = 0;                  // aclCANNPackageName ACL_PKG_NAME_CANN
constexpr aclError kAclSuccess = 0;
constexpr aclError kAclErrorRepeatInitialize = 100002;  // aclInit called before: not an error here

// aclCANNPackageVersion (ACL_PKG_VERSION_MAX_SIZE 128, ACL_PKG_VERSION_PARTS_MAX_SIZE 64).
struct aclCANNPackageVersion {
  char version[128];
  char majorVersion[64];
  char minorVersion[64];
  char releaseVersion[64];
  char patchVersion[64];
  char reserved[128];
};

// X(library, name, return type, parameter list, required, source): library is Runtime
// (libascendcl.so), Meta (libnnopbase.so) or Op (libopapi_transformer.so, then libopapi.so);
// source says what the check compares against: acl_rt.h, the wheel's meta typedefs, or the document.
#define FASTATTN_CANN_FUNCTIONS(X)                                                                                  \
  X(Runtime, aclInit, aclError, (const char* config_path), true, AclHeader)                                         \
  X(Runtime, aclrtSetDevice, aclError, (int32_t device_id), true, AclHeader)                                        \
  X(Runtime, aclrtGetDevice, aclError, (int32_t * device_id), true, AclHeader)                                      \
  X(Runtime, aclrtGetDeviceCount, aclError, (uint32_t * count), true, AclHeader)                                    \
  X(Runtime, aclrtGetSocName, const char*, (), true, AclHeader)                                                     \
  X(Runtime, aclrtCreateStream, aclError, (aclrtStream * stream), true, AclHeader)                                  \
  X(Runtime, aclrtDestroyStream, aclError, (aclrtStream stream), true, AclHeader)                                   \
  X(Runtime, aclrtSynchronizeStream, aclError, (aclrtStream stream), true, AclHeader)                               \
  X(Runtime, aclrtSynchronizeDevice, aclError, (), true, AclHeader)                                                 \
  X(Runtime, aclrtMalloc, aclError, (void** ptr, size_t size, int32_t policy), true, AclHeader)                     \
  X(Runtime, aclrtFree, aclError, (void* ptr), true, AclHeader)                                                     \
  X(Runtime, aclrtMemcpy, aclError, (void* dst, size_t dst_max, const void* src, size_t count, int32_t kind), true, \
    AclHeader)                                                                                                      \
  X(Runtime, aclrtMemcpyAsync, aclError,                                                                            \
    (void* dst, size_t dst_max, const void* src, size_t count, int32_t kind, aclrtStream stream), true, AclHeader)  \
  X(Runtime, aclrtMemsetAsync, aclError, (void* dst, size_t dst_max, int32_t value, size_t count, aclrtStream stream), \
    true, AclHeader)                                                                                                \
  X(Runtime, aclrtCreateEvent, aclError, (aclrtEvent * event), true, AclHeader)                                     \
  X(Runtime, aclrtDestroyEvent, aclError, (aclrtEvent event), true, AclHeader)                                      \
  X(Runtime, aclrtRecordEvent, aclError, (aclrtEvent event, aclrtStream stream), true, AclHeader)                   \
  X(Runtime, aclrtStreamWaitEvent, aclError, (aclrtStream stream, aclrtEvent event), true, AclHeader)               \
  X(Runtime, aclrtSynchronizeEvent, aclError, (aclrtEvent event), true, AclHeader)                                  \
  X(Runtime, aclGetRecentErrMsg, const char*, (), true, AclHeader)                                                  \
  /* The CANN version: aclsysGetCANNVersion (deprecated in 9.x), else aclsysGetVersionStr. */                       \
  X(Runtime, aclsysGetCANNVersion, aclError, (int32_t package, aclCANNPackageVersion * version), false, AclHeader)  \
  X(Runtime, aclsysGetVersionStr, aclError, (char* package, char* version), false, AclHeader)                       \
  X(Meta, aclCreateTensor, aclTensor*,                                                                              \
    (const int64_t* view_dims, uint64_t view_rank, int32_t dtype, const int64_t* strides, int64_t offset,           \
     int32_t format, const int64_t* storage_dims, uint64_t storage_rank, void* data),                               \
    true, WheelMeta)                                                                                                \
  X(Meta, aclCreateIntArray, aclIntArray*, (const int64_t* values, uint64_t size), true, WheelMeta)                 \
  X(Meta, aclCreateTensorList, aclTensorList*, (const aclTensor* const* tensors, uint64_t size), true, WheelMeta)   \
  X(Meta, aclDestroyTensor, int, (const aclTensor* tensor), true, WheelMeta)                                        \
  X(Meta, aclDestroyIntArray, int, (const aclIntArray* array), true, WheelMeta)                                     \
  X(Meta, aclDestroyTensorList, int, (const aclTensorList* list), true, WheelMeta)                                  \
  /* V1 of the operator (V2..V5 insert arguments: one version only, gated on the CANN version). */                 \
  X(Op, aclnnFusedInferAttentionScoreGetWorkspaceSize, aclnnStatus,                                                 \
    (const aclTensor* query, const aclTensorList* key, const aclTensorList* value, const aclTensor* pse_shift,      \
     const aclTensor* atten_mask, const aclIntArray* actual_seq_lengths, const aclIntArray* actual_seq_lengths_kv,  \
     const aclTensor* deq_scale1, const aclTensor* quant_scale1, const aclTensor* deq_scale2,                       \
     const aclTensor* quant_scale2, const aclTensor* quant_offset2, const aclTensor* antiquant_scale,               \
     const aclTensor* antiquant_offset, const aclTensor* block_table, const aclTensor* query_padding_size,          \
     const aclTensor* kv_padding_size, int64_t num_heads, double scale_value, int64_t pre_tokens,                   \
     int64_t next_tokens, char* input_layout, int64_t num_key_value_heads, int64_t sparse_mode,                     \
     int64_t inner_precise, int64_t block_size, int64_t antiquant_mode, bool softmax_lse_flag,                      \
     const aclTensor* attention_out, const aclTensor* softmax_lse, uint64_t* workspace_size,                        \
     aclOpExecutor** executor),                                                                                     \
    true, Document)                                                                                                 \
  X(Op, aclnnFusedInferAttentionScore, aclnnStatus,                                                                 \
    (void* workspace, uint64_t workspace_size, aclOpExecutor* executor, aclrtStream stream), true, Document)        \
  /* Strided device-to-device copies (aclrtMemcpy2dAsync takes host<->device only); optional: */                    \
  /* without it such copies go row by row. */                                                                      \
  X(Op, aclnnInplaceCopyGetWorkspaceSize, aclnnStatus,                                                              \
    (aclTensor * self_ref, const aclTensor* src, uint64_t* workspace_size, aclOpExecutor** executor), false,       \
    Document)                                                                                                       \
  X(Op, aclnnInplaceCopy, aclnnStatus,                                                                              \
    (void* workspace, uint64_t workspace_size, aclOpExecutor* executor, aclrtStream stream), false, Document)

// One pointer type per function: name_fn.
#define FASTATTN_CANN_TYPEDEF(lib, name, ret, params, required, source) using name##_fn = ret(*) params;
FASTATTN_CANN_FUNCTIONS(FASTATTN_CANN_TYPEDEF)
#undef FASTATTN_CANN_TYPEDEF

// The bound table: every required pointer is non-null; optional ones may be null.
struct Api {
#define FASTATTN_CANN_MEMBER(lib, name, ret, params, required, source) name##_fn name = nullptr;
  FASTATTN_CANN_FUNCTIONS(FASTATTN_CANN_MEMBER)
#undef FASTATTN_CANN_MEMBER
  std::string libraries;  // where the functions came from, for doctor
};

// What was found on this machine, computed once (thread-safe): the table, or null and why not.
struct Runtime {
  const Api* api = nullptr;
  std::string missing;        // non-empty when api is null: "libascendcl.so: cannot open ..."
  std::string cann_version;   // "8.0.RC3" or "" when no version query answered
  std::string version_gate;   // non-empty: why this CANN is refused for the operator's V1
  std::string soc_name;       // aclrtGetSocName after aclInit ("" when unknown)
  std::string soc_gate;       // non-empty: why the operator's V1 is not documented for this SoC
  uint32_t device_count = 0;  // aclrtGetDeviceCount (0 when anything above failed)
  std::string device_error;   // why device_count is 0, when a call failed
};

// Loads the libraries and, on success, calls aclInit (once per process; "already initialised" is
// fine) and asks for the device count, the SoC name and the CANN version. Never throws.
// FASTATTN_CANN_TEST_DOUBLE=/path/libcann_double.so (set only by tests) takes every function from
// that one library instead.
const Runtime& runtime();

// The table, or throws std::runtime_error("CANN not found: ...").
const Api& api();

// "" for success; else "aclrtMalloc failed with error 107000: <aclGetRecentErrMsg>".
std::string error_text(const char* function, int code);
// Throws std::runtime_error(error_text(...)) when code != 0.
void check(const char* function, int code);

// Makes `device` current on the calling thread: aclrtSetDevice unless aclrtGetDevice says it is
// (another library in the process, torch_npu, may have switched the thread to another device).
void set_device(int32_t device);

// The oldest CANN whose aclnnFusedInferAttentionScore is the V1 declared above.
constexpr int kMinCannMajor = 8;

}  // namespace fastattn::cann
