#!/usr/bin/env bash
# Build and check the CUDA path on a machine with an NVIDIA GPU and no network, then benchmark:
#
#   ORT_INCLUDE_DIR=... CUTLASS_INCLUDE_DIR=... tests/gpu/run.sh [--archs 90a] [--out DIR] [--no-bench] [--kernel-check] [--volta]
#
# --volta: the Volta proxy run. The package is built float16-only with every traits compiled for
# every architecture (FASTATTN_CUDA_ALL_TRAITS) and the GPU tests run with FASTATTN_CUDA_TRAITS=70,
# i.e. the sm_70 kernels (m8n8k4, emulated on newer GPUs) behind ONNX Runtime; bfloat16 cases are
# deselected (Volta has none: the EP declines them).
#
# Needs: python3 with onnxruntime (>= 1.27), numpy, onnx, onnxscript, torch (CUDA), pytest,
# scikit-build-core, pybind11; cmake; nvcc. ONNX Runtime's C API headers (Debian's
# libonnxruntime-dev, or the release archive) and CuTe's (the nvidia-cutlass wheel's
# cutlass_library/source/include) are brought along, not downloaded: by default from .ortinc/ and
# .cutlass/include/ in the checkout (see tests/gpu/README or the project README).
# Prints a short table last; full logs go to --out (default build/gpu-logs).
set -uo pipefail
cd "$(dirname "$0")/../.."
ARCHS=90a
OUT_DIR=build/gpu-logs
BENCH=1
KERNEL_CHECK=0
VOLTA=0
while [ $# -gt 0 ]; do
  case "$1" in
    --archs) ARCHS="$2"; shift 2 ;;
    --out) OUT_DIR="$2"; shift 2 ;;
    --no-bench) BENCH=0; shift ;;
    --kernel-check) KERNEL_CHECK=1; shift ;;  # also the stand-alone kernel driver and sanitizers
    --volta) VOLTA=1; BENCH=0; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT_DIR"
export ORT_INCLUDE_DIR="${ORT_INCLUDE_DIR:-$PWD/.ortinc}"
export CUTLASS_INCLUDE_DIR="${CUTLASS_INCLUDE_DIR:-$PWD/.cutlass/include}"
export PYTHONUNBUFFERED=1
declare -A RESULT

step() {  # step NAME COMMAND...: runs it with its log under OUT_DIR, records pass/FAIL
  local name="$1"; shift
  local started=$SECONDS
  if "$@" >"$OUT_DIR/$name.log" 2>&1; then RESULT[$name]="pass"; else RESULT[$name]="FAIL (rc $?)"; fi
  RESULT[$name]+=" in $((SECONDS - started)) s"
  tail -n 5 "$OUT_DIR/$name.log"
}

nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader | tee "$OUT_DIR/gpu.txt"
EXTRA_BUILD=()
PYTEST_SELECT=()
if [ "$VOLTA" = 1 ]; then
  EXTRA_BUILD=(-C cmake.define.FASTATTN_CUDA_ALL_TRAITS=ON -C cmake.define.FASTATTN_CUDA_DTYPES=fp16)
  PYTEST_SELECT=(-k "not bfloat16")
  export FASTATTN_CUDA_TRAITS=70
fi
step build python3 -m pip install -q --no-build-isolation --no-deps -C cmake.define.FASTATTN_CUDA=ON \
  -C "cmake.define.FASTATTN_CUDA_ARCHS=$ARCHS" "${EXTRA_BUILD[@]}" -C build-dir=build/gpu-wheel$([ "$VOLTA" = 1 ] && echo -volta) .
step doctor python3 -m fastattn_onnx doctor
if [ "$KERNEL_CHECK" = 1 ]; then
  step kernel_check kernels/cuda/tests/build_check.sh
fi
step pytest_gpu python3 -m pytest -q -p no:cacheprovider -m gpu "${PYTEST_SELECT[@]}" tests/gpu
# The CPU device of the EP, with the GPU hidden (with it visible the EP takes the GPU).
step pytest_ep env CUDA_VISIBLE_DEVICES= python3 -m pytest -q -p no:cacheprovider tests/test_ep.py tests/test_device_tensors.py
if [ "$BENCH" = 1 ]; then
  step bench_gpu python3 -m fastattn_onnx bench gpu --repeats 20
  cat "$OUT_DIR/bench_gpu.log"
fi
echo
echo "| step | result |"
echo "|---|---|"
for name in build doctor kernel_check pytest_gpu pytest_ep bench_gpu; do
  [ -n "${RESULT[$name]:-}" ] && echo "| $name | ${RESULT[$name]} |"
done
grep -h -E "passed|failed|error" "$OUT_DIR"/pytest_*.log | tail -n 4
for name in "${!RESULT[@]}"; do
  case "${RESULT[$name]}" in FAIL*) exit 1 ;; esac
done
exit 0
