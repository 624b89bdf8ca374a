"""Shared by the torch-CUDA-tensor tests in tests/gpu: the skip marks, unit-variance inputs rounded
to the kernel's type, a float64 reference for selected query rows (BLAS matmuls, no GQA repeat, so
decode over a long past and S = 32768 stay cheap on the host) and the tolerance check.

Imported only after `pytest.importorskip("torch")` in the test modules.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fastattn_onnx import _kernels  # noqa: E402
from reference import visible_keys  # noqa: E402

import torch  # noqa: E402  (the test modules importorskip it first)

CUDA_MARKS = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible to torch"),
              pytest.mark.skipif(not any(n == "cuda" for n, _ in _kernels.backends()),
                                 reason="the CUDA kernel is not compiled into this build")]

# As in test_attention_cuda_tensors.py: tensor-core operands in fp16/bf16, float32 accumulation,
# P rounded to the operand type. float32 runs through the float16 kernels (exact power-of-two
# rescaling), so it gets float16's scheme plus the rounding of its inputs to float16 (the
# reference sees the exact float32 inputs): up to 1.8e-3 on the CPU grid's float32 cases.
TOL = {"float16": 4e-3, "bfloat16": 2.5e-2, "float32": 5e-3}
HALF_ULP_REL = {"float16": 2.0**-11, "bfloat16": 2.0**-8, "float32": 2.0**-11}


def bf16_round(x: np.ndarray) -> np.ndarray:
    """float32 -> float32 rounded to bfloat16 (nearest even)."""
    u = np.array(x, np.float32).view(np.uint32)  # a copy; finite values do not overflow uint32 here
    lsb = u >> 16
    lsb &= 1
    u += np.uint32(0x7FFF)
    u += lsb
    u &= np.uint32(0xFFFF0000)
    return u.view(np.float32)


def round_to(x: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values exactly representable in `dtype` (still float32)."""
    if dtype == "float16":
        return x.astype(np.float16).astype(np.float32)
    if dtype == "bfloat16":
        return bf16_round(x)
    return x.astype(np.float32)


def randn(rng: np.random.Generator, shape, dtype: str, scale: float = 1.0) -> np.ndarray:
    """Unit-variance (times `scale`) float32 values, never zero, already rounded to `dtype`."""
    x = rng.standard_normal(shape, dtype=np.float32)
    x[x == 0] = 0.5
    if scale != 1.0:
        x *= np.float32(scale)
    return round_to(x, dtype)


def to_cuda(x, dtype: str):
    """A host array (float32 holding values of `dtype`, or a mask) -> a torch CUDA tensor."""
    if x is None:
        return None
    t = torch.from_numpy(np.ascontiguousarray(x)).cuda()
    return t.to(getattr(torch, dtype)) if x.dtype == np.float32 else t


def poisoned(shape, dtype: str):
    return torch.full(tuple(shape), float("nan"), dtype=getattr(torch, dtype), device="cuda")


def reference_rows(q4, k4, v4, rows=None, *, scale=None, causal=False, window_size=-1, softcap=0.0,
                   attn_bias=None, key_padding_mask=None):
    """float64 attention for query rows `rows` (indices into S_q; all when None) of 4D q [B, H, S_q, D]
    against the whole key/value sequence k4, v4 [B, KVH, S_total, D] (past already prepended).
    The rows keep their absolute positions: causal is bottom-right, row i sits at i + S_total - S_q,
    as in tests/reference.py. attn_bias broadcasts to [B, H, S_q, S_total]; key_padding_mask is
    [B, S_total]. Rows with no visible key give zeros. Returns [B, H, len(rows), Dv]."""
    b, n, s_q, d = q4.shape
    kvh, s_total, dv = k4.shape[1], k4.shape[2], v4.shape[-1]
    g = n // kvh
    rows = np.arange(s_q) if rows is None else np.asarray(rows)
    r = len(rows)
    scale = 1.0 / np.sqrt(d) if scale is None else float(scale)
    structural = visible_keys(s_q, s_total, causal, window_size, rows=rows)
    bias = None if attn_bias is None else np.broadcast_to(np.asarray(attn_bias), (b, n, s_q, s_total))
    out = np.empty((b, n, r, dv))
    # One (batch, kv head) at a time: its query heads' rows against its keys, in float64.
    for bi in range(b):
        vis = structural if key_padding_mask is None else \
            structural & (np.asarray(key_padding_mask[bi]) != 0)[None, :]
        for h in range(kvh):
            heads = slice(h * g, (h + 1) * g)
            qs = np.asarray(q4[bi, heads][:, rows], np.float64)  # [G, R, D]
            k64 = np.asarray(k4[bi, h], np.float64)
            scores = np.matmul(qs, k64.T) * scale  # [G, R, S_total]
            if softcap and softcap > 0:
                scores = softcap * np.tanh(scores / softcap)
            if bias is not None:
                scores += np.asarray(bias[bi, heads][:, rows], np.float64)
            scores = np.where(vis, scores, -np.inf)
            row_max = scores.max(axis=-1, keepdims=True)
            row_max = np.where(np.isfinite(row_max), row_max, 0.0)
            p = np.where(vis, np.exp(scores - row_max), 0.0)
            denom = p.sum(axis=-1, keepdims=True)
            p = np.divide(p, denom, out=np.zeros_like(p), where=denom > 0)  # no visible key -> zeros
            out[bi, heads] = np.matmul(p, np.asarray(v4[bi, h], np.float64))
    return out


def assert_close(got: np.ndarray, want: np.ndarray, dtype: str, unit: float = 1.0, what: str = "output"):
    """|got - want| <= unit * (TOL + HALF_ULP_REL * |want| / unit): the float16 scheme on values
    measured in `unit` (the inputs' scale for the large-magnitude test). NaN/inf fail."""
    got = np.asarray(got, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert np.isfinite(got).all(), f"NaN/inf in the {what} (a row left unwritten?) at " \
                                   f"{np.argwhere(~np.isfinite(got))[:5].tolist()}"
    err = np.abs(got - want) / unit
    allowed = TOL[dtype] + HALF_ULP_REL[dtype] * np.abs(want) / unit
    worst = np.unravel_index(np.argmax(err - allowed), err.shape)
    assert (err <= allowed).all(), (f"{what}: max error {err.max():.3g} (x{unit:g}) at {worst}: got {got[worst]}, "
                                    f"want {want[worst]}")


def to_host(t) -> np.ndarray:
    return t.double().cpu().numpy()
