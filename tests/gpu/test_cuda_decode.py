"""Decode on torch CUDA tensors: a few query rows (S_q = 1, 4, 16) over a long past (1 to 8191
keys), as the split-KV path runs it (key chunks merged by log-sum-exp; at S_q = 1 with GQA the
query heads of a group share one tile). Checked against the float64 reference like any other
case: the output to the float16 tolerance scheme, present_key / present_value exactly
(concat(past, new)), every output poisoned with NaN first.

Two sets: the full product S_q x past x heads (GQA 32/8, MQA 32/1, MHA 32/32) for each of float16,
bfloat16 and float32 (causal, D = 128, B = 2), and a pairwise covering set over those plus head
size 64/128, batch 2/3, 3D/4D query, window, left padding (a different number of leading keys
hidden per batch, up to whole rows with no visible key) and attn_bias shapes.
"""
from __future__ import annotations

import itertools
import os
import sys
import zlib

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference import from_4d  # noqa: E402
from test_kernel_numerics import pairwise_cases  # noqa: E402

import fastattn_onnx  # noqa: E402

torch = pytest.importorskip("torch")
from cuda_helpers import (CUDA_MARKS, assert_close, poisoned, randn, reference_rows, round_to,  # noqa: E402
                          to_cuda, to_host)

pytestmark = CUDA_MARKS

SEQ_Q = [1, 4, 16]
PAST = [1, 777, 4096, 8191]
HEADS = [(32, 8), (32, 1), (32, 32)]
DTYPES = ["float16", "bfloat16", "float32"]

BASE = dict(batch=2, head_dim=128, rank=4, structure="causal", padding="none", mask_dtype="bool", bias="none")
GRID = [dict(BASE, seq_q=sq, past=past, heads=heads, dtype=dt)
        for dt, sq, past, heads in itertools.product(DTYPES, SEQ_Q, PAST, HEADS)]

OPTIONS = {
    "seq_q": SEQ_Q,
    "past": PAST,
    "heads": HEADS,
    "dtype": DTYPES,
    "head_dim": [64, 128],
    "batch": [2, 3],
    "rank": [3, 4],
    "structure": ["causal", "causal+window", "none", "window"],
    "padding": ["none", "left"],
    "mask_dtype": ["bool", "int32", "int64"],
    "bias": ["none", "per_batch_key", "full", "per_head", "per_row_key"],
}
PAIRS = pairwise_cases(OPTIONS, seed=11)


def case_id(c: dict) -> str:
    h = c["heads"]
    return (f"{c['dtype']}-sq{c['seq_q']}-past{c['past']}-h{h[0]}x{h[1]}-d{c['head_dim']}-b{c['batch']}-r{c['rank']}-"
            f"{c['structure']}-pad_{c['padding']}-{c['mask_dtype']}-bias_{c['bias']}")


def make_decode_case(c: dict, rng: np.random.Generator):
    """Host inputs (float32 holding values of the case's dtype) in 4D, the call's keyword
    arguments (host arrays), and the reference's."""
    n, kvh = c["heads"]
    b, sq, past, d, dt = c["batch"], c["seq_q"], c["past"], c["head_dim"], c["dtype"]
    st = past + sq  # new keys: as many as the new query rows
    q = randn(rng, (b, n, sq, d), dt)
    k = randn(rng, (b, kvh, sq, d), dt)
    v = randn(rng, (b, kvh, sq, d), dt)
    pk = randn(rng, (b, kvh, past, d), dt)
    pv = randn(rng, (b, kvh, past, d), dt)
    kw = dict(causal="causal" in c["structure"],
              window_size=int(rng.choice([37, 700, 3000])) if "window" in c["structure"] else -1)
    if c["padding"] == "left":
        # Leading keys hidden, a different count per batch (none, ~37%, ~81%): causal rows at
        # positions below the count see no key at all (zeros) when the past is short.
        mask = np.ones((b, st), dtype=bool)
        for bi, frac in enumerate((0.0, 0.37, 0.81)[:b]):
            mask[bi, :int(round(frac * st))] = False
        kw["key_padding_mask"] = mask.astype({"bool": bool, "int32": np.int32, "int64": np.int64}[c["mask_dtype"]])
    shapes = {"per_batch_key": (b, 1, 1, st), "full": (b, n, sq, st), "per_head": (n, 1, 1), "per_row_key": (sq, st)}
    if c["bias"] != "none":
        bias = rng.standard_normal(shapes[c["bias"]]).astype(np.float32)
        bias[rng.random(bias.shape) < 0.1] = -np.inf
        kw["attn_bias"] = round_to(bias, dt)
    return q, k, v, pk, pv, kw


def run_decode_case(c: dict):
    rng = np.random.default_rng(zlib.crc32(case_id(c).encode()))
    q, k, v, pk, pv, kw = make_decode_case(c, rng)
    dt, rank, n, kvh = c["dtype"], c["rank"], *c["heads"]
    kk = np.concatenate([pk, k], axis=2)
    vv = np.concatenate([pv, v], axis=2)
    want = from_4d(reference_rows(q, kk, vv, **kw), rank)

    tq, tk, tv = (to_cuda(np.ascontiguousarray(from_4d(x, rank)), dt) for x in (q, k, v))
    tkw = {key: (to_cuda(val, dt) if isinstance(val, np.ndarray) else val) for key, val in kw.items()}
    out = poisoned(want.shape, dt)
    present_k, present_v = poisoned(kk.shape, dt), poisoned(vv.shape, dt)
    heads = dict(num_heads=n, kv_num_heads=kvh) if rank == 3 else {}
    got = fastattn_onnx.attention(tq, tk, tv, past_key=to_cuda(pk, dt), past_value=to_cuda(pv, dt), **heads, **tkw,
                                  out=out, present_key=present_k, present_value=present_v)
    assert got[0] is out and got[1] is present_k and got[2] is present_v
    torch.cuda.synchronize()
    assert_close(to_host(out), want, dt)
    np.testing.assert_array_equal(to_host(present_k), kk, err_msg="present_key")
    np.testing.assert_array_equal(to_host(present_v), vv, err_msg="present_value")


@pytest.mark.parametrize("case", GRID, ids=case_id)
def test_decode_grid(case):
    run_decode_case(case)


@pytest.mark.parametrize("case", PAIRS, ids=case_id)
def test_decode_pairwise(case):
    run_decode_case(case)


def test_decode_pairwise_set_covers_every_pair():
    assert len(PAIRS) < 40
    for a, b in itertools.combinations(OPTIONS, 2):
        seen = {(c[a], c[b]) for c in PAIRS}
        assert len(seen) == len(OPTIONS[a]) * len(OPTIONS[b]), (a, b)


def test_decode_allocates_its_own_presents():
    """return_present=True with nothing preallocated: the same results as preallocated outputs
    (the split-KV scratch must not depend on what the caller passed)."""
    c = dict(BASE, seq_q=1, past=4096, heads=(32, 8), dtype="float16")
    rng = np.random.default_rng(5)
    q, k, v, pk, pv, kw = make_decode_case(c, rng)
    args = [to_cuda(x, "float16") for x in (q, k, v)]
    past = dict(past_key=to_cuda(pk, "float16"), past_value=to_cuda(pv, "float16"))
    for _ in range(2):  # the second call reuses whatever the first left behind
        out, present_k, present_v = fastattn_onnx.attention(*args, **past, **kw, return_present=True)
        torch.cuda.synchronize()
        want = reference_rows(q, np.concatenate([pk, k], 2), np.concatenate([pv, v], 2), **kw)
        assert_close(to_host(out), want, "float16")
        np.testing.assert_array_equal(to_host(present_k), np.concatenate([pk, k], 2))
        np.testing.assert_array_equal(to_host(present_v), np.concatenate([pv, v], 2))
