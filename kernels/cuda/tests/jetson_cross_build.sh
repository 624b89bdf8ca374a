#!/usr/bin/env bash
# Cross-builds the CUDA backend for Jetson AGX Xavier (aarch64 host code, sm_72 device code,
# JetPack 5's glibc 2.31) on x86-64, with CUDA 11.8's x86 nvcc, Debian's aarch64 g++-11 and
# Debian's arm64 CUDA runtime, then checks what can be checked without the board:
#   - the stand-alone driver (cuda_check.cu, as build_check.sh builds it) and the EP library
#     (libfastattn_onnx_ep.so, through CMake) are aarch64 ELFs, the CUDA runtime and libstdc++ linked
#     in, no glibc symbol newer than 2.31
#   - their fatbins hold sm_72 SASS only, and every Volta attention kernel has HMMA.884
#   - under qemu-aarch64-static, on a glibc 2.31 userland: the driver starts and fails cleanly
#     without a driver (and with the toolkit's stub libcuda); the EP library loads (dlopen) and
#     exports its three entry points
# Not checked: running a kernel (no Xavier here), and Debian's SBSA runtime with a Jetson driver
# (kernels/cuda/NOTES.md, "Jetson Xavier cross-build").
# Usage: jetson_cross_build.sh [--dims "64 128"] [--build DIR] [--jobs N] [--no-ep] [--compare DIR]
#   --compare DIR: volta_build.sh's build folder (x86 host): its sm_72 instructions must equal ours
# Needs: $CUDA118_PREFIX (x86 CUDA 11.8 with libcu++, default ~/.cache/cuda-11.8: volta_build.sh
# says how), g++-11-aarch64-linux-gnu, qemu-user-static (for the last checks), and for the EP
# library $PYTHON (default python3) with pybind11. Fetched on first use from the configured Debian
# mirror, without touching the system's apt state:
#   $CUDA118_ARM64_PREFIX (~/.cache/cuda-11.8-arm64): bookworm non-free's arm64 CUDA 11.8 runtime
#     (nvidia-cuda-dev: a 670 MB download, of which 16 MB is kept)
#   $GLIBC231_ARM64_SYSROOT (~/.cache/glibc-2.31-arm64): bullseye's arm64 glibc 2.31 (31 MB)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
X86=${CUDA118_PREFIX:-$HOME/.cache/cuda-11.8}
ARM=${CUDA118_ARM64_PREFIX:-$HOME/.cache/cuda-11.8-arm64}
SYSROOT=${GLIBC231_ARM64_SYSROOT:-$HOME/.cache/glibc-2.31-arm64}
DIMS="64 128"
BUILD=${TMPDIR:-/tmp}/fastattn_jetson_build
JOBS=2
EP=1
COMPARE=""
CUTLASS=${FASTATTN_CUTLASS_INCLUDE:-$ROOT/.cutlass/include}
while [ $# -gt 0 ]; do
  case $1 in
    --dims) DIMS=$2; shift 2 ;;
    --build) BUILD=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    --no-ep) EP=0; shift ;;
    --compare) COMPARE=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
TOOLKIT=$X86/usr/lib/nvidia-cuda-toolkit
CUOBJDUMP=$X86/bin/cuobjdump
HOSTCXX=aarch64-linux-gnu-g++-11  # nvcc 11.8 accepts gcc <= 11
HOSTCC=aarch64-linux-gnu-gcc-11
ARMLIB=$ARM/usr/lib/aarch64-linux-gnu
[ -x "$TOOLKIT/bin/nvcc" ] && [ -e "$X86/usr/include/cuda/std/utility" ] ||
  { echo "no CUDA 11.8 toolkit with libcu++ in $X86: see kernels/cuda/tests/volta_build.sh" >&2; exit 2; }
command -v $HOSTCXX >/dev/null || { echo "needs $HOSTCXX: apt-get install g++-11-aarch64-linux-gnu" >&2; exit 2; }
[ -d "$CUTLASS/cute" ] || { echo "no CuTe headers in $CUTLASS" >&2; exit 2; }

# Debian arm64 packages into a folder through a private apt state (the system's architectures and
# sources stay as they are), from the mirror this machine is configured for.
fetch_arm64() {  # dest suite components packages...
  local dest=$1 suite=$2 comps=$3 mirror work; shift 3
  mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
           | grep -E '^(URIs:|deb )' | grep -v security | head -1 \
           | sed -E 's/^URIs: *//; s/^deb (\[[^]]*\] )?//; s/ .*//') || true
  [ -n "$mirror" ] || { echo "no Debian mirror configured in /etc/apt" >&2; exit 1; }
  work=$(mktemp -d)
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$dest"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg arch=arm64] $mirror $suite $comps" >"$work/sources.list"
  local opts=(-o "Dir::Etc::sourcelist=$work/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$work/lists"
              -o "Dir::Cache=$work/cache" -o APT::Architectures::=arm64)
  [ "$(id -u)" = 0 ] && opts+=(-o APT::Sandbox::User=root)
  echo "== fetching $* ($suite) into $dest"
  apt-get "${opts[@]}" update -qq
  (cd "$work" && apt-get "${opts[@]}" download -qq "$@")
  FETCHED=$work
}
if [ ! -e "$ARMLIB/libcudart_static.a" ]; then
  # Debian's arm64 CUDA is NVIDIA's SBSA (Arm server) build; nvidia-cuda-dev carries the static
  # runtime. Kept: the runtime, the headers (compared below) and the driver stub.
  fetch_arm64 "$ARM" bookworm "main non-free" nvidia-cuda-dev:arm64 libcudart11.0:arm64
  dpkg-deb --fsys-tarfile "$FETCHED"/nvidia-cuda-dev_*_arm64.deb | tar -x -C "$ARM" --wildcards './usr/include/*' \
    './usr/lib/aarch64-linux-gnu/libcudart*' './usr/lib/aarch64-linux-gnu/libcudadevrt.a' \
    './usr/lib/aarch64-linux-gnu/stubs/libcuda.so' './usr/share/doc/nvidia-cuda-dev/copyright'
  dpkg -x "$FETCHED"/libcudart11.0_*_arm64.deb "$ARM"
  rm -rf "$FETCHED"
fi
if [ ! -e "$SYSROOT/usr/lib/aarch64-linux-gnu/libc.so" ]; then
  # Xavier's last JetPack (5, L4T r35) is Ubuntu 20.04: glibc 2.31. Bookworm's cross toolchain
  # would bind glibc 2.34+ symbols, so the C library comes from Debian 11, which has 2.31 too.
  fetch_arm64 "$SYSROOT" bullseye main libc6:arm64 libc6-dev:arm64 linux-libc-dev:arm64 libgcc-s1:arm64
  for deb in "$FETCHED"/*.deb; do dpkg -x "$deb" "$SYSROOT"; done
  rm -rf "$FETCHED"
  # Debian's links point at /lib/...: make them relative so that they resolve inside the sysroot.
  (cd "$SYSROOT" && find . -type l | while read -r l; do t=$(readlink "$l"); case $t in
     /*) rm "$l"; ln -s "$(realpath -m --relative-to="$(dirname "$l")" ".$t")" "$l" ;; esac; done)
fi
# The x86 toolkit's headers (with libcu++, which CuTe needs) serve the aarch64 host pass.
for h in cuda_runtime_api.h cuda_runtime.h cuda.h driver_types.h crt/host_config.h crt/host_defines.h cuda_fp16.hpp; do
  cmp -s "$X86/usr/include/$h" "$ARM/usr/include/$h" || { echo "!! $h differs between the x86 and arm64 packages" >&2; exit 1; }
done

# A cross nvcc: the x86 nvcc binary in a folder of its own, whose profile names the aarch64 runtime
# and headers in NVIDIA's cross layout (targets/aarch64-linux), which CMake's CUDA support knows.
# nvcc finds its profile beside its own binary, hence a hard link (or copy), not a symbolic link.
mkdir -p "$BUILD/gen" "$BUILD/obj"
CROSS=$BUILD/cuda-11.8-aarch64
rm -rf "$CROSS" && mkdir -p "$CROSS/bin" "$CROSS/nvvm" "$CROSS/targets/aarch64-linux"
ln "$TOOLKIT/bin/nvcc" "$CROSS/bin/nvcc" 2>/dev/null || cp "$TOOLKIT/bin/nvcc" "$CROSS/bin/nvcc"
ln -s "$TOOLKIT/bin/cicc" "$TOOLKIT/bin/crt" "$CROSS/bin/"
for t in ptxas fatbinary cudafe++ nvlink bin2c nvprune; do ln -s "$X86/usr/bin/$t" "$CROSS/bin/$t"; done
ln -s "$TOOLKIT/libdevice" "$CROSS/nvvm/libdevice"
ln -s "$X86/usr/include" "$CROSS/targets/aarch64-linux/include"
ln -s "$ARMLIB" "$CROSS/targets/aarch64-linux/lib"
cat >"$CROSS/bin/nvcc.profile" <<'PROFILE'
TOP = $(_HERE_)/..
NVVMIR_LIBRARY_DIR = $(TOP)/nvvm/libdevice
PATH += $(_HERE_):
INCLUDES += "-I$(TOP)/targets/aarch64-linux/include" $(_SPACE_)
LIBRARIES =+ $(_SPACE_) -L$(TOP)/targets/aarch64-linux/lib/stubs -L$(TOP)/targets/aarch64-linux/lib
PROFILE
NVCC=$CROSS/bin/nvcc

# Host code sees glibc 2.31's headers (after g++ 11's own, in the compiler's order) and links
# against glibc 2.31, with libstdc++ linked in (JetPack 5's is gcc 10's, older than g++ 11's).
gccinc=$($HOSTCXX -print-file-name=include)
cxxinc=$(realpath "$(dirname "$gccinc")/../../../../aarch64-linux-gnu/include/c++/11")
HOSTINC=-nostdinc
for d in "$cxxinc" "$cxxinc/aarch64-linux-gnu" "$cxxinc/backward" "$gccinc" "$SYSROOT/usr/include/aarch64-linux-gnu" "$SYSROOT/usr/include"; do
  [ -d "$d" ] || { echo "missing include folder $d" >&2; exit 2; }
  HOSTINC="$HOSTINC,-isystem,$(realpath "$d")"
done
HOSTCINC="-nostdinc -isystem $gccinc -isystem $SYSROOT/usr/include/aarch64-linux-gnu -isystem $SYSROOT/usr/include"
# That libstdc++.a was built on glibc 2.36 and reads __libc_single_threaded (glibc >= 2.32) to skip
# atomics in single-threaded programs; 2.31 has no such variable, so define it as 0 ("may be
# threaded": always atomic), hidden so that it stays private to each binary.
printf '__attribute__((visibility("hidden"))) char __libc_single_threaded = 0;\n' > "$BUILD/gen/single_threaded.c"
$HOSTCC -O2 -fPIC -c "$BUILD/gen/single_threaded.c" -o "$BUILD/single_threaded.o"
LINKFLAGS="--sysroot=$SYSROOT -B$SYSROOT/usr/lib/aarch64-linux-gnu/ -L$SYSROOT/lib/aarch64-linux-gnu \
  -L$SYSROOT/usr/lib/aarch64-linux-gnu -static-libstdc++ $BUILD/single_threaded.o"

# ---- the driver: as build_check.sh, float16 only (Volta has no bfloat16 tensor cores) ----
: > "$BUILD/gen/fwd_instances.inc"
SRCS=""
for d in $DIMS; do
  f=$BUILD/gen/fwd_fp16_hd$d.cu
  printf '// generated by jetson_cross_build.sh\n#include "fwd_launch.cuh"\nFASTATTN_CUDA_INSTANTIATE(cutlass::half_t, %s)\n' "$d" > "$f"
  echo "FASTATTN_CUDA_FWD(fp16, $d)" >> "$BUILD/gen/fwd_instances.inc"
  SRCS="$SRCS $f"
done
echo "FASTATTN_BACKEND(cuda)" > "$BUILD/gen/backend_list.inc"
# Every .cu of the backend folder (as its CMakeLists.txt lists them), the driver, and the dispatch.
SRCS="$SRCS $(echo "$ROOT"/kernels/cuda/*.cu) $ROOT/kernels/cuda/tests/cuda_check.cu $ROOT/kernels/dispatch.cc $ROOT/kernels/attention_params.cc"
# The shipped configuration (no FASTATTN_CUDA_ALL_TRAITS): on sm_72 only the Volta traits have a body.
FLAGS="-ccbin $HOSTCXX -Xcompiler $HOSTINC -std=c++17 --expt-relaxed-constexpr -O3 -DNDEBUG
  -gencode arch=compute_72,code=sm_72 -I$ROOT/kernels -I$ROOT/kernels/cuda -I$BUILD/gen -I$CUTLASS"
echo "== CUDA 11.8 ($("$NVCC" --version | grep -o 'release [0-9.]*')) for $($HOSTCXX -dumpmachine) (g++ $($HOSTCXX -dumpversion), glibc 2.31) + sm_72, float16 head sizes: $DIMS ($JOBS jobs)"
start=$(date +%s)
compile() {
  local src=$1 base t0; base=$(basename "$src"); base=${base%.*}; t0=$(date +%s)
  local lang=""; case $src in *.cc) lang="-x cu" ;; esac
  # shellcheck disable=SC2086
  if ! "$NVCC" $FLAGS $lang -c "$src" -o "$BUILD/obj/$base.o" > "$BUILD/obj/$base.log" 2>&1; then
    head -40 "$BUILD/obj/$base.log" >&2; echo "FAILED: $src" >&2; return 1
  fi
  echo "  $base: $(( $(date +%s) - t0 )) s"
}
export -f compile; export NVCC FLAGS BUILD
# shellcheck disable=SC2086
printf '%s\n' $SRCS | xargs -P "$JOBS" -I{} bash -c 'compile {}'
# Linked by the cross g++ (whole-program device code: no device-link step).
# shellcheck disable=SC2086
$HOSTCXX $LINKFLAGS "$BUILD"/obj/*.o -L"$ARMLIB" -lcudart_static -ldl -lrt -lpthread -o "$BUILD/cuda_check"
echo "== built $BUILD/cuda_check in $(( $(date +%s) - start )) s"

# ---- the EP library: the project's CMake build, cross (the CPU, CUDA and Ascend backends) ----
LIB=$BUILD/ep/ep/libfastattn_onnx_ep.so
if [ $EP = 1 ]; then
  t0=$(date +%s)
  [ -e "$ROOT/cmake/toolchain-aarch64-linux-gnu.cmake" ] || { echo "no cmake/toolchain-aarch64-linux-gnu.cmake" >&2; exit 2; }
  PY=${PYTHON:-python3}
  # The repository's aarch64 toolchain, with g++-11, the glibc 2.31 sysroot and the flags above.
  # The Python headers only let the configure step pass: the Python module is not built here.
  cat > "$BUILD/toolchain.cmake" <<EOF
include($ROOT/cmake/toolchain-aarch64-linux-gnu.cmake)
set(CMAKE_C_COMPILER $HOSTCC)
set(CMAKE_CXX_COMPILER $HOSTCXX)
set(CMAKE_FIND_ROOT_PATH $SYSROOT)
set(CMAKE_CXX_FLAGS_INIT "${HOSTINC//,/ }")
set(CMAKE_CUDA_FLAGS_INIT "-Xcompiler $HOSTINC")
set(CMAKE_SHARED_LINKER_FLAGS_INIT "$LINKFLAGS")
set(CMAKE_EXE_LINKER_FLAGS_INIT "$LINKFLAGS")
set(CMAKE_MODULE_LINKER_FLAGS_INIT "$LINKFLAGS")
EOF
  rm -rf "$BUILD/ep"
  cmake -S "$ROOT" -B "$BUILD/ep" -G Ninja -DCMAKE_TOOLCHAIN_FILE="$BUILD/toolchain.cmake" \
    -DPython_EXECUTABLE="$(command -v "$PY")" -DFASTATTN_TARGET_PYTHON_INCLUDE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" \
    ${ORT_INCLUDE_DIR:+-DORT_INCLUDE_DIR=$ORT_INCLUDE_DIR} -DCUTLASS_INCLUDE_DIR="$CUTLASS" \
    -DFASTATTN_CUDA=ON -DCMAKE_CUDA_COMPILER="$NVCC" -DCMAKE_CUDA_HOST_COMPILER=$HOSTCXX \
    -DFASTATTN_CUDA_ARCHS=72-real -DFASTATTN_CUDA_HEAD_DIMS="${DIMS// /;}" -DFASTATTN_CUDA_DTYPES=fp16 \
    > "$BUILD/ep.configure.log" 2>&1 || { tail -30 "$BUILD/ep.configure.log" >&2; echo "FAILED: CMake configure" >&2; exit 1; }
  grep -E "CUDA kernels:|Found CUDAToolkit" "$BUILD/ep.configure.log" | sed 's/^/  /'
  ninja -C "$BUILD/ep" -j "$JOBS" fastattn_onnx_ep > "$BUILD/ep.build.log" 2>&1 ||
    { grep -B2 -A10 "error\|FAILED" "$BUILD/ep.build.log" | head -60 >&2; echo "FAILED: EP library" >&2; exit 1; }
  echo "== built $LIB in $(( $(date +%s) - t0 )) s"
fi

# ---- checks ----
status=0
fail() { echo "!! $*" >&2; status=1; }
check_host() {  # an aarch64 ELF, runtime and libstdc++ linked in, glibc <= 2.31
  local f=$1 needed newest
  echo "== $(basename "$f"): $(file -b "$f" | cut -d, -f1-2)"
  readelf -h "$f" | grep -q "Machine: *AArch64" || fail "$f: machine is not AArch64"
  needed=$(readelf -d "$f" | grep NEEDED | grep -o '\[.*\]' | tr -d '[]' | tr '\n' ' ')
  echo "  NEEDED: $needed"
  case " $needed " in *libcudart*|*libcuda.so*|*libstdc++*) fail "$f links libcudart, libcuda or libstdc++ dynamically" ;; esac
  newest=$(objdump -T "$f" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
  echo "  newest glibc symbol version: $newest (JetPack 5: 2.31)"
  [ "$(printf '%s\n' "$newest" GLIBC_2.31 | sort -V | tail -1)" = GLIBC_2.31 ] || fail "$f needs a glibc newer than 2.31"
}
check_device() {  # sm_72 SASS only; per Volta attention kernel: HMMA.884 and local-memory instructions
  local f=$1 d
  echo "  cubins: $("$CUOBJDUMP" -lelf "$f" | grep -o 'sm_[0-9]*' | sort | uniq -c | tr -s ' ' | tr '\n' ' ')"
  "$CUOBJDUMP" -lptx "$f" 2>/dev/null | grep -q . && fail "$f embeds PTX (expected sm_72 SASS only)"
  "$CUOBJDUMP" -lelf "$f" | grep -v "sm_72" | grep -q . && fail "$f has cubins for other architectures"
  "$CUOBJDUMP" -sass -arch sm_72 "$f" |
    awk '/Function : / { if (k != "") print k, h, l; k = ""; if ($3 ~ /attention_fwd_kernel/ && $3 ~ /Sm70Traits/) { k = $3; h = 0; l = 0 } next }
         k != "" && /HMMA\.884/ { h++ } k != "" && /[[:space:]](LDL|STL)[.[:space:]]/ { l++ } END { if (k != "") print k, h, l }' > "$f.kernels"
  printf '  %-4s %-5s %7s %7s\n' D var HMMA884 LDL+STL
  while read -r name hmma ldst; do
    d=$(echo "$name" | grep -o 'ELi[0-9]*E' | head -1 | tr -dc 0-9); local var=lean; [[ $name == *ELb1E* ]] && var=full
    printf '  %-4s %-5s %7s %7s\n' "$d" "$var" "$hmma" "$ldst"
    [ "$hmma" -gt 0 ] || fail "no HMMA.884 in $name"
  done < "$f.kernels"
  for d in $DIMS; do grep -q "ELi${d}E" "$f.kernels" || fail "$f: no sm_72 Volta attention kernel for D=$d"; done
}
check_host "$BUILD/cuda_check"
check_device "$BUILD/cuda_check"
if [ $EP = 1 ]; then
  check_host "$LIB"
  check_device "$LIB"
  exported=$(objdump -T "$LIB" | awk '$2 == "g" && $4 != "*UND*" { print $NF }' | sort | tr '\n' ' ')
  echo "  exported: $exported"
  [ "$exported" = "CreateEpFactories RegisterCustomOps ReleaseEpFactory " ] || fail "$LIB exports more or less than its three entry points"
fi
if [ -n "$COMPARE" ]; then
  # Device code does not depend on the host compiler: the x86-host objects' sm_72 instructions
  # must match (kernel names left out: an older reference may name a template argument fewer).
  for d in $DIMS; do
    ref=$COMPARE/fwd_fp16_hd$d.o
    [ -e "$ref" ] || { fail "no $ref to compare with"; continue; }
    for side in "x86:$ref" "arm:$BUILD/obj/fwd_fp16_hd$d.o"; do
      "$CUOBJDUMP" -sass -arch sm_72 "${side#*:}" | grep -E '^\s+/\*[0-9a-f]{4,}\*/' > "$BUILD/${side%%:*}.hd$d.sass"
    done
    if cmp -s "$BUILD/x86.hd$d.sass" "$BUILD/arm.hd$d.sass"; then echo "  D=$d: sm_72 instructions identical to the x86-host build ($(wc -l < "$BUILD/arm.hd$d.sass") lines)"
    else fail "D=$d: sm_72 instructions differ from $ref"; fi
  done
fi

echo "== under qemu-aarch64-static on the glibc 2.31 userland (no GPU, no driver)"
if command -v qemu-aarch64-static >/dev/null; then
  emulate() {  # expected exit status, expected output text, command...
    local want=$1 text=$2 rc=0; shift 2
    qemu-aarch64-static -L "$SYSROOT" "$@" > "$BUILD/qemu.out" 2>&1 || rc=$?
    echo "  $(echo "$*" | sed "s|$BUILD/||g") -> exit $rc: $(head -c 300 "$BUILD/qemu.out" | tr '\n' ' ')"
    [ "$rc" = "$want" ] && grep -q "$text" "$BUILD/qemu.out" || fail "expected exit $want and '$text'"
  }
  emulate 2 "usage: cuda_check" "$BUILD/cuda_check" --no-such-flag
  # No libcuda.so.1 at all: the static runtime reports the driver missing; the driver exits 3.
  emulate 3 "CUDA error CUDA driver version is insufficient" "$BUILD/cuda_check" --small --dims 64
  # The toolkit's stub libcuda (what builds link against, never what runs): loaded, then refused.
  mkdir -p "$BUILD/stub" && cp "$ARMLIB/stubs/libcuda.so" "$BUILD/stub/libcuda.so.1"
  emulate 3 "CUDA error CUDA driver is a stub library" -E LD_LIBRARY_PATH="$BUILD/stub" "$BUILD/cuda_check" --small --dims 64
  if [ $EP = 1 ]; then
    # The EP library loads (every symbol resolves against glibc 2.31, static constructors run).
    cat > "$BUILD/gen/load_ep.c" <<'C'
#include <dlfcn.h>
#include <stdio.h>
int main(int argc, char** argv) {
  void* h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!h) { printf("dlopen failed: %s\n", dlerror()); return 1; }
  const char* names[] = {"RegisterCustomOps", "CreateEpFactories", "ReleaseEpFactory"};
  for (int i = 0; i < 3; ++i) if (!dlsym(h, names[i])) { printf("missing %s\n", names[i]); return 1; }
  printf("loaded; RegisterCustomOps, CreateEpFactories, ReleaseEpFactory found\n");
  return dlclose(h);
}
C
    # shellcheck disable=SC2086
    $HOSTCC $HOSTCINC --sysroot="$SYSROOT" -B"$SYSROOT/usr/lib/aarch64-linux-gnu/" -L"$SYSROOT/lib/aarch64-linux-gnu" \
      "$BUILD/gen/load_ep.c" -ldl -o "$BUILD/load_ep"
    emulate 0 "loaded;" "$BUILD/load_ep" "$LIB"
  fi
else
  echo "  qemu-aarch64-static not installed (apt-get install qemu-user-static): skipped"
fi
echo "== jetson_cross_build: $([ $status = 0 ] && echo PASSED || echo FAILED) in $(( $(date +%s) - start )) s"
exit $status
