// Volta (sm_70 V100, sm_72 Xavier) traits of the forward-attention kernel template: the
// SM70_8x8x4_F32F16F16F32_TN tensor-core atom (mma.sync.m8n8k4, "quad pairs"), float16 only,
// plain shared-memory loads (no ldmatrix), global loads staged through registers (no cp.async),
// P handed from the accumulator (C) layout to the A layout through a shared-memory scratch tile.
// Included at the end of kernel_traits.cuh; the kernel body (attention_kernel.cuh) is unchanged.
//
// --- The atom (cute/atom/mma_traits_sm70.hpp) -----------------------------------------------
// Eight threads form one quad pair (ThrID (4,2):(1,16)): logical thread t = a + 4 b (a < 4,
// b < 2) is lane a + 16 b (+ 4 q for quad pair q = 0..3 of the warp). Per atom, bit names of
// t = t0 + 2 t1 + 4 t2 and of the value index v = v0 + 2 v1 + 4 v2:
//   A (SM70_8x4_Row, (8,4):(1,8)):  thread t holds row m = t, k = 0..3 (8 contiguous bytes)
//   B (SM70_8x4_Row):               thread t holds column n = t, k = 0..3 (K-major, 8 bytes)
//   C (SM70_8x8_32b, ((2,2,2),(2,2,2)):((1,16,4),(8,2,32)), offset = m + 8 n):
//       m = t0 + 2 v1 + 4 t2,  n = v0 + 2 t1 + 4 v2
//   so a thread holds 2 rows x 4 columns {2t1, 2t1+1, 2t1+4, 2t1+5} (v0 pairs adjacent), and
//   the threads sharing a row are t and t ^ 2 (t1 flipped): lanes L and L ^ 2.
//
// --- The warp layout ---------------------------------------------------------------------
// Four quad pairs per warp as 2 (M) x 2 (N) atoms, warps stacked along M: each warp owns 16 whole
// rows of S, P and O (no cross-warp reduction, P's scratch is per warp). CuTe numbers atoms
// m0 + 2 n0 + 4 w and places atom a at thread offset 4 a (complement of the quad-pair layout),
// so quad pair q = m0 + 2 n0 of warp w; the atom with n0 = 1 sits 8 lanes above. A row is
// therefore held by the lanes L, L ^ 2 (t1, inside the atom) and L ^ 8 (n0, the other N atom):
// row_allreduce = xor 2, then xor 8 (4 lanes; the 16 rows of a warp map to 8 disjoint lane sets).
//
// The M and N tiles are permuted (TiledMMA Tile) so that the second M atom covers rows
// {4..7, 12..15} and the first {0..3, 8..11} (same for N columns):
//   PermM: tile index i = (m & 3) + 4 (m >> 2) + 8 m0 + 16 w  ->  row (m & 3) + 8 (m >> 2) + 4 m0 + 16 w
// The reason is the shared-memory bank pattern below: a warp's 8-byte fragment loads are served
// per half-warp (lanes 0-15 = the lower halves t < 4 of the four quad pairs), and with the
// permutation a half-warp reads 8 consecutive rows (0..7 or 8..15) instead of {0..3, 8..11}.
//
// --- Shared memory ---------------------------------------------------------------------------
// Q, K, V, O: row-major (rows, D) with the row stride padded by 8 halfs (16 bytes):
//   row r starts at byte r (2D + 16); 2D + 16 = 16 (D/8 + 1) with D/8 + 1 odd for D % 16 == 0,
//   so 8 consecutive rows start in 8 distinct 16-byte bank groups (mod 128 bytes).
//   A fragment load (Q, UniversalCopy<uint64_t>): half-warp = 8 rows x the same 8 bytes -> 8
//   distinct bank pairs (the quad pairs with the other n0 read the same addresses: broadcast).
//   B fragment load (K): the same with rows = keys. 16-byte global->shared stores (one row's
//   8 x 16 B per quarter-warp) and the 16-byte epilogue reads stay aligned and conflict-free.
//   V as the B operand of P @ V (V^T, k = key): a thread's 4 values lie in 4 rows, so they are 4
//   16-bit loads (UniversalCopy<uint16_t>); for one value the warp reads 16 columns of one row
//   (32 bytes): conflict-free, but 4x the instructions of a vector load. A transposed V tile in
//   shared memory would need a V layout separate from K's (a kernel-body change): not done.
//
//     Q / K / V tile, D = 64 (row stride 72 halfs = 144 B)    P scratch (16 rows per warp,
//     bytes mod 128 of the 8-byte chunk a half-warp reads:      row stride kBlockN + 4 halfs)
//       row 0 | k0..3 @   0 |                                  row r, keys 4j..4j+3 @ r (2N+8) + 8j
//       row 1 | k0..3 @  16 |      quad pair 0 t0..3 -> rows 0-3    written as C (2 rows x 2 x 4 B
//       row 2 | k0..3 @  32 |      quad pair 1 t0..3 -> rows 4-7    per thread and atom), read
//       row 3 | k0..3 @  48 |      (quad pairs 2, 3: same rows,     back as A (8 B, row t, keys
//       row 4 | k0..3 @  64 |       same addresses: broadcast)      4j..4j+3)
//       row 5 | k0..3 @  80 |
//       row 6 | k0..3 @  96 |      lanes 16-31: t4..7 -> rows 8-15, same pattern
//       row 7 | k0..3 @ 112 |
//
// --- P (softmax probabilities) as the A operand of P @ V -------------------------------------
// The C layout (2 rows x 4 columns per thread) is not the A layout (1 row x 4 consecutive k per
// thread): each warp writes its 16 x kBlockN half tile into its own slice of a shared scratch
// (thr_mma.partition_C of the scratch tensor), __syncwarp, reads it back with
// thr_mma.partition_fragment_A's layout through 8-byte loads. Row stride kBlockN + 4 halfs
// (2N + 8 bytes, 8 bytes mod 128 for N = 32, 64): the A reads (8 consecutive rows x 8 B per
// half-warp) hit distinct banks. The 4-byte C writes (rows {0,1,4,5,8,9,12,13} (+2) x 4
// consecutive words per instruction) stay 2-way conflicted: no padding fixes both (8 rows x 4
// words would need the rows at distinct multiples of 4 words mod 32, i.e. a stride of 4 words
// mod 32, which puts rows r and r + 8 on the same banks); 16 such stores per tile. A __syncwarp before the write
// orders it after the previous tile's reads of the same scratch.
#pragma once

#include <cuda_bf16.h>

// CUDA 11.x declares __float22bfloat162_rn only for the host and sm_80+ device passes, and the
// kernel body names it (never instantiated for Volta: bfloat16 is declined there) in a template
// that every architecture parses: give the sm_70/72 pass of those toolkits a definition.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800 && defined(__CUDACC_VER_MAJOR__) && __CUDACC_VER_MAJOR__ < 12
__device__ inline __nv_bfloat162 __float22bfloat162_rn(const float2 a) {
  __nv_bfloat162 r;
  r.x = __float2bfloat16_rn(a.x);
  r.y = __float2bfloat16_rn(a.y);
  return r;
}
#endif

namespace fastattn::cuda {

// Volta (V100: 96 KiB of shared memory per SM and block, 64K registers per SM, 80 SMs).
// Shared bytes: (kBlockM + 2 kBlockN) (D + 8) 2 + kBlockM (kBlockN + 4) 2 (P scratch). Up to
// D = 128 two blocks of 4 warps fit one SM (<= 48 KiB each; 255 registers x 128 threads x 2 fits
// the 64K register file): D = 128 takes the narrower key tile for that (64 x 64 would be 61 KB,
// one block per SM). Not tuned on a V100 yet.
template <> struct TileConfig<70, 32>  { static constexpr int kBlockM = 64, kBlockN = 64, kNWarps = 4; };  // 14 KB
template <> struct TileConfig<70, 64>  { static constexpr int kBlockM = 64, kBlockN = 64, kNWarps = 4; };  // 36 KB
template <> struct TileConfig<70, 96>  { static constexpr int kBlockM = 64, kBlockN = 64, kNWarps = 4; };  // 48 KB
template <> struct TileConfig<70, 128> { static constexpr int kBlockM = 64, kBlockN = 32, kNWarps = 4; };  // 39 KB
template <> struct TileConfig<70, 160> { static constexpr int kBlockM = 64, kBlockN = 32, kNWarps = 4; };  // 47 KB
template <> struct TileConfig<70, 192> { static constexpr int kBlockM = 64, kBlockN = 32, kNWarps = 4; };  // 55 KB
template <> struct TileConfig<70, 224> { static constexpr int kBlockM = 64, kBlockN = 32, kNWarps = 4; };  // 64 KB
template <> struct TileConfig<70, 256> { static constexpr int kBlockM = 64, kBlockN = 32, kNWarps = 4; };  // 72 KB

namespace sm70 {

// The shared-memory scheme. kConflictFree is the design above. kPlainRowMajor (unpadded rows,
// atoms in CuTe's natural order) is the baseline the bank-conflict counters are compared against
// (issue 17); only the stand-alone driver's builds (FASTATTN_CUDA_ALL_TRAITS) instantiate it.
enum class SmemScheme { kConflictFree, kPlainRowMajor };

// Row-major (rows, cols) with the row stride padded by kPad halfs (see above).
template <int kRows, int kCols, int kPad = 8>
using PaddedRowMajor = Layout<Shape<Int<kRows>, Int<kCols>>, Stride<Int<kCols + kPad>, _1>>;

// atom (m0, w), n0 -> atom index m0 + 2 n0 + 4 w: warp w owns 2 x 2 atoms
template <int kNWarps>
using AtomLayout = Layout<Shape<Shape<_2, Int<kNWarps>>, _2, _1>, Stride<Stride<_1, _4>, _2, _0>>;

template <int kNWarps, SmemScheme kScheme>
using TiledMma = std::conditional_t<
    kScheme == SmemScheme::kConflictFree,
    TiledMMA<MMA_Atom<SM70_8x8x4_F32F16F16F32_TN>, AtomLayout<kNWarps>,
             Tile<Layout<Shape<_4, _2, _2, Int<kNWarps>>, Stride<_1, _8, _4, _16>>,  // PermM
                  Layout<Shape<_4, _2, _2>, Stride<_1, _8, _4>>,                     // PermN
                  _4>>,
    TiledMMA<MMA_Atom<SM70_8x8x4_F32F16F16F32_TN>, AtomLayout<kNWarps>>>;

template <class TiledMma_, int kBlockM, int kBlockN, int kPadP>
struct QuadPairFragments {
  // P scratch: (kBlockM, kBlockN) halfs, row stride kBlockN + kPadP (4: 8-byte reads need 8-byte rows).
  using SmemLayoutP = PaddedRowMajor<kBlockM, kBlockN, kPadP>;
  static constexpr int kSmemScratchBytes = int(cosize(SmemLayoutP{}) * 2);

  // (V = (2,2,2), MMA_M, MMA_N) -> ((v1, MMA_M) rows, ((v0, v2), MMA_N) columns): with
  // m = t0 + 2 v1 + 4 t2 and n = v0 + 2 t1 + 4 v2, v1 alone picks the row among a thread's two,
  // v0 and v2 the column; columns c, c + 1 (c even) are adjacent (v0).
  template <class AccLayout>
  CUTE_HOST_DEVICE static auto acc_rowcol(AccLayout const& acc) {
    static_assert(decltype(rank(acc))::value == 3);
    static_assert(decltype(size<0>(acc))::value == 8);
    auto v = composition(get<0>(acc), Layout<Shape<_2, _2, _2>>{});  // (v0, v1, v2)
    auto rows = make_layout(get<1>(v), get<1>(acc));
    auto cols = make_layout(make_layout(get<0>(v), get<2>(v)), get<2>(acc));
    return make_layout(rows, cols);
  }

  // The lanes sharing a row: L ^ 2 (the other t1 of the atom) and L ^ 8 (the other N atom).
  template <class Op>
  CUTE_DEVICE static float row_allreduce(float x, Op op) {
    x = op(x, __shfl_xor_sync(0xffffffffu, x, 2));
    x = op(x, __shfl_xor_sync(0xffffffffu, x, 8));
    return x;
  }

  // P (an (8, MMA_M, MMA_N) half fragment in the C layout) -> the A operand of P @ V,
  // (4, MMA_M, MMA_K) as thr_mma.partition_fragment_A of a (kBlockM, kBlockN) tile, through the
  // warp's rows of the scratch tile. Only this warp's 16 rows are touched: __syncwarp suffices.
  template <class PTensor>
  CUTE_DEVICE static auto p_operand(PTensor&& p, void* smem_scratch) {
    TiledMma_ mma;
    auto thr = mma.get_thread_slice(threadIdx.x);
    Tensor sP = make_tensor(make_smem_ptr(static_cast<cutlass::half_t*>(smem_scratch)), SmemLayoutP{});
    Tensor tPsP = thr.partition_C(sP);
    static_assert(decltype(size(tPsP))::value == decltype(size(p))::value);
    __syncwarp();  // this warp's reads of the previous tile's P are done
    // v0 pairs are adjacent columns: 4-byte stores.
    cute::copy(AutoVectorizingCopyWithAssumedAlignment<32>{}, p, tPsP);
    __syncwarp();
    Tensor tOsP = thr.partition_A(sP);
    Tensor rPa = make_tensor<cutlass::half_t>(thr.partition_fragment_A(sP).layout());
    cute::copy(AutoVectorizingCopyWithAssumedAlignment<64>{}, tOsP, rPa);  // 8-byte loads
    return rPa;
  }
};

}  // namespace sm70

template <class Element_, int kHeadDim_, sm70::SmemScheme kScheme = sm70::SmemScheme::kConflictFree>
struct Sm70Traits : MmaSyncSchedule {
  static_assert(std::is_same_v<Element_, cutlass::half_t>, "Volta tensor cores take float16 only");
  using Element = Element_;
  static constexpr int kHeadDim = kHeadDim_;
  using TileSizes = TileConfig<70, kHeadDim>;
  static constexpr int kBlockM = TileSizes::kBlockM;
  static constexpr int kBlockN = TileSizes::kBlockN;
  static constexpr int kNWarps = TileSizes::kNWarps;
  static constexpr int kNThreads = kNWarps * 32;
  static_assert(kHeadDim % 16 == 0 && kBlockM % (16 * kNWarps) == 0 && kBlockN % 16 == 0);
  static constexpr int kArchMin = 700, kArchMax = 750;
  static constexpr const char* kName = "sm70 (mma.sync m8n8k4 quad pairs, plain shared loads, register-staged loads)";

  static constexpr bool kConflictFree = kScheme == sm70::SmemScheme::kConflictFree;
  using TiledMma = sm70::TiledMma<kNWarps, kScheme>;
  using TiledMmaS = TiledMma;
  using TiledMmaO = TiledMma;
  using Gemm = MmaSyncGemm<Sm70Traits>;

  using SmemLayoutQ = sm70::PaddedRowMajor<kBlockM, kHeadDim, kConflictFree ? 8 : 0>;
  using SmemLayoutKV = sm70::PaddedRowMajor<kBlockN, kHeadDim, kConflictFree ? 8 : 0>;
  // V read as V^T (kHeadDim x kBlockN) for the B operand of P @ V: same bytes, transposed view.
  using SmemLayoutVt = decltype(composition(SmemLayoutKV{}, make_layout(Shape<Int<kHeadDim>, Int<kBlockN>>{}, GenRowMajor{})));
  using SmemLayoutO = SmemLayoutQ;

  using SmemCopyAtomA = Copy_Atom<UniversalCopy<uint64_t>, Element>;   // 4 consecutive k of one row
  using SmemCopyAtomB = Copy_Atom<UniversalCopy<uint64_t>, Element>;
  using SmemCopyAtomVt = Copy_Atom<UniversalCopy<uint16_t>, Element>;  // k = key: 4 rows apart
  using SmemCopyAtomO = Copy_Atom<AutoVectorizingCopyWithAssumedAlignment<32>, Element>;

  // Global <-> shared: 16 bytes per thread and copy, 8 threads per 64-column row segment.
  static constexpr int kThreadsPerRow = kHeadDim % 64 == 0 ? 8 : 4;
  using GmemThreadLayout = Layout<Shape<Int<kNThreads / kThreadsPerRow>, Int<kThreadsPerRow>>,
                                  Stride<Int<kThreadsPerRow>, _1>>;
  using GmemTiledCopy = decltype(make_tiled_copy(Copy_Atom<UniversalCopy<uint128_t>, Element>{}, GmemThreadLayout{},
                                                 Layout<Shape<_1, _8>>{}));
  using GmemTiledCopyO = GmemTiledCopy;
  using Loader = RegStagedLoader;
  using Fragments = sm70::QuadPairFragments<TiledMma, kBlockM, kBlockN, kConflictFree ? 4 : 0>;

  static constexpr int kSmemBytes =
      int((cosize(SmemLayoutQ{}) + 2 * cosize(SmemLayoutKV{})) * sizeof(Element)) + Fragments::kSmemScratchBytes;
};

}  // namespace fastattn::cuda
