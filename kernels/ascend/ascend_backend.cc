// The Ascend NPU backend of the dispatch seam: the plan (fia_plan.h) says what CANN's
// aclnnFusedInferAttentionScore (V1) is given; this file gives it: present written by device
// copies, the aclTensors, the compressed causal mask (once per device), the explicit mask, pse and
// kvPaddingSize staged from the host, the workspace (cached per device and stream, grown when
// needed), and the two-phase call on the node's stream. Every ACL failure throws a message naming
// the function, its code and aclGetRecentErrMsg.
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../cpu/vector_math.h"
#include "ascend/ascend_backend.h"
#include "ascend/cann_api.h"
#include "ascend/fia_plan.h"
#include "dispatch.h"

namespace fastattn::ascend_runtime {
namespace {

using cann::check;

// Device memory of `bytes`, freed with aclrtFree.
struct DeviceBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { reset(); }
  void reset() {
    if (ptr) cann::api().aclrtFree(ptr);
    ptr = nullptr;
    bytes = 0;
  }
  // At least `need` bytes; the old contents are dropped. The caller has drained the stream.
  void reserve(size_t need) {
    if (need <= bytes) return;
    reset();
    check("aclrtMalloc", cann::api().aclrtMalloc(&ptr, need, cann::kAclMemMallocHugeFirst));
    bytes = need;
  }
};

// What one (device, stream) keeps between runs: the workspace and a staging area for the
// host-made operands. Runs on one stream are serialised by `mutex`.
struct StreamCache {
  std::mutex mutex;
  DeviceBuffer workspace;       // aclnnFusedInferAttentionScore's
  DeviceBuffer copy_workspace;  // aclnnInplaceCopy's
  DeviceBuffer staging;
};

// One per (device, stream), dropped by release_stream when ONNX Runtime destroys the stream. The
// map itself is never destroyed: freeing device memory from a static destructor at exit could run
// after CANN has been finalised (torch_npu finalises it at exit).
using CacheMap = std::map<std::pair<int, void*>, std::unique_ptr<StreamCache>>;
std::mutex g_caches_mutex;
CacheMap& caches() {
  static auto* map = new CacheMap;
  return *map;
}

StreamCache& stream_cache(int device, void* stream) {
  std::lock_guard<std::mutex> lock(g_caches_mutex);
  auto& c = caches()[{device, stream}];
  if (!c) c = std::make_unique<StreamCache>();
  return *c;
}

// The compressed 2048 x 2048 causal mask, built and copied once per device, kept for the process.
void* compressed_mask_on(int device) {
  static std::mutex mu;
  static std::map<int, void*> masks;
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = masks.find(device); it != masks.end()) return it->second;
  const std::vector<uint8_t> host = ascend::compressed_causal_mask();
  void* dev = nullptr;
  check("aclrtMalloc", cann::api().aclrtMalloc(&dev, host.size(), cann::kAclMemMallocHugeFirst));
  check("aclrtMemcpy",
        cann::api().aclrtMemcpy(dev, host.size(), host.data(), host.size(), cann::kAclMemcpyHostToDevice));
  masks[device] = dev;
  return dev;
}

int32_t acl_dtype(ElemType t) {
  switch (t) {
    case ElemType::kFloat16: return cann::kAclFloat16;
    case ElemType::kBFloat16: return cann::kAclBf16;
    case ElemType::kFloat32: return cann::kAclFloat;
  }
  return cann::kAclFloat;
}

// aclTensor / aclIntArray / aclTensorList owners (a list owns its tensors: destroying it frees them).
struct Tensor {
  aclTensor* t = nullptr;
  ~Tensor() {
    if (t) cann::api().aclDestroyTensor(t);
  }
  aclTensor* release() { return std::exchange(t, nullptr); }
};
struct TensorList {
  aclTensorList* l = nullptr;
  ~TensorList() {
    if (l) cann::api().aclDestroyTensorList(l);
  }
};
struct IntArray {
  aclIntArray* a = nullptr;
  ~IntArray() {
    if (a) cann::api().aclDestroyIntArray(a);
  }
};

// A dense ND tensor over device memory.
aclTensor* make_tensor(const std::vector<int64_t>& dims, int32_t dtype, void* data, const char* what) {
  std::vector<int64_t> strides(dims.size(), 1);
  for (size_t i = dims.size(); i-- > 1;) strides[i - 1] = strides[i] * dims[i];
  aclTensor* t = cann::api().aclCreateTensor(dims.data(), dims.size(), dtype, strides.data(), 0, cann::kAclFormatNd,
                                             dims.data(), dims.size(), data);
  if (!t) throw std::runtime_error(std::string("aclCreateTensor failed for ") + what);
  return t;
}

aclTensorList* make_list(const std::vector<int64_t>& dims, int32_t dtype, void* data, const char* what) {
  Tensor t{make_tensor(dims, dtype, data, what)};
  const aclTensor* one[] = {t.t};
  aclTensorList* l = cann::api().aclCreateTensorList(one, 1);
  if (!l) throw std::runtime_error(std::string("aclCreateTensorList failed for ") + what);
  t.release();
  return l;
}

// A strided [B, H, rows, dim] view of `v` from row `row0` (offset and strides in elements, over
// the storage the view spans), for aclnnInplaceCopy.
aclTensor* strided_view(const TensorView& v, int64_t row0, int64_t batch, int64_t heads, int64_t rows, int64_t dim,
                        int32_t dtype, const char* what) {
  const std::vector<int64_t> dims = {batch, heads, rows, dim};
  const std::vector<int64_t> strides = {v.batch_stride, v.head_stride, v.seq_stride, 1};
  const int64_t offset = row0 * v.seq_stride;
  const std::vector<int64_t> storage = {offset + (batch - 1) * v.batch_stride + (heads - 1) * v.head_stride +
                                        (rows - 1) * v.seq_stride + dim};
  aclTensor* t = cann::api().aclCreateTensor(dims.data(), dims.size(), dtype, strides.data(), offset,
                                             cann::kAclFormatNd, storage.data(), storage.size(), v.data);
  if (!t) throw std::runtime_error(std::string("aclCreateTensor failed for ") + what);
  return t;
}

// Copies `rows` rows of `dim` elements for every (batch, head) from src to dst (rows starting at
// dst_row in dst) on `stream`: one aclrtMemcpyAsync per block where the strides merge rows (BNSD)
// or heads and rows (BSH); else one strided aclnnInplaceCopy (e.g. a BSH key into a BNSD present),
// or row by row where the operator library lacks it.
void copy_rows(const TensorView& dst, int64_t dst_row, const TensorView& src, int64_t batch, int64_t heads,
               int64_t rows, int64_t dim, ElemType dtype, void* stream, StreamCache& cache) {
  if (rows <= 0 || batch <= 0 || heads <= 0) return;
  const cann::Api& acl = cann::api();
  const size_t esize = elem_size(dtype);
  auto at = [&](const TensorView& v, int64_t b, int64_t h, int64_t s) {
    return static_cast<char*>(v.data) + (b * v.batch_stride + h * v.head_stride + s * v.seq_stride) * esize;
  };
  auto copy = [&](char* d, const char* s, int64_t elems) {
    const size_t n = static_cast<size_t>(elems) * esize;
    check("aclrtMemcpyAsync", acl.aclrtMemcpyAsync(d, n, s, n, cann::kAclMemcpyDeviceToDevice, stream));
  };
  const bool rows_dense = (rows == 1 || (dst.seq_stride == dim && src.seq_stride == dim));
  const bool bsh = (heads == 1 || (dst.head_stride == dim && src.head_stride == dim)) &&
                   (rows == 1 || (dst.seq_stride == heads * dim && src.seq_stride == heads * dim));
  if (!rows_dense && !bsh && acl.aclnnInplaceCopyGetWorkspaceSize && acl.aclnnInplaceCopy) {
    Tensor to{strided_view(dst, dst_row, batch, heads, rows, dim, acl_dtype(dtype), "present / key-value copy")};
    Tensor from{strided_view(src, 0, batch, heads, rows, dim, acl_dtype(dtype), "present / key-value copy")};
    uint64_t bytes = 0;
    aclOpExecutor* executor = nullptr;
    check("aclnnInplaceCopyGetWorkspaceSize", acl.aclnnInplaceCopyGetWorkspaceSize(to.t, from.t, &bytes, &executor));
    if (bytes > cache.copy_workspace.bytes) {
      check("aclrtSynchronizeStream", acl.aclrtSynchronizeStream(stream));
      cache.copy_workspace.reserve(bytes);
    }
    void* workspace = bytes ? cache.copy_workspace.ptr : nullptr;
    check("aclnnInplaceCopy", acl.aclnnInplaceCopy(workspace, bytes, executor, stream));
    return;
  }
  for (int64_t b = 0; b < batch; ++b) {
    if (bsh) {  // [rows, heads * dim] is one block per batch
      copy(at(dst, b, 0, dst_row), at(src, b, 0, 0), rows * heads * dim);
      continue;
    }
    for (int64_t h = 0; h < heads; ++h) {
      if (rows_dense) {
        copy(at(dst, b, h, dst_row), at(src, b, h, 0), rows * dim);
        continue;
      }
      for (int64_t s = 0; s < rows; ++s) copy(at(dst, b, h, dst_row + s), at(src, b, h, s), dim);
    }
  }
}

// A dense view of [B, H, S, D] in the plan's layout.
TensorView dense_view(void* data, ElemType t, bool bnsd, int64_t H, int64_t S, int64_t D) {
  TensorView v;
  v.data = data;
  v.dtype = t;
  v.batch_stride = H * S * D;
  v.head_stride = bnsd ? S * D : D;
  v.seq_stride = bnsd ? D : H * D;
  return v;
}

// Reads `bytes` of device memory at src into host memory, in the order of `stream`.
void read_back(void* host, const void* src, size_t bytes, void* stream) {
  if (!bytes) return;
  check("aclrtMemcpyAsync",
        cann::api().aclrtMemcpyAsync(host, bytes, src, bytes, cann::kAclMemcpyDeviceToHost, stream));
  check("aclrtSynchronizeStream", cann::api().aclrtSynchronizeStream(stream));
}

// Bytes spanned by the bias's strided view (its last element + 1).
size_t bias_span(const AttentionParams& p) {
  const int64_t last = (p.batch - 1) * p.bias_batch_stride + (p.num_heads - 1) * p.bias_head_stride +
                       (p.seq_q - 1) * p.bias_row_stride + (p.seq_total() - 1) * p.bias_col_stride;
  return static_cast<size_t>(last + 1) * elem_size(p.bias_dtype);
}

// The dense [pse_shape] pseShift in compute_dtype, from a host copy of the bias's span.
std::vector<uint8_t> dense_pse(const AttentionParams& p, const ascend::FiaPlan& plan, const void* span) {
  const int64_t Bp = plan.pse_shape[0], N = plan.pse_shape[1], Sq = plan.pse_shape[2], T = plan.pse_shape[3];
  const size_t es = elem_size(plan.compute_dtype);
  std::vector<uint8_t> out(static_cast<size_t>(Bp * N * Sq * T) * es);
  std::vector<float> row(static_cast<size_t>(T));
  for (int64_t b = 0; b < Bp; ++b)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < Sq; ++i) {
        const int64_t base = b * p.bias_batch_stride + n * p.bias_head_stride + i * p.bias_row_stride;
        for (int64_t j = 0; j < T; ++j)
          row[static_cast<size_t>(j)] = cpu::load_one(span, base + j * p.bias_col_stride, p.bias_dtype);
        cpu::from_float_scaled(row.data(), 1.f, T, plan.compute_dtype, out.data() + ((b * N + n) * Sq + i) * T * es);
      }
  return out;
}

std::string runtime_unavailable() {
  const cann::Runtime& rt = cann::runtime();
  if (!rt.api) return "CANN not found: " + rt.missing;
  if (!rt.device_error.empty()) return "CANN cannot start: " + rt.device_error;
  if (!rt.version_gate.empty()) return rt.version_gate;
  if (!rt.soc_gate.empty()) return rt.soc_gate;
  return "";
}

std::string supports(const AttentionParams& p) {
  if (p.device.kind != DeviceKind::kNpu) return "the Ascend backend reads NPU device memory only";
  if (auto why = runtime_unavailable(); !why.empty()) return why;
  if (p.device.ordinal < 0 || static_cast<uint32_t>(p.device.ordinal) >= cann::runtime().device_count)
    return "no Ascend device " + std::to_string(p.device.ordinal);
  for (const TensorView* v : {&p.q, &p.k, &p.v, &p.past_k, &p.past_v, &p.out, &p.present_k, &p.present_v})
    if (v->data && v->dtype != p.dtype) return "the Ascend backend needs every tensor in one element type";
  return ascend::static_decline(p, ascend::PlanInputs{});
}

void run(const AttentionParams& p, const LaunchContext& ctx) {
  if (auto why = runtime_unavailable(); !why.empty()) throw std::runtime_error(why);
  const cann::Api& acl = cann::api();
  const int device = p.device.ordinal;
  cann::set_device(device);
  void* stream = ctx.stream;
  StreamCache& cache = stream_cache(device, stream);
  std::lock_guard<std::mutex> lock(cache.mutex);

  // The data-dependent inputs of the plan, read back in stream order.
  ascend::PlanInputs in;
  if (size_t n = ascend::key_padding_mask_bytes(p)) {
    std::vector<uint8_t> host(n);
    read_back(host.data(), p.key_padding_mask, n, stream);
    if (auto why = ascend::read_key_padding_mask(p, host.data(), &in); !why.empty()) throw std::runtime_error(why);
  }
  if (p.kv_len) {
    in.kv_len.resize(static_cast<size_t>(p.batch));
    read_back(in.kv_len.data(), p.kv_len, in.kv_len.size() * sizeof(int32_t), stream);
  }
  ascend::FiaPlan plan;
  if (auto why = ascend::make_plan(p, in, &plan); !why.empty())
    throw std::runtime_error("the Ascend operator cannot compute this input: " + why);
  if (plan.cast_inputs)
    throw std::runtime_error("the Ascend backend does not cast float32 inputs yet (plan: " + ascend::describe(plan) +
                             ")");

  const bool bnsd = plan.input_layout == "BNSD";
  const size_t es = elem_size(plan.compute_dtype);
  const int64_t B = p.batch, KVH = p.kv_num_heads, T = p.seq_total(), D = p.head_dim;

  // Host-made operands, staged in one device area: explicit mask, pse, kvPaddingSize, and the
  // scratch key/value. The area is reused by the next run on this stream, so the stream is
  // drained before it is written (synchronous copies, no host buffer outlives them).
  std::vector<uint8_t> mask_host, pse_host;
  if (plan.mask == ascend::MaskKind::kExplicit) mask_host = ascend::explicit_mask(p, in);
  if (plan.has_pse && plan.pse_copy) {
    std::vector<uint8_t> span(bias_span(p));
    read_back(span.data(), p.bias, span.size(), stream);
    pse_host = dense_pse(p, plan, span.data());
  }
  const size_t kv_bytes = plan.kv_source == ascend::KvSource::kScratch ? static_cast<size_t>(B * KVH * T * D) * es : 0;
  auto aligned = [](size_t n) { return (n + 511) / 512 * 512; };
  const size_t mask_off = 0, pse_off = mask_off + aligned(mask_host.size()),
               pad_off = pse_off + aligned(pse_host.size()),
               k_off = pad_off + aligned(plan.has_kv_padding_size ? 8 : 0), v_off = k_off + aligned(kv_bytes),
               staging_bytes = v_off + aligned(kv_bytes);
  if (staging_bytes > 0) {
    check("aclrtSynchronizeStream", acl.aclrtSynchronizeStream(stream));
    cache.staging.reserve(staging_bytes);
  }
  char* staging = static_cast<char*>(cache.staging.ptr);
  auto stage = [&](size_t off, const void* host, size_t bytes) {
    if (bytes) check("aclrtMemcpy", acl.aclrtMemcpy(staging + off, bytes, host, bytes, cann::kAclMemcpyHostToDevice));
  };
  stage(mask_off, mask_host.data(), mask_host.size());
  stage(pse_off, pse_host.data(), pse_host.size());
  if (plan.has_kv_padding_size) stage(pad_off, &plan.kv_padding_size, 8);

  // 1. present = concat(past, new), and 2. the key/value operand.
  if (plan.write_present) {
    copy_rows(p.present_k, 0, p.past_k, B, KVH, p.seq_past, D, p.dtype, stream, cache);
    copy_rows(p.present_k, p.seq_past, p.k, B, KVH, p.seq_kv, D, p.dtype, stream, cache);
    copy_rows(p.present_v, 0, p.past_v, B, KVH, p.seq_past, p.head_dim_v, p.dtype, stream, cache);
    copy_rows(p.present_v, p.seq_past, p.v, B, KVH, p.seq_kv, p.head_dim_v, p.dtype, stream, cache);
  }
  void* key = p.k.data;
  void* value = p.v.data;
  if (plan.kv_source == ascend::KvSource::kPresent) {
    key = p.present_k.data, value = p.present_v.data;
  } else if (plan.kv_source == ascend::KvSource::kScratch) {
    key = staging + k_off, value = staging + v_off;
    const TensorView ks = dense_view(key, plan.compute_dtype, bnsd, KVH, T, D);
    const TensorView vs = dense_view(value, plan.compute_dtype, bnsd, KVH, T, D);
    copy_rows(ks, 0, p.past_k, B, KVH, p.seq_past, D, plan.compute_dtype, stream, cache);
    copy_rows(ks, p.seq_past, p.k, B, KVH, p.seq_kv, D, plan.compute_dtype, stream, cache);
    copy_rows(vs, 0, p.past_v, B, KVH, p.seq_past, D, plan.compute_dtype, stream, cache);
    copy_rows(vs, p.seq_past, p.v, B, KVH, p.seq_kv, D, plan.compute_dtype, stream, cache);
  }

  // The operator's arguments.
  const int32_t dt = acl_dtype(plan.compute_dtype);
  Tensor query{make_tensor(plan.query_shape, dt, p.q.data, "query")};
  Tensor out{make_tensor(plan.out_shape, dt, p.out.data, "attentionOut")};
  TensorList keys{make_list(plan.key_shape, dt, key, "key")};
  TensorList values{make_list(plan.value_shape, dt, value, "value")};
  Tensor mask, pse, pad;
  if (plan.mask == ascend::MaskKind::kCompressed)
    mask.t = make_tensor(plan.mask_shape, cann::kAclBool, compressed_mask_on(device), "attenMask");
  else if (plan.mask == ascend::MaskKind::kExplicit)
    mask.t = make_tensor(plan.mask_shape, cann::kAclBool, staging + mask_off, "attenMask");
  if (plan.has_pse)
    pse.t = make_tensor(plan.pse_shape, dt, plan.pse_copy ? staging + pse_off : const_cast<void*>(p.bias), "pseShift");
  if (plan.has_kv_padding_size) pad.t = make_tensor({1}, cann::kAclInt64, staging + pad_off, "kvPaddingSize");
  IntArray q_lengths, kv_lengths;
  if (!plan.actual_seq_lengths.empty())
    q_lengths.a = acl.aclCreateIntArray(plan.actual_seq_lengths.data(), plan.actual_seq_lengths.size());
  if (!plan.actual_seq_lengths_kv.empty())
    kv_lengths.a = acl.aclCreateIntArray(plan.actual_seq_lengths_kv.data(), plan.actual_seq_lengths_kv.size());

  std::vector<char> layout(plan.input_layout.begin(), plan.input_layout.end());
  layout.push_back('\0');
  uint64_t workspace_bytes = 0;
  aclOpExecutor* executor = nullptr;
  check("aclnnFusedInferAttentionScoreGetWorkspaceSize",
        acl.aclnnFusedInferAttentionScoreGetWorkspaceSize(
            query.t, keys.l, values.l, pse.t, mask.t, q_lengths.a, kv_lengths.a, nullptr, nullptr, nullptr, nullptr,
            nullptr, nullptr, nullptr, nullptr, nullptr, pad.t, plan.num_heads, plan.scale_value, plan.pre_tokens,
            plan.next_tokens, layout.data(), plan.num_key_value_heads, plan.sparse_mode, plan.inner_precise,
            /*blockSize=*/0, /*antiquantMode=*/0, /*softmaxLseFlag=*/false, out.t, nullptr, &workspace_bytes,
            &executor));
  if (workspace_bytes > cache.workspace.bytes) {
    // The old workspace may still be read by the previous run's operator.
    check("aclrtSynchronizeStream", acl.aclrtSynchronizeStream(stream));
    cache.workspace.reserve(workspace_bytes);
  }
  check("aclnnFusedInferAttentionScore",
        acl.aclnnFusedInferAttentionScore(workspace_bytes ? cache.workspace.ptr : nullptr, workspace_bytes, executor,
                                          stream));
  // 8. Decode batches with no visible key: zeros by our contract, undefined from the operator
  // (no invalid-row correction at S_q = 1). Their N * D outputs are contiguous in both layouts.
  const size_t out_es = elem_size(p.dtype), batch_bytes = static_cast<size_t>(p.num_heads * p.head_dim_v) * out_es;
  for (int64_t b : plan.zero_out_batches) {
    char* row = static_cast<char*>(p.out.data) + static_cast<size_t>(b * p.out.batch_stride) * out_es;
    check("aclrtMemsetAsync", acl.aclrtMemsetAsync(row, batch_bytes, 0, batch_bytes, stream));
  }
}

std::string describe() {
  const cann::Runtime& rt = cann::runtime();
  if (!rt.api) return "CANN not found: " + rt.missing;
  std::string s = "CANN " + (rt.cann_version.empty() ? std::string("(version unknown)") : rt.cann_version) +
                  " from " + rt.api->libraries + "; aclnnFusedInferAttentionScore V1";
  if (!rt.version_gate.empty()) s += " (refused: " + rt.version_gate + ")";
  if (!rt.soc_gate.empty()) s += " (refused: " + rt.soc_gate + ")";
  if (!rt.device_error.empty()) return s + "; no NPU: " + rt.device_error;
  s += "; " + std::to_string(rt.device_count) + " NPU" + (rt.device_count == 1 ? "" : "s");
  if (!rt.soc_name.empty()) s += ", SoC " + rt.soc_name;
  return s;
}

}  // namespace
}  // namespace fastattn::ascend_runtime

namespace fastattn::ascend {

void release_stream(int device, void* stream) noexcept {
  std::unique_ptr<ascend_runtime::StreamCache> dropped;
  {
    std::lock_guard<std::mutex> lock(ascend_runtime::g_caches_mutex);
    auto it = ascend_runtime::caches().find({device, stream});
    if (it == ascend_runtime::caches().end()) return;
    dropped = std::move(it->second);
    ascend_runtime::caches().erase(it);
  }
  try {
    cann::set_device(device);
    cann::api().aclrtSynchronizeStream(stream);  // its last operator may still read the workspace
    dropped.reset();
  } catch (const std::exception&) {
    dropped.release();  // no CANN to free it with: leave it
  }
}

const Backend& backend() {
  static const Backend b{"ascend", DeviceKind::kNpu, ascend_runtime::supports, ascend_runtime::run,
                         ascend_runtime::describe};
  return b;
}

}  // namespace fastattn::ascend
