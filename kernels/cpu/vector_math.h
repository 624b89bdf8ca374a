// Branch-free float helpers written for the auto-vectorizer (no intrinsics, no libm calls in
// hot loops). Included only by tile_kernel.cc, which is compiled once per ISA: everything
// here has internal linkage so the per-ISA copies never merge at link time.
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>

#include "../attention_params.h"

namespace fastattn::cpu {
namespace {  // NOLINT: intentionally per translation unit (one copy per ISA)

#if defined(__aarch64__)
using half_t = __fp16;
#else
using half_t = _Float16;  // F16C / AVX-512 converts in hardware; baseline x86 uses libgcc
#endif

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

inline float bits_to_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline uint32_t float_to_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

// e^x for x <= 0 (plus rounding noise) to about 2 ulp (Cephes expf): x = n ln2 + r, a
// polynomial in r, times 2^n. Below -87.7 (and for -inf) 2^n's exponent bits become 0, so the
// result is exactly 0: masked scores contribute nothing, and there is no NaN. One clamp only,
// so the vectorizer emits a max and no blends.
inline float exp_approx(float x) {
  x = x < -88.f ? -88.f : x;
  const float magic = 12582912.f;  // 1.5 * 2^23: adding it rounds to the nearest integer
  const float n = (x * 1.44269504088896341f + magic) - magic;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * (r * r) + r + 1.f;
  return y * bits_to_float(static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23);
}

// 2^t for t <= 0 (plus rounding noise) to about 2 ulp: t = n + f with |f| <= 1/2, 2^f by a
// degree-5 polynomial (a least-squares fit on Chebyshev nodes: 2.2e-7 relative in float32
// Horner), times 2^n. n is read from the low mantissa bits of t + 1.5 * 2^23 and shifted into
// the exponent field, so no float-to-int conversion. Below -126.5 (and for -inf) 2^n's
// exponent bits become 0: exactly 0. Cheaper than exp_approx (no Cody-Waite step) for the hot
// loop, whose arguments come in log2 units already.
// Callers subtract a running maximum, so t <= 0 but for the fused shift's rounding, which the
// kernel keeps under 1 (tile_kernel.h: exact_shift takes over past it).
inline float exp2_approx(float t) {
  t = t < -127.f ? -127.f : t;
  const float magic = 12582912.f;  // 1.5 * 2^23: adding it rounds to the nearest integer
  const float shifted = t + magic;
  const float n = shifted - magic;
  const float f = t - n;
  float y = 1.3266970386e-3f;
  y = y * f + 9.6754597455e-3f;
  y = y * f + 5.5507426160e-2f;
  y = y * f + 2.4022121754e-1f;
  y = y * f + 6.9314694916e-1f;
  y = y * f + 1.0000000710e+0f;
  return y * bits_to_float((float_to_bits(shifted) << 23) + (127u << 23));
}

// tanh for the softcap: an odd Taylor series near 0 (no cancellation), (1-e)/(1+e) elsewhere.
inline float tanh_approx(float y) {
  const float a = y < 0.f ? -y : y;
  const float e = exp_approx(-2.f * a);
  const float t = (1.f - e) / (1.f + e);
  const float y2 = y * y;
  const float small = y * (1.f + y2 * (-1.f / 3 + y2 * (2.f / 15 + y2 * (-17.f / 315 + y2 * (62.f / 2835)))));
  return a < 0.1f ? small : (y < 0.f ? -t : t);
}

inline float bf16_to_float(uint16_t h) { return bits_to_float(static_cast<uint32_t>(h) << 16); }

// Round to nearest even; NaN stays a (quiet) NaN.
inline uint16_t float_to_bf16(float f) {
  const uint32_t u = float_to_bits(f);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const bool nan = (u & 0x7fffffffu) > 0x7f800000u;
  return static_cast<uint16_t>(nan ? ((u >> 16) | 0x40u) : rounded);
}

// n elements of type t at src (contiguous) -> float dst.
inline void to_float(const void* src, ElemType t, int64_t n, float* __restrict dst) {
  if (t == ElemType::kFloat32) {
    std::memcpy(dst, src, static_cast<size_t>(n) * 4);
  } else if (t == ElemType::kFloat16) {
    const half_t* s = static_cast<const half_t*>(src);
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(s[i]);
  } else {
    const uint16_t* s = static_cast<const uint16_t*>(src);
    for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_float(s[i]);
  }
}

// dst[i] = src[i] * factor, stored as type t.
inline void from_float_scaled(const float* __restrict src, float factor, int64_t n, ElemType t, void* dst) {
  if (t == ElemType::kFloat32) {
    float* d = static_cast<float*>(dst);
    for (int64_t i = 0; i < n; ++i) d[i] = src[i] * factor;
  } else if (t == ElemType::kFloat16) {
    half_t* d = static_cast<half_t*>(dst);
    for (int64_t i = 0; i < n; ++i) d[i] = static_cast<half_t>(src[i] * factor);
  } else {
    uint16_t* d = static_cast<uint16_t*>(dst);
    for (int64_t i = 0; i < n; ++i) d[i] = float_to_bf16(src[i] * factor);
  }
}

// One element of type t as float (for strided, non-hot accesses).
inline float load_one(const void* base, int64_t idx, ElemType t) {
  if (t == ElemType::kFloat32) return static_cast<const float*>(base)[idx];
  if (t == ElemType::kFloat16) return static_cast<float>(static_cast<const half_t*>(base)[idx]);
  return bf16_to_float(static_cast<const uint16_t*>(base)[idx]);
}

// x rounded to element type t and back (what storing it as t keeps).
inline float round_to(float x, ElemType t) {
  if (t == ElemType::kFloat32) return x;
  if (t == ElemType::kFloat16) return static_cast<float>(static_cast<half_t>(x));
  return bf16_to_float(float_to_bf16(x));
}

// Rotary embedding of one head row x (float, head_dim >= rotary_dim) at position pos, as
// onnxruntime's RotaryEmbedding / GroupQueryAttention do_rotary: with c = cos[pos, i],
// s = sin[pos, i], each pair (x0, x1) becomes (x0 c - x1 s, x1 c + x0 s); pairs are
// (i, i + rotary_dim / 2) (half split) or (2i, 2i + 1) (interleaved). Dims past rotary_dim are
// left alone. Results are rounded to t (the element type the cache and caches hold).
inline void rotate_row(float* x, const RotaryParams& rp, int64_t pos, ElemType t) {
  const int64_t half = rp.rotary_dim / 2;
  const int64_t base = pos * rp.cache_row_stride;
  for (int64_t i = 0; i < half; ++i) {
    const float c = load_one(rp.cos_cache, base + i, t), s = load_one(rp.sin_cache, base + i, t);
    const int64_t i0 = rp.interleaved ? 2 * i : i, i1 = rp.interleaved ? 2 * i + 1 : i + half;
    const float x0 = x[i0], x1 = x[i1];
    x[i0] = round_to(x0 * c - x1 * s, t);
    x[i1] = round_to(x1 * c + x0 * s, t);
  }
}

}  // namespace
}  // namespace fastattn::cpu
