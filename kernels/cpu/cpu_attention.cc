// Interim straightforward CPU kernel: correct online-softmax attention, one query row at a time.
// The tiled, BLAS-backed kernel replaces this; the contract (cpu_attention.h) stays.
#include "cpu_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace fastattn::cpu {
namespace {

float load(const void* base, int64_t idx, ElemType t) {
  switch (t) {
    case ElemType::kFloat32: return static_cast<const float*>(base)[idx];
    case ElemType::kFloat16: {
      uint16_t h = static_cast<const uint16_t*>(base)[idx];
      uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
      if (exp == 0) {
        if (man == 0) { bits = sign; }
        else { exp = 127 - 15 + 1; while (!(man & 0x400)) { man <<= 1; --exp; } man &= 0x3ff; bits = sign | (exp << 23) | (man << 13); }
      } else if (exp == 31) { bits = sign | 0x7f800000u | (man << 13); }
      else { bits = sign | ((exp + 127 - 15) << 23) | (man << 13); }
      float f; std::memcpy(&f, &bits, 4); return f;
    }
    case ElemType::kBFloat16: {
      uint32_t bits = uint32_t(static_cast<const uint16_t*>(base)[idx]) << 16;
      float f; std::memcpy(&f, &bits, 4); return f;
    }
  }
  return 0.f;
}

void store(void* base, int64_t idx, ElemType t, float v) {
  switch (t) {
    case ElemType::kFloat32: static_cast<float*>(base)[idx] = v; return;
    case ElemType::kFloat16: {
      uint32_t x; std::memcpy(&x, &v, 4);
      uint32_t sign = (x >> 16) & 0x8000u; int32_t exp = int32_t((x >> 23) & 0xff) - 127 + 15; uint32_t man = x & 0x7fffffu;
      uint16_t h;
      if (((x >> 23) & 0xff) == 0xff) h = uint16_t(sign | 0x7c00u | (man ? 0x200u : 0));
      else if (exp >= 31) h = uint16_t(sign | 0x7c00u);
      else if (exp <= 0) {
        if (exp < -10) h = uint16_t(sign);
        else { man |= 0x800000u; uint32_t shift = uint32_t(14 - exp); uint32_t hm = man >> shift;
               uint32_t rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
               if (rem > half || (rem == half && (hm & 1))) ++hm; h = uint16_t(sign | hm); }
      } else {
        uint32_t hm = man >> 13, rem = man & 0x1fffu; uint32_t hv = sign | (uint32_t(exp) << 10) | hm;
        if (rem > 0x1000u || (rem == 0x1000u && (hm & 1))) ++hv; h = uint16_t(hv);
      }
      static_cast<uint16_t*>(base)[idx] = h; return;
    }
    case ElemType::kBFloat16: {
      uint32_t x; std::memcpy(&x, &v, 4);
      if ((x & 0x7fffffffu) > 0x7f800000u) { static_cast<uint16_t*>(base)[idx] = uint16_t((x >> 16) | 0x40); return; }
      x += 0x7fffu + ((x >> 16) & 1u);
      static_cast<uint16_t*>(base)[idx] = uint16_t(x >> 16); return;
    }
  }
}

bool mask_visible(const AttentionParams& p, int64_t b, int64_t j) {
  if (!p.key_padding_mask) return true;
  int64_t idx = b * p.mask_batch_stride + j;
  switch (p.mask_type) {
    case MaskType::kBool: return static_cast<const uint8_t*>(p.key_padding_mask)[idx] != 0;
    case MaskType::kInt32: return static_cast<const int32_t*>(p.key_padding_mask)[idx] != 0;
    case MaskType::kInt64: return static_cast<const int64_t*>(p.key_padding_mask)[idx] != 0;
    case MaskType::kNone: return true;
  }
  return true;
}

}  // namespace

void attention_forward(const AttentionParams& p, const ParallelFor& parallel_for) {
  const ElemType t = p.dtype;
  const int64_t S = p.seq_total(), group = p.num_heads / p.kv_num_heads;
  auto key_at = [&](const TensorView& past, const TensorView& cur, int64_t b, int64_t h, int64_t j, int64_t d) {
    if (j < p.seq_past) return load(past.data, b * past.batch_stride + h * past.head_stride + j * past.seq_stride + d, t);
    j -= p.seq_past;
    return load(cur.data, b * cur.batch_stride + h * cur.head_stride + j * cur.seq_stride + d, t);
  };
  if (p.present_k.data || p.present_v.data) {
    parallel_for(p.batch * p.kv_num_heads, [&](int64_t bh) {
      int64_t b = bh / p.kv_num_heads, h = bh % p.kv_num_heads;
      for (int64_t j = 0; j < S; ++j) {
        if (p.present_k.data)
          for (int64_t d = 0; d < p.head_dim; ++d)
            store(p.present_k.data, b * p.present_k.batch_stride + h * p.present_k.head_stride + j * p.present_k.seq_stride + d, t,
                  key_at(p.past_k, p.k, b, h, j, d));
        if (p.present_v.data)
          for (int64_t d = 0; d < p.head_dim_v; ++d)
            store(p.present_v.data, b * p.present_v.batch_stride + h * p.present_v.head_stride + j * p.present_v.seq_stride + d, t,
                  key_at(p.past_v, p.v, b, h, j, d));
      }
    });
  }
  parallel_for(p.batch * p.num_heads, [&](int64_t bh) {
    const int64_t b = bh / p.num_heads, h = bh % p.num_heads, kh = h / group;
    std::vector<float> q(p.head_dim), acc(p.head_dim_v);
    for (int64_t i = 0; i < p.seq_q; ++i) {
      const int64_t ii = i + S - p.seq_q;
      for (int64_t d = 0; d < p.head_dim; ++d)
        q[d] = load(p.q.data, b * p.q.batch_stride + h * p.q.head_stride + i * p.q.seq_stride + d, t);
      std::fill(acc.begin(), acc.end(), 0.f);
      float m = -std::numeric_limits<float>::infinity(), l = 0.f;
      for (int64_t j = 0; j < S; ++j) {
        if (p.causal && j > ii) break;
        if (p.window_size > 0 && (ii - j >= p.window_size || (!p.causal && j - ii >= p.window_size))) continue;
        if (!mask_visible(p, b, j)) continue;
        float s = 0.f;
        for (int64_t d = 0; d < p.head_dim; ++d) s += q[d] * key_at(p.past_k, p.k, b, kh, j, d);
        s *= p.scale;
        if (p.softcap > 0.f) s = p.softcap * std::tanh(s / p.softcap);
        if (p.bias)
          s += load(p.bias, b * p.bias_batch_stride + h * p.bias_head_stride + i * p.bias_row_stride + j * p.bias_col_stride, t);
        float m_new = std::max(m, s);
        if (m_new == -std::numeric_limits<float>::infinity()) continue;  // -inf bias: invisible
        float corr = std::exp(m - m_new), w = std::exp(s - m_new);
        l = l * corr + w;
        for (int64_t d = 0; d < p.head_dim_v; ++d) acc[d] = acc[d] * corr + w * key_at(p.past_v, p.v, b, kh, j, d);
        m = m_new;
      }
      const float inv = l > 0.f ? 1.f / l : 0.f;
      for (int64_t d = 0; d < p.head_dim_v; ++d)
        store(p.out.data, b * p.out.batch_stride + h * p.out.head_stride + i * p.out.seq_stride + d, t, acc[d] * inv);
    }
  });
}

const char* selected_isa() { return "scalar"; }
const char* compiled_isas() { return "scalar"; }

}  // namespace fastattn::cpu
