"""The CUDA kernel through fastattn_onnx.attention on torch CUDA tensors, against the float64
reference: the CPU tests' numerics grid (pairwise cases and edge cases) on the GPU, with every
output poisoned (NaN) first. Cases the CUDA backend declines must say why (a ValueError naming
the rule), never compute something else. Runs where torch sees a CUDA device and the CUDA kernel
is compiled in (tests/gpu/run.sh on a GPU machine); skipped elsewhere.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference import attention_reference  # noqa: E402
from test_kernel_numerics import EDGE_CASES, PAIRWISE, case_id, make_case, to_f64  # noqa: E402

import fastattn_onnx  # noqa: E402
from fastattn_onnx import _kernels  # noqa: E402

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible to torch"),
              pytest.mark.skipif(not any(n == "cuda" for n, _ in _kernels.backends()),
                                 reason="the CUDA kernel is not compiled into this build")]

# Tensor cores take fp16/bf16 operands with float32 accumulation; the probabilities are rounded
# to the input type before P @ V, so the error is that rounding, not the CPU kernel's. float32 runs
# through the float16 kernels (inputs rescaled by exact powers of two, then rounded to float16)
# against the reference of the exact float32 inputs: float16's error plus that input rounding
# (up to 1.8e-3 on this grid's float32 cases, measured in float64).
TOL = {"float16": 4e-3, "bfloat16": 2.5e-2, "float32": 5e-3}
HALF_ULP_REL = {"float16": 2.0**-11, "bfloat16": 2.0**-8, "float32": 2.0**-11}


def _to_torch(x, dtype: str):
    if x is None or not isinstance(x, np.ndarray):
        return x
    if x.dtype.kind == "f" or str(x.dtype) == "bfloat16":
        t = torch.from_numpy(to_f64(x, dtype).astype(np.float32)).to(getattr(torch, dtype))
    else:
        t = torch.from_numpy(x)
    return t.cuda()


@pytest.mark.parametrize("case", PAIRWISE + EDGE_CASES, ids=case_id)
def test_cuda_matches_reference(case):
    rng = np.random.default_rng(20261202)
    q, k, v, kw = make_case(case, rng)
    dt = case["dtype"]
    ref_kw = {key: (to_f64(val, dt) if key in ("past_key", "past_value", "attn_bias") else val)
              for key, val in kw.items()}
    ref_out, ref_pk, ref_pv = attention_reference(to_f64(q, dt), to_f64(k, dt), to_f64(v, dt), **ref_kw)
    tq, tk, tv = (_to_torch(x, dt) for x in (q, k, v))
    tkw = {key: _to_torch(val, dt) for key, val in kw.items()}
    torch_dtype = getattr(torch, dt)
    out, pk, pv = (torch.full(r.shape, float("nan"), dtype=torch_dtype, device="cuda")
                   for r in (ref_out, ref_pk, ref_pv))
    try:
        fastattn_onnx.attention(tq, tk, tv, **tkw, out=out, present_key=pk, present_value=pv)
    except ValueError as declined:  # a case the CUDA backend does not take yet: it must say so
        assert "CUDA" in str(declined) or "cuda" in str(declined), declined
        pytest.skip(f"declined: {declined}")
    torch.cuda.synchronize()
    got = out.double().cpu().numpy()
    assert np.isfinite(got).all(), "NaN/inf in the output (a row left unwritten?)"
    err = np.abs(got - ref_out)
    allowed = TOL[dt] + HALF_ULP_REL[dt] * np.abs(ref_out)
    worst = np.unravel_index(np.argmax(err - allowed), err.shape)
    assert (err <= allowed).all(), f"max abs error {err.max():.3g} at {worst}"
    np.testing.assert_array_equal(pk.double().cpu().numpy(), ref_pk)
    np.testing.assert_array_equal(pv.double().cpu().numpy(), ref_pv)


def test_runs_on_the_current_stream_and_orders_with_torch():
    """Launched on torch's current stream: work queued before it on that stream is seen, work
    after it sees its result, with no synchronisation by the caller."""
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        q = torch.randn(2, 8, 1024, 64, dtype=torch.float16, device="cuda")
        k, v = torch.randn_like(q), torch.randn_like(q)
        q.mul_(1.0)  # queued on `stream` just before the call
        out = fastattn_onnx.attention(q, k, v, num_heads=8, causal=1)
        total = out.float().sum()  # queued after it on the same stream
    stream.synchronize()
    ref = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
    assert torch.isfinite(total)
    assert (out.float() - ref).abs().max().item() < 4e-3


# float32 beyond float16's range: the backend rescales Q by 2^-a, K by 2^a (and V by 2^-c, the
# output by 2^c) before rounding to float16, so none of these overflow (65504) or sink into
# float16's subnormals (below 6.1e-5). Compared in units of V's scale with float16's scheme.
LARGE = {
    # Q, K ~ 3000 (scores kept O(1) with scale=), V ~ 1e5: V alone overflows float16.
    "qk3000-v1e5-scaled": dict(q=3e3, k=3e3, v=1e5, scale=1.0 / (3e3 * 3e3 * np.sqrt(128)), past=0),
    # Q ~ 1e5 overflows float16, K ~ 1e-5 is subnormal there; their product is O(1). Past keys
    # carry the same scale (the rescaling must cover past and new keys alike).
    "q1e5-k1e-5-v1e5-past": dict(q=1e5, k=1e-5, v=1e5, scale=None, past=300),
    # Everything tiny: V ~ 1e-6 is below float16's smallest normal.
    "qk2e-3-v1e-6-scaled": dict(q=2e-3, k=2e-3, v=1e-6, scale=1.0 / (2e-3 * 2e-3 * np.sqrt(128)), past=0),
}


@pytest.mark.parametrize("name", list(LARGE))
def test_float32_large_and_small_magnitudes(name):
    from cuda_helpers import randn, reference_rows, assert_close, poisoned, to_cuda, to_host

    c = LARGE[name]
    b, n, kvh, s, d = 2, 8, 2, 256, 128
    rng = np.random.default_rng(20261203)
    q = randn(rng, (b, n, s, d), "float32", c["q"])
    k = randn(rng, (b, kvh, s, d), "float32", c["k"])
    v = randn(rng, (b, kvh, s, d), "float32", c["v"])
    kw = dict(causal=True, scale=c["scale"])
    pk = pv = None
    if c["past"]:
        pk = randn(rng, (b, kvh, c["past"], d), "float32", c["k"])
        pv = randn(rng, (b, kvh, c["past"], d), "float32", c["v"])
    kk = k if pk is None else np.concatenate([pk, k], axis=2)
    vv = v if pv is None else np.concatenate([pv, v], axis=2)
    want = reference_rows(q, kk, vv, **kw)
    out = poisoned(want.shape, "float32")
    extra = {} if pk is None else dict(past_key=to_cuda(pk, "float32"), past_value=to_cuda(pv, "float32"))
    fastattn_onnx.attention(to_cuda(q, "float32"), to_cuda(k, "float32"), to_cuda(v, "float32"), **kw, **extra,
                            out=out)
    torch.cuda.synchronize()
    assert_close(to_host(out), want, "float32", unit=c["v"])
