"""Shared helpers for the ONNX Runtime tests: inputs, sessions, bfloat16 plumbing."""
from __future__ import annotations

import os
import sys

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models"))

import fastattn_onnx  # noqa: E402  (registers FastAttentionEP)
from fastattn_onnx.model_builders import build_model  # noqa: E402,F401

EP = fastattn_onnx.get_ep_name()
EP_PROVIDERS = [EP, "CPUExecutionProvider"]
TOL = {"float32": 2e-5, "float16": 2e-3, "bfloat16": 2e-3}


def bf16_round(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to bfloat16 (nearest even), still float32."""
    u = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    return u.astype(np.uint32).view(np.float32)


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    return (bf16_round(x).view(np.uint32) >> 16).astype(np.uint16)


def from_bf16_bits(b: np.ndarray) -> np.ndarray:
    return (b.astype(np.uint32) << 16).view(np.float32)


def random_inputs(shapes: dict[str, tuple], dtype: str, seed=0, masks: dict | None = None) -> dict[str, np.ndarray]:
    """float32 arrays already rounded to `dtype`, so the float64 reference sees what the kernel sees."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in shapes.items():
        x = rng.standard_normal(shape).astype(np.float32)
        if dtype == "float16":
            x = x.astype(np.float16).astype(np.float32)
        elif dtype == "bfloat16":
            x = bf16_round(x)
        out[name] = x
    out.update(masks or {})
    return out


def run(session: ort.InferenceSession, feeds: dict[str, np.ndarray], dtype: str) -> list[np.ndarray]:
    """Runs with float inputs given as float32, converted to dtype; returns float32 outputs."""
    if dtype == "float32":
        return session.run(None, feeds)
    if dtype == "float16":
        conv = {k: (v.astype(np.float16) if v.dtype == np.float32 else v) for k, v in feeds.items()}
        return [o.astype(np.float32) for o in session.run(None, conv)]
    # numpy has no bfloat16: feed uint16 bit patterns as ONNX bfloat16 (16) and bind output buffers
    # we own, which ONNX Runtime fills in place. Output shapes must be static in the model.
    binding = session.io_binding()
    keep = []
    for k, v in feeds.items():
        arr = to_bf16_bits(v) if v.dtype == np.float32 else v
        keep.append(arr)
        val = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(arr, 16) if v.dtype == np.float32 \
            else ort.OrtValue.ortvalue_from_numpy(arr)
        keep.append(val)
        binding.bind_ortvalue_input(k, val)
    bufs = []
    for o in session.get_outputs():
        buf = np.zeros(o.shape, np.uint16)
        val = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(buf, 16)
        keep.append(val)
        bufs.append(buf)
        binding.bind_ortvalue_output(o.name, val)
    session.run_with_iobinding(binding)
    return [from_bf16_bits(b) for b in bufs]


def session_options(custom_ops: bool = True) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    if custom_ops:
        fastattn_onnx.register_custom_ops(so)
    return so


def ep_session(model, **kw) -> ort.InferenceSession:
    """Session that prefers FastAttentionEP. Named providers don't bring the EP's op domain in
    ONNX Runtime's Python API, so the custom-op library is registered as well."""
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else model
    return ort.InferenceSession(data, session_options(), providers=EP_PROVIDERS, **kw)


def cpu_session(model, custom_ops=True) -> ort.InferenceSession:
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else model
    return ort.InferenceSession(data, session_options(custom_ops), providers=["CPUExecutionProvider"])


def max_err(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) if np.size(a) else 0.0


def cuda_ep_devices() -> list:
    """FastAttentionEP's CUDA devices (none in a CPU-only build, without a driver or a visible GPU)."""
    return [d for d in ort.get_ep_devices() if d.ep_name == EP and dict(d.ep_metadata).get("fastattn.kernel") == "cuda"]


def gpu_ep_marks() -> list:
    """pytestmark of the EP's GPU tests: marked gpu, skipped with the reason where no CUDA device is listed."""
    import pytest

    return [pytest.mark.gpu,
            pytest.mark.skipif(not cuda_ep_devices(), reason="FastAttentionEP lists no CUDA device here (a CPU-only "
                                                             "build, no NVIDIA driver, or no GPU visible)")]
