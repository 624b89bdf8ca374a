// Hopper (sm_90a) traits: warpgroup MMA (wgmma). The kernel body is the one of every other
// traits; what differs is here:
//   - two TiledMmas: S = Q K^T with both operands read by the tensor cores straight from shared
//     memory (SS), O += P V with P in registers (RS) and V from shared memory, read as V^T
//     (MN-major B: no transposing copy);
//   - 128 query rows per block, two warpgroups of 64 rows each (8 warps), so each K/V tile that
//     lands in shared memory feeds twice the rows of the mma.sync tiles;
//   - shared-memory tiles in wgmma's canonical swizzled layouts (CuTe's GMMA atoms), aligned to
//     1024 bytes;
//   - cp.async loads followed by a proxy fence: wgmma reads shared memory through the async proxy.
// wgmma exists only in sm_90a code (arch-specific), so these traits build only there
// (kNeedsSm90a) and the host picks them when the build has sm_90a kernels (FASTATTN_CUDA_SM90A)
// and the device is a compute capability 9.0.
#pragma once

#include <cute/arch/mma_sm90.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cutlass/arch/barrier.h>

namespace fastattn::cuda {

namespace sm90 {

// cp.async (generic proxy) then fence.proxy.async, before the barrier that hands the tile over:
// otherwise wgmma's async-proxy reads may see stale shared memory.
struct CpAsyncFencedLoader : CpAsyncLoader {
  template <int kPending>
  CUTE_DEVICE static void wait_pending() {
    CpAsyncLoader::wait_pending<kPending>();
    cutlass::arch::fence_view_async_shared();
  }
  CUTE_DEVICE static void wait_all() { wait_pending<0>(); }
};

// A wgmma accumulator of a 64 x N atom: each thread holds ((2 cols, 2 rows, N/8), MMA_M, MMA_N):
// value (c, r, j) at row r * 8 + (lane / 4) + 16 * warp, column 8 j + 2 (lane % 4) + c, the same
// thread pattern as the m16n8 C tiles, so the 4 lanes of a quad share a row.
struct GmmaFragments {
  static constexpr int kSmemScratchBytes = 0;

  template <class AccLayout>
  CUTE_HOST_DEVICE static auto acc_rowcol(AccLayout const& acc) {
    static_assert(decltype(rank(acc))::value == 3 && decltype(rank<0>(acc))::value == 3);
    static_assert(decltype(size<0, 0>(acc))::value == 2 && decltype(size<0, 1>(acc))::value == 2);
    auto rows = make_layout(get<0, 1>(acc), get<1>(acc));
    auto cols = make_layout(get<0, 0>(acc), get<0, 2>(acc), get<2>(acc));
    return make_layout(rows, cols);
  }

  template <class Op>
  CUTE_DEVICE static float row_allreduce(float x, Op op) {
    return quad_allreduce(x, op);
  }

  // The A operand of an RS wgmma (k16 per instruction) holds per thread ((2 k, 2 rows, 2 k-halves))
  // in the accumulator's thread pattern: two adjacent 8-column groups of S form one k16 block,
  // so P is reused in place. ((2,2,N/8), M, 1) -> ((2,2,2), M, N/16).
  template <class AccLayout>
  CUTE_HOST_DEVICE static auto p_operand_layout(AccLayout const& acc) {
    static_assert(decltype(size<2>(acc))::value == 1);
    constexpr int kGroups = decltype(size<0, 2>(acc))::value;
    static_assert(kGroups % 2 == 0);
    auto groups = composition(get<0, 2>(acc), make_layout(make_shape(_2{}, Int<kGroups / 2>{})));  // (2, N/16)
    return make_layout(make_layout(get<0, 0>(acc), get<0, 1>(acc), get<0>(groups)), get<1>(acc), get<1>(groups));
  }
};

// Issues one warpgroup-wide product, acc (=|+=) A B^T over the k-blocks, as one wgmma group; the
// caller waits for it (GmmaGemm::wait). The registers of acc (and of A when kARegs: an RS product,
// A in registers) must not be touched before then; the fences keep the compiler from moving
// their uses across.
template <bool kZeroInit, bool kARegs, class Mma, class TA, class TB, class Acc>
CUTE_DEVICE void gmma_issue(Mma& mma, TA& tA, TB const& tB, Acc& acc) {
  if constexpr (kARegs) warpgroup_fence_operand(tA);
  warpgroup_fence_operand(acc);
  warpgroup_arrive();
  mma.accumulate_ = kZeroInit ? GMMA::ScaleOut::Zero : GMMA::ScaleOut::One;
  CUTE_UNROLL
  for (int k = 0; k < size<2>(tA); ++k) {
    cute::gemm(mma, tA(_, _, k), tB(_, _, k), acc);
    mma.accumulate_ = GMMA::ScaleOut::One;
  }
  warpgroup_commit_batch();
}

template <class Tr>
struct GmmaGemm {
  // Issue acc = Q K^T, both operands from shared memory (descriptors).
  template <class Acc, class SQ, class SK>
  CUTE_DEVICE static void qk_issue(Acc& acc, SQ const& sQ, SK const& sK, int tid) {
    typename Tr::TiledMmaS mma;
    auto thr = mma.get_thread_slice(tid);
    Tensor tQ = thr.partition_fragment_A(sQ);
    Tensor tK = thr.partition_fragment_B(sK);
    gmma_issue</*kZeroInit=*/true, /*kARegs=*/false>(mma, tQ, tK, acc);
  }
  // Issue acc += P V: P (the score accumulator in the element type) in registers, V^T from
  // shared memory.
  template <class Acc, class P, class SVt>
  CUTE_DEVICE static void pv_issue(Acc& acc, P& p, SVt const& sVt, int tid) {
    typename Tr::TiledMmaO mma;
    auto thr = mma.get_thread_slice(tid);
    Tensor tP = make_tensor(p.data(), GmmaFragments::p_operand_layout(p.layout()));
    Tensor tV = thr.partition_fragment_B(sVt);
    gmma_issue</*kZeroInit=*/false, /*kARegs=*/true>(mma, tP, tV, acc);
  }
  // Wait until at most kPending issued groups are in flight (groups complete in issue order);
  // then the named fragments may be read and written again.
  template <int kPending, class... Frags>
  CUTE_DEVICE static void wait(Frags&... frags) {
    warpgroup_wait<kPending>();
    (warpgroup_fence_operand(frags), ...);
  }

  // Keeps the front end from moving the computations that produce the named fragments below
  // what follows (a wait). ptxas can still move the wait up: see pin_before_wait.
  template <class... Frags>
  CUTE_DEVICE static void fence(Frags&... frags) {
    (warpgroup_fence_operand(frags), ...);
  }
  // ptxas hoists wgmma.wait_group above independent arithmetic (seen in the SASS: the whole
  // softmax after the wait for P V). A shared-memory store of a value that depends on that
  // arithmetic stays before the wait (which orders shared memory), and the arithmetic with it.
  CUTE_DEVICE static void pin_before_wait(float v) {
    __shared__ float pin_slot[Tr::kNThreads];
    asm volatile("st.shared.f32 [%0], %1;\n" ::"r"(static_cast<uint32_t>(__cvta_generic_to_shared(&pin_slot[threadIdx.x]))),
                 "f"(v)
                 : "memory");
  }

  // The synchronous forms (the pipelined schedule's first S and last P V).
  template <class Acc, class SQ, class SK>
  CUTE_DEVICE static void qk(Acc& acc, SQ const& sQ, SK const& sK, int tid) {
    qk_issue(acc, sQ, sK, tid);
    wait<0>(acc);
  }
  template <class Acc, class P, class SVt>
  CUTE_DEVICE static void pv(Acc& acc, P& p, SVt const& sVt, int tid, void* /*smem_scratch*/) {
    pv_issue(acc, p, sVt, tid);
    wait<0>(acc, p);
  }
};

}  // namespace sm90

// Key tile per head size: the score accumulator (kBlockN / 2 registers per thread) and the output
// one (kHeadDim / 2) must fit 255 registers together. kEnabled: the head sizes whose wgmma kernel
// measured faster than the mma.sync one on the H200 (kernels/cuda/NOTES.md); the others keep the
// sm80 traits on a Hopper too, and their wgmma kernels are not instantiated.
template <int kHeadDim>
struct Sm90Tiles {
  static constexpr int kBlockM = 128, kBlockN = kHeadDim <= 128 ? 128 : 64, kNWarps = 8;
  static constexpr bool kEnabled = kHeadDim == 128;
};

template <class Element_, int kHeadDim_>
struct Sm90Traits {
  using Element = Element_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = Sm90Tiles<kHeadDim>::kBlockM;
  static constexpr int kBlockN = Sm90Tiles<kHeadDim>::kBlockN;
  static constexpr int kNWarps = Sm90Tiles<kHeadDim>::kNWarps;
  static constexpr int kNThreads = kNWarps * 32;
  static_assert(kHeadDim % 32 == 0 && kBlockM == 64 * (kNWarps / 4));
  static constexpr int kArchMin = 900, kArchMax = 1000;
  static constexpr bool kNeedsSm90a = true;
  static constexpr bool kReplacedOnSm90a = false;
  static constexpr int kSmemAlign = 1024;
  // Two K and two V buffers; the softmax of one tile runs while the tensor cores compute the
  // next tile's scores and this tile's P V (attention_kernel.cuh's pipelined schedule).
  static constexpr int kStages = 2;
  static constexpr bool kOverlapSoftmax = true;
  static constexpr bool kWritesPresent = false;
  static constexpr const char* kName = "sm90 (wgmma, cp.async)";

  // One 64-row wgmma atom per warpgroup, warpgroups along M.
  using WarpGroups = Layout<Shape<Int<kBlockM / 64>, _1, _1>>;
  using TiledMmaS = decltype(make_tiled_mma(
      GMMA::ss_op_selector<Element, Element, float, Shape<_64, Int<kBlockN>, Int<kHeadDim>>>(), WarpGroups{}));
  using TiledMmaO = decltype(make_tiled_mma(
      GMMA::rs_op_selector<Element, Element, float, Shape<_64, Int<kHeadDim>, Int<kBlockN>>, GMMA::Major::K,
                           GMMA::Major::MN>(),
      WarpGroups{}));
  using Gemm = sm90::GmmaGemm<Sm90Traits>;

  // Rows of 64 (or 32) elements, 128-byte (64-byte) swizzle: K-major for Q and K; V's same
  // bytes read as V^T give the MN-major B operand of P V.
  using SmemAtom = std::conditional_t<kHeadDim % 64 == 0, GMMA::Layout_K_SW128_Atom<Element>,
                                      GMMA::Layout_K_SW64_Atom<Element>>;
  using SmemLayoutQ = decltype(tile_to_shape(SmemAtom{}, Shape<Int<kBlockM>, Int<kHeadDim>>{}));
  using SmemLayoutKV = decltype(tile_to_shape(SmemAtom{}, Shape<Int<kBlockN>, Int<kHeadDim>>{}));
  using SmemLayoutVt =
      decltype(composition(SmemLayoutKV{}, make_layout(Shape<Int<kHeadDim>, Int<kBlockN>>{}, GenRowMajor{})));
  using SmemLayoutO = SmemLayoutQ;
  using SmemCopyAtomO = Copy_Atom<AutoVectorizingCopyWithAssumedAlignment<128>, Element>;

  // Global <-> shared: 16 bytes per thread and copy, a row of threads per swizzle-atom row.
  static constexpr int kThreadsPerRow = kHeadDim % 64 == 0 ? 8 : 4;
  using GmemThreadLayout = Layout<Shape<Int<kNThreads / kThreadsPerRow>, Int<kThreadsPerRow>>,
                                  Stride<Int<kThreadsPerRow>, _1>>;
  using GmemTiledCopy = decltype(make_tiled_copy(Copy_Atom<SM80_CP_ASYNC_CACHEGLOBAL<uint128_t>, Element>{},
                                                 GmemThreadLayout{}, Layout<Shape<_1, _8>>{}));
  using GmemTiledCopyO = decltype(make_tiled_copy(Copy_Atom<UniversalCopy<uint128_t>, Element>{}, GmemThreadLayout{},
                                                  Layout<Shape<_1, _8>>{}));
  using Loader = sm90::CpAsyncFencedLoader;
  using Fragments = sm90::GmmaFragments;

  // The extern shared array is 128-byte aligned: up to kSmemAlign - 128 bytes of slack.
  static constexpr int kSmemBytes =
      int((cosize(SmemLayoutQ{}) + 2 * kStages * cosize(SmemLayoutKV{})) * sizeof(Element)) + kSmemAlign - 128;
};

}  // namespace fastattn::cuda
