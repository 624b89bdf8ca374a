"""Random but valid FastAttention problems (shapes, dtypes, attributes, masks, NaN/inf placement),
shared by the ONNX Runtime families and the binding family. A spec is plain JSON; its arrays are
made from spec["data_seed"] when the case runs."""
from __future__ import annotations

import math
import random

import numpy as np

from reference import visible_keys

HEAD_SIZES = [1, 2, 3, 4, 5, 7, 8, 12, 16, 24, 32, 33, 48, 64, 80, 96, 128, 160, 256]
SEQS = [1, 1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 32, 63, 64, 100, 127, 128, 129, 130, 200, 256, 257, 300]
PASTS = [0, 0, 0, 0, 1, 3, 17, 64, 128, 131]
NONFINITE_WHERE = ["key_hidden", "key_hidden", "value_hidden", "past_hidden", "key_any", "value_any", "query",
                   "query", "query", "bias_hidden", "bias_any", "bias_row_neg_inf", "mask_hides_nan_everything"]
MAX_COST = 3_000_000  # B * H * S_q * S_total * (D + Dv): keeps the float64 reference quick


def _shrink(spec: dict) -> None:
    def cost():
        return spec["B"] * spec["H"] * spec["Sq"] * (spec["Skv"] + spec["Sp"]) * (spec["D"] + spec["Dv"])
    while cost() > MAX_COST:
        biggest = max(("Sq", "Skv", "Sp"), key=lambda n: spec[n])
        spec[biggest] = max(1 if biggest != "Sp" else 0, spec[biggest] // 2)


def make_spec(r: random.Random, zero_sizes: bool = False, nonfinite: bool = False,
              dtypes=("float32", "float32", "float32", "float16", "bfloat16")) -> dict:
    kvh = r.choice([1, 1, 2, 2, 3, 4])
    group = r.choice([1, 1, 2, 3, 4])
    heads = min(kvh * group, 12)
    group = max(1, heads // kvh)
    heads = kvh * group
    d = r.choice(HEAD_SIZES)
    dv = d if r.random() < 0.75 else r.choice(HEAD_SIZES)
    s_q = r.choice(SEQS)
    s_kv = s_q if r.random() < 0.4 else r.choice(SEQS)
    spec = {
        "layout": r.choice(["3d", "4d"]), "B": r.choice([1, 1, 1, 2, 3]), "Sq": s_q, "Skv": s_kv,
        "Sp": r.choice(PASTS), "H": heads, "KVH": kvh, "D": d, "Dv": dv, "dtype": r.choice(dtypes),
        "present": r.random() < 0.3, "magnitude": r.choice([1.0] * 6 + [4.0, 16.0]),
        "data_seed": r.randrange(2**31),
    }
    _shrink(spec)
    attrs = {}
    if spec["layout"] == "3d" or r.random() < 0.3:
        attrs["num_heads"] = heads
        if kvh != heads or r.random() < 0.5:
            attrs["kv_num_heads"] = kvh
    if r.random() < 0.5:
        attrs["causal"] = r.choice([0, 1, 1])
    if r.random() < 0.35:
        attrs["window_size"] = r.choice([-1, 1, 2, 3, 5, 16, 100, 1000, 2**40])
    if r.random() < 0.25:
        attrs["softcap"] = r.choice([0.0, 1e-3, 1.0, 5.0, 30.0, 50.0, 1e6])
    if r.random() < 0.3:
        attrs["scale"] = r.choice([0.05, 0.125, 0.3, 1.0, 2.0, -0.5, 0.0, 1e-6])
    spec["attrs"] = attrs
    s_total = spec["Skv"] + spec["Sp"]
    spec["bias"] = None
    if r.random() < 0.35:
        b, h, sq = spec["B"], heads, spec["Sq"]
        spec["bias"] = r.choice([[s_total], [sq, s_total], [1, s_total], [h, 1, s_total], [b, 1, 1, s_total],
                                 [1, h, sq, s_total], [b, h, sq, s_total], [1, 1, 1, 1], [sq, 1], [b, 1, sq, 1]])
    spec["kpm"] = None
    if r.random() < 0.4:
        spec["kpm"] = {"dtype": r.choice(["bool", "int32", "int64"]),
                       "pattern": r.choice(["random", "left", "right", "dead_batch", "ones", "odd_values"])}
    spec["nonfinite"] = None
    if nonfinite:
        where = r.choice(NONFINITE_WHERE)
        value = r.choice(["nan", "nan", "inf", "-inf"])
        if where in ("key_hidden", "value_hidden", "past_hidden", "bias_hidden", "mask_hides_nan_everything") \
                and spec["kpm"] is None:
            spec["kpm"] = {"dtype": r.choice(["bool", "int32", "int64"]),
                           "pattern": r.choice(["random", "left", "right", "dead_batch"])}
        if where == "past_hidden" and spec["Sp"] == 0:
            spec["Sp"] = r.choice([1, 3, 17, 64])
        if where.startswith("bias") and spec["bias"] is None:
            spec["bias"] = [spec["B"], heads, spec["Sq"], s_total if where != "past_hidden" else s_total]
        if where == "bias_row_neg_inf":
            value = "-inf"
        spec["nonfinite"] = {"where": where, "value": value, "count": r.choice([1, 1, 2, 5, 50])}
        _shrink(spec)
        if spec["bias"] is not None:  # sizes may have shrunk: keep the bias broadcastable
            spec["bias"] = _fit_bias(spec["bias"], spec)
    if zero_sizes:
        which = r.choice(["B", "Sq", "Skv", "Skv_no_past", "Sp_and_Skv", "D", "Dv"])
        if which == "B":
            spec["B"] = 0
        elif which == "Sq":
            spec["Sq"] = 0
        elif which == "Skv":
            spec["Skv"] = 0
            spec["Sp"] = spec["Sp"] or r.choice([1, 5])
        elif which == "Skv_no_past":
            spec["Skv"], spec["Sp"] = 0, 0
        elif which == "Sp_and_Skv":
            spec["Skv"] = 0
        elif which == "D":
            spec["D"] = 0
        else:
            spec["Dv"] = 0
        spec["zero"] = which
        if spec["bias"] is not None:
            spec["bias"] = _fit_bias(spec["bias"], spec)
    return spec


def _fit_bias(shape: list, spec: dict) -> list:
    """The same broadcast pattern for the spec's (possibly changed) sizes."""
    s_total = spec["Skv"] + spec["Sp"]
    full = [spec["B"], spec["H"], spec["Sq"], s_total]
    out = []
    for i, dim in enumerate(shape):
        axis = 4 - len(shape) + i
        out.append(1 if dim == 1 and full[axis] != 1 else full[axis])
    return out


def heads_of(spec: dict) -> tuple[int, int]:
    return spec["H"], spec["KVH"]


def input_shapes(spec: dict) -> dict:
    b, sq, skv, sp, h, kvh, d, dv = (spec[n] for n in ("B", "Sq", "Skv", "Sp", "H", "KVH", "D", "Dv"))
    if spec["layout"] == "3d":
        shapes = {"query": [b, sq, h * d], "key": [b, skv, kvh * d], "value": [b, skv, kvh * dv]}
    else:
        shapes = {"query": [b, h, sq, d], "key": [b, kvh, skv, d], "value": [b, kvh, skv, dv]}
    if spec.get("bias") is not None:
        shapes["attn_bias"] = list(spec["bias"])
    if spec.get("kpm") is not None:
        shapes["key_padding_mask"] = [b, skv + sp]
    if sp:
        shapes["past_key"] = [b, kvh, sp, d]
        shapes["past_value"] = [b, kvh, sp, dv]
    return shapes


def output_shapes(spec: dict) -> list:
    b, sq, skv, sp, h, kvh, d, dv = (spec[n] for n in ("B", "Sq", "Skv", "Sp", "H", "KVH", "D", "Dv"))
    out = [[b, sq, h * dv] if spec["layout"] == "3d" else [b, h, sq, dv]]
    if spec.get("present"):
        out += [[b, kvh, skv + sp, d], [b, kvh, skv + sp, dv]]
    return out


def round_to(x: np.ndarray, dtype: str) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if dtype == "float16":
        with np.errstate(over="ignore"):
            return x.astype(np.float16).astype(np.float32)
    if dtype == "bfloat16":
        u = x.view(np.uint32).astype(np.uint64)
        nan = np.isnan(x)
        u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
        r = u.astype(np.uint32).view(np.float32)
        return np.where(nan, np.float32(np.nan), r)
    return x


def _mask(spec: dict, rng: np.random.Generator) -> np.ndarray:
    b, s_total = spec["B"], spec["Skv"] + spec["Sp"]
    kind, pattern = spec["kpm"]["dtype"], spec["kpm"]["pattern"]
    m = np.ones((b, s_total), np.int64)
    for i in range(b):
        if s_total == 0:
            break
        if pattern == "random":
            m[i] = rng.random(s_total) > 0.35
        elif pattern == "left":
            m[i, : rng.integers(0, s_total)] = 0
        elif pattern == "right":
            m[i, rng.integers(1, s_total + 1):] = 0
        elif pattern == "dead_batch" and i == b - 1:
            m[i] = 0
        elif pattern == "odd_values":
            m[i] = rng.choice([0, 1, 2, -1, 7, 2**31 - 1 if kind == "int32" else 2**40], size=s_total)
        if pattern != "dead_batch" and pattern != "odd_values" and i == 0 and not m[i].any():
            m[i, -1] = 1
    if kind == "bool":
        return m != 0
    if kind == "int32":
        return np.clip(m, -(2**31), 2**31 - 1).astype(np.int32)
    return m


def structure_visibility(spec: dict, mask) -> np.ndarray:
    """[B, S_q, S_total] bool: which keys each query row may see (causal, window, mask)."""
    a = spec["attrs"]
    s_total = spec["Skv"] + spec["Sp"]
    vis = visible_keys(spec["Sq"], s_total, bool(a.get("causal", 0)), a.get("window_size", -1))
    vis = np.broadcast_to(vis, (spec["B"], spec["Sq"], s_total)).copy()
    if mask is not None:
        vis &= (np.asarray(mask) != 0)[:, None, :]
    return vis


def make_inputs(spec: dict) -> dict:
    """float32 arrays rounded to the spec's dtype (so the reference sees what the kernel sees),
    the key_padding_mask in its own dtype, and the non-finite values placed."""
    rng = np.random.default_rng(spec["data_seed"])
    dtype = spec["dtype"]
    inputs = {}
    for name, shape in input_shapes(spec).items():
        if name == "key_padding_mask":
            inputs[name] = _mask(spec, rng)
            continue
        x = rng.standard_normal(shape).astype(np.float32)
        if name in ("query", "key", "past_key"):
            x *= np.float32(math.sqrt(spec.get("magnitude", 1.0)))
        inputs[name] = x
    nf = spec.get("nonfinite")
    if nf:
        _place_nonfinite(spec, inputs, nf, rng)
    for name in list(inputs):
        if name != "key_padding_mask":
            inputs[name] = round_to(inputs[name], dtype)
    return inputs


def _key_slot(spec: dict, b: int, kvh: int, j: int):
    """(array name, index of key j's row) in the spec's layout."""
    sp, d_kv = spec["Sp"], None
    if j < sp:
        return "past", (b, kvh, j)
    j -= sp
    if spec["layout"] == "3d":
        return "new3d", (b, j, kvh)
    return "new", (b, kvh, j)


def _put_key_value(spec, inputs, which, b, kvh, j, value, rng):
    kind, idx = _key_slot(spec, b, kvh, j)
    d = spec["D"] if which == "key" else spec["Dv"]
    if d == 0:
        return
    col = int(rng.integers(0, d))
    if kind == "past":
        inputs["past_key" if which == "key" else "past_value"][idx + (col,)] = value
    elif kind == "new":
        inputs[which][idx + (col,)] = value
    else:
        b_, j_, h_ = idx
        inputs[which][b_, j_, h_ * d + col] = value


def _place_nonfinite(spec: dict, inputs: dict, nf: dict, rng: np.random.Generator) -> None:
    value = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}[nf["value"]]
    where, count = nf["where"], nf["count"]
    b, kvh_n, s_total = spec["B"], spec["KVH"], spec["Skv"] + spec["Sp"]
    if b == 0 or s_total == 0 or spec["Sq"] == 0:
        return
    vis = structure_visibility(spec, inputs.get("key_padding_mask"))  # [B, Sq, St]
    hidden_all = ~vis.any(axis=1)  # [B, St]: keys no row of the batch sees
    if where == "mask_hides_nan_everything":
        # Every key of the batch hidden by the mask; K and V all NaN: the rows give zeros.
        if "key_padding_mask" in inputs:
            bi = int(rng.integers(0, b))
            inputs["key_padding_mask"][bi] = 0
            for name in ("key", "value", "past_key", "past_value"):
                if name in inputs:
                    inputs[name][bi] = np.nan
        return
    for _ in range(count):
        if where in ("key_hidden", "value_hidden", "past_hidden", "bias_hidden"):
            slots = np.argwhere(hidden_all)
            if where == "past_hidden":
                slots = slots[slots[:, 1] < spec["Sp"]]
            if len(slots) == 0:
                slots = np.argwhere(np.ones_like(hidden_all))
            bi, j = (int(x) for x in slots[rng.integers(0, len(slots))])
        else:
            bi, j = int(rng.integers(0, b)), int(rng.integers(0, s_total))
        kvh = int(rng.integers(0, kvh_n))
        if where in ("key_hidden", "key_any", "past_hidden"):
            _put_key_value(spec, inputs, "key", bi, kvh, j, value, rng)
        elif where in ("value_hidden", "value_any"):
            _put_key_value(spec, inputs, "value", bi, kvh, j, value, rng)
        elif where == "query":
            q = inputs["query"]
            i = int(rng.integers(0, spec["Sq"]))
            h = int(rng.integers(0, spec["H"]))
            if spec["D"]:
                col = int(rng.integers(0, spec["D"]))
                if spec["layout"] == "3d":
                    q[bi, i, h * spec["D"] + col] = value
                else:
                    q[bi, h, i, col] = value
        elif where.startswith("bias") and "attn_bias" in inputs:
            bias = inputs["attn_bias"]
            full = np.broadcast_to(np.arange(bias.size).reshape(bias.shape),
                                   (b, spec["H"], spec["Sq"], s_total))
            i = int(rng.integers(0, spec["Sq"]))
            h = int(rng.integers(0, spec["H"]))
            if where == "bias_row_neg_inf":
                flat = np.unique(full[bi, h, i, :])
                bias.reshape(-1)[flat] = -np.inf
            else:
                if where == "bias_hidden":
                    rows = np.argwhere(~vis[bi, :, j])
                    i = int(rows[rng.integers(0, len(rows))][0]) if len(rows) else i
                bias.reshape(-1)[full[bi, h, i, j]] = value
