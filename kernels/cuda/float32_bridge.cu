// float32 through the float16 kernels. Passes, all on the caller's stream:
//   1. max |x| over the finite values of Q, of K u past_K and of V u past_V (into a header)
//   2. float16 copies with exact power-of-two scales chosen on the device from those maxima:
//      Q * 2^-a, K * 2^a (the product, hence the scores, unchanged: the kernel's scale stays),
//      V * 2^-c (the output is a convex combination of V rows, so it comes out scaled by 2^-c)
//   3. the float16 kernel (run_half), then out = out16 * 2^c into the float32 output
// plus present = concat(past, new) copied from the float32 tensors (exact).
#include "float32_bridge.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cfloat>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "kv_copy.h"
#include "scratch_pool.h"

namespace fastattn::cuda {
namespace {

constexpr int kTarget = 15;  // scaled maxima <= 2^15 (float16 overflows above 65504)
constexpr int kHeaderBytes = 256;
constexpr int kThreads = 256;

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("fastattn CUDA: float32 ") + what + ": " + cudaGetErrorString(e));
}

// Rows of `slices` [rows, chunks] matrices: slice over blockIdx.y, rows over blockIdx.x, and
// 2^lanes_shift threads share a row (the smallest power of two >= chunks, at most 32).
struct Walk {
  int64_t slices = 0;
  int heads = 1, rows = 0, chunks = 0, lanes_shift = 0;
};

template <class F>
__device__ void walk(const Walk& w, F&& f) {
  const int lanes = 1 << w.lanes_shift, sub = threadIdx.x & (lanes - 1);
  const int rows_per_block = blockDim.x >> w.lanes_shift;
  for (int64_t slice = blockIdx.y; slice < w.slices; slice += gridDim.y) {
    const int64_t b = slice / w.heads, h = slice % w.heads;
    for (int64_t s = int64_t(blockIdx.x) * rows_per_block + (threadIdx.x >> w.lanes_shift); s < w.rows;
         s += int64_t(gridDim.x) * rows_per_block)
      for (int c = sub; c < w.chunks; c += lanes) f(b, h, slice, s, c);
  }
}

// One float32 view and its compact float16 copy [slices][rows][ld].
struct Job {
  const float* src = nullptr;
  int64_t sb = 0, sh = 0, ss = 0;
  __half* dst = nullptr;
  int64_t ld = 0;
  Walk w;
  int kind = 0;     // 0: Q, 1: K or past K, 2: V or past V (header slot and scale)
  bool vec = false; // float4 loads (chunk = 4 elements), else scalars
};
struct Jobs {
  Job j[5];
  int n = 0;
};

// Smallest e with x <= 2^e (x > 0, finite).
__device__ int ceil_log2(float x) {
  int e;
  const float m = frexpf(x, &e);  // x = m 2^e, m in [0.5, 1)
  return m == 0.5f ? e - 1 : e;
}

// The power-of-two exponents applied to Q, K and V (the output gets -v), from the maxima.
struct Pow2 {
  int q, k, v;
};
__device__ Pow2 exponents(const unsigned* header) {
  const float mq = __uint_as_float(header[0]), mk = __uint_as_float(header[1]), mv = __uint_as_float(header[2]);
  // V: normalised to (2^14, 2^15] either way, so tiny values keep float16's relative precision too.
  const int c = mv > 0.f ? ceil_log2(mv) - kTarget : 0;
  // Q * 2^-a <= 2^15 needs a >= eq - 15; K * 2^a <= 2^15 needs a <= 15 - ek. A zero maximum
  // (all zeros, or only inf/NaN) sets no bound.
  const int eq = mq > 0.f ? ceil_log2(mq) : -1000, ek = mk > 0.f ? ceil_log2(mk) : -1000;
  const int lo = eq - kTarget, hi = kTarget - ek;
  int a;
  if (lo <= hi) a = lo > 0 ? lo : hi < 0 ? hi : 0;  // the smallest shift that fits (0 when none is needed)
  else a = (eq - ek) >> 1;  // |q| |k| beyond ~2^30: balance, and the largest values saturate
  return {-a, a, -c};
}

// x * 2^e, exact while the result is a normal float (inf and NaN unchanged).
__device__ float scale_pow2(float x, int e) {
  return e >= -126 && e <= 127 ? x * __int_as_float((e + 127) << 23) : ldexpf(x, e);
}

__device__ __half to_half(float x, int e) {
  x = scale_pow2(x, e);
  if (fabsf(x) > 65504.f && fabsf(x) <= FLT_MAX) x = copysignf(65504.f, x);  // finite values saturate
  return __float2half_rn(x);
}

__device__ float finite_abs(float x) {
  const float a = fabsf(x);
  return a <= FLT_MAX ? a : 0.f;  // NaN and inf are left out
}

__global__ void max_abs_kernel(const __grid_constant__ Jobs jobs, unsigned* header) {
  const Job& jb = jobs.j[blockIdx.z];
  float m = 0.f;
  walk(jb.w, [&](int64_t b, int64_t h, int64_t, int64_t s, int c) {
    const float* row = jb.src + b * jb.sb + h * jb.sh + s * jb.ss;
    if (jb.vec) {
      const float4 x = reinterpret_cast<const float4*>(row)[c];
      m = fmaxf(m, fmaxf(fmaxf(finite_abs(x.x), finite_abs(x.y)), fmaxf(finite_abs(x.z), finite_abs(x.w))));
    } else {
      m = fmaxf(m, finite_abs(row[c]));
    }
  });
  for (int o = 16; o > 0; o /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  // Non-negative floats order as their bit patterns do.
  if ((threadIdx.x & 31) == 0 && m > 0.f) atomicMax(header + jb.kind, __float_as_uint(m));
}

__global__ void to_half_kernel(const __grid_constant__ Jobs jobs, const unsigned* header) {
  const Job& jb = jobs.j[blockIdx.z];
  const Pow2 p = exponents(header);
  const int e = jb.kind == 0 ? p.q : jb.kind == 1 ? p.k : p.v;
  walk(jb.w, [&](int64_t b, int64_t h, int64_t slice, int64_t s, int c) {
    const float* row = jb.src + b * jb.sb + h * jb.sh + s * jb.ss;
    __half* out = jb.dst + (slice * jb.w.rows + s) * jb.ld;
    if (jb.vec) {
      const float4 x = reinterpret_cast<const float4*>(row)[c];
      __half2 lo = __halves2half2(to_half(x.x, e), to_half(x.y, e));
      __half2 hi = __halves2half2(to_half(x.z, e), to_half(x.w, e));
      uint2 packed;
      packed.x = *reinterpret_cast<unsigned*>(&lo);
      packed.y = *reinterpret_cast<unsigned*>(&hi);
      reinterpret_cast<uint2*>(out)[c] = packed;
    } else {
      out[c] = to_half(row[c], e);
    }
  });
}

// out (float32, its own strides) = out16 * 2^c.
__global__ void from_half_kernel(const __grid_constant__ Job jb, float* out, const unsigned* header) {
  const int e = -exponents(header).v;
  walk(jb.w, [&](int64_t b, int64_t h, int64_t slice, int64_t s, int c) {
    const __half* src = jb.dst + (slice * jb.w.rows + s) * jb.ld;
    float* row = out + b * jb.sb + h * jb.sh + s * jb.ss;
    if (jb.vec) {
      const uint2 packed = reinterpret_cast<const uint2*>(src)[c];
      const float2 lo = __half22float2(*reinterpret_cast<const __half2*>(&packed.x));
      const float2 hi = __half22float2(*reinterpret_cast<const __half2*>(&packed.y));
      reinterpret_cast<float4*>(row)[c] =
          make_float4(scale_pow2(lo.x, e), scale_pow2(lo.y, e), scale_pow2(hi.x, e), scale_pow2(hi.y, e));
    } else {
      row[c] = scale_pow2(__half2float(src[c]), e);
    }
  });
}

bool vec4(const TensorView& v, int64_t d) {
  return (reinterpret_cast<uintptr_t>(v.data) & 15) == 0 && v.batch_stride % 4 == 0 && v.head_stride % 4 == 0 &&
         v.seq_stride % 4 == 0 && d % 4 == 0;
}

Walk make_walk(int64_t batch, int64_t heads, int64_t rows, int64_t chunks) {
  Walk w;
  w.slices = batch * heads;
  w.heads = static_cast<int>(heads);
  w.rows = static_cast<int>(rows);
  w.chunks = static_cast<int>(chunks);
  while ((1 << w.lanes_shift) < w.chunks && w.lanes_shift < 5) ++w.lanes_shift;
  return w;
}

// A grid that covers the largest job with about 8 blocks per SM in all (z: one per job).
dim3 grid_for(const Job* jobs, int n, int sms) {
  int64_t x = 1, y = 1;
  for (int i = 0; i < n; ++i) {
    const Walk& w = jobs[i].w;
    const int64_t slices = w.slices < 65535 ? w.slices : 65535;
    const int64_t rows_per_block = kThreads >> w.lanes_shift;
    const int64_t want = (w.rows + rows_per_block - 1) / rows_per_block;
    const int64_t fill = (int64_t(sms > 0 ? sms : 1) * 8 + slices - 1) / slices;
    x = std::max<int64_t>(x, std::min(want, fill));
    y = std::max<int64_t>(y, slices);
  }
  return dim3(static_cast<unsigned>(x), static_cast<unsigned>(y), static_cast<unsigned>(n));
}

// Stream-ordered scratch, released on the stream also when a step throws.
struct Scratch {
  void* ptr = nullptr;
  cudaStream_t stream = nullptr;
  ~Scratch() {
    if (ptr) scratch_free(ptr, stream);
  }
};

}  // namespace

void run_float32(const AttentionParams& p, const LaunchContext& ctx, int sms,
                 const std::function<void(const AttentionParams&)>& run_half) {
  cudaStream_t stream = static_cast<cudaStream_t>(ctx.stream);
  // Presents come from the float32 inputs, exactly; the float16 kernel writes none.
  if (p.present_k.data) write_present(p, p.past_k, p.k, p.present_k, sms, stream);
  if (p.present_v.data) write_present(p, p.past_v, p.v, p.present_v, sms, stream);
  if (p.batch <= 0 || p.num_heads <= 0 || p.seq_q <= 0 || p.head_dim_v <= 0) return;  // no output

  const int64_t d = p.head_dim, dv = p.head_dim_v;
  const int64_t ld = (d + 7) / 8 * 8, ldv = (dv + 7) / 8 * 8;  // 16-byte rows for the kernel
  auto bytes = [](int64_t elems) { return (elems * 2 + 255) / 256 * 256; };

  // Scratch: header, then q, k, past_k, v, past_v, out (float16, compact).
  struct Part {
    const TensorView* src;
    int64_t heads, rows, ld, d;
    int kind;
    TensorView* dst;
  };
  AttentionParams p16 = p;
  Part parts[6] = {
      {&p.q, p.num_heads, p.seq_q, ld, d, 0, &p16.q},
      {&p.k, p.kv_num_heads, p.seq_kv, ld, d, 1, &p16.k},
      {&p.past_k, p.kv_num_heads, p.seq_past, ld, d, 1, &p16.past_k},
      {&p.v, p.kv_num_heads, p.seq_kv, ldv, dv, 2, &p16.v},
      {&p.past_v, p.kv_num_heads, p.seq_past, ldv, dv, 2, &p16.past_v},
      {&p.out, p.num_heads, p.seq_q, ldv, dv, -1, &p16.out},
  };
  int64_t offset[6], total = kHeaderBytes;
  for (int i = 0; i < 6; ++i) {
    offset[i] = total;
    total += bytes(p.batch * parts[i].heads * parts[i].rows * parts[i].ld);
  }
  Scratch scratch;
  scratch.stream = stream;
  check(scratch_malloc(&scratch.ptr, static_cast<size_t>(total), stream), "scratch allocation failed");
  char* base = static_cast<char*>(scratch.ptr);
  unsigned* header = reinterpret_cast<unsigned*>(base);
  check(cudaMemsetAsync(header, 0, kHeaderBytes, stream), "scratch clear failed");

  Jobs jobs;
  Job out_job;
  for (int i = 0; i < 6; ++i) {
    const Part& pt = parts[i];
    TensorView& v = *pt.dst;
    v.dtype = ElemType::kFloat16;
    v.data = pt.src->data ? base + offset[i] : nullptr;  // an absent tensor stays absent
    v.batch_stride = pt.heads * pt.rows * pt.ld;
    v.head_stride = pt.rows * pt.ld;
    v.seq_stride = pt.ld;
    if (!pt.src->data || pt.rows == 0) continue;
    Job jb;
    jb.src = static_cast<const float*>(pt.src->data);
    jb.sb = pt.src->batch_stride, jb.sh = pt.src->head_stride, jb.ss = pt.src->seq_stride;
    jb.dst = static_cast<__half*>(v.data);
    jb.ld = pt.ld;
    jb.vec = vec4(*pt.src, pt.d);
    jb.w = make_walk(p.batch, pt.heads, pt.rows, jb.vec ? pt.d / 4 : pt.d);
    jb.kind = pt.kind;
    if (pt.kind < 0) out_job = jb;
    else jobs.j[jobs.n++] = jb;
  }
  p16.dtype = ElemType::kFloat16;
  p16.present_k = TensorView{};  // written above, from the float32 tensors
  p16.present_v = TensorView{};
  p16.present_k.dtype = p16.present_v.dtype = ElemType::kFloat16;

  if (jobs.n > 0) {
    const dim3 grid = grid_for(jobs.j, jobs.n, sms);
    max_abs_kernel<<<grid, kThreads, 0, stream>>>(jobs, header);
    check(cudaGetLastError(), "max |x| launch failed");
    to_half_kernel<<<grid, kThreads, 0, stream>>>(jobs, header);
    check(cudaGetLastError(), "conversion to float16 launch failed");
  }
  run_half(p16);
  if (p.out.data) {
    from_half_kernel<<<grid_for(&out_job, 1, sms), kThreads, 0, stream>>>(out_job, static_cast<float*>(p.out.data),
                                                                          header);
    check(cudaGetLastError(), "output conversion launch failed");
  }
  void* ptr = scratch.ptr;
  scratch.ptr = nullptr;
  check(scratch_free(ptr, stream), "scratch release failed");
}

}  // namespace fastattn::cuda
