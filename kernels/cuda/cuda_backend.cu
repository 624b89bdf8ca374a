// The CUDA backend of the dispatch seam: what the forward kernel runs (supports), how it is
// launched on the context's stream (run), and what it found on this machine (describe).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "attention_params.h"
#include "dispatch.h"
#include "fwd_launch.h"
#include "float32_bridge.h"
#include "kv_cache.h"
#include "kv_copy.h"
#include "scratch_pool.h"

namespace fastattn::cuda {
namespace {

// ---- compiled instantiations (fwd_instances.inc is generated from FASTATTN_CUDA_HEAD_DIMS) ----
using RunFn = void (*)(const FwdParams&, int, cudaStream_t);
using SmemFn = int (*)(int);
struct Instance {
  ElemType dtype;
  int head_dim;
  RunFn run;
  SmemFn smem;
};
#define FASTATTN_CUDA_FWD_fp16(hd) {ElemType::kFloat16, hd, &run_fwd<cutlass::half_t, hd>, &smem_bytes<cutlass::half_t, hd>},
#define FASTATTN_CUDA_FWD_bf16(hd) \
  {ElemType::kBFloat16, hd, &run_fwd<cutlass::bfloat16_t, hd>, &smem_bytes<cutlass::bfloat16_t, hd>},
#define FASTATTN_CUDA_FWD(dtype, hd) FASTATTN_CUDA_FWD_##dtype(hd)
const Instance kInstances[] = {
#include "fwd_instances.inc"
};
#undef FASTATTN_CUDA_FWD

// The smallest compiled head size >= d for the element type, or null.
const Instance* find_instance(ElemType t, int64_t d) {
  const Instance* best = nullptr;
  for (const Instance& i : kInstances)
    if (i.dtype == t && i.head_dim >= d && (!best || i.head_dim < best->head_dim)) best = &i;
  return best;
}

std::string compiled_head_dims(ElemType t) {
  std::string s;
  for (const Instance& i : kInstances)
    if (i.dtype == t) s += (s.empty() ? "" : ", ") + std::to_string(i.head_dim);
  return s.empty() ? "none" : s;
}

// ---- devices ----
struct DeviceInfo {
  std::string error;  // non-empty: the device could not be queried
  int cc = 0;         // 10 * major + minor
  int sms = 0;
  int smem_optin = 0;
  std::string name;
};

const DeviceInfo& device_info(int ordinal) {
  static std::mutex mu;
  static std::map<int, DeviceInfo> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(ordinal);
  if (it != cache.end()) return it->second;
  DeviceInfo info;
  cudaDeviceProp prop;
  const cudaError_t e = cudaGetDeviceProperties(&prop, ordinal);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so later calls are not blamed
    info.error = std::string("CUDA device ") + std::to_string(ordinal) + " cannot be queried: " + cudaGetErrorString(e);
  } else {
    info.cc = prop.major * 10 + prop.minor;
    info.sms = prop.multiProcessorCount;
    info.smem_optin = static_cast<int>(prop.sharedMemPerBlockOptin);
    info.name = prop.name;
  }
  return cache.emplace(ordinal, info).first->second;
}

// Whether the build carries sm_90a kernels (wgmma): CMake defines this when the CUDA
// architectures name 90a. An sm_90a cubin runs on compute capability 9.0 only.
#if defined(FASTATTN_CUDA_SM90A)
constexpr bool kBuildHasSm90a = true;
#else
constexpr bool kBuildHasSm90a = false;
#endif

// Which traits family runs on a compute capability: 90 (sm_90 with sm_90a code in the build:
// wgmma), 80 (sm_80 and newer), 75 (Turing), 70 (Volta: sm_70 V100, sm_72 Xavier; float16 only),
// or 0 (none).
int family_of(int cc) {
  int f = cc == 90 && kBuildHasSm90a ? 90 : cc >= 80 ? 80 : cc >= 75 ? 75 : cc >= 70 ? 70 : 0;
#if defined(FASTATTN_CUDA_ALL_TRAITS)
  // Test builds compile every traits for every architecture: FASTATTN_CUDA_TRAITS=80 (75, 70)
  // runs the sm_80 (sm_75, sm_70) traits on a newer GPU.
  if (const char* force = std::getenv("FASTATTN_CUDA_TRAITS")) {
    const int want = std::atoi(force);
    if ((want == 70 || want == 75 || want == 80) && want <= f) f = want;
  }
#endif
  return f;
}

// Whether this build carries Volta code a device of compute capability cc (7.0 or 7.2) can run.
// CUDA 13 cannot compile for Volta, so a default build has none. Exact match: sm_70 SASS would run
// on a desktop 7.x of a newer minor version, but binary compatibility across minor versions is not
// supported on Tegra, and 7.2 is Jetson Xavier's. __CUDA_ARCH_LIST__ (nvcc >= 11.5) lists this
// file's targets, the same as the kernels' in every build here.
bool volta_code_in_build(int cc) {
#if defined(__CUDA_ARCH_LIST__)
  constexpr int archs[] = {__CUDA_ARCH_LIST__};
  for (int a : archs)
    if (a == cc * 10) return true;
  return false;
#else
  (void)cc;
  return true;
#endif
}

constexpr int64_t kMaxGridYZ = 65535;
constexpr int64_t kMaxSeq = int64_t(1) << 30;

std::string supports(const AttentionParams& p) {
  auto s = [](int64_t v) { return std::to_string(v); };
  if (p.device.kind != DeviceKind::kCuda) return "the CUDA kernel reads CUDA device memory only";
  for (const TensorView* v : {&p.q, &p.k, &p.v, &p.past_k, &p.past_v, &p.out, &p.present_k, &p.present_v})
    if (v->data && v->dtype != p.dtype)
      return std::string("the CUDA kernel needs every tensor in one element type (") + elem_name(p.dtype) + "), got " +
             elem_name(v->dtype);
  if (p.bias && p.bias_dtype != p.dtype) return "the CUDA kernel needs attn_bias in the query's element type";
  // GroupQueryAttention's parts (in-place cache, per-batch lengths, rotary, sinks) run in the
  // 16-bit types only, as onnxruntime's own CUDA kernel: the float32 bridge would scan and convert
  // the whole cache, rows past the valid lengths included.
  const bool gqa_parts = p.kv_capacity > 0 || p.kv_len || p.past_len || p.rotary.cos_cache || p.smooth_softmax ||
                         p.head_sink;
  if (gqa_parts && p.dtype == ElemType::kFloat32)
    return "the CUDA kernel takes an in-place KV cache, per-batch lengths, rotary and softmax sinks in float16 or "
           "bfloat16 only (onnxruntime's CUDA GroupQueryAttention is 16-bit too)";
  if (p.rotary.cos_cache && p.kv_capacity == 0)
    return "the CUDA kernel applies rotary embeddings only with an in-place KV cache (GroupQueryAttention)";

  const DeviceInfo& dev = device_info(p.device.ordinal);
  if (!dev.error.empty()) return dev.error;
  const int family = family_of(dev.cc);
  if (family == 0)
    return "the CUDA kernel needs compute capability 7.0 or newer (Volta); device " + s(p.device.ordinal) + " (" +
           dev.name + ") is " + s(dev.cc / 10) + "." + s(dev.cc % 10);
  if (family == 70 && dev.cc < 75 && !volta_code_in_build(dev.cc))
    return "this build has no kernels for sm_" + s(dev.cc) + " (CUDA 13 cannot compile for Volta; build with CUDA 11.8 or "
           "12.x and " + s(dev.cc) + " in the CUDA architectures: 70 for a V100, 72 for a Jetson Xavier); device " +
           s(p.device.ordinal) + " (" + dev.name + ") is " + s(dev.cc / 10) + "." + s(dev.cc % 10);
  if (p.dtype == ElemType::kBFloat16 && family < 80)
    return "bfloat16 needs the sm_80 kernels (compute capability 8.0 or newer); device " + s(p.device.ordinal) + " (" +
           dev.name + ", compute capability " + s(dev.cc / 10) + "." + s(dev.cc % 10) + ") runs the sm_" +
           s(family) + " kernels";

  // Sizes may be 0 at session creation (not known yet): only known sizes are checked.
  if (p.head_dim > 0 && p.head_dim_v > 0 && p.head_dim != p.head_dim_v)
    return "the CUDA kernel needs the value head size to equal the query/key head size in this version, got D = " +
           s(p.head_dim) + ", Dv = " + s(p.head_dim_v);
  if (p.head_dim > 0) {
    if (p.head_dim % 8 != 0)
      return "the CUDA kernel needs a head size that is a multiple of 8, got " + s(p.head_dim);
    const Instance* inst = find_instance(p.dtype == ElemType::kFloat32 ? ElemType::kFloat16 : p.dtype, p.head_dim);
    if (!inst)
      return "head size " + s(p.head_dim) + " is above the largest compiled into this build for " +
             elem_name(p.dtype) + " (compiled: " + compiled_head_dims(p.dtype) + "; see FASTATTN_CUDA_HEAD_DIMS)";
    const int smem = inst->smem(family);
    if (smem > dev.smem_optin)
      return "head size " + s(p.head_dim) + " needs " + s(smem) + " bytes of shared memory per block; device " +
             s(p.device.ordinal) + " allows " + s(dev.smem_optin);
  }
  if (p.batch > kMaxGridYZ || p.num_heads > kMaxGridYZ)
    return "the CUDA kernel takes at most 65535 batches and 65535 heads, got " + s(p.batch) + " and " +
           s(p.num_heads);
  if (p.seq_q >= kMaxSeq || p.seq_total() >= kMaxSeq)
    return "the CUDA kernel takes sequences shorter than 2^30, got S_q = " + s(p.seq_q) + ", S_total = " +
           s(p.seq_total());
  // 16-byte vector loads and stores: every row starts on a 16-byte boundary.
  for (const TensorView* v : {&p.q, &p.k, &p.v, &p.past_k, &p.past_v, &p.out, &p.present_k, &p.present_v})
    if (p.dtype != ElemType::kFloat32 && v->data && (v->batch_stride % 8 || v->head_stride % 8 || v->seq_stride % 8))
      return "the CUDA kernel needs batch, head and row strides that are multiples of 8 elements (16 bytes)";
  return "";
}

SliceStrides strides_of(const TensorView& v) { return {v.batch_stride, v.head_stride, v.seq_stride}; }

bool aligned16(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15) == 0; }
// Makes `ordinal` current for the scope (the caller's thread may have another).
struct DeviceScope {
  int previous = -1;
  explicit DeviceScope(int ordinal) {
    if (cudaGetDevice(&previous) != cudaSuccess) previous = -1;
    if (previous != ordinal) {
      const cudaError_t e = cudaSetDevice(ordinal);
      if (e != cudaSuccess)
        throw std::runtime_error("fastattn CUDA: cannot select device " + std::to_string(ordinal) + ": " +
                                 cudaGetErrorString(e));
    } else {
      previous = -1;
    }
  }
  ~DeviceScope() {
    if (previous >= 0) cudaSetDevice(previous);
  }
};

// One query token with GQA: the group's heads become the rows of one tile (row r is head
// kvh * g + r), so the group's keys and values are read once, not g times. Only strides change.
void pack_gqa_rows(FwdParams& f) {
  const int g = f.kv_group;
  f.q_st.row = f.q_st.head;
  f.q_st.head *= g;
  f.o_st.row = f.o_st.head;
  f.o_st.head *= g;
  f.bias_r = f.bias_h;
  f.bias_h *= g;
  f.heads /= g;
  f.kv_group = 1;
  f.seq_q = g;
  f.rows_per_token = g;  // every row is token 0, at position S_total - 1
}

// The kernel's parameters for p (16-bit, no in-place cache, no rotary).
FwdParams fwd_params_of(const AttentionParams& p, const DeviceInfo& dev) {
  FwdParams f;
  f.q = p.q.data;
  f.out = p.out.data;
  f.q_st = strides_of(p.q);
  f.o_st = strides_of(p.out);
  // Keys 0..seq_past-1 come from past, the rest from new; a missing side borrows the other's
  // pointer (never read) so that no null pointer is offset.
  const bool has_new = p.seq_kv > 0, has_past = p.seq_past > 0;
  const TensorView& kn = has_new ? p.k : p.past_k;
  const TensorView& vn = has_new ? p.v : p.past_v;
  const TensorView& kp = has_past ? p.past_k : p.k;
  const TensorView& vp = has_past ? p.past_v : p.v;
  f.k = kn.data;
  f.v = vn.data;
  f.k_st = strides_of(kn);
  f.v_st = strides_of(vn);
  f.past_k = kp.data;
  f.past_v = vp.data;
  f.pk_st = strides_of(kp);
  f.pv_st = strides_of(vp);
  f.batch = static_cast<int>(p.batch);
  f.heads = static_cast<int>(p.num_heads);
  f.kv_group = static_cast<int>(p.num_heads / p.kv_num_heads);
  f.seq_q = static_cast<int>(p.seq_q);
  f.seq_kv = static_cast<int>(p.seq_kv);
  f.seq_past = static_cast<int>(p.seq_past);
  f.seq_total = static_cast<int>(p.seq_total());
  f.head_dim = static_cast<int>(p.head_dim);
  f.query_shift = f.seq_total - f.seq_q;
  f.decode = p.seq_q <= 16;
  f.sms = dev.sms;
  // Extents beyond the sequence are the same as none.
  auto extent = [&](int64_t w) { return w < 0 || w >= kMaxSeq ? -1 : static_cast<int>(w); };
  f.window_left = extent(p.window_left);
  f.window_right = extent(p.window_right);
  f.scale = p.scale;
  f.scale_log2 = p.scale * 1.4426950408889634f;
  f.softcap = p.softcap;
  f.bias = p.bias;
  f.bias_b = p.bias_batch_stride;
  f.bias_h = p.bias_head_stride;
  f.bias_r = p.bias_row_stride;
  f.bias_c = p.bias_col_stride;
  f.bias_f32 = p.bias && p.bias_dtype == ElemType::kFloat32;
  f.head_sink = p.head_sink;
  f.smooth_softmax = p.smooth_softmax;
  f.kv_len = p.kv_len;
  if (f.seq_q == 1 && f.kv_group > 1) pack_gqa_rows(f);
  if (p.key_padding_mask) {
    f.mask = p.key_padding_mask;
    f.mask_bytes = p.mask_type == MaskType::kInt64 ? 8 : p.mask_type == MaskType::kInt32 ? 4 : 1;
    f.mask_b = p.mask_batch_stride;
  }
  return f;
}

// Whether the attention kernel writes present_k/present_v itself (FwdParams::present_k): the
// decode tiles do (memory-bound: the copy kernel's second read of K/V made the step 1.36x as
// long), when every query tile loads every key tile: no window_left, key_padding_mask or
// per-batch lengths, and present is not a buffer the kernel reads. The prefill kernels leave it to the copy
// kernel, which measured faster than writing from their loops (kernels/cuda/NOTES.md).
// FASTATTN_CUDA_PRESENT_COPY=1 takes the copy kernel always (benchmarks, tests).
bool kernel_writes_present(const AttentionParams& p, const FwdParams& f, int family) {
  if (!p.present_k.data && !p.present_v.data) return false;
  if (!runs_decode_tiles(f, family) || f.seq_q <= 0 || f.window_left >= 0 || f.mask || f.kv_len || f.past_len)
    return false;
  for (const TensorView* pr : {&p.present_k, &p.present_v})
    if (pr->data && (pr->data == p.past_k.data || pr->data == p.past_v.data || pr->data == p.k.data ||
                     pr->data == p.v.data))
      return false;
  const char* force = std::getenv("FASTATTN_CUDA_PRESENT_COPY");
  return !(force && std::atoi(force) != 0);
}

// An in-place KV cache (GroupQueryAttention): the new rows go into present first (rotated keys),
// the query is rotated into scratch, then the attention reads every key from present, batch b up
// to its own length.
void run_in_place(const AttentionParams& p, const Instance& inst, const DeviceInfo& dev, cudaStream_t stream) {
  update_kv_cache(p, dev.sms, stream);
  AttentionParams a = p;
  void* rotated = nullptr;
  if (p.rotary.cos_cache) {
    const int64_t n = p.batch * p.seq_q * p.num_heads * p.head_dim;
    const cudaError_t e = scratch_malloc(&rotated, static_cast<size_t>(n) * elem_size(p.dtype), stream);
    if (e != cudaSuccess)
      throw std::runtime_error(std::string("fastattn CUDA: rotary scratch allocation failed: ") + cudaGetErrorString(e));
    TensorView q;
    q.data = rotated;
    q.dtype = p.dtype;
    q.batch_stride = p.seq_q * p.num_heads * p.head_dim;
    q.head_stride = p.head_dim;
    q.seq_stride = p.num_heads * p.head_dim;
    rotate_query(p, q, dev.sms, stream);
    a.q = q;
  }
  a.rotary = RotaryParams{};
  a.past_k = p.present_k;
  a.past_v = p.present_v;
  a.k = a.v = TensorView{};
  a.present_k = a.present_v = TensorView{};
  a.kv_capacity = 0;
  a.past_len = nullptr;
  // Keys of every batch lie below seq_past (the largest past length) + the new rows.
  a.seq_past = std::min(p.kv_capacity, p.seq_past + p.seq_kv);
  a.seq_kv = 0;
  FwdParams f = fwd_params_of(a, dev);
  f.past_len = p.past_len;
  f.new_rows = static_cast<int>(p.seq_kv);
  if (!p.past_len) f.query_shift = static_cast<int>(p.seq_past);
  try {
    inst.run(f, family_of(dev.cc), stream);
  } catch (...) {
    if (rotated) scratch_free(rotated, stream);
    throw;
  }
  if (rotated) scratch_free(rotated, stream);
}

void run(const AttentionParams& p, const LaunchContext& ctx) {
  const DeviceInfo& dev = device_info(p.device.ordinal);
  if (!dev.error.empty()) throw std::runtime_error("fastattn CUDA: " + dev.error);
  const Instance* inst = find_instance(p.dtype == ElemType::kFloat32 ? ElemType::kFloat16 : p.dtype, p.head_dim);
  if (!inst) throw std::runtime_error("fastattn CUDA: no kernel compiled for this head size");
  for (const TensorView* v : {&p.q, &p.k, &p.v, &p.past_k, &p.past_v, &p.out, &p.present_k, &p.present_v})
    if (p.dtype != ElemType::kFloat32 && v->data && !aligned16(v->data))
      throw std::runtime_error(
          "fastattn CUDA: query, key, value, past, present and output must start at 16-byte aligned addresses");
  DeviceScope scope(p.device.ordinal);
  cudaStream_t stream = static_cast<cudaStream_t>(ctx.stream);
  if (p.dtype == ElemType::kFloat32) {
    run_float32(p, ctx, dev.sms, [&](const AttentionParams& h) { run(h, ctx); });
    return;
  }
  if (p.kv_capacity > 0) {
    run_in_place(p, *inst, dev, stream);
    return;
  }

  // present = concat(past, new): by the attention kernel from its shared-memory tiles (decode),
  // else by the copy kernel before it.
  FwdParams f = fwd_params_of(p, dev);
  const int family = family_of(dev.cc);
  if (kernel_writes_present(p, f, family)) {
    f.present_k = p.present_k.data;
    f.present_v = p.present_v.data;
    f.prk_st = strides_of(p.present_k);
    f.prv_st = strides_of(p.present_v);
  } else {
    if (p.present_k.data) write_present(p, p.past_k, p.k, p.present_k, dev.sms, stream);
    if (p.present_v.data) write_present(p, p.past_v, p.v, p.present_v, dev.sms, stream);
  }
  inst->run(f, family, stream);
}

std::string describe() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  std::string heads = "compiled head sizes: float16 " + compiled_head_dims(ElemType::kFloat16) + "; bfloat16 " +
                      compiled_head_dims(ElemType::kBFloat16);
  if (e != cudaSuccess || count == 0) {
    cudaGetLastError();
    return std::string("no CUDA device (") + (e != cudaSuccess ? cudaGetErrorString(e) : "none visible") + "); " + heads;
  }
  std::string s;
  for (int i = 0; i < count; ++i) {
    const DeviceInfo& d = device_info(i);
    if (!s.empty()) s += "; ";
    if (!d.error.empty()) { s += d.error; continue; }
    const int f = family_of(d.cc);
    s += "device " + std::to_string(i) + " " + d.name + " (sm_" + std::to_string(d.cc) + "): " +
         (f == 90 ? "sm90 traits (wgmma, cp.async) for head size 128 prefill, sm80 traits for the rest"
          : f == 80 ? "sm80 traits (mma.sync m16n8k16, ldmatrix, cp.async)"
                  : f == 75 ? "sm75 traits (mma.sync m16n8k8, ldmatrix, register-staged loads)"
                  : f == 70 && d.cc < 75 && !volta_code_in_build(d.cc) ? "not supported (no sm_70 code in this build)"
                  : f == 70 ? "sm70 traits (mma.sync m8n8k4 quad pairs, plain shared loads, register-staged loads; float16 and float32)"
                            : "not supported");
  }
  return s + "; " + heads;
}

}  // namespace

const Backend& backend() {
  static const Backend b{"cuda", DeviceKind::kCuda, supports, run, describe};
  return b;
}

}  // namespace fastattn::cuda
