"""ONNX Attention (opset 23/24) under FastAttentionEP against ONNX Runtime's own CPU kernel.

Documented: the EP takes an Attention node only where its result equals ONNX Runtime's (else the
node stays on the CPU EP), so with the EP first the outputs must equal the CPU EP's on every
model, claimed or not; scale <= 0 is left to the CPU EP. A model the CPU EP runs must not fail
with the EP in front."""
from __future__ import annotations

import random

import numpy as np
import onnxruntime as ort

from test_attention23 import _session_options as _options  # the tests' own sessions and model
from test_attention23 import attention_model

from .cases import CLEAN, PASS, WRONG

NAME = "attention23"
CI_CASES = 60
LONG_CASES = 1200
BATCH = 40
CASE_TIMEOUT = 60



def make_case(seed: int) -> dict:
    r = random.Random(seed)
    h = r.choice([1, 2, 4, 6])
    kvh = r.choice([k for k in (1, 2, 3, 4, 6) if h % k == 0])
    sq = r.choice([1, 2, 3, 5, 8, 17, 64])
    p = {"layout": r.choice(["3d", "4d"]), "b": r.choice([1, 2]), "h": h, "kvh": kvh, "sq": sq,
         "skv": sq if r.random() < 0.5 else r.choice([1, 2, 3, 5, 8, 17, 64]), "sp": r.choice([0, 0, 1, 3, 9]),
         "d": r.choice([4, 8, 16, 32, 64]), "dtype": r.choice(["float32", "float32", "float16"]),
         "opset": r.choice([23, 23, 24]), "symbolic": r.random() < 0.2, "data_seed": r.randrange(2**31)}
    attrs = {}
    if r.random() < 0.5:
        attrs["is_causal"] = r.choice([0, 1])
    if r.random() < 0.4:
        attrs["scale"] = r.choice([0.125, 0.5, 1.0, 3.0, 0.0, -0.25, -1.0])
    if r.random() < 0.25:
        attrs["softcap"] = r.choice([0.0, 1.0, 5.0, 50.0])
    if r.random() < 0.1:
        attrs["qk_matmul_output_mode"] = r.choice([0, 1, 2, 3])
    if p["layout"] == "3d":
        attrs["q_num_heads"], attrs["kv_num_heads"] = h, kvh
    p["attrs"] = attrs
    p["mask"] = None
    if r.random() < 0.5:
        s_total = p["skv"] + p["sp"]
        kind = r.choice(["bool", "float"])
        shape = r.choice([[p["sq"], s_total], [p["b"], 1, p["sq"], s_total], [p["b"], h, p["sq"], s_total],
                          [1, 1, p["sq"], s_total], [h, p["sq"], s_total]])
        p["mask"] = {"kind": kind, "shape": shape, "dead_row": r.random() < 0.4}
    return p


def build(p: dict):
    """The tests' own Attention model (test_attention23.attention_model), with symbolic dims when
    the case asks for them."""
    b, h, kvh, sq, skv, sp, d = (p[n] for n in ("b", "h", "kvh", "sq", "skv", "sp", "d"))
    dims = None
    if p["symbolic"]:
        last = {"Q": d if p["layout"] == "4d" else h * d, "K": d if p["layout"] == "4d" else kvh * d}
        last["V"] = last["K"]
        rank = 4 if p["layout"] == "4d" else 3
        dims = {n: [f"{n}{i}" for i in range(rank - 1)] + [last[n]] for n in ("Q", "K", "V")}
    mask = (p["mask"]["kind"], p["mask"]["shape"]) if p["mask"] else None
    return attention_model(layout=p["layout"], b=b, h=h, kvh=kvh, sq=sq, skv=skv, sp=sp, d=d, dtype=p["dtype"],
                           mask=mask, attrs=p["attrs"], opset=p["opset"],
                           qk_output=p["attrs"].get("qk_matmul_output_mode") is not None, dims=dims)


def feeds_for(p: dict) -> dict:
    rng = np.random.default_rng(p["data_seed"])
    np_t = np.float16 if p["dtype"] == "float16" else np.float32
    b, h, kvh, sq, skv, sp, d = (p[n] for n in ("b", "h", "kvh", "sq", "skv", "sp", "d"))
    shapes = ({"Q": [b, h, sq, d], "K": [b, kvh, skv, d], "V": [b, kvh, skv, d]} if p["layout"] == "4d" else
              {"Q": [b, sq, h * d], "K": [b, skv, kvh * d], "V": [b, skv, kvh * d]})
    feeds = {n: rng.standard_normal(s).astype(np_t) for n, s in shapes.items()}
    if sp:
        feeds["past_key"] = rng.standard_normal([b, kvh, sp, d]).astype(np_t)
        feeds["past_value"] = rng.standard_normal([b, kvh, sp, d]).astype(np_t)
    m = p["mask"]
    if m:
        if m["kind"] == "bool":
            mask = rng.random(m["shape"]) > 0.3
            if m["dead_row"]:
                mask[..., 0, :] = False
        else:
            mask = np.where(rng.random(m["shape"]) > 0.3, rng.standard_normal(m["shape"]), -np.inf).astype(np_t)
            if m["dead_row"]:
                mask[..., 0, :] = -np.inf
        feeds["attn_mask"] = mask
    return feeds




def run_case(p: dict, ctx: dict):
    import fastattn_onnx

    model = build(p)
    data = model.SerializeToString()
    feeds = feeds_for(p)
    try:
        want = ort.InferenceSession(data, _options(), providers=["CPUExecutionProvider"]).run(None, feeds)
    except Exception as e:  # noqa: BLE001 - ONNX Runtime itself refuses: the EP must not do worse
        want, cpu_error = None, e
    try:
        got = ort.InferenceSession(data, _options(), providers=[fastattn_onnx.EP_NAME, "CPUExecutionProvider"]) \
            .run(None, feeds)
    except Exception as e:  # noqa: BLE001
        if want is None:
            return CLEAN, f"ONNX Runtime's CPU EP refuses it too: {str(cpu_error).splitlines()[0][:200]}"
        return WRONG, f"the CPU EP runs this model, with FastAttentionEP in front it fails: {str(e)[:400]}"
    if want is None:
        return PASS, f"CPU EP refused ({str(cpu_error).splitlines()[0][:150]}), the EP ran it"
    tol = 2e-5 if p["dtype"] == "float32" else 2e-3
    ref32 = None
    if p["dtype"] == "float16":
        # ONNX Runtime's float16 kernel rounds more than ours: the same model in float32 on the same
        # (rounded) inputs decides which of the two is off when they differ
        p32 = dict(p, dtype="float32")
        feeds32 = {k: (v.astype(np.float32) if v.dtype == np.float16 else v) for k, v in feeds.items()}
        try:
            ref32 = ort.InferenceSession(build(p32).SerializeToString(), _options(),
                                         providers=["CPUExecutionProvider"]).run(None, feeds32)
        except Exception:  # noqa: BLE001
            ref32 = None
    for i, (g, w) in enumerate(zip(got, want)):
        if g.shape != w.shape:
            return WRONG, f"output {i}: shape {g.shape} vs CPU EP {w.shape}"
        g64, w64 = g.astype(np.float64), w.astype(np.float64)
        same_nan = np.isnan(g64) == np.isnan(w64)
        finite = np.isfinite(w64) & np.isfinite(g64)
        inf_same = (g64 == w64) | finite | np.isnan(w64)
        scale = max(1.0, float(np.max(np.abs(np.where(finite, w64, 0)), initial=0)))
        err = float(np.max(np.abs(np.where(finite, g64 - w64, 0)), initial=0))
        if ref32 is not None and same_nan.all() and inf_same.all() and err > tol * scale:
            r64 = ref32[i].astype(np.float64)
            ok = np.isfinite(r64) & finite
            err_ep = float(np.max(np.abs(np.where(ok, g64 - r64, 0)), initial=0))
            err_cpu = float(np.max(np.abs(np.where(ok, w64 - r64, 0)), initial=0))
            if err_ep <= max(tol * scale, err_cpu):
                continue  # ours is at least as close to the float32 result as ONNX Runtime's
        if not same_nan.all() or not inf_same.all() or err > tol * scale:
            where = "NaN pattern" if not same_nan.all() else ("inf pattern" if not inf_same.all() else
                                                              f"max|diff| {err:.3g} > {tol * scale:.3g}")
            return WRONG, f"output {i} differs from ONNX Runtime's CPU EP: {where}"
    if p["attrs"].get("scale", 1.0) <= 0:
        placement = fastattn_onnx.node_placement(model, inputs=feeds, session_options=_options())
        if placement.get("attention_0") != "CPUExecutionProvider":
            return WRONG, f"scale {p['attrs']['scale']} <= 0 should stay on the CPU EP, placed: {placement}"
    return PASS, ""
