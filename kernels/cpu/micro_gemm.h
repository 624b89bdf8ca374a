// Register-blocked float GEMM micro-kernels on generic compiler vectors (GCC/Clang
// `vector_size`): the same source becomes SSE2, AVX2, AVX-512 or NEON code, no intrinsics.
// Operands are read as strided rows (K straight from the 3D/4D tensor), not packed per call:
// OpenBLAS's per-call packing was 13% of the time on attention's small tiles. Included only by
// tile_kernel.cc (one copy per ISA, internal linkage).
#pragma once

#include <cstdint>
#include <cstring>

namespace fastattn::cpu {
namespace {  // NOLINT: intentionally per translation unit (one copy per ISA)

// Per-ISA register blocking: MR rows x (kMicroVecs vectors) of accumulators, leaving registers
// for the B vectors and one broadcast.
// FASTATTN_TEST_WIDE_TILES gives any target the AVX-512 blocking (the compiler splits the
// 64-byte vectors), so that blocking can be tested on machines without AVX-512.
#if defined(__AVX512F__) || defined(FASTATTN_TEST_WIDE_TILES)
constexpr int kVecFloats = 16, kMicroRows = 12, kMicroVecs = 2;  // 24 of 32 zmm
#elif defined(__AVX2__)
constexpr int kVecFloats = 8, kMicroRows = 6, kMicroVecs = 2;  // 12 of 16 ymm
#elif defined(__aarch64__)
constexpr int kVecFloats = 4, kMicroRows = 6, kMicroVecs = 4;  // 24 of 32 q registers
#else
constexpr int kVecFloats = 4, kMicroRows = 6, kMicroVecs = 2;  // 12 of 16 xmm (SSE2)
#endif
constexpr int kMicroCols = kVecFloats * kMicroVecs;
// Reduction steps per micro-tile pass: keeps the B panel and the A strip of one pass in L1
// (P V with 256 keys in one pass spilled out of L1 and ran ~25% slower than Q K^T).
constexpr int64_t kDepthChunk = 128;

typedef float vfloat __attribute__((vector_size(kVecFloats * sizeof(float))));

inline vfloat load_v(const float* p) { vfloat v; std::memcpy(&v, p, sizeof v); return v; }
inline void store_v(float* p, vfloat v) { std::memcpy(p, &v, sizeof v); }
inline vfloat max_v(vfloat a, vfloat b) { return a > b ? a : b; }

// C[MR x NV*W] (+)= A[MR x k] * B[k x NV*W]. A(i, kk) is a[i * lda + kk], or a[kk * lda + i]
// when kATrans (then the MR values of one step share a cache line). col_max (may be null):
// col_max[j] = max(col_max[j], max_i C[i][j]) over the stored C, while it is in registers.
template <int MR, int NV, bool kATrans>
inline void micro_tile(const float* __restrict a, int64_t lda, const float* __restrict b, int64_t ldb,
                       float* __restrict c, int64_t ldc, int64_t k_len, bool accumulate, float* col_max) {
  vfloat acc[MR][NV];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NV; ++j) acc[i][j] = vfloat{};
  for (int64_t kk = 0; kk < k_len; ++kk) {
    vfloat bv[NV];
    for (int j = 0; j < NV; ++j) bv[j] = load_v(b + kk * ldb + j * kVecFloats);
    for (int i = 0; i < MR; ++i) {
      const float av = kATrans ? a[kk * lda + i] : a[i * lda + kk];
      for (int j = 0; j < NV; ++j) acc[i][j] += av * bv[j];
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NV; ++j) {
      float* dst = c + i * ldc + j * kVecFloats;
      if (accumulate) acc[i][j] += load_v(dst);
      store_v(dst, acc[i][j]);
    }
  if (col_max)
    for (int j = 0; j < NV; ++j) {
      vfloat m = load_v(col_max + j * kVecFloats);
      for (int i = 0; i < MR; ++i) m = max_v(m, acc[i][j]);
      store_v(col_max + j * kVecFloats, m);
    }
}

// The same with rows < MR known only at run time (the last row block).
template <int MR, int NV, bool kATrans>
inline void micro_rows(int64_t rows, const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
                       int64_t k_len, bool accumulate, float* col_max) {
  if constexpr (MR > 0) {
    if (rows == MR) micro_tile<MR, NV, kATrans>(a, lda, b, ldb, c, ldc, k_len, accumulate, col_max);
    else micro_rows<MR - 1, NV, kATrans>(rows, a, lda, b, ldb, c, ldc, k_len, accumulate, col_max);
  }
}

// C[m x n] (+)= A[m x k] * B[k x n] with n a multiple of kVecFloats; row-major, strided.
// col_max (optional, n floats): raised to the column maxima of the final C.
// extent (optional, non-decreasing, lets the causal diagonal tile skip its hidden triangle):
// without kATrans, column j needs only rows [0, extent[j]) of C (the other rows are left
// unwritten); with kATrans, row i needs only depth [0, extent[i]) (the rest of A's row is 0).
template <bool kATrans>
void small_gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                int64_t ldc, bool accumulate, float* col_max = nullptr, const int64_t* extent = nullptr) {
  for (int64_t k0 = 0; k0 < k; k0 += kDepthChunk) {
    const int64_t kc = k - k0 < kDepthChunk ? k - k0 : kDepthChunk;
    const bool acc = accumulate || k0 > 0;
    float* const last_max = k0 + kc == k ? col_max : nullptr;
    const float* ak = kATrans ? a + k0 * lda : a + k0;
    const float* bk = b + k0 * ldb;
    auto a_rows = [&](int64_t i) { return kATrans ? ak + i : ak + i * lda; };
    // Rows of C that columns [j, j + width) need, and the depth of this chunk rows [i, i + rows) need.
    auto rows_for = [&](int64_t j, int64_t width) {
      if (kATrans || !extent) return m;
      const int64_t e = extent[j + width - 1];
      return e < m ? e : m;
    };
    auto depth_for = [&](int64_t i, int64_t rows) {
      if (!kATrans || !extent) return kc;
      const int64_t e = extent[i + rows - 1] - k0;
      return e < 0 ? int64_t{0} : e < kc ? e : kc;
    };
    int64_t j = 0;
    for (; j + kMicroCols <= n; j += kMicroCols)
      for (int64_t i = 0, mj = rows_for(j, kMicroCols); i < mj; i += kMicroRows) {
        const int64_t rows = mj - i < kMicroRows ? mj - i : kMicroRows;
        micro_rows<kMicroRows, kMicroVecs, kATrans>(rows, a_rows(i), lda, bk + j, ldb, c + i * ldc + j, ldc,
                                                    depth_for(i, rows), acc, last_max ? last_max + j : nullptr);
      }
    for (; j < n; j += kVecFloats)
      for (int64_t i = 0, mj = rows_for(j, kVecFloats); i < mj; i += kMicroRows) {
        const int64_t rows = mj - i < kMicroRows ? mj - i : kMicroRows;
        micro_rows<kMicroRows, 1, kATrans>(rows, a_rows(i), lda, bk + j, ldb, c + i * ldc + j, ldc,
                                           depth_for(i, rows), acc, last_max ? last_max + j : nullptr);
      }
  }
}

}  // namespace
}  // namespace fastattn::cpu
