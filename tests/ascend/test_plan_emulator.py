"""The Ascend plan (kernels/ascend/fia_plan.h, through fastattn_onnx.ascend.plan) against an
emulator of CANN's aclnnFusedInferAttentionScore as documented (tests/ascend/emulator.py).

For every node of a numerics grid: when the plan claims the node, running the emulator on the
plan's arguments (with the runtime's staging modelled: memory reinterpreted in the plan's layout,
past copied into present or scratch, pse materialised, masks from the plan's own builders) equals
the float64 reference of OUR contract (tests/reference.py) to 1e-9; when it declines, the reason's
tag is the one this file expects for that node. No NPU or CANN is involved: this proves the
mapping against the documented semantics only.

`python tests/ascend/test_plan_emulator.py` prints the claimed / declined feature table.
"""
from __future__ import annotations

import itertools
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from emulator import fused_infer_attention_score  # noqa: E402
from reference import attention_reference  # noqa: E402

from fastattn_onnx import _kernels, ascend  # noqa: E402

COMPRESSED = _kernels.ascend_compressed_mask()

# Repeated values weigh the draw (the declines and the rarer routes stay covered).
OPTIONS = {
    "batch": [1, 2, 3],
    "heads": [(4, 4), (4, 2), (4, 1), (6, 3)],
    "seq_q": [1, 3, 17, 64],
    "past": [0, 5, 33],
    "new_kv": ["same", 7],  # new key rows: S_q (self-attention) or 7 (cross / chunked)
    "head_dim": [16, 64, 80, 128],
    "structure": ["none", "causal", "window", "causal+window"],
    "window": [1, 4, 16],
    "padding": ["none", "none", "all_visible", "left", "left", "right", "holes", "dead_batch", "left_and_right"],
    "mask_dtype": ["bool", "int32", "int64"],
    "bias": ["none", "none", "none", "full", "batch1", "heads1", "rows_keys", "keys", "batch_keys"],
    "rank": [3, 4, 3, 4, "bsnd_view"],
    "dtype": ["float16", "bfloat16", "float16", "bfloat16", "float32", "float32_allowed"],
    "softcap": [0.0, 0.0, 0.0, 0.0, 0.0, 5.0],
    "present": [False, True],
    "scale": [None, 0.3],
}


def pairwise_cases(options, seed=18, tries=24):
    """A greedy covering set: each new case covers the most option pairs not yet seen."""
    rng = np.random.default_rng(seed)
    names = list(options)
    uncovered = {((a, i), (b, j)) for a, b in itertools.combinations(names, 2)
                 for i in range(len(options[a])) for j in range(len(options[b]))}
    cases = []
    while uncovered:
        best, best_gain = None, -1
        for _ in range(tries):
            pick = {n: int(rng.integers(len(options[n]))) for n in names}
            gain = sum(((a, pick[a]), (b, pick[b])) in uncovered for a, b in itertools.combinations(names, 2))
            if gain > best_gain:
                best, best_gain = pick, gain
        for a, b in itertools.combinations(names, 2):
            uncovered.discard(((a, best[a]), (b, best[b])))
        cases.append({n: options[n][best[n]] for n in names})
    return cases


def make_node(case, rng):
    """The node's tensors (float64 values of the case's dtype), as memory + logical views."""
    b, (n, kvh), sq, past, d = case["batch"], case["heads"], case["seq_q"], case["past"], case["head_dim"]
    dv = case.get("head_dim_v", d)
    skv = sq if case["new_kv"] == "same" else case["new_kv"]
    t = past + skv
    rank = case["rank"]

    def tensor(heads, s, dim):
        if rank == 3:
            mem = rng.standard_normal((b, s, heads * dim))
            return mem, mem
        if rank == "bsnd_view":  # a [B, H, S, D] view of [B, S, H, D] memory (BSH bytes)
            mem = rng.standard_normal((b, s, heads, dim))
            return mem, mem.transpose(0, 2, 1, 3)
        if rank == "sbhd_view":  # a view no operator layout describes
            mem = rng.standard_normal((s, b, heads, dim))
            return mem, mem.transpose(1, 2, 0, 3)
        mem = rng.standard_normal((b, heads, s, dim))
        return mem, mem

    node = {"q": tensor(n, sq, d), "k": tensor(kvh, skv, d), "v": tensor(kvh, skv, dv)}
    node["past_k"] = rng.standard_normal((b, kvh, past, d)) if past else None
    node["past_v"] = rng.standard_normal((b, kvh, past, dv)) if past else None
    bias_shapes = {"none": None, "full": (b, n, sq, t), "batch1": (1, n, sq, t), "heads1": (b, 1, sq, t),
                   "rows_keys": (sq, t), "keys": (t,), "batch_keys": (b, 1, 1, t)}
    shape = bias_shapes[case["bias"]]
    node["bias"] = None if shape is None else rng.standard_normal(shape)
    node["kpm"] = padding_mask(case, b, t, rng)
    node["kv_len"] = case.get("kv_len")
    return node


def padding_mask(case, b, t, rng):
    kind = case["padding"]
    if kind == "none":
        return None
    vis = np.ones((b, t), bool)
    for i in range(b):
        cut = int(rng.integers(1, t)) if t > 1 else 0
        if kind == "left" or (kind == "left_and_right" and i % 2 == 0):
            vis[i, :cut] = False
        elif kind == "right" or kind == "left_and_right":
            vis[i, t - cut:] = False
        elif kind == "holes":
            vis[i] = rng.random(t) < 0.6
            vis[i, int(rng.integers(t))] = True
        elif kind == "dead_batch" and i == b - 1:
            vis[i] = False
    dtype = {"bool": bool, "int32": np.int32, "int64": np.int64}[case["mask_dtype"]]
    return vis.astype(dtype)


def spec(dtype, x):
    """(dtype name, shape, element strides) of a float64 view standing for a tensor of `dtype`."""
    return (dtype, list(x.shape), [s // x.itemsize for s in x.strides])


def plan_of(case, node):
    dtype = "float32" if case["dtype"].startswith("float32") else case["dtype"]
    q, k, v = node["q"][1], node["k"][1], node["v"][1]
    n = case["heads"][0]
    return ascend.plan(
        spec(dtype, q), spec(dtype, k), spec(dtype, v), num_heads=n if q.ndim == 3 else None,
        kv_num_heads=case["heads"][1] if q.ndim == 3 else None, scale=case["scale"],
        causal=int("causal" in case["structure"]),
        window_size=case["window"] if "window" in case["structure"] else -1, softcap=case["softcap"],
        attn_bias=None if node["bias"] is None else spec(dtype, node["bias"]),
        key_padding_mask=node["kpm"],
        past_key=None if node["past_k"] is None else spec(dtype, node["past_k"]),
        past_value=None if node["past_v"] is None else spec(dtype, node["past_v"]),
        return_present=case["present"], kv_len=node["kv_len"],
        allow_low_precision=case["dtype"] == "float32_allowed",
        low_precision_dtype=case.get("low_precision_dtype", "float16"))


def expected_decline(case):
    """The tag the plan must give, in fia_plan.cc's order of checks; None: it must claim."""
    n, kvh = case["heads"]
    d, dv = case["head_dim"], case.get("head_dim_v", case["head_dim"])
    if case["softcap"] > 0:
        return "softcap"
    if case["dtype"] == "float32":
        return "float32"
    if dv != d:
        return "head_dim_v"
    if n // kvh > 64:
        return "head_ratio"
    if n > 256:
        return "num_heads"
    if d > 512 or (case["seq_q"] > 1 and d % 16):
        return "head_dim"
    # A strided 4D query is read in place only where its memory is also dense BNSD (the output,
    # dense BNSD as ONNX Runtime allocates it, must share the query's layout): at S_q = 1.
    if case["rank"] in ("bsnd_view", "sbhd_view") and case["seq_q"] > 1:
        return "layout"
    return None


def bnsd(x, heads):
    if x.ndim == 4:
        return x
    b, s, hd = x.shape
    return x.reshape(b, s, heads, hd // heads).transpose(0, 2, 1, 3)


def run_plan(case, node, p):
    """What the NPU runtime does with plan p (fia_plan.h, steps 1-7), on the emulated operator."""
    n, kvh = case["heads"]
    q_mem, q = node["q"]
    k_mem, k = node["k"]
    v_mem, v = node["v"]
    k4, v4 = bnsd(k, kvh), bnsd(v, kvh)
    if node["past_k"] is not None:
        k4 = np.concatenate([node["past_k"], k4], axis=2)
        v4 = np.concatenate([node["past_v"], v4], axis=2)
    if p["kv_source"] == "inputs":  # the node's own memory, read in the plan's layout
        assert node["past_k"] is None
        k_op, v_op = k_mem.reshape(p["key_shape"]), v_mem.reshape(p["value_shape"])
    elif p["kv_source"] == "present":  # present: dense [B, KVH, S_total, D] memory
        assert p["write_present"]
        k_op, v_op = np.ascontiguousarray(k4).reshape(p["key_shape"]), np.ascontiguousarray(v4).reshape(p["value_shape"])
    else:  # scratch written in the plan's layout
        if p["input_layout"] == "BNSD":
            k_op, v_op = k4, v4
        else:
            b, _, t, d = k4.shape
            k_op = k4.transpose(0, 2, 1, 3).reshape(b, t, kvh * d)
            v_op = v4.transpose(0, 2, 1, 3).reshape(b, t, kvh * v4.shape[3])
    pse = None
    if p["pse_shape"] is not None:
        bias = node["bias"].reshape((1,) * (4 - node["bias"].ndim) + node["bias"].shape)
        bp, _, sq, t = p["pse_shape"]
        pse = np.broadcast_to(bias, (q.shape[0], n, sq, t))[:bp]
    mask = {"none": None, "compressed": COMPRESSED}.get(p["mask"])
    if p["mask"] == "explicit":
        mask = p["explicit_mask"]
        assert list(mask.shape) == p["mask_shape"]
    kw = ascend.npu_call_kwargs(p)
    out = fused_infer_attention_score(
        q_mem.reshape(p["query_shape"]), k_op, v_op, pse_shift=pse, atten_mask=mask,
        actual_seq_lengths=kw["actual_seq_lengths"], actual_seq_lengths_kv=kw["actual_seq_lengths_kv"],
        kv_padding_size=p["kv_padding_size"], num_heads=kw["num_heads"], scale=kw["scale"],
        pre_tokens=kw["pre_tokens"], next_tokens=kw["next_tokens"], input_layout=kw["input_layout"],
        num_key_value_heads=kw["num_key_value_heads"], sparse_mode=kw["sparse_mode"],
        inner_precise=kw["inner_precise"], dtype=p["compute_dtype"])
    out = np.array(out)
    out[p["zero_out_batches"]] = 0.0  # step 8: the runtime zeroes decode batches with no visible key
    # The output buffer is the node's dense output, read back in the node's shape.
    out_shape = q.shape[:-1] + (v.shape[-1] // kvh * n,) if q.ndim == 3 else q.shape[:3] + (v.shape[-1],)
    return np.ascontiguousarray(out).reshape(out_shape)


def contract_scale(case):
    """The contract's resolved scale is a float32 (AttentionParams.scale), as scaleValue receives it."""
    d = case["head_dim"]
    return float(np.float32(1 / np.sqrt(d) if case["scale"] is None else case["scale"]))


def reference_of(case, node):
    n, kvh = case["heads"]
    q, k, v = node["q"][1], node["k"][1], node["v"][1]
    if node["kv_len"] is not None:
        return reference_kv_len(case, node)
    out, _, _ = attention_reference(
        q, k, v, num_heads=n, kv_num_heads=kvh, scale=contract_scale(case), causal="causal" in case["structure"],
        window_size=case["window"] if "window" in case["structure"] else -1, softcap=case["softcap"],
        attn_bias=node["bias"], key_padding_mask=node["kpm"], past_key=node["past_k"], past_value=node["past_v"])
    return out


def reference_kv_len(case, node):
    """Our contract with GroupQueryAttention's kv_len (attention_params.h): keys j >= kv_len[b]
    hidden; a query row at or past kv_len[b] takes position kv_len[b] - 1 for causal/window."""
    n, kvh = case["heads"]
    q = bnsd(node["q"][1], n)
    k, v = bnsd(node["k"][1], kvh), bnsd(node["v"][1], kvh)
    if node["past_k"] is not None:
        k = np.concatenate([node["past_k"], k], axis=2)
        v = np.concatenate([node["past_v"], v], axis=2)
    b, _, sq, d = q.shape
    t = k.shape[2]
    out = np.zeros((b, n, sq, v.shape[3]))
    scale = contract_scale(case)
    w = case["window"] if "window" in case["structure"] else -1
    for bi in range(b):
        kl = node["kv_len"][bi]
        pos = np.minimum(np.arange(sq) + t - sq, kl - 1)[:, None]
        j = np.arange(t)[None, :]
        vis = j < kl
        if node["kpm"] is not None:
            vis = vis & (node["kpm"][bi] != 0)[None, :]
        if "causal" in case["structure"]:
            vis = vis & (j <= pos)
        if w > 0:
            vis = vis & (pos - j < w)
            if "causal" not in case["structure"]:
                vis = vis & (j - pos < w)
        vis = np.broadcast_to(vis, (sq, t))
        for h in range(n):
            s = scale * q[bi, h] @ k[bi, h // (n // kvh)].T
            s = np.where(vis, s, -np.inf)
            for i in range(sq):
                if vis[i].any():
                    e = np.exp(s[i] - s[i].max())
                    out[bi, h, i] = (e / e.sum()) @ v[bi, h // (n // kvh)]
    return out if node["q"][1].ndim == 4 else out.transpose(0, 2, 1, 3).reshape(b, sq, -1)


def check_case(case, seed):
    rng = np.random.default_rng(seed)
    node = make_node(case, rng)
    p = plan_of(case, node)
    want = expected_decline(case)
    if want is not None:
        assert p["reason"].split(":")[0] == want, (case, p["reason"])
        return p
    assert p["reason"] == "", (case, p["reason"])
    assert p["write_present"] == case["present"]
    assert p["compute_dtype"] == (case.get("low_precision_dtype", "float16") if case["dtype"] == "float32_allowed"
                                  else case["dtype"])
    assert p["cast_inputs"] == (case["dtype"] == "float32_allowed")
    got = run_plan(case, node, p)
    ref = reference_of(case, node)
    assert got.shape == ref.shape
    err = np.max(np.abs(got - ref)) if got.size else 0.0
    assert err <= 1e-9, (case, p["describe"], err)
    return p


def random_cases(options, count, seed=180):
    rng = np.random.default_rng(seed)
    return [{n: vals[int(rng.integers(len(vals)))] for n, vals in options.items()} for _ in range(count)]


GRID = pairwise_cases(OPTIONS) + random_cases(OPTIONS, 400)


def test_grid_claims_match_reference_and_declines_name_their_reason():
    declined, routes = {}, set()
    for idx, case in enumerate(GRID):
        p = check_case(case, 1000 + idx)
        if p["reason"]:
            declined.setdefault(p["reason"].split(":")[0], p["reason"])
        else:
            routes.add((p["sparse_mode"], p["mask"], p["kv_padding_size"] is not None,
                        bool(p["actual_seq_lengths_kv"]), p["inner_precise"]))
    # The grid reaches every route of the plan, and declines only for the expected reasons.
    assert {r[:2] for r in routes} >= {(0, "none"), (3, "compressed"), (4, "compressed"), (0, "explicit")}
    assert any(r[2] for r in routes) and any(r[3] and not r[2] for r in routes)
    assert any(r[4] == 2 for r in routes) and any(r[4] == 0 for r in routes)
    assert set(declined) == {"softcap", "float32", "layout"}, declined


BASE = dict(batch=2, heads=(4, 2), seq_q=17, past=5, new_kv="same", head_dim=64, structure="causal", window=4,
            padding="none", mask_dtype="bool", bias="none", rank=4, dtype="float16", softcap=0.0, present=True,
            scale=None)


def edge(**kw):
    return {**BASE, **kw}


EDGES = [
    # declines, each with its one reason
    edge(softcap=30.0),
    edge(dtype="float32"),
    edge(head_dim_v=32),
    edge(heads=(66, 1), head_dim=16),
    edge(heads=(258, 258), head_dim=16, batch=1, seq_q=3, past=0),
    edge(head_dim=576, batch=1, seq_q=3, past=0, heads=(2, 2)),
    edge(head_dim=72),
    edge(head_dim=40, seq_q=3),
    edge(rank="sbhd_view"),
    # claims at the limits of the operator and of the mapping
    edge(head_dim=72, seq_q=1),                       # decode has no multiple-of-16 rule
    edge(heads=(64, 1), head_dim=16, seq_q=3),         # ratio 64 exactly
    edge(dtype="float32_allowed", low_precision_dtype="bfloat16"),
    edge(seq_q=64, past=0, new_kv=7),                  # causal with S_q > S_total: rows with no key
    edge(structure="window", window=1, seq_q=17),      # a window of one key
    edge(structure="causal+window", window=3, padding="left", seq_q=17),
    edge(structure="causal", padding="left", bias="full"),   # pse with left padding: explicit mask
    edge(structure="causal", padding="right", seq_q=17),     # causal + right padding: explicit mask
    edge(structure="none", padding="right", bias="full"),    # right padding with pse: lengths only
    edge(structure="none", padding="left"),                  # left padding: kvPaddingSize
    edge(structure="window", window=4, seq_q=1, padding="right"),  # decode window + right padding
    edge(structure="window", window=4, seq_q=1, padding="dead_batch"),
    edge(structure="causal", seq_q=1, rank=3, past=33),     # 3D decode with past: BNSD == BSH memory
    edge(structure="causal", seq_q=17, rank=3, past=33),    # 3D prefill with past: scratch in BSH
    edge(rank="bsnd_view", past=0, seq_q=1),                # transposed 4D view at decode: dense BNSD too
    edge(kv_len=[20, 9], structure="causal", seq_q=3, past=19, new_kv="same"),
    edge(kv_len=[21, 0], structure="window", window=4, seq_q=1, past=20, padding="none"),
    edge(kv_len=[15, 22], structure="none", seq_q=17, past=5),
]


@pytest.mark.parametrize("case", EDGES, ids=[str(i) for i in range(len(EDGES))])
def test_edges(case):
    check_case(case, 7)


def test_plan_routes_named():
    """The routes the notes' table proposes, asserted on the plan itself."""
    rng = np.random.default_rng(3)
    p = plan_of(edge(), make_node(edge(), rng))
    assert (p["sparse_mode"], p["mask"], p["mask_shape"]) == (3, "compressed", [2048, 2048])
    c = edge(structure="causal+window", window=8)
    p = plan_of(c, make_node(c, rng))
    assert (p["sparse_mode"], p["pre_tokens"], p["next_tokens"]) == (4, 7, 0)  # window W: pre = W - 1
    c = edge(structure="window", window=8)
    p = plan_of(c, make_node(c, rng))
    assert (p["sparse_mode"], p["pre_tokens"], p["next_tokens"]) == (4, 7, 7)
    c = edge(structure="causal+window", window=8, seq_q=1, past=33)
    p = plan_of(c, make_node(c, rng))
    assert (p["sparse_mode"], p["mask"], p["kv_padding_size"], p["actual_seq_lengths_kv"]) == (0, "none", 0, [8, 8])
    c = edge(structure="none", padding="right")
    node = make_node(c, rng)
    p = plan_of(c, node)
    assert p["actual_seq_lengths_kv"] == [int(x) for x in (node["kpm"] != 0).sum(axis=1)]
    assert p["kv_padding_size"] is None


def test_compressed_mask_is_triu():
    assert COMPRESSED.shape == (2048, 2048) and COMPRESSED.dtype == np.uint8
    assert np.array_equal(COMPRESSED, np.triu(np.ones((2048, 2048), np.uint8), 1))


def test_npu_call_kwargs():
    """The keyword arguments attention_npu passes to torch_npu.npu_fused_infer_attention_score."""
    rng = np.random.default_rng(5)
    c = edge(structure="none", padding="right", seq_q=17)
    p = plan_of(c, make_node(c, rng))
    kw = ascend.npu_call_kwargs(p)
    assert set(kw) == {"num_heads", "scale", "pre_tokens", "next_tokens", "input_layout", "num_key_value_heads",
                       "sparse_mode", "inner_precise", "actual_seq_lengths", "actual_seq_lengths_kv"}
    assert kw["num_heads"] == 4 and kw["num_key_value_heads"] == 2 and kw["input_layout"] == "BNSD"
    assert kw["scale"] == pytest.approx(1 / 8) and kw["actual_seq_lengths"] is None
    assert kw["actual_seq_lengths_kv"] == p["actual_seq_lengths_kv"] and len(kw["actual_seq_lengths_kv"]) == 2
    assert (kw["pre_tokens"], kw["next_tokens"], kw["sparse_mode"]) == (2147483647, 2147483647, 0)
    with pytest.raises(ValueError, match="softcap"):
        c = edge(softcap=2.0)
        ascend.npu_call_kwargs(plan_of(c, make_node(c, rng)))


def test_bad_plan_inputs_are_errors():
    q = ("float16", [2, 4, 3, 64])
    k = ("float16", [2, 2, 3, 64])
    with pytest.raises(ValueError, match="key_visible"):
        _kernels.ascend_plan({"causal": 1}, [q, k, k, None, ("bool", [2, 3])], key_visible=None)
    with pytest.raises(ValueError, match=r"\[B, S_total\]"):
        ascend.plan(q, k, k, key_padding_mask=np.ones((2, 4), bool))
    with pytest.raises(ValueError, match="kv_len"):
        ascend.plan(q, k, k, kv_len=[3])
    with pytest.raises(ValueError, match="low_precision_dtype"):
        ascend.plan(q, k, k, low_precision_dtype="float32")


# Features of the contract, each with a probe node: the table's rows (`python <this file>`).
FEATURES = [
    ("4D [B, N, S, D] inputs", edge(structure="none")),
    ("3D [B, S, N*D] inputs", edge(structure="none", rank=3, past=0)),
    ("4D view of [B, S, N, D] memory, S_q > 1", edge(structure="none", rank="bsnd_view", past=0)),
    ("4D view of [B, S, N, D] memory, decode", edge(rank="bsnd_view", seq_q=1)),
    ("GQA / MQA (ratio <= 64)", edge(heads=(8, 1))),
    ("ratio > 64", edge(heads=(66, 1), head_dim=16)),
    ("past_key / past_value, present", edge()),
    ("3D prefill with past", edge(rank=3, past=33)),
    ("causal", edge(past=0)),
    ("causal with past (bottom-right)", edge()),
    ("causal, S_q > S_total", edge(seq_q=64, past=0, new_kv=7)),
    ("window, not causal", edge(structure="window", window=4)),
    ("causal + window", edge(structure="causal+window", window=4)),
    ("decode (S_q = 1), causal", edge(seq_q=1, past=33)),
    ("decode, window", edge(seq_q=1, past=33, structure="causal+window", window=4)),
    ("key_padding_mask, left padding", edge(padding="left")),
    ("key_padding_mask, right padding, no causal", edge(structure="none", padding="right")),
    ("key_padding_mask, right padding, causal prefill", edge(padding="right")),
    ("key_padding_mask, right padding, decode", edge(padding="right", seq_q=1)),
    ("key_padding_mask with holes", edge(padding="holes")),
    ("fully masked batch", edge(padding="dead_batch")),
    ("attn_bias (any broadcast)", edge(bias="batch_keys")),
    ("attn_bias + left padding", edge(bias="full", padding="left")),
    ("kv_len (GroupQueryAttention), causal prefill", edge(kv_len=[20, 9], seq_q=3, past=19)),
    ("float16 / bfloat16", edge(dtype="bfloat16")),
    ("float32", edge(dtype="float32")),
    ("float32, allow_low_precision", edge(dtype="float32_allowed")),
    ("softcap", edge(softcap=30.0)),
    ("Dv != D", edge(head_dim_v=32)),
    ("D not a multiple of 16, S_q > 1", edge(head_dim=72)),
    ("D not a multiple of 16, decode", edge(head_dim=72, seq_q=1)),
    ("D > 512", edge(head_dim=576, batch=1, seq_q=3, past=0, heads=(2, 2))),
]
NOT_PROBED = [  # declined by fia_plan.cc's static_decline; the FastAttention op cannot express them
    ("rotary (GroupQueryAttention do_rotary)", "declined", "rotary: not planned"),
    ("in-place KV cache (kv_capacity / past_len)", "declined", "kv_capacity: not planned"),
    ("smooth_softmax / head_sink", "declined", "sink: not in operator V1"),
]


def feature_table():
    rows = ["| feature | on the NPU | how / why |", "|---|---|---|"]
    for name, case in FEATURES:
        p = check_case(case, 11)
        if p["reason"]:
            rows.append(f"| {name} | declined | {p['reason']} |")
        else:
            rows.append(f"| {name} | claimed | {p['describe'].replace('aclnnFusedInferAttentionScore ', '')} |")
    rows += [f"| {a} | {b} | {c} |" for a, b, c in NOT_PROBED]
    return "\n".join(rows)


def test_feature_table_probes_pass():
    """Every probe of the table is checked like a grid case (claims equal the reference)."""
    assert feature_table().count("\n") == len(FEATURES) + len(NOT_PROBED) + 1


if __name__ == "__main__":
    print(feature_table())


def test_plan_reads_arrays_and_torch_tensors_like_specs():
    """plan() describes NumPy arrays and torch tensors (dtype, dims, element strides) as specs."""
    torch = pytest.importorskip("torch")
    mem = np.zeros((2, 17, 4, 64), np.float16)  # [B, S, N, D] memory
    view = mem.transpose(0, 2, 1, 3)
    k = np.zeros((2, 2, 17, 64), np.float16)
    by_spec = ascend.plan(spec("float16", view.astype(np.float64)), ("float16", [2, 2, 17, 64]),
                          ("float16", [2, 2, 17, 64]), causal=1)
    assert ascend.plan(view, k, k, causal=1) == by_spec
    assert ascend.plan(torch.from_numpy(mem).transpose(1, 2), torch.from_numpy(k), torch.from_numpy(k), causal=1) == by_spec
    assert by_spec["reason"].startswith("layout")
    mask = torch.ones(2, 17, dtype=torch.bool)
    mask[1, :5] = False
    p = ascend.plan(torch.from_numpy(k.repeat(2, axis=1)), torch.from_numpy(k), torch.from_numpy(k), causal=1,
                    key_padding_mask=mask)
    assert (p["sparse_mode"], p["kv_padding_size"], p["actual_seq_lengths_kv"]) == (3, 0, [17, 12])
