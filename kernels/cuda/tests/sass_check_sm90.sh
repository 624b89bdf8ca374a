#!/usr/bin/env bash
# Checks, in the SASS of the lean float16 D=128 wgmma kernel, that the key loop's softmax runs
# between the two waits (wgmma.wait_group 1 and 0), i.e. overlaps P V on the tensor cores. ptxas
# once moved the second wait above the whole softmax; the kernel stays correct then, only slower,
# so no numerics test notices (kernels/cuda/NOTES.md, "Eighth session").
# Usage: sass_check_sm90.sh OBJ_OR_CUBIN   (an sm_90a object holding that kernel, e.g. build_check's
# obj/fwd_fp16_hd128.o). Needs a cuobjdump that reads sm_90a (CUDA 12+; $CUOBJDUMP overrides).
set -euo pipefail
obj=$1
dump=${CUOBJDUMP:-cuobjdump}
kernel='_ZN8fastattn4cuda20attention_fwd_kernelINS0_10Sm90TraitsIN7cutlass6half_tELi128EEELb0EEEvNS0_9FwdParamsE'
sass=$("$dump" -sass -fun "$kernel" "$obj" 2>&1) || { echo "sass_check_sm90: $dump failed: $sass" >&2; exit 2; }
# The loop's wait_group 1 is the only one; count the exponentials between it and the next wait_group 0.
echo "$sass" | awk '
  /WARPGROUP.DEPBAR.LE gsb0, 0x1/ { inside = 1; seen = 1; next }
  inside && /WARPGROUP.DEPBAR.LE gsb0, 0x0/ { inside = 0; done = 1 }
  inside && /MUFU.EX2/ { ex2++ }
  END {
    if (!seen || !done) { print "sass_check_sm90: FAIL: the key loop'"'"'s two waits not found"; exit 1 }
    if (ex2 < 64) { printf "sass_check_sm90: FAIL: %d exponentials between the waits (want the softmax'"'"'s 64)\n", ex2; exit 1 }
    printf "sass_check_sm90: PASS: %d exponentials between wait_group 1 and wait_group 0\n", ex2
  }'
