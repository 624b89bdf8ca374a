"""The Python package's registration side: library path, EP name, version check, doctor."""
from __future__ import annotations

import os

import onnxruntime as ort
import pytest

import fastattn_onnx
from fastattn_onnx import _ort, doctor


def test_library_and_ep_name():
    assert os.path.isfile(fastattn_onnx.get_library_path())
    assert fastattn_onnx.get_ep_name() == "FastAttentionEP"
    assert "FastAttentionEP" in [d.ep_name for d in ort.get_ep_devices()]


def test_old_onnxruntime_gives_a_clear_import_error(monkeypatch):
    monkeypatch.setattr(ort, "__version__", "1.26.2")
    with pytest.raises(ImportError, match=r"onnxruntime >= 1\.27.*1\.26\.2"):
        _ort.check_onnxruntime()


def test_doctor_reports_the_ep_device_and_kernels():
    text = "\n".join(doctor.report())
    assert "FastAttentionEP: registered" in text
    assert "device: CPU" in text
    assert "CPU vector ISA:" in text and "CUDA not built" in text
