"""Small decomposed-attention graphs (onnx.helper) with one knob per way to get attention almost
right: GQA by Tile instead of repeat-interleave, a per-head scale, scale after a finite mask,
mismatched softcap constants, causal masks shifted by one or aligned top-left under a KV cache,
asymmetric windows, padding on the query axis, softmax over the wrong axis, probabilities
rescaled after the softmax or read elsewhere, Q and K swapped in the score MatMul.

build(params) -> ModelProto; feeds(params, batch, seq, seed) -> inputs; valid_rows(...) says which
output rows have at least one visible key (the converter does not promise the others)."""
from __future__ import annotations

import random

import numpy as np
from onnx import TensorProto, helper, numpy_helper

BASE = {
    "gqa": ["none", "expand"], "scale": ["mul", "mul", "div", "div", "split_qk", "per_head_equal", "negative"],
    "softcap": ["none", "none", "tanh"], "mask": ["none", "causal", "causal", "window", "window_symmetric", "alibi"],
    "padding": ["none", "keys_finite", "keys_inf", "keys_where"], "softmax_axis": [-1, -1, 3],
    "post": ["none", "none", "none", "none", "dropout"], "probs_out": [False], "qk": ["normal"],
    "v_from": ["v", "v", "k"], "past": [0, 0, 3],
}
# One near miss per case (or none: a valid form)
TWISTS = [("gqa", "tile_wrong"), ("scale", "per_head_distinct"), ("scale", "after_mask"), ("scale", "none"),
          ("softcap", "tanh_mismatched"), ("mask", "causal_shift_plus1"), ("mask", "causal_shift_minus1"),
          ("mask", "causal_top_left"), ("mask", "anti_causal"), ("mask", "window_asymmetric"),
          ("padding", "queries"), ("softmax_axis", 2), ("post", "mul_const"), ("post", "fp16_roundtrip"),
          ("probs_out", True), ("qk", "swapped")]


def make_params(r: random.Random) -> dict:
    p = {k: r.choice(v) for k, v in BASE.items()}
    p["twist"] = None
    if r.random() < 0.75:
        knob, value = r.choice(TWISTS)
        p[knob] = value
        p["twist"] = f"{knob}={value}"
        if knob == "gqa":
            p["heads"], p["kv_heads"] = 4, 2
        if knob == "mask" and value == "causal_top_left":
            p["past"] = 3  # top-left and bottom-right differ only with a past
        if knob == "scale" and value == "after_mask" and p["padding"] in ("none", "keys_inf"):
            p["padding"] = "keys_finite"
    p.setdefault("heads", r.choice([2, 4]))
    p.setdefault("kv_heads", p["heads"] if p["gqa"] == "none" else r.choice([1, 2]))
    if p["kv_heads"] == p["heads"] and p["gqa"] != "none":
        p["kv_heads"] = 1
    p["head_size"] = r.choice([8, 16])
    p["window"] = r.choice([1, 2, 3, 5])
    p["cap"] = r.choice([5.0, 30.0])
    p["weight_seed"] = r.randrange(2**31)
    if p["qk"] == "swapped" or p["padding"] == "queries":
        p["past"] = 0
    return p


def build(p: dict):
    h, kvh, d = p["heads"], p["kv_heads"], p["head_size"]
    hidden = h * d
    rng = np.random.default_rng(p["weight_seed"])
    inits, nodes = [], []
    n = helper.make_node

    def const(name, value, dtype=np.float32):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    const("wq", rng.standard_normal((hidden, h * d)) * 0.3)
    const("wk", rng.standard_normal((hidden, kvh * d)) * 0.3)
    const("wv", rng.standard_normal((hidden, kvh * d)) * 0.3)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", hidden])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", hidden])]
    for name, heads in (("q", h), ("k", kvh), ("v", kvh)):
        src = "wk" if (name == "v" and p["v_from"] == "k") else f"w{name}"
        nodes += [n("MatMul", ["x", src], [f"{name}3"]),
                  n("Reshape", [f"{name}3", const(f"{name}_split", [0, 0, heads, d], np.int64)], [f"{name}_bshd"]),
                  n("Transpose", [f"{name}_bshd"], [f"{name}_new"], perm=[0, 2, 1, 3])]
    if p["past"]:
        for name in ("k", "v"):
            inputs.append(helper.make_tensor_value_info(f"past_{name}", TensorProto.FLOAT, ["batch", kvh, "past", d]))
            nodes.append(n("Concat", [f"past_{name}", f"{name}_new"], [f"{name}_all"], axis=2))
            outputs.append(helper.make_tensor_value_info(f"present_{name}", TensorProto.FLOAT,
                                                         ["batch", kvh, "total", d]))
            nodes.append(n("Identity", [f"{name}_all"], [f"present_{name}"]))
    else:
        nodes += [n("Identity", ["k_new"], ["k_all"]), n("Identity", ["v_new"], ["v_all"])]
    group = h // kvh
    for name in ("k", "v"):
        if p["gqa"] == "expand":
            nodes += [n("Unsqueeze", [f"{name}_all", const(f"{name}_ax2", [2], np.int64)], [f"{name}_5d"]),
                      n("Expand", [f"{name}_5d", const(f"{name}_exp", [1, 1, group, 1, 1], np.int64)],
                        [f"{name}_exp5"]),
                      n("Reshape", [f"{name}_exp5", const(f"{name}_merge", [0, h, -1, d], np.int64)],
                        [f"{name}_rep"])]
        elif p["gqa"] == "tile_wrong":  # head order kv0..kvK-1, kv0..: not repeat_interleave
            nodes.append(n("Tile", [f"{name}_all", const(f"{name}_tile", [1, group, 1, 1], np.int64)],
                           [f"{name}_rep"]))
        else:
            nodes.append(n("Identity", [f"{name}_all"], [f"{name}_rep"]))
    q, k = "q_new", "k_rep"
    scale = d ** -0.5
    if p["scale"] == "split_qk":
        nodes += [n("Mul", ["q_new", const("qs", d ** -0.25)], ["q_scaled"]),
                  n("Mul", ["k_rep", const("ks", d ** -0.25)], ["k_scaled"])]
        q, k = "q_scaled", "k_scaled"
    nodes.append(n("Transpose", [k], ["k_t"], perm=[0, 1, 3, 2]))
    if p["qk"] == "swapped":  # K Q^T: the scores transposed
        nodes += [n("Transpose", [q], ["q_t"], perm=[0, 1, 3, 2]), n("MatMul", [k, "q_t"], ["raw"])]
    else:
        nodes.append(n("MatMul", [q, "k_t"], ["raw"]))
    s = "raw"

    def scale_node(src):
        kind = p["scale"]
        if kind == "mul":
            nodes.append(n("Mul", [src, const("scale", scale)], ["scaled"]))
        elif kind == "div":
            nodes.append(n("Div", [src, const("sqrt_d", d ** 0.5)], ["scaled"]))
        elif kind == "negative":
            nodes.append(n("Mul", [src, const("scale", -scale)], ["scaled"]))
        elif kind == "per_head_distinct":
            nodes.append(n("Mul", [src, const("scale", (scale * (1 + np.arange(h) / h)).reshape(1, h, 1, 1))],
                           ["scaled"]))
        elif kind == "per_head_equal":
            nodes.append(n("Mul", [src, const("scale", np.full((1, h, 1, 1), scale))], ["scaled"]))
        else:
            nodes.append(n("Identity", [src], ["scaled"]))
        return "scaled"

    if p["scale"] != "after_mask":
        s = scale_node(s)
    if p["softcap"] != "none":
        c1 = p["cap"]
        c2 = c1 if p["softcap"] == "tanh" else c1 * 0.5
        nodes += [n("Div", [s, const("cap_div", c1)], ["s_over"]), n("Tanh", ["s_over"], ["s_tanh"]),
                  n("Mul", ["s_tanh", const("cap_mul", c2)], ["capped"])]
        s = "capped"
    # structural mask on [S_q, T] from the scores' shape
    mask = p["mask"]
    if mask != "none":
        nodes += [n("Shape", [s], ["s_shape"]),
                  n("Gather", ["s_shape", const("i2", 2, np.int64)], ["sq"]),
                  n("Gather", ["s_shape", const("i3", 3, np.int64)], ["t"]),
                  n("Sub", ["t", "sq"], ["offset"])]
        sq_1d, t_1d = n_unsq(nodes, const, "sq"), n_unsq(nodes, const, "t")
        nodes += [n("Concat", [sq_1d, t_1d], ["sq_t"], axis=0),
                  n("ConstantOfShape", ["sq_t"], ["ones"],
                    value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]))]
        if mask == "alibi":
            nodes += [n("Range", [const("zero_i", 0, np.int64), "sq", const("one_i", 1, np.int64)], ["qi"]),
                      n("Range", [const("zero_j", 0, np.int64), "t", const("one_j", 1, np.int64)], ["kj"]),
                      n("Add", ["qi", "offset"], ["qi_abs"]),
                      n("Unsqueeze", ["qi_abs", const("ax1", [1], np.int64)], ["qi_col"]),
                      n("Sub", ["kj", "qi_col"], ["rel"]), n("Cast", ["rel"], ["rel_f"], to=TensorProto.FLOAT),
                      n("Mul", ["rel_f", const("slopes", (2.0 ** -(1 + np.arange(h))).reshape(1, h, 1, 1))],
                        ["alibi"]),
                      n("Add", [s, "alibi"], ["s_struct"])]
        else:
            w = p["window"]
            k_main = {"causal": "offset", "causal_top_left": "zero_k", "causal_shift_plus1": "offset_p1",
                      "causal_shift_minus1": "offset_m1", "anti_causal": "offset", "window": "offset",
                      "window_asymmetric": "offset_w2", "window_symmetric": "offset_w"}[mask]
            const("zero_k", 0, np.int64)
            nodes += [n("Add", ["offset", const("p1", 1, np.int64)], ["offset_p1"]),
                      n("Sub", ["offset", const("m1", 1, np.int64)], ["offset_m1"]),
                      n("Add", ["offset", const("w_c", w - 1, np.int64)], ["offset_w"]),
                      n("Add", ["offset", const("w2_c", w + 1, np.int64)], ["offset_w2"]),
                      n("Sub", ["offset", const("w_lo", w, np.int64)], ["offset_lo"])]
            nodes.append(n("Trilu", ["ones", k_main], ["upper_ok"], upper=1 if mask == "anti_causal" else 0))
            allowed = "upper_ok"
            if mask.startswith("window"):  # minus everything at or below i' - w
                nodes += [n("Trilu", ["ones", "offset_lo"], ["too_old"], upper=0),
                          n("Sub", ["upper_ok", "too_old"], ["band"])]
                allowed = "band"
            nodes += [n("Cast", [allowed], ["allowed_b"], to=TensorProto.BOOL),
                      n("Where", ["allowed_b", const("zero_f", 0.0), const("minus_inf", -np.inf)], ["struct_mask"]),
                      n("Add", [s, "struct_mask"], ["s_struct"])]
        s = "s_struct"
    pad = p["padding"]
    if pad != "none":
        inputs.append(helper.make_tensor_value_info("attention_mask", TensorProto.INT64,
                                                    ["batch", "total" if p["past"] else "seq"]))
        nodes.append(n("Cast", ["attention_mask"], ["m_f"], to=TensorProto.FLOAT))
        if pad in ("keys_finite", "queries"):
            nodes += [n("Sub", [const("one_f", 1.0), "m_f"], ["m_inv"]),
                      n("Mul", ["m_inv", const("big_neg", -10000.0)], ["m_bias"])]
        elif pad == "keys_inf":
            nodes += [n("Cast", ["attention_mask"], ["m_b"], to=TensorProto.BOOL),
                      n("Where", ["m_b", const("zero_p", 0.0), const("ninf_p", -np.inf)], ["m_bias"])]
        else:  # keys_where: Where(mask, scores, float-min)
            nodes.append(n("Cast", ["attention_mask"], ["m_b"], to=TensorProto.BOOL))
        axes = [1, 3] if pad == "queries" else [1, 2]
        if pad == "keys_where":
            nodes += [n("Unsqueeze", ["m_b", const("pad_axes", axes, np.int64)], ["m_b4"]),
                      n("Where", ["m_b4", s, const("fmin", np.finfo(np.float32).min)], ["s_pad"])]
        else:
            nodes += [n("Unsqueeze", ["m_bias", const("pad_axes", axes, np.int64)], ["m_bias4"]),
                      n("Add", [s, "m_bias4"], ["s_pad"])]
        s = "s_pad"
    if p["scale"] == "after_mask":
        nodes.append(n("Mul", [s, const("scale", scale)], ["scaled_late"]))
        s = "scaled_late"
    nodes.append(n("Softmax", [s], ["probs"], axis=p["softmax_axis"]))
    probs = "probs"
    if p["post"] == "mul_const":
        nodes.append(n("Mul", [probs, const("keep", 0.9)], ["probs_post"]))
        probs = "probs_post"
    elif p["post"] == "dropout":
        nodes.append(n("Dropout", [probs], ["probs_post"]))
        probs = "probs_post"
    elif p["post"] == "fp16_roundtrip":
        nodes += [n("Cast", [probs], ["probs_h"], to=TensorProto.FLOAT16),
                  n("Cast", ["probs_h"], ["probs_post"], to=TensorProto.FLOAT)]
        probs = "probs_post"
    if p["probs_out"]:
        outputs.append(helper.make_tensor_value_info("probs_seen", TensorProto.FLOAT, ["pb", "ph", "pq", "pk"]))
        nodes.append(n("Identity", [probs], ["probs_seen"]))
    nodes += [n("MatMul", [probs, "v_rep"], ["ctx"]),
              n("Transpose", ["ctx"], ["ctx_bshd"], perm=[0, 2, 1, 3]),
              n("Reshape", ["ctx_bshd", const("merge", [0, 0, hidden], np.int64)], ["y"])]
    graph = helper.make_graph(nodes, "near_miss", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def n_unsq(nodes, const, name):
    out = f"{name}_1d"
    nodes.append(helper.make_node("Unsqueeze", [name, const(f"{name}_ax0", [0], np.int64)], [out]))
    return out


def feeds(p: dict, batch: int, seq: int, seed: int, past: int | None = None) -> dict:
    rng = np.random.default_rng(seed)
    hidden = p["heads"] * p["head_size"]
    past = p["past"] if past is None else past
    f = {"x": rng.standard_normal((batch, seq, hidden)).astype(np.float32)}
    if p["past"]:
        for name in ("k", "v"):
            f[f"past_{name}"] = rng.standard_normal((batch, p["kv_heads"], past, p["head_size"])).astype(np.float32)
    total = seq + (past if p["past"] else 0)
    if p["padding"] != "none":
        length = total if p["padding"] != "queries" else seq
        m = np.ones((batch, length), np.int64)
        for b in range(1, batch):  # row 0 unpadded; then left and right padding
            cut = int(rng.integers(1, length)) if length > 1 else 0
            if b % 2:
                m[b, :cut] = 0
            else:
                m[b, length - cut:] = 0
        f["attention_mask"] = m
    return f


def structure(p: dict, seq: int, total: int) -> np.ndarray:
    """[S_q, T] bool: the structural mask the graph builds (mirrors build())."""
    i = np.arange(seq)[:, None] + (total - seq)
    j = np.arange(total)[None, :]
    w = p["window"]
    mask = p["mask"]
    if mask == "causal":
        return j <= i
    if mask == "causal_top_left":
        return j <= i - (total - seq)
    if mask == "causal_shift_plus1":
        return j <= i + 1
    if mask == "causal_shift_minus1":
        return j <= i - 1
    if mask == "anti_causal":
        return j >= i
    if mask == "window":
        return (j <= i) & (j > i - w)
    if mask == "window_asymmetric":
        return (j <= i + w + 1) & (j > i - w)
    if mask == "window_symmetric":
        return (j <= i + w - 1) & (j > i - w)
    return np.ones((seq, total), bool)


def valid_rows(p: dict, f: dict) -> np.ndarray:
    """[B, S] bool: query rows with at least one key that neither the structural mask nor the key
    padding hides; the converter does not promise the others ("fully padded query positions")."""
    batch, seq = f["x"].shape[:2]
    total = seq + (f["past_k"].shape[2] if "past_k" in f else 0)
    vis = np.broadcast_to(structure(p, seq, total), (batch, seq, total)).copy()
    if p["padding"] in ("keys_finite", "keys_inf", "keys_where"):
        vis &= (f["attention_mask"] != 0)[:, None, :]
    return vis.any(-1)
