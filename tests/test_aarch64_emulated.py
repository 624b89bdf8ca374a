"""The installable wheels (issue 20): built by cmake/build_wheels.sh, installed offline
(`pip install --no-index`) into a clean Python and run against the CPU test subset that needs no
torch, `doctor` and `convert` (tests/aarch64/run_emulated.sh):

- x86-64: this machine's wheel in a fresh venv;
- aarch64: the cross-compiled (NEON) wheel in Debian's arm64 python3.11 under qemu-user, with
  PyPI's aarch64 onnxruntime, numpy and onnx wheels.

Both need Debian's apt (the cross compiler, qemu-user-static and the arm64 Python come from it)
and root to install what is missing; elsewhere they skip and say which is lacking.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "cmake" / "build_wheels.sh"
RUN = REPO / "tests" / "aarch64" / "run_emulated.sh"


def _obtainable(program: str) -> bool:
    """Installed, or installable here with apt-get (as root)."""
    return bool(shutil.which(program)) or (bool(shutil.which("apt-get")) and os.geteuid() == 0)


def _run(cmd: list, timeout: int) -> str:
    env = dict(os.environ, HOST_PYTHON=sys.executable)  # the host side exports the model to convert
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=env)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"{cmd[0]} exited {r.returncode}:\n{out[-6000:]}"
    return out


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        pytest.skip("the wheels are built on an x86-64 Linux machine (aarch64 by cross-compiling)")
    if not shutil.which("dpkg") or not shutil.which("apt-get"):
        pytest.skip("needs Debian's apt and dpkg (cross compiler, arm64 Python headers)")
    for program in ("aarch64-linux-gnu-g++", "cmake", "ninja"):
        if not _obtainable(program):
            pytest.skip(f"{program} is missing and cannot be installed (apt-get needs root)")
    out = tmp_path_factory.mktemp("dist")
    _run([BUILD, "--out", out], timeout=1800)
    return out


def _check(log: str, arch: str) -> None:
    result = [line for line in log.splitlines() if line.startswith("RESULT:")]
    assert result and result[-1].startswith(f"RESULT: PASS ({arch}:"), log[-6000:]
    assert " passed" in result[-1] and "convert ok" in result[-1], result[-1]


def test_x86_64_wheel_installs_offline_and_passes_the_subset(dist):
    wheels = list(dist.glob("fastattn_onnx-*manylinux_*_x86_64.whl"))
    assert len(wheels) == 1, sorted(p.name for p in dist.iterdir())
    _check(_run([RUN, "--native", "--dist", dist], timeout=1200), "x86_64")


def test_aarch64_wheel_passes_the_subset_under_qemu(dist):
    if not _obtainable("qemu-aarch64-static"):
        pytest.skip("qemu-aarch64-static is missing and cannot be installed (apt-get needs root)")
    wheels = list(dist.glob("fastattn_onnx-*manylinux_*_aarch64.whl"))
    assert len(wheels) == 1, sorted(p.name for p in dist.iterdir())
    log = _run([RUN, "--dist", dist], timeout=2400)
    _check(log, "aarch64")
    assert "CPU vector ISA: aarch64-neon" in log and "CPU features (aarch64): " in log
