"""GPU tests: `pytest -m gpu tests/gpu` on a machine with an NVIDIA GPU and the CUDA build.

Elsewhere every test here is skipped with the reason (a CPU-only build, no driver, no visible GPU).
"""
from __future__ import annotations

import os
import sys

# The shared helpers (ort_helpers, reference) live one folder up.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs an NVIDIA GPU and a CUDA build of fastattn_onnx (else skipped)")
