// Declarations of the per-(element type, head size) launchers, defined in the generated
// fwd_<dtype>_hd<D>.cu files. Host code includes only this (no CuTe).
#pragma once

#include <cuda_runtime.h>

#include "fwd_params.h"

namespace cutlass {
struct half_t;
struct bfloat16_t;
}  // namespace cutlass

namespace fastattn::cuda {

// family: 90 for sm_90 with sm_90a code in the build (wgmma), 80 for sm_80 and newer, 75 for
// sm_75 (float16 only), 70 for sm_70/72 (float16 only).
template <class Element, int kHeadDim>
void run_fwd(const FwdParams& p, int family, cudaStream_t stream);

// Whether run_fwd launches the decode tiles (S_q <= 16 on sm_80 and newer, Hopper included):
// the traits that write present_key/present_value themselves (FwdParams::present_k).
inline bool runs_decode_tiles(const FwdParams& p, int family) { return family >= 80 && p.decode; }

// Dynamic shared memory of one block of the traits the family uses (0: none).
template <class Element, int kHeadDim>
int smem_bytes(int family);

}  // namespace fastattn::cuda
