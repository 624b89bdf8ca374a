#!/bin/sh
# Builds kernel_check without CMake or Python, natively or cross (the ISA list follows the
# compiler's target). Usage:
#   build_kernel_check.sh CXX OUT_DIR [extra flags...]
# e.g. aarch64: build_kernel_check.sh aarch64-linux-gnu-g++ /tmp/kc-arm, then
#   qemu-aarch64-static -L /usr/aarch64-linux-gnu /tmp/kc-arm/kernel_check
set -eu
CXX=$1; OUT=$2; shift 2
SRC=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
FLAGS="-std=gnu++17 -O3 -DNDEBUG -I$SRC $*"
TILE_FLAGS="-fno-trapping-math -fno-math-errno"
case "$($CXX -dumpmachine)" in
  x86_64*) ISAS="baseline: avx2:-march=x86-64-v3 avx512:-march=x86-64-v4,-mprefer-vector-width=512" ;;
  aarch64*) ISAS="neon:" ;;
  *) ISAS="baseline:" ;;
esac
OBJS=""; DEFS=""
for isa in $ISAS; do
  name=${isa%%:*}; flags=$(echo "${isa#*:}" | tr ',' ' ')
  $CXX $FLAGS $TILE_FLAGS $flags -DFASTATTN_ISA_NS=isa_$name -c "$SRC/cpu/tile_kernel.cc" -o "$OUT/tile_$name.o"
  OBJS="$OBJS $OUT/tile_$name.o"
  DEFS="$DEFS -DFASTATTN_HAVE_ISA_$(echo $name | tr a-z A-Z)"
done
$CXX $FLAGS $DEFS -c "$SRC/cpu/cpu_attention.cc" -o "$OUT/cpu_attention.o"
$CXX $FLAGS -c "$SRC/attention_params.cc" -o "$OUT/attention_params.o"
$CXX $FLAGS "$SRC/tests/kernel_check.cc" "$OUT/cpu_attention.o" "$OUT/attention_params.o" $OBJS \
  -pthread -o "$OUT/kernel_check"
echo "built $OUT/kernel_check ($ISAS)"
