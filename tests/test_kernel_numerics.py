"""Numerics of the CPU kernel (fastattn_onnx._kernels.attention) against tests/reference.py.

Cases form a pairwise covering set (every pair of option values appears in some case) built
greedily from a fixed seed, plus hand-picked edge cases. Inputs are fresh unit-variance random
values (never zeros); outputs are preallocated and poisoned with NaN before each run.
Tolerances: float32 max abs error <= 2e-5. float16/bfloat16 <= 2e-3 against the reference of
the same rounded inputs, plus the one unavoidable rounding of the output to its 16-bit type
(half an ulp of the reference value: up to 2^-8 relative for bfloat16).
"""
from __future__ import annotations

import itertools
import math
import os
import sys
import zlib

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from reference import attention_reference, from_4d  # noqa: E402

from fastattn_onnx import _kernels  # noqa: E402

try:
    import ml_dtypes

    BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # bfloat16 then travels as uint16 bits with dtype="bfloat16"
    BF16 = None

OPTIONS = {
    "batch": [1, 2, 3],
    "seq_q": [1, 7, 64, 257],
    "seq_kv": [1, 64, 300, 1031],
    "head_dim": [32, 64, 80, 128],
    "heads": [(8, 8), (8, 2), (8, 1)],
    "rank": [3, 4],
    "dtype": ["float32", "float16", "bfloat16"],
    "structure": ["none", "causal", "window", "causal+window"],
    "padding": ["none", "left", "right", "dead_batch", "random"],
    "mask_dtype": ["bool", "int32", "int64"],
    "bias": ["none", "full", "per_batch_key", "per_head", "per_row_key"],
    "softcap": [0.0, 30.0],
    "past": [0, 5, 300],
    "dv": ["same", "other"],
}


def pairwise_cases(options: dict, seed: int = 7, candidates: int = 60) -> list[dict]:
    """Greedy all-pairs covering set (AETG style): each new case covers the most uncovered pairs."""
    rng = np.random.default_rng(seed)
    names = list(options)
    uncovered = {
        ((a, i), (b, j))
        for a, b in itertools.combinations(names, 2)
        for i in range(len(options[a]))
        for j in range(len(options[b]))
    }
    cases = []
    while uncovered:
        best, best_gain = None, -1
        for _ in range(candidates):
            pick = {n: int(rng.integers(len(options[n]))) for n in names}
            # Seed the candidate with one uncovered pair so that progress is guaranteed.
            (a, i), (b, j) = min(uncovered) if _ == 0 else ((names[0], pick[names[0]]),) * 2
            pick[a], pick[b] = i, j
            gain = sum(((x, pick[x]), (y, pick[y])) in uncovered for x, y in itertools.combinations(names, 2))
            if gain > best_gain:
                best, best_gain = pick, gain
        for x, y in itertools.combinations(names, 2):
            uncovered.discard(((x, best[x]), (y, best[y])))
        cases.append({n: options[n][best[n]] for n in names})
    return cases


EDGE_CASES = [
    # A row of -inf bias everywhere, causal rows with no visible key (S_q > S_total), decode.
    dict(batch=2, seq_q=64, seq_kv=40, head_dim=64, heads=(8, 2), rank=4, dtype="float32", structure="causal",
         padding="none", mask_dtype="bool", bias="full_neg_inf_row", softcap=0.0, past=0, dv="same"),
    dict(batch=1, seq_q=1, seq_kv=1, head_dim=64, heads=(8, 8), rank=3, dtype="float32", structure="causal",
         padding="none", mask_dtype="bool", bias="none", softcap=0.0, past=1030, dv="same"),
    # Long causal with several key tiles per block and a tile straddling past/new.
    dict(batch=1, seq_q=257, seq_kv=257, head_dim=128, heads=(8, 1), rank=3, dtype="float32", structure="causal",
         padding="random", mask_dtype="int64", bias="per_row_key", softcap=0.0, past=300, dv="other"),
    dict(batch=3, seq_q=257, seq_kv=1031, head_dim=32, heads=(8, 2), rank=4, dtype="bfloat16", structure="window",
         padding="dead_batch", mask_dtype="int32", bias="full", softcap=30.0, past=0, dv="same"),
    # GQA with few query rows: the heads of a KV group stacked into one work item.
    dict(batch=2, seq_q=7, seq_kv=64, head_dim=64, heads=(8, 2), rank=4, dtype="float32", structure="causal+window",
         padding="random", mask_dtype="bool", bias="none", softcap=30.0, past=300, dv="other"),
    dict(batch=1, seq_q=1, seq_kv=1, head_dim=128, heads=(8, 1), rank=3, dtype="float32", structure="causal",
         padding="left", mask_dtype="int32", bias="none", softcap=0.0, past=1030, dv="same"),
    dict(batch=1, seq_q=64, seq_kv=300, head_dim=32, heads=(8, 4), rank=3, dtype="float16", structure="causal",
         padding="none", mask_dtype="bool", bias="none", softcap=0.0, past=5, dv="same"),
    # Four or more query blocks with far-apart (3D) or converted keys and values: packed once
    # per (batch, kv head), past and new rows together, in waves of pairs.
    dict(batch=2, seq_q=520, seq_kv=520, head_dim=64, heads=(8, 2), rank=3, dtype="float32", structure="causal",
         padding="left", mask_dtype="bool", bias="none", softcap=0.0, past=300, dv="other"),
    dict(batch=1, seq_q=600, seq_kv=600, head_dim=80, heads=(8, 8), rank=4, dtype="bfloat16", structure="window",
         padding="none", mask_dtype="bool", bias="per_head", softcap=0.0, past=5, dv="same"),
]

TOL = {"float32": 2e-5, "float16": 2e-3, "bfloat16": 2e-3}
HALF_ULP_REL = {"float32": 0.0, "float16": 2.0**-11, "bfloat16": 2.0**-8}


def np_dtype(name: str):
    if name == "bfloat16":
        return BF16 if BF16 is not None else np.dtype(np.uint16)
    return np.dtype(name)


def to_dtype(x: np.ndarray, name: str) -> np.ndarray:
    """float32 -> the kernel's storage dtype (bfloat16 without ml_dtypes: rounded bits in uint16)."""
    if name != "bfloat16" or BF16 is not None:
        return x.astype(np_dtype(name))
    u = x.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def to_f64(x: np.ndarray, name: str) -> np.ndarray:
    if name == "bfloat16" and BF16 is None:
        return (x.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return x.astype(np.float64)


def poisoned(shape, dtype) -> np.ndarray:
    """A C-contiguous output filled with NaN (the bfloat16 NaN bits for uint16)."""
    return np.full(shape, 0x7FC0, np.uint16) if dtype == np.uint16 else np.full(shape, np.nan, dtype)


def make_case(c: dict, rng: np.random.Generator):
    n, kvh = c["heads"]
    b, sq, skv, d, past = c["batch"], c["seq_q"], c["seq_kv"], c["head_dim"], c["past"]
    dv = d if c["dv"] == "same" else 40  # not a multiple of any vector width
    st = past + skv
    dt = c["dtype"]

    def randn(*shape):  # unit variance, never exactly zero
        x = rng.standard_normal(shape).astype(np.float32)
        x[x == 0] = 0.5
        return to_dtype(x, dt)

    def layout(x4):  # 4D [B, H, S, D] -> the case's rank (a view for 3D: then made contiguous)
        return np.ascontiguousarray(from_4d(x4, c["rank"]))

    q = layout(randn(b, n, sq, d))
    k = layout(randn(b, kvh, skv, d))
    v = layout(randn(b, kvh, skv, dv))
    kw = dict(num_heads=n, kv_num_heads=kvh, causal="causal" in c["structure"],
              window_size=int(rng.integers(3, 200)) if "window" in c["structure"] else -1,
              softcap=c["softcap"])
    if past:
        kw["past_key"], kw["past_value"] = randn(b, kvh, past, d), randn(b, kvh, past, dv)
    mask = None
    if c["padding"] != "none":
        mask = np.ones((b, st), dtype=bool)
        for bi in range(b):
            pad = int(rng.integers(0, st // 2 + 1)) if st > 1 else 0
            if c["padding"] == "left" and pad:
                mask[bi, :pad] = False
            elif c["padding"] == "right" and pad:
                mask[bi, st - pad:] = False
            elif c["padding"] == "random":
                mask[bi] = rng.random(st) < 0.7
        if c["padding"] == "dead_batch":
            mask[0] = False  # a fully masked batch: zeros
            if b > 1:
                mask[1] = rng.random(st) < 0.5
        kw["key_padding_mask"] = mask.astype({"bool": bool, "int32": np.int32, "int64": np.int64}[c["mask_dtype"]])
    shapes = {"full": (b, n, sq, st), "full_neg_inf_row": (b, n, sq, st), "per_batch_key": (b, 1, 1, st),
              "per_head": (n, 1, 1), "per_row_key": (sq, st)}
    if c["bias"] != "none":
        bias = rng.standard_normal(shapes[c["bias"]]).astype(np.float32)
        bias[rng.random(bias.shape) < 0.1] = -np.inf
        if c["bias"] == "per_head":
            bias[0] = -np.inf  # every key of head 0 hidden: zeros
        if c["bias"] == "full_neg_inf_row":
            bias[0, 1, 3, :] = -np.inf
            bias[-1, :, -1, :] = -np.inf
        kw["attn_bias"] = to_dtype(bias, dt)
    return q, k, v, kw


def run_case(c: dict, seed: int, num_threads: int = 2):
    rng = np.random.default_rng(seed)
    q, k, v, kw = make_case(c, rng)
    dt = c["dtype"]
    ref_kw = {key: (to_f64(val, dt) if key in ("past_key", "past_value", "attn_bias") else val) for key, val in kw.items()}
    ref_out, ref_pk, ref_pv = attention_reference(to_f64(q, dt), to_f64(k, dt), to_f64(v, dt), **ref_kw)
    extra = {}
    if BF16 is None and dt == "bfloat16":
        extra["dtype"] = "bfloat16"
    out, pk, pv = (poisoned(x.shape, q.dtype) for x in (ref_out, ref_pk, ref_pv))
    got = _kernels.attention(q, k, v, **kw, out=out, present_key=pk, present_value=pv, num_threads=num_threads, **extra)
    assert got[0] is out or np.shares_memory(got[0], out)
    got_out = to_f64(out, dt)
    assert np.isfinite(got_out).all(), "NaN/inf in the output (a row left unwritten?)"
    err = np.abs(got_out - ref_out)
    allowed = TOL[dt] + HALF_ULP_REL[dt] * np.abs(ref_out)
    worst = np.unravel_index(np.argmax(err - allowed), err.shape)
    assert (err <= allowed).all(), f"max abs error {err.max():.3g} (at {worst}: got {got_out[worst]}, want {ref_out[worst]})"
    # Presents are exact copies of concat(past, new).
    np.testing.assert_array_equal(to_f64(pk, dt), ref_pk)
    np.testing.assert_array_equal(to_f64(pv, dt), ref_pv)
    return out


def case_id(c: dict) -> str:
    return "-".join(f"{v[0]}x{v[1]}" if isinstance(v, tuple) else str(v) for v in c.values())


PAIRWISE = pairwise_cases(OPTIONS)


@pytest.mark.parametrize("case", PAIRWISE + EDGE_CASES, ids=case_id)
def test_matches_reference(case):
    run_case(case, seed=zlib.crc32(case_id(case).encode()))


def test_pairwise_set_is_small_and_covering():
    assert len(PAIRWISE) < 60
    for a, b in itertools.combinations(OPTIONS, 2):
        seen = {(c[a], c[b]) for c in PAIRWISE}
        assert len(seen) == len(OPTIONS[a]) * len(OPTIONS[b]), (a, b)


def test_thread_count_does_not_change_the_result():
    c = EDGE_CASES[2]
    one = run_case(c, seed=11, num_threads=1)
    two = run_case(c, seed=11, num_threads=2)
    np.testing.assert_array_equal(one, two)


def _causal_gqa_inputs(seed: int):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((1, 8, 300, 64), dtype=np.float32)
    k, v = (rng.standard_normal((1, 2, 300, 64), dtype=np.float32) for _ in range(2))
    want = attention_reference(q, k, v, causal=True)[0]
    return q, k, v, want


def test_python_threads_calling_at_once_each_get_their_own_result():
    """The binding's worker pool serves one call at a time; calls that find it busy run on
    their own threads. Every result must still be right."""
    import threading

    inputs = [_causal_gqa_inputs(seed) for seed in range(4)]
    errors: list[float] = []  # one per call; NaN (an unwritten output) compares as a failure
    start = threading.Barrier(len(inputs))

    def call(i: int) -> None:
        q, k, v, want = inputs[i]
        start.wait()
        for _ in range(3):
            out = np.full_like(q, np.nan)
            _kernels.attention(q, k, v, causal=True, num_threads=2, out=out)
            errors.append(float(np.abs(out - want).max()))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 3 * len(inputs) and all(e <= 2e-5 for e in errors), errors


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # the point
def test_forked_child_gets_its_own_worker_pool():
    """After fork the child has none of the parent's pool threads: a call there must build its
    own pool, not wait forever on the parent's."""
    import multiprocessing as mp

    q, k, v, want = _causal_gqa_inputs(5)
    _kernels.attention(q, k, v, causal=True, num_threads=2)  # the parent's pool exists now
    with mp.get_context("fork").Pool(1) as pool:
        out = pool.apply_async(_kernels.attention, (q, k, v), {"causal": True, "num_threads": 2}).get(timeout=120)
    assert float(np.abs(out - want).max()) <= 2e-5


def test_dtype_is_compared_by_value():
    """An unpickled array's dtype is a new object (accepted); big-endian float32 is not float32."""
    import pickle

    q, k, v, want = _causal_gqa_inputs(6)
    q2, k2, v2 = pickle.loads(pickle.dumps((q, k, v)))
    assert float(np.abs(_kernels.attention(q2, k2, v2, causal=True) - want).max()) <= 2e-5
    with pytest.raises(TypeError, match="dtype must be float32"):
        _kernels.attention(q.astype(">f4"), k, v, causal=True)


def test_uint16_bits_as_bfloat16():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 9, 32)).astype(np.float32)
    bits = ((x.view(np.uint32) + 0x7FFF + ((x.view(np.uint32) >> 16) & 1)) >> 16).astype(np.uint16)
    out = _kernels.attention(bits, bits, bits, dtype="bfloat16", num_threads=1)
    assert out.dtype == np.uint16
    xr = (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    ref, _, _ = attention_reference(xr, xr, xr)
    got = (out.astype(np.uint32) << 16).view(np.float32)
    assert np.abs(got - ref).max() <= 2e-3 + 2.0**-8 * np.abs(ref).max()


# ---- bad input: Python exceptions, never a crash ----

def _qkv(shape=(1, 2, 5, 8), dtype=np.float32):
    rng = np.random.default_rng(0)
    return [rng.standard_normal(shape).astype(dtype) for _ in range(3)]


BAD_INPUTS = {
    "query_2d": (lambda q, k, v: _kernels.attention(q[0, 0], k[0, 0], v[0, 0]), ValueError),
    "query_5d": (lambda q, k, v: _kernels.attention(q[None], k[None], v[None]), ValueError),
    "rank_mismatch": (lambda q, k, v: _kernels.attention(q, k[0], v), ValueError),
    "3d_without_num_heads": (lambda q, k, v: _kernels.attention(q[0], k[0], v[0]), ValueError),
    "3d_hidden_not_divisible": (lambda q, k, v: _kernels.attention(q[0], k[0], v[0], num_heads=3), ValueError),
    "heads_not_dividing": (lambda q, k, v: _kernels.attention(np.concatenate([q, q[:, :1]], 1), k, v), ValueError),
    "num_heads_disagrees": (lambda q, k, v: _kernels.attention(q, k, v, num_heads=4), ValueError),
    "head_dim_mismatch": (lambda q, k, v: _kernels.attention(q, k[..., :4], v), ValueError),
    "kv_length_mismatch": (lambda q, k, v: _kernels.attention(q, k, v[:, :, :3]), ValueError),
    "batch_mismatch": (lambda q, k, v: _kernels.attention(q, np.concatenate([k, k]), v), ValueError),
    "empty_query": (lambda q, k, v: _kernels.attention(q[:, :, :0], k, v), ValueError),
    "mixed_dtypes": (lambda q, k, v: _kernels.attention(q, k.astype(np.float16), v), TypeError),
    "int_dtype": (lambda q, k, v: _kernels.attention(q.astype(np.int32), k.astype(np.int32), v.astype(np.int32)), TypeError),
    "float64_dtype": (lambda q, k, v: _kernels.attention(q.astype(np.float64), k, v), TypeError),
    "not_an_array": (lambda q, k, v: _kernels.attention("q", k, v), TypeError),
    "mask_shape": (lambda q, k, v: _kernels.attention(q, k, v, key_padding_mask=np.ones((1, 4), bool)), ValueError),
    "mask_rank": (lambda q, k, v: _kernels.attention(q, k, v, key_padding_mask=np.ones((5,), bool)), ValueError),
    "mask_dtype": (lambda q, k, v: _kernels.attention(q, k, v, key_padding_mask=np.ones((1, 5), np.float32)), TypeError),
    "mask_object": (lambda q, k, v: _kernels.attention(q, k, v, key_padding_mask=object()), TypeError),
    "bias_shape": (lambda q, k, v: _kernels.attention(q, k, v, attn_bias=np.zeros((1, 2, 5, 4), np.float32)), ValueError),
    "bias_rank": (lambda q, k, v: _kernels.attention(q, k, v, attn_bias=np.zeros((1, 1, 1, 1, 5), np.float32)), ValueError),
    "bias_dtype": (lambda q, k, v: _kernels.attention(q, k, v, attn_bias=np.zeros((5,), np.float16)), TypeError),
    "past_key_only": (lambda q, k, v: _kernels.attention(q, k, v, past_key=k), ValueError),
    "past_shape": (lambda q, k, v: _kernels.attention(q, k, v, past_key=k[..., :4], past_value=v), ValueError),
    "out_shape": (lambda q, k, v: _kernels.attention(q, k, v, out=np.empty((1, 2, 5, 4), np.float32)), ValueError),
    "out_dtype": (lambda q, k, v: _kernels.attention(q, k, v, out=np.empty(q.shape, np.float16)), TypeError),
    "out_readonly": (lambda q, k, v: _kernels.attention(q, k, v, out=np.broadcast_to(np.float32(0), q.shape)), ValueError),
    "out_not_contiguous": (lambda q, k, v: _kernels.attention(q, k, v, out=np.empty((1, 2, 5, 16), np.float32)[..., ::2]), ValueError),
    "present_shape": (lambda q, k, v: _kernels.attention(q, k, v, present_key=np.empty((1, 2, 4, 8), np.float32)), ValueError),
    "negative_softcap": (lambda q, k, v: _kernels.attention(q, k, v, softcap=-1.0), ValueError),
    "nan_scale": (lambda q, k, v: _kernels.attention(q, k, v, scale=math.nan), ValueError),
    "bad_dtype_name": (lambda q, k, v: _kernels.attention(q, k, v, dtype="float8"), ValueError),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_raises(name):
    fn, exc = BAD_INPUTS[name]
    with pytest.raises(exc):
        fn(*_qkv())


def test_read_only_and_strided_inputs_are_accepted():
    q, k, v = _qkv((1, 2, 5, 16))
    q.setflags(write=False)
    out = _kernels.attention(q, k, v[..., ::2], num_threads=1)  # non-contiguous v: copied by the binding
    ref, _, _ = attention_reference(q, k, v[..., ::2])
    assert np.abs(out - ref).max() <= 2e-5


def test_every_compiled_isa_matches_reference():
    """Each compiled copy of the kernel (the ISA is picked once per process: a subprocess each)."""
    import subprocess

    script = (
        "import sys, numpy as np; sys.path.insert(0, %r)\n"
        "from test_kernel_numerics import run_case, EDGE_CASES, PAIRWISE\n"
        "for i, c in enumerate(EDGE_CASES + PAIRWISE[:6]): run_case(c, seed=i)\n"
        "from fastattn_onnx import _kernels; print(_kernels.cpu_isa())\n"
    ) % os.path.dirname(__file__)
    names = {"baseline": "baseline", "x86-64-v3": "avx2", "x86-64-v4": "avx512"}
    for compiled in _kernels.cpu_compiled_isas().split():
        if compiled not in names or (compiled == "x86-64-v4" and not _kernels.cpu_isa().startswith(compiled)):
            continue  # not selectable on this CPU
        env = dict(os.environ, FASTATTN_CPU_ISA=names[compiled])
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        print(compiled, "->", done.stdout.strip())


def test_reports_isa():
    assert _kernels.cpu_isa() in _kernels.cpu_compiled_isas() or _kernels.cpu_isa().split()[0] in _kernels.cpu_compiled_isas()
