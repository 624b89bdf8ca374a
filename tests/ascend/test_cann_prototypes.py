"""Our hand-written CANN declarations (kernels/ascend/cann_api.h) against the ACL headers of the
torch-npu wheel, fetched from PyPI here (44 MB; never committed): cmake/check_acl_prototypes.py
compiles one translation unit that static_asserts the ABI of every function and constant the
library takes from acl/acl_rt.h and the wheel's op-plugin typedefs. The same check runs in the
build with -DFASTATTN_CHECK_ACL_PROTOTYPES=ON."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_cann_declarations_match_the_torch_npu_acl_headers(tmp_path):
    cxx = shutil.which("g++") or shutil.which("c++")
    if not cxx:
        pytest.skip("needs a C++ compiler to compile the check")
    res = subprocess.run([sys.executable, str(REPO / "cmake" / "check_acl_prototypes.py"), "--source-dir", str(REPO),
                          "--cache", str(tmp_path), "--cxx", cxx], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith("CANN declarations match the ACL headers"), res.stdout
