#!/usr/bin/env bash
# Compiles the float16 attention kernels for Volta (sm_70 V100, sm_72 Xavier) with CUDA 11.8 (the
# last toolkit generation that targets Volta; CUDA 13 cannot), then checks their SASS:
#   - HMMA.884 (the m8n8k4 tensor-core instruction) in every Volta attention kernel
#   - LDL / STL (local memory: register spills or indexed register arrays) per kernel, in all and
#     inside the main loop (the widest backward branch around the first HMMA: once per key tile)
# and prints a table. No GPU needed.
# Usage: volta_build.sh [--dims "64 96 128 256"] [--arch "sm_70 sm_72"] [--build DIR] [--jobs N] [--sass-only]
#   --sass-only: skip the compile, re-read the objects of an earlier run in the build folder
# Toolkit: $CUDA118_PREFIX (default ~/.cache/cuda-11.8, made by shared/tools/cuda-11.8-prefix.sh,
# plus Debian's libcu++-dev unpacked into it: the script says how when missing), host compiler g++-11.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
PREFIX=${CUDA118_PREFIX:-$HOME/.cache/cuda-11.8}
DIMS="64 96 128 256"
ARCHS="sm_70 sm_72"
BUILD=${TMPDIR:-/tmp}/fastattn_volta_build
JOBS=$(nproc 2>/dev/null || echo 2)
CUTLASS=${FASTATTN_CUTLASS_INCLUDE:-$ROOT/.cutlass/include}
SASS_ONLY=0
while [ $# -gt 0 ]; do
  case $1 in
    --dims) DIMS=$2; shift 2 ;;
    --arch) ARCHS=${2//,/ }; shift 2 ;;
    --build) BUILD=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    --sass-only) SASS_ONLY=1; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
NVCC=$PREFIX/bin/nvcc
CUOBJDUMP=$PREFIX/bin/cuobjdump
if [ ! -x "$NVCC" ] || [ ! -x "$CUOBJDUMP" ]; then
  echo "no CUDA 11.8 toolkit in $PREFIX (set CUDA118_PREFIX). Create it with:" >&2
  echo "  bash /work/shared/tools/cuda-11.8-prefix.sh $PREFIX" >&2
  exit 2
fi
if [ ! -e "$PREFIX/usr/include/cuda/std/utility" ]; then
  # CuTe / CUTLASS 4 include <cuda/std/...> (libcu++); Debian packages it apart from the toolkit.
  echo "no libcu++ headers in $PREFIX/usr/include/cuda/std (CuTe needs them). Add Debian bookworm's libcu++-dev:" >&2
  echo "  (cd \"\$(mktemp -d)\" && apt-get download libcu++-dev && dpkg -x libcu++-dev_*.deb $PREFIX)" >&2
  exit 2
fi
command -v g++-11 >/dev/null || { echo "needs g++-11 (CUDA 11.8 accepts gcc <= 11): apt-get install g++-11" >&2; exit 2; }
[ -d "$CUTLASS/cute" ] || { echo "no CuTe headers in $CUTLASS" >&2; exit 2; }

mkdir -p "$BUILD"
GENCODE=""
for a in $ARCHS; do n=${a#sm_}; GENCODE="$GENCODE -gencode arch=compute_$n,code=sm_$n"; done
export NVCC BUILD GENCODE ROOT CUTLASS
start=$(date +%s)
compile() {
  local d=$1 f=$BUILD/fwd_fp16_hd$1.cu t0; t0=$(date +%s)
  printf '#include "fwd_launch.cuh"\nFASTATTN_CUDA_INSTANTIATE(cutlass::half_t, %s)\n' "$d" > "$f"
  # shellcheck disable=SC2086
  if ! "$NVCC" -ccbin g++-11 -std=c++17 --expt-relaxed-constexpr -O3 -DNDEBUG $GENCODE -Xptxas -v \
       -I"$ROOT/kernels" -I"$ROOT/kernels/cuda" -I"$CUTLASS" -c "$f" -o "$BUILD/fwd_fp16_hd$d.o" \
       > "$BUILD/fwd_fp16_hd$d.log" 2>&1; then
    grep -v "^ptxas info\|^ptxas  *info\|bytes stack frame\|^    " "$BUILD/fwd_fp16_hd$d.log" | head -40 >&2
    echo "FAILED: D=$d" >&2; return 1
  fi
  echo "  D=$d: $(( $(date +%s) - t0 )) s"
}
export -f compile
echo "== CUDA 11.8 ($("$NVCC" --version | grep -o 'release [0-9.]*')), $ARCHS, float16 head sizes: $DIMS ($JOBS jobs)"
if [ $SASS_ONLY = 0 ]; then
  # shellcheck disable=SC2086
  printf '%s\n' $DIMS | xargs -P "$JOBS" -I{} bash -c 'compile {}'
  echo "== compiled in $(( $(date +%s) - start )) s"
fi

# SASS per attention kernel: HMMA.884 count, LDL and STL counts (whole kernel), ptxas spills.
status=0
printf '%-6s %-4s %-5s %7s %5s %5s %9s %5s  %s\n' arch D var HMMA884 LDL STL "loop L/S" regs "ptxas spill (bytes stores/loads)"
for d in $DIMS; do
  obj=$BUILD/fwd_fp16_hd$d.o
  for a in $ARCHS; do
    "$CUOBJDUMP" -sass -arch "$a" "$obj" > "$BUILD/hd$d.$a.sass"
    # Split into functions; keep the attention kernels of the Sm70 traits.
    awk -v out="$BUILD/hd$d.$a" '
      /Function : / { fn = $3; keep = (fn ~ /attention_fwd_kernel/ && fn ~ /Sm70Traits/) ; if (keep) { n++; file = out ".k" n; print fn > (file ".name") } next }
      keep { print > file }' "$BUILD/hd$d.$a.sass"
    for nf in "$BUILD/hd$d.$a".k*.name; do
      [ -e "$nf" ] || { echo "no Sm70 attention kernel in the $a SASS of D=$d" >&2; status=1; continue; }
      k=${nf%.name}; name=$(cat "$nf")
      var=lean; [[ $name == *ELb1E* ]] && var=full
      hmma=$(grep -c "HMMA.884" "$k" || true)
      ldl=$(grep -cE "\bLDL(\.|\s)" "$k" || true)
      stl=$(grep -cE "\bSTL(\.|\s)" "$k" || true)
      # The main loop: the widest backward branch (BRA to a lower address) around the HMMAs;
      # LDL/STL between its target and the branch run once per key tile.
      loop=$(awk '
        function hex(h,   i, v) { v = 0; h = tolower(h); sub(/^0x/, "", h); for (i = 1; i <= length(h); ++i) v = v * 16 + index("0123456789abcdef", substr(h, i, 1)) - 1; return v }
        { if (match($0, /\/\*[0-9a-f]+\*\//)) addr = hex(substr($0, RSTART + 2, RLENGTH - 4)); else next }
        /HMMA\.884/ { if (first == "") first = addr }
        / BRA / { if (match($0, /BRA (![A-Z0-9]+, )?0x[0-9a-f]+/)) { t = $0; sub(/.*BRA (![A-Z0-9]+, )?/, "", t); sub(/[ ;].*/, "", t);
                   t = hex(t); if (t < addr) { lo[++n] = t; hi[n] = addr } } }
        /[[:space:]](LDL|STL)[.[:space:]]/ { la[++m] = addr }
        END { best = -1; for (i = 1; i <= n; ++i) if (lo[i] <= first && hi[i] >= first && (best < 0 || hi[i] - lo[i] > hi[best] - lo[best])) best = i;
              if (best < 0) { print "?"; exit } c = 0; for (j = 1; j <= m; ++j) if (la[j] >= lo[best] && la[j] <= hi[best]) ++c; print c }' "$k")
      # ptxas -v: the entry's report (arch and mangled name) is followed by stack/spill and registers.
      info=$(grep -A3 "Compiling entry function '$name' for '$a'" "$BUILD/fwd_fp16_hd$d.log" | tr '\n' ' ')
      regs=$(echo "$info" | grep -o 'Used [0-9]* registers' | grep -o '[0-9]*' || true)
      spill=$(echo "$info" | grep -o '[0-9]* bytes spill stores, [0-9]* bytes spill loads' | sed 's/ bytes spill stores, /\//; s/ bytes spill loads//' || true)
      printf '%-6s %-4s %-5s %7s %5s %5s %9s %5s  %s\n' "$a" "$d" "$var" "$hmma" "$ldl" "$stl" "$loop" "${regs:-?}" "${spill:-?}"
      [ "$hmma" -gt 0 ] || { echo "!! no HMMA.884 in $a D=$d $var" >&2; status=1; }
      rm -f "$nf" "$k"
    done
  done
done
echo "== volta_build: $([ $status = 0 ] && echo PASSED || echo FAILED) in $(( $(date +%s) - start )) s"
exit $status
