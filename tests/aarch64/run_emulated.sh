#!/bin/bash
# The wheel test: install a built wheel offline into a clean Python and run the CPU test subset
# that needs no torch, plus `doctor` and `convert` on a model exported on the host.
#
#   tests/aarch64/run_emulated.sh            aarch64 wheel, Debian arm64 Python under qemu-user
#   tests/aarch64/run_emulated.sh --native   this machine's wheel in a clean venv (x86-64, or an
#                                            aarch64 board: the same subset, no emulation)
#   options: --dist DIR (wheels + dependency wheels; default dist/, built if the wheel is missing)
#            --model FILE (an exported model to convert; default: export one with HOST_PYTHON)
#            -- ARGS (more pytest arguments, e.g. -k)
# The aarch64 Python is Debian bookworm's python3.11 unpacked into build/edge/arm64-root
# (cmake/build_wheels.py arm64-root); qemu-aarch64-static runs it with -L (no binfmt_misc).
# Installs are `pip install --no-index --find-links DIST`: nothing comes from the network then.
# The last line is "RESULT: PASS ..." or "RESULT: FAIL ...".
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=$REPO/build/edge
MODE=aarch64; EMULATE=1; DIST=$REPO/dist; MODEL=""; EXTRA=()
while (($#)); do
  case $1 in
    --native) MODE=$(uname -m); EMULATE=0 ;;
    --dist) DIST=$(realpath -m "$2"); shift ;;
    --model) MODEL=$(realpath "$2"); shift ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
# The subset: op numerics against the float64 reference (binding, custom op, EP), ONNX
# Attention / GroupQueryAttention claimed by the EP against onnxruntime's own CPU kernels, bad
# inputs, the contract, the package (registration, doctor). None imports torch.
SUBSET=(tests/test_kernel_numerics.py tests/test_custom_op.py tests/test_ep.py tests/test_attention23.py
        tests/test_gqa_ep.py tests/test_device_tensors.py tests/test_bad_input.py tests/test_contract.py
        tests/test_package.py)
HOST_PYTHON=${HOST_PYTHON:-python3}
WORK=$CACHE/run-$MODE
T0=$(date +%s)
step() { echo "[run_emulated $(($(date +%s) - T0))s] $*"; }
fail() { echo "RESULT: FAIL ($MODE: $*)"; exit 1; }

if ! ls "$DIST"/fastattn_onnx-*"$MODE".whl >/dev/null 2>&1; then
  step "no $MODE wheel in $DIST: building it"
  "$REPO/cmake/build_wheels.sh" --arch "$MODE" --out "$DIST"
fi
# pytest (pure Python) and pip for the emulated Python: test tools, kept out of the bundle.
TESTWHEELS=$CACHE/test-wheels
if ! ls "$TESTWHEELS"/pytest-*.whl "$TESTWHEELS"/pip-*.whl >/dev/null 2>&1; then
  DL_PY=$CACHE/tools/bin/python  # build_wheels.sh's venv has pip; Debian's python3 may not
  [[ -x $DL_PY ]] || DL_PY=python3
  "$DL_PY" -m pip download -q --only-binary=:all: -d "$TESTWHEELS" pytest pip
fi
PIP_WHEEL=$(ls "$TESTWHEELS"/pip-*.whl | tail -1)

rm -rf "$WORK"; mkdir -p "$WORK"
VENV=$WORK/venv
if ((EMULATE)); then
  if ! command -v qemu-aarch64-static >/dev/null; then
    step "apt-get install qemu-user-static"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-user-static
  fi
  ROOT=$(python3 "$REPO/cmake/build_wheels.py" arm64-root "$CACHE/arm64-root" | tail -1)
  # qemu-user 7.2 passes /proc/cpuinfo through from the host (x86 text), and onnxruntime's cpuinfo
  # library crashes on it at import. qemu's -L looks a path up in the root first, so the root gets
  # an arm64-shaped one: one Neoverse-N1-like entry per host CPU, baseline features only (the
  # real feature set reaches programs through HWCAP, which qemu sets; doctor reads that).
  mkdir -p "$ROOT/proc"
  for ((cpu = 0; cpu < $(nproc --all); cpu++)); do
    printf 'processor\t: %d\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\nCPU revision\t: 1\n\n' "$cpu"
  done > "$ROOT/proc/cpuinfo"
  # A venv by hand (Debian's python3.11 has no ensurepip); bin/python is a host script that starts
  # qemu, so that sys.executable works for the tests' subprocesses too (no binfmt_misc here).
  mkdir -p "$VENV/bin" "$VENV/lib/python3.11/site-packages"
  printf 'home = %s/usr/bin\ninclude-system-site-packages = false\nversion = 3.11\n' "$ROOT" > "$VENV/pyvenv.cfg"
  printf '#!/bin/sh\nexec qemu-aarch64-static -L %s -0 "$0" %s/usr/bin/python3.11 "$@"\n' "$ROOT" "$ROOT" > "$VENV/bin/python"
  chmod +x "$VENV/bin/python"
else
  python3 -m venv --without-pip "$VENV"
fi
PY=$VENV/bin/python
step "python: $("$PY" -c 'import platform, sys; print(platform.machine(), sys.version.split()[0], sys.prefix)')"

step "pip install --no-index --find-links $DIST fastattn-onnx (+ pytest from $TESTWHEELS)"
"$PY" "$PIP_WHEEL/pip" install -q --no-index --find-links "$DIST" --find-links "$TESTWHEELS" fastattn-onnx pytest \
  || fail "offline install"
step "installed: $("$PY" -c 'import fastattn_onnx, onnxruntime, numpy, onnx; print(fastattn_onnx.__file__, "onnxruntime", onnxruntime.__version__, "numpy", numpy.__version__, "onnx", onnx.__version__)')"

if [[ -z $MODEL ]]; then
  if "$HOST_PYTHON" -c "import torch" 2>/dev/null; then
    MODEL=$WORK/sdpa_block.onnx
    step "exporting a model on the host ($HOST_PYTHON, torch): $MODEL"
    "$HOST_PYTHON" "$REPO/models/export_sdpa.py" --exporter torchscript --mask bool -o "$MODEL" >/dev/null
  else
    step "no model and no torch on the host ($HOST_PYTHON): convert is not run"
  fi
fi

cd "$WORK"  # not the repo: the package must come from the venv
step "doctor"
"$PY" -m fastattn_onnx doctor | tee doctor.txt || fail "doctor exited non-zero"
grep -q "FastAttentionEP: registered" doctor.txt || fail "doctor: EP not registered"
grep -q "^CPU features ($MODE): ." doctor.txt || fail "doctor: no CPU features"
if [[ $MODE == aarch64 ]]; then
  grep -q "CPU vector ISA: aarch64-neon" doctor.txt || fail "doctor: not the NEON path"
  grep -q "asimd" doctor.txt || fail "doctor: no asimd in the features"
fi

if [[ -n $MODEL ]]; then
  step "convert $MODEL"
  "$PY" -m fastattn_onnx convert "$MODEL" -o "$WORK/converted.onnx" | tee convert.txt || fail "convert exited non-zero"
  [[ -s $WORK/converted.onnx ]] || fail "convert wrote no model"
  # convert already checked parity with FastAttentionEP; this shows the node is there and runs again.
  "$PY" - "$WORK/converted.onnx" <<'EOF' || fail "the converted model does not run"
import sys
import numpy as np, onnx, onnxruntime as ort
import fastattn_onnx
model = onnx.load(sys.argv[1])
assert any(n.op_type == "FastAttention" for n in model.graph.node), "no FastAttention node"
sess = ort.InferenceSession(sys.argv[1], providers=[fastattn_onnx.get_ep_name(), "CPUExecutionProvider"])
rng = np.random.default_rng()
feeds = {}
for i in sess.get_inputs():
    shape = [d if isinstance(d, int) else 5 for d in i.shape]
    feeds[i.name] = np.ones(shape, np.int64) if i.type == "tensor(int64)" else rng.standard_normal(shape).astype(np.float32)
out = sess.run(None, feeds)[0]
assert np.isfinite(out).all(), "non-finite output"
print("converted model runs on", fastattn_onnx.get_ep_name(), "output", out.shape)
EOF
fi

step "pytest ${SUBSET[*]} ${EXTRA[*]:-}"
set +e
"$PY" -m pytest -q -p no:cacheprovider --rootdir "$REPO" "${SUBSET[@]/#/$REPO/}" ${EXTRA[@]+"${EXTRA[@]}"} 2>&1 | tee pytest.txt
rc=${PIPESTATUS[0]}
set -e
summary=$(grep -E "passed|failed|error" pytest.txt | tail -1)
((rc == 0)) || fail "pytest: $summary"
echo "RESULT: PASS ($MODE: $summary; doctor ok; convert ${MODEL:+ok}${MODEL:+ }${MODEL:-not run}) in $(($(date +%s) - T0)) s"
