// Per-architecture traits of the one forward-attention kernel template (attention_kernel.cuh).
//
// Everything that differs between GPU generations lives here, in small structs, and the kernel
// body only names their members:
//   Element, kHeadDim, kBlockM, kBlockN, kNWarps, kNThreads   element type and tile sizes
//   kArchMin, kArchMax                         the __CUDA_ARCH__ range whose code this traits builds
//   kNeedsSm90a                                wgmma: built only for sm_90a (arch-specific features)
//   kStages, kOverlapSoftmax                   K/V buffers and the schedule of the key loop: one
//                                              buffer each and synchronous products, or two and
//                                              the softmax overlapping asynchronous products
//   kWritesPresent                             whether the kernel writes present_key/present_value
//                                              itself (FwdParams::present_k; the decode tiles only)
//   kSmemAlign                                 alignment of the shared-memory tiles (1024 for wgmma's
//                                              128-byte swizzle)
//   TiledMmaS, TiledMmaO                       the tensor-core atoms and warp layouts of S = Q K^T and
//                                              O += P V (one TiledMma for both on mma.sync)
//   Gemm                                       the two products of a key tile: Gemm::bind(...)
//                                              .qk / .pv (synchronous schedule), or
//                                              Gemm::qk_issue / pv_issue / wait (wgmma)
//   SmemLayoutQ / KV / Vt / O                  shared-memory layouts (swizzled for ldmatrix here)
//   SmemCopyAtomA / B / Vt / O                 shared <-> register copies (ldmatrix here)
//   GmemTiledCopy, GmemTiledCopyO, Loader      global -> shared path (cp.async, or staged through
//                                              registers) and the output store
//   Fragments                                  how the accumulator is read as (rows, cols), how the
//                                              threads sharing a row reduce, and how P (the
//                                              softmax accumulator) becomes the A operand of P @ V
//
// A Volta traits struct (SM70_8x8x4 atoms, plain shared-memory copies, no ldmatrix, no cp.async)
// plugs in by providing the same members: SmemCopyAtom* = UniversalCopy, Loader = RegStagedLoader,
// its own Fragments for the QuadPair accumulator layout (and, if P cannot be reused in registers,
// a Fragments::p_operand that goes through kSmemScratchBytes of shared memory), and
// kArchMin = 700, kArchMax = 750. The kernel body does not change.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/numeric_types.h>

namespace fastattn::cuda {

using namespace cute;

// ------------------------------------------------------------------------------------------
// Global -> shared copy policies. The kernel calls, for one tile:
//   Loader::load(copy, src, dst, stage)  start the copy (dst: the smem partition; stage: a
//                                        register tensor shaped like dst, used when staged)
//   Loader::commit()                     close a group of copies
//   Loader::wait_all(); Loader::land(copy, stage, dst); __syncthreads();
//                                        the tile is in shared memory for every thread
// ------------------------------------------------------------------------------------------

// sm_80+: cp.async (16 bytes per copy, bypassing L1), completion groups.
struct CpAsyncLoader {
  static constexpr bool kStaged = false;
  template <class TiledCopy, class Src, class Dst, class Stage>
  CUTE_DEVICE static void copy_vec(TiledCopy const& tc, Src const& src, Dst& dst, Stage&) {
    cute::copy(tc, src, dst);
  }
  template <class Dst, class Stage>
  CUTE_DEVICE static void clear_vec(Dst& dst, Stage&) {
    cute::clear(dst);
  }
  CUTE_DEVICE static void commit() { cute::cp_async_fence(); }
  // Until at most kPending committed groups are still in flight (groups land in commit order).
  template <int kPending>
  CUTE_DEVICE static void wait_pending() {
#if defined(CUTE_ARCH_CP_ASYNC_SM80_ENABLED)
    // cute::cp_async_wait<0> issues cp.async.wait_all, which also commits an empty group; all our
    // copies are already committed, so the lighter wait_group suffices. CuTe has no
    // wrapper for it: raw PTX.
    asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
#endif
  }
  CUTE_DEVICE static void wait_all() { wait_pending<0>(); }
  template <class TiledCopy, class Stage, class Dst>
  CUTE_DEVICE static void land(TiledCopy const&, Stage const&, Dst&) {}
};

// Below sm_80 (no cp.async): 16-byte loads into registers when the copy starts, 16-byte stores
// into shared memory when the tile must have landed, so the load latency still overlaps the
// work in between.
struct RegStagedLoader {
  static constexpr bool kStaged = true;
  template <class TiledCopy, class Src, class Dst, class Stage>
  CUTE_DEVICE static void copy_vec(TiledCopy const& tc, Src const& src, Dst&, Stage& stage) {
    cute::copy(tc, src, stage);
  }
  template <class Dst, class Stage>
  CUTE_DEVICE static void clear_vec(Dst&, Stage& stage) {
    cute::clear(stage);
  }
  CUTE_DEVICE static void commit() {}
  CUTE_DEVICE static void wait_all() {}
  template <class TiledCopy, class Stage, class Dst>
  CUTE_DEVICE static void land(TiledCopy const& tc, Stage const& stage, Dst& dst) {
    cute::copy(tc, stage, dst);
  }
};

// The 4 lanes of a quad hold one accumulator row in the m16n8 and wgmma C layouts.
template <class Op>
CUTE_DEVICE float quad_allreduce(float x, Op op) {
  x = op(x, __shfl_xor_sync(0xffffffffu, x, 1));
  x = op(x, __shfl_xor_sync(0xffffffffu, x, 2));
  return x;
}

// ------------------------------------------------------------------------------------------
// Accumulator fragments of the m16n8 mma.sync family (sm_75's m16n8k8, sm_80's m16n8k16):
// each thread holds (2 rows) x (2 adjacent columns) of every 16x8 C tile, and the 4 threads of
// a quad share a row.
// ------------------------------------------------------------------------------------------
template <int kMmaK>
struct Mma16x8Fragments {
  static_assert(kMmaK == 8 || kMmaK == 16, "m16n8k8 or m16n8k16");
  static constexpr int kSmemScratchBytes = 0;

  // (MMA=4, MMA_M, MMA_N) -> ((2 rows, MMA_M), (2 cols, MMA_N)): value v of an atom sits at
  // column v % 2 and row v / 2.
  template <class AccLayout>
  CUTE_HOST_DEVICE static auto acc_rowcol(AccLayout const& acc) {
    static_assert(decltype(rank(acc))::value == 3);
    static_assert(decltype(size<0>(acc))::value == 4);
    auto split = logical_divide(acc, Shape<_2>{});  // ((col 2, row 2), MMA_M, MMA_N)
    auto rows = make_layout(get<0, 1>(split), get<1>(split));
    auto cols = make_layout(get<0, 0>(split), get<2>(split));
    return make_layout(rows, cols);
  }

  // Reduction over the threads that share a row: the 4 lanes of a quad.
  template <class Op>
  CUTE_DEVICE static float row_allreduce(float x, Op op) {
    return quad_allreduce(x, op);
  }

  // P, an (MMA=4, MMA_M, MMA_N) accumulator converted to the element type, as the A operand of
  // the P @ V product (MMA, MMA_M, MMA_K). The C layout of one 16x8 tile equals the A layout of
  // a k8 atom, and two adjacent C tiles form one k16 A fragment; no data moves.
  template <class AccLayout>
  CUTE_HOST_DEVICE static auto p_operand_layout(AccLayout const& acc) {
    if constexpr (kMmaK == 8) {
      return acc;
    } else {
      auto split = logical_divide(acc, Shape<Underscore, Underscore, _2>{});  // (4, M, (2, N/2))
      return make_layout(make_layout(get<0>(split), get<2, 0>(split)), get<1>(split), get<2, 1>(split));
    }
  }
  template <class PTensor>
  CUTE_DEVICE static auto p_operand(PTensor&& p, void* /*smem_scratch*/) {
    return make_tensor(p.data(), p_operand_layout(p.layout()));
  }
};

// The members every mma.sync traits shares about the key loop: one K and one V buffer,
// synchronous products, no sm_90a features, the extern shared array's own 128-byte alignment.
struct MmaSyncSchedule {
  static constexpr bool kNeedsSm90a = false;
  static constexpr bool kReplacedOnSm90a = false;
  static constexpr int kSmemAlign = 128;
  static constexpr int kStages = 1;
  static constexpr bool kOverlapSoftmax = false;
  static constexpr bool kWritesPresent = false;
};

// ------------------------------------------------------------------------------------------
// The two products of a key tile on mma.sync tensor cores (sm_70 to sm_90): every operand read
// from shared memory through the traits' copy atoms, one k-block ahead of the MMAs. bind()
// partitions the shared tiles once, before the key loop: partitioned inside each product
// instead, CUDA 11.8's ptxas spilled in the Volta kernels' main loop (D = 64, full variant).
// ------------------------------------------------------------------------------------------
template <class Tr>
struct MmaSyncGemm {
  using TiledMma = typename Tr::TiledMma;
  using CopyQ = decltype(make_tiled_copy_A(typename Tr::SmemCopyAtomA{}, TiledMma{}));
  using CopyK = decltype(make_tiled_copy_B(typename Tr::SmemCopyAtomB{}, TiledMma{}));
  using CopyV = decltype(make_tiled_copy_B(typename Tr::SmemCopyAtomVt{}, TiledMma{}));

  template <class RQ, class RK, class RV, class TsQ, class TsK, class TsV>
  struct Bound {
    int tid;
    RQ rQ;  // register fragments (Q and K as A and B of S, V^T as B of P V)
    RK rK;
    RV rV;
    TsQ tsQ;  // this thread's shared-memory sources of them
    TsK tsK;
    TsV tsV;

    // acc = Q K^T.
    template <class Acc>
    CUTE_DEVICE void qk(Acc& acc) {
      TiledMma mma;
      CopyQ cp_q;
      CopyK cp_k;
      Tensor rQv = cp_q.get_thread_slice(tid).retile_D(rQ);
      Tensor rKv = cp_k.get_thread_slice(tid).retile_D(rK);
      constexpr int kBlocks = decltype(size<2>(rQ))::value;
      static_assert(kBlocks == decltype(size<2>(rK))::value);
      clear(acc);
      cute::copy(cp_q, tsQ(_, _, 0), rQv(_, _, 0));
      cute::copy(cp_k, tsK(_, _, 0), rKv(_, _, 0));
      CUTE_UNROLL
      for (int k = 0; k < kBlocks; ++k) {
        if (k + 1 < kBlocks) {
          cute::copy(cp_q, tsQ(_, _, k + 1), rQv(_, _, k + 1));
          cute::copy(cp_k, tsK(_, _, k + 1), rKv(_, _, k + 1));
        }
        cute::gemm(mma, rQ(_, _, k), rK(_, _, k), acc);
      }
    }

    // acc += P V, with P (the score accumulator in the element type) as the A operand in
    // registers and V read as V^T from shared memory.
    template <class Acc, class P>
    CUTE_DEVICE void pv(Acc& acc, P& p, void* smem_scratch) {
      TiledMma mma;
      CopyV cp_v;
      auto rP = Tr::Fragments::p_operand(p, smem_scratch);
      Tensor rVv = cp_v.get_thread_slice(tid).retile_D(rV);
      constexpr int kBlocks = decltype(size<2>(rP))::value;
      static_assert(kBlocks == decltype(size<2>(rV))::value);
      cute::copy(cp_v, tsV(_, _, 0), rVv(_, _, 0));
      CUTE_UNROLL
      for (int k = 0; k < kBlocks; ++k) {
        if (k + 1 < kBlocks) cute::copy(cp_v, tsV(_, _, k + 1), rVv(_, _, k + 1));
        cute::gemm(mma, rP(_, _, k), rV(_, _, k), acc);
      }
    }
  };

  // The products over the shared tiles sQ, sK and sVt (V read transposed).
  template <class SQ, class SK, class SVt>
  CUTE_DEVICE static auto bind(int tid, SQ const& sQ, SK const& sK, SVt const& sVt) {
    auto thr = TiledMma{}.get_thread_slice(tid);
    Tensor rQ = thr.partition_fragment_A(sQ);
    Tensor rK = thr.partition_fragment_B(sK);
    Tensor rV = thr.partition_fragment_B(sVt);
    Tensor tsQ = CopyQ{}.get_thread_slice(tid).partition_S(sQ);
    Tensor tsK = CopyK{}.get_thread_slice(tid).partition_S(sK);
    Tensor tsV = CopyV{}.get_thread_slice(tid).partition_S(sVt);
    return Bound<decltype(rQ), decltype(rK), decltype(rV), decltype(tsQ), decltype(tsK), decltype(tsV)>{
        tid, rQ, rK, rV, tsQ, tsK, tsV};
  }
};

// ------------------------------------------------------------------------------------------
// Shared-memory layouts for ldmatrix: rows of kBlockKSmem elements (64 or 32), XOR-swizzled so
// that the 8 rows one ldmatrix phase reads (and the 16-byte global->shared stores) hit distinct
// banks.
// ------------------------------------------------------------------------------------------
template <class Element, int kHeadDim, int kBlockM, int kBlockN>
struct SwizzledSmem {
  static_assert(sizeof(Element) == 2, "16-bit elements");
  static constexpr int kBlockKSmem = kHeadDim % 64 == 0 ? 64 : 32;
  static constexpr int kSwizzleBits = kBlockKSmem == 64 ? 3 : 2;
  using Atom = decltype(composition(Swizzle<kSwizzleBits, 3, 3>{},
                                    Layout<Shape<_8, Int<kBlockKSmem>>, Stride<Int<kBlockKSmem>, _1>>{}));
  using Q = decltype(tile_to_shape(Atom{}, Shape<Int<kBlockM>, Int<kHeadDim>>{}));
  using KV = decltype(tile_to_shape(Atom{}, Shape<Int<kBlockN>, Int<kHeadDim>>{}));
  // V read as V^T (kHeadDim x kBlockN) for the B operand of P @ V: same bytes, transposed view.
  using Vt = decltype(composition(KV{}, make_layout(Shape<Int<kHeadDim>, Int<kBlockN>>{}, GenRowMajor{})));
  using O = Q;

  // Global <-> shared copies: 16 bytes per thread and copy, kBlockKSmem / 8 threads per row, so
  // that a row of threads fills exactly one swizzle atom row.
  static constexpr int kThreadsPerRow = kBlockKSmem / 8;
};

// Tile sizes per (architecture family, padded head size). Q, K and V tiles live in shared
// memory: (kBlockM + 2 kBlockN) * kHeadDim * 2 bytes.
template <int kFamily, int kHeadDim>
struct TileConfig;
// sm_80 family (sm_80/86/87/89/90 and newer run the mma.sync path): at most 96 KiB of shared
// memory so that sm_86/89 (99 KiB per block) run every head size. D=64 and D=128 use the narrower
// key tile of an H200 sweep (NOTES.md): 5-10% faster, since the wider one spilled registers.
template <> struct TileConfig<80, 32>  { static constexpr int kBlockM = 128, kBlockN = 128, kNWarps = 4; };
template <> struct TileConfig<80, 64>  { static constexpr int kBlockM = 128, kBlockN = 64,  kNWarps = 4; };
template <> struct TileConfig<80, 96>  { static constexpr int kBlockM = 128, kBlockN = 64,  kNWarps = 4; };
template <> struct TileConfig<80, 128> { static constexpr int kBlockM = 128, kBlockN = 32,  kNWarps = 4; };
template <> struct TileConfig<80, 160> { static constexpr int kBlockM = 128, kBlockN = 32,  kNWarps = 4; };
template <> struct TileConfig<80, 192> { static constexpr int kBlockM = 64,  kBlockN = 64,  kNWarps = 4; };
template <> struct TileConfig<80, 224> { static constexpr int kBlockM = 64,  kBlockN = 64,  kNWarps = 4; };
template <> struct TileConfig<80, 256> { static constexpr int kBlockM = 64,  kBlockN = 64,  kNWarps = 4; };
// sm_75 (Turing): 64 KiB of shared memory per block, 64K registers per SM.
template <> struct TileConfig<75, 32>  { static constexpr int kBlockM = 128, kBlockN = 64, kNWarps = 4; };
template <> struct TileConfig<75, 64>  { static constexpr int kBlockM = 128, kBlockN = 64, kNWarps = 4; };
template <> struct TileConfig<75, 96>  { static constexpr int kBlockM = 64,  kBlockN = 64, kNWarps = 4; };
template <> struct TileConfig<75, 128> { static constexpr int kBlockM = 64,  kBlockN = 64, kNWarps = 4; };
template <> struct TileConfig<75, 160> { static constexpr int kBlockM = 64,  kBlockN = 32, kNWarps = 4; };
template <> struct TileConfig<75, 192> { static constexpr int kBlockM = 64,  kBlockN = 32, kNWarps = 4; };
template <> struct TileConfig<75, 224> { static constexpr int kBlockM = 64,  kBlockN = 32, kNWarps = 4; };
template <> struct TileConfig<75, 256> { static constexpr int kBlockM = 64,  kBlockN = 32, kNWarps = 4; };

// Hopper's wgmma tiles (kernel_traits_sm90.cuh): which head sizes use them.
template <int kHeadDim>
struct Sm90Tiles;

// Decode (S_q <= 16, or the packed heads of a GQA group): one warp and one 16-row MMA tile per
// block, so that a query of one token does not pay for 128 rows of tensor-core work; split-KV
// supplies the blocks that fill the GPU.
template <int kHeadDim>
struct DecodeTileConfig {
  static constexpr int kBlockM = 16, kBlockN = 64, kNWarps = 1;
};

// Members every mma.sync traits shares, given its atom, copy atoms, loader and tile sizes.
template <class Element_, int kHeadDim_, class TileSizes, class MmaAtom, int kMmaK, class TileK, class SmemCopyAtomA_,
          class SmemCopyAtomB_, class SmemCopyAtomVt_, class GmemCopyAtom, class Loader_>
struct MmaSyncTraits : MmaSyncSchedule {
  using Element = Element_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = TileSizes::kBlockM;
  static constexpr int kBlockN = TileSizes::kBlockN;
  static constexpr int kNWarps = TileSizes::kNWarps;
  static constexpr int kNThreads = kNWarps * 32;
  static_assert(kHeadDim % 32 == 0 && kBlockM % (16 * kNWarps) == 0 && kBlockN % 16 == 0);

  // Warps side by side along M: each warp owns 16-row slices of Q, S, P and O, so rows never
  // cross warps. The N tile of 16 (two n8 atoms) lets one ldmatrix.x4 feed two MMAs.
  using TiledMma = TiledMMA<MMA_Atom<MmaAtom>, Layout<Shape<Int<kNWarps>, _1, _1>>,
                            Tile<Int<16 * kNWarps>, _16, TileK>>;
  using TiledMmaS = TiledMma;
  using TiledMmaO = TiledMma;
  using Gemm = MmaSyncGemm<MmaSyncTraits>;

  using Smem = SwizzledSmem<Element, kHeadDim, kBlockM, kBlockN>;
  using SmemLayoutQ = typename Smem::Q;
  using SmemLayoutKV = typename Smem::KV;
  using SmemLayoutVt = typename Smem::Vt;
  using SmemLayoutO = typename Smem::O;
  using SmemCopyAtomA = SmemCopyAtomA_;
  using SmemCopyAtomB = SmemCopyAtomB_;
  using SmemCopyAtomVt = SmemCopyAtomVt_;
  // Accumulator -> shared memory for the output: as wide as the C layout allows.
  using SmemCopyAtomO = Copy_Atom<AutoVectorizingCopyWithAssumedAlignment<128>, Element>;

  using GmemThreadLayout = Layout<Shape<Int<kNThreads / Smem::kThreadsPerRow>, Int<Smem::kThreadsPerRow>>,
                                  Stride<Int<Smem::kThreadsPerRow>, _1>>;
  using GmemTiledCopy = decltype(make_tiled_copy(Copy_Atom<GmemCopyAtom, Element>{}, GmemThreadLayout{},
                                                 Layout<Shape<_1, _8>>{}));
  using GmemTiledCopyO = decltype(make_tiled_copy(Copy_Atom<UniversalCopy<uint128_t>, Element>{}, GmemThreadLayout{},
                                                  Layout<Shape<_1, _8>>{}));
  using Loader = Loader_;
  using Fragments = Mma16x8Fragments<kMmaK>;

  static constexpr int kSmemBytes =
      int((cosize(SmemLayoutQ{}) + 2 * cosize(SmemLayoutKV{})) * sizeof(Element)) + Fragments::kSmemScratchBytes;
};

// sm_80 and newer (Ampere, Ada, Hopper through mma.sync): m16n8k16 in float16 or bfloat16,
// ldmatrix, cp.async.
template <class Element, int kHeadDim, class TileSizes = TileConfig<80, kHeadDim>>
struct Sm80Traits
    : MmaSyncTraits<Element, kHeadDim, TileSizes,
                    std::conditional_t<std::is_same_v<Element, cutlass::half_t>, SM80_16x8x16_F32F16F16F32_TN,
                                       SM80_16x8x16_F32BF16BF16F32_TN>,
                    16, _16, Copy_Atom<SM75_U32x4_LDSM_N, Element>, Copy_Atom<SM75_U32x4_LDSM_N, Element>,
                    Copy_Atom<SM75_U16x8_LDSM_T, Element>, SM80_CP_ASYNC_CACHEGLOBAL<uint128_t>, CpAsyncLoader> {
  static constexpr int kArchMin = 800, kArchMax = 100000;
  // sm_90a code runs the wgmma traits instead where they are enabled (decode tiles stay on
  // mma.sync).
  static constexpr bool kReplacedOnSm90a =
      !std::is_same_v<TileSizes, DecodeTileConfig<kHeadDim>> && Sm90Tiles<kHeadDim>::kEnabled;
  // Decode is memory-bound: writing the presents from the tiles it holds saves re-reading K/V.
  // The prefill tiles leave it to the copy kernel (kernels/cuda/NOTES.md: measured faster).
  static constexpr bool kWritesPresent = std::is_same_v<TileSizes, DecodeTileConfig<kHeadDim>>;
  static constexpr const char* kName = "sm80 (mma.sync m16n8k16, ldmatrix, cp.async)";
};
template <class Element, int kHeadDim>
using Sm80DecodeTraits = Sm80Traits<Element, kHeadDim, DecodeTileConfig<kHeadDim>>;

// sm_75 (Turing): m16n8k8 in float16 only, ldmatrix (x2: one 16x8 A or two 8x8 B per
// instruction), no cp.async: loads staged through registers.
template <class Element, int kHeadDim>
struct Sm75Traits
    : MmaSyncTraits<Element, kHeadDim, TileConfig<75, kHeadDim>, SM75_16x8x8_F32F16F16F32_TN, 8, _8, Copy_Atom<SM75_U32x2_LDSM_N, Element>,
                    Copy_Atom<SM75_U32x2_LDSM_N, Element>, Copy_Atom<SM75_U16x4_LDSM_T, Element>, UniversalCopy<uint128_t>,
                    RegStagedLoader> {
  static_assert(std::is_same_v<Element, cutlass::half_t>, "sm_75 tensor cores take float16 only");
  static constexpr int kArchMin = 750, kArchMax = 800;
  static constexpr const char* kName = "sm75 (mma.sync m16n8k8, ldmatrix, register-staged loads)";
};

}  // namespace fastattn::cuda

// Volta (sm_70/72) traits: their own TileConfig<70, D>, fragments and shared-memory layouts.
#include "kernel_traits_sm70.cuh"
// Hopper (sm_90a) traits: wgmma.
#include "kernel_traits_sm90.cuh"
