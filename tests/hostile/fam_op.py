"""The op through ONNX Runtime: the custom op on the CPU EP and FastAttentionEP, on random valid
problems (all dtypes, layouts, GQA, past, bias shapes, masks, NaN/inf placement, zero sizes, head
sizes at and above 4096) and on broken shapes/dtypes (static: at session creation; symbolic: at
run), which must be errors naming the node and the rule."""
from __future__ import annotations

import random

import numpy as np

from . import check, opspec
from .cases import CLEAN, PASS, UNCLEAN, WRONG

NAME = "op"
CI_CASES = 300
LONG_CASES = 4000
BATCH = 40
CASE_TIMEOUT = 90

# mutation -> keywords of the rule its error must name
BAD = {
    "kv_heads_do_not_divide": ["kv_num_heads"],
    "mask_length": ["key_padding_mask"], "mask_rank1": ["key_padding_mask"], "mask_rank3": ["key_padding_mask"],
    "mask_float": ["key_padding_mask"], "mask_uint8": ["key_padding_mask"],
    "bias_not_broadcastable": ["attn_bias"], "bias_rank5": ["attn_bias"], "bias_dtype": ["attn_bias"],
    "past_value_length": ["past_value", "past_key"], "past_key_heads": ["past_key"],
    "past_key_only": ["past_key", "past_value"], "past_rank3": ["past_key"],
    "query_rank2": ["query"], "query_rank5": ["query"], "rank_mismatch": ["rank"],
    "kv_length_mismatch": ["sequence length"], "head_size_mismatch": ["head size", "divisible", "hidden size"],
    "batch_mismatch": ["batch"], "query_float64": ["float32, float16 or bfloat16"],
    "query_int32": ["float32, float16 or bfloat16"], "key_dtype_differs": ["element type"],
    "hidden_not_divisible": ["divisible"], "no_num_heads_3d": ["num_heads"], "num_heads_disagrees_4d": ["num_heads"],
    "missing_value": ["value", "input"], "too_many_outputs": ["output"],
}


def make_case(seed: int) -> dict:
    r = random.Random(seed)
    roll = r.random()
    path = r.choice(["custom", "ep"])
    if roll < 0.5:
        return {"kind": "valid", "path": path, "symbolic": r.random() < 0.2, "spec": opspec.make_spec(r)}
    if roll < 0.7:
        return {"kind": "nonfinite", "path": path, "symbolic": False, "spec": opspec.make_spec(r, nonfinite=True)}
    if roll < 0.78:
        return {"kind": "zero", "path": path, "symbolic": r.random() < 0.3,
                "spec": opspec.make_spec(r, zero_sizes=True, dtypes=("float32", "float16"))}
    if roll < 0.81:
        spec = opspec.make_spec(r, dtypes=("float32",))
        spec.update(B=1, H=1, KVH=1, Sq=r.choice([1, 2, 3]), Skv=r.choice([1, 2, 5]), Sp=0, bias=None, kpm=None)
        spec["D"] = r.choice([4096, 4097, 5000, 8192])
        spec["Dv"] = spec["D"] if r.random() < 0.7 else r.choice([8, 4096, 4100])
        spec["attrs"] = {k: v for k, v in spec["attrs"].items() if k not in ("num_heads", "kv_num_heads")}
        if spec["layout"] == "3d":
            spec["attrs"]["num_heads"] = 1
        return {"kind": "big_head", "path": path, "symbolic": r.random() < 0.3, "spec": spec}
    spec = opspec.make_spec(r, dtypes=("float32", "float16"))
    return {"kind": "bad", "path": path, "symbolic": r.random() < 0.4, "spec": spec,
            "mutation": r.choice(sorted(BAD))}


def types_and_shapes(spec: dict) -> tuple[dict, dict]:
    shapes = opspec.input_shapes(spec)
    types = {n: spec["dtype"] for n in shapes}
    if "key_padding_mask" in shapes:
        types["key_padding_mask"] = spec["kpm"]["dtype"]
    return types, shapes


def _mutate(spec: dict, mutation: str, types: dict, shapes: dict, attrs: dict, node_inputs: list) -> int:
    """Breaks one rule in place; returns the number of node outputs."""
    b, h, kvh, d, dv, sq, skv, sp = (spec[n] for n in ("B", "H", "KVH", "D", "Dv", "Sq", "Skv", "Sp"))
    s_total = skv + sp
    three_d = spec["layout"] == "3d"
    outputs = 3 if spec.get("present") else 1
    if mutation == "kv_heads_do_not_divide":
        if three_d:
            attrs["num_heads"] = h
            attrs["kv_num_heads"] = next(k for k in range(2, 64) if h % k)
        else:
            shapes["key"][1] = shapes["value"][1] = next(k for k in range(2, 64) if h % k)
    elif mutation.startswith("mask_"):
        shapes["key_padding_mask"] = {"mask_length": [b, s_total + 1], "mask_rank1": [s_total],
                                      "mask_rank3": [b, 1, s_total]}.get(mutation, [b, s_total])
        types["key_padding_mask"] = {"mask_float": "float32", "mask_uint8": "uint8"}.get(mutation, "bool")
    elif mutation.startswith("bias_"):
        shapes["attn_bias"] = {"bias_not_broadcastable": [b, h + 1, sq, s_total],
                               "bias_rank5": [1, 1, 1, 1, s_total]}.get(mutation, [sq, s_total])
        types["attn_bias"] = "float16" if mutation == "bias_dtype" and spec["dtype"] == "float32" else (
            "float32" if mutation == "bias_dtype" else spec["dtype"])
    elif mutation.startswith("past_"):
        sp = sp or 2
        shapes["past_key"], shapes["past_value"] = [b, kvh, sp, d], [b, kvh, sp, dv]
        types["past_key"] = types["past_value"] = spec["dtype"]
        if mutation == "past_value_length":
            shapes["past_value"][2] = sp + 1
        elif mutation == "past_key_heads":
            shapes["past_key"][1] = kvh + 1
        elif mutation == "past_rank3":
            shapes["past_key"] = [b, sp, kvh * d]
        elif mutation == "past_key_only":
            del shapes["past_value"], types["past_value"]
        if "key_padding_mask" in shapes:
            shapes["key_padding_mask"] = [b, skv + sp]
        if "attn_bias" in shapes:
            del shapes["attn_bias"], types["attn_bias"]
    elif mutation == "query_rank2":
        shapes["query"] = [b, sq * h * d]
    elif mutation == "query_rank5":
        shapes["query"] = [1] + shapes["query"]
    elif mutation == "rank_mismatch":
        shapes["key"] = [b, kvh, skv, d] if three_d else [b, skv, kvh * d]
    elif mutation == "kv_length_mismatch":
        shapes["value"][1 if three_d else 2] = skv + 1
    elif mutation == "head_size_mismatch":
        if three_d:
            shapes["key"][2] = kvh * (d + 1)
        else:
            shapes["key"][3] = d + 1
    elif mutation == "batch_mismatch":
        shapes["key"][0] = b + 1
    elif mutation == "query_float64":
        for n in ("query", "key", "value", "attn_bias", "past_key", "past_value"):
            if n in types:
                types[n] = "float64"
    elif mutation == "query_int32":
        for n in ("query", "key", "value", "attn_bias", "past_key", "past_value"):
            if n in types:
                types[n] = "int32"
    elif mutation == "key_dtype_differs":
        types["key"] = "float16" if spec["dtype"] == "float32" else "float32"
    elif mutation == "hidden_not_divisible":
        # 3D, query hidden size one more than num_heads * D
        heads = max(h, 2)
        kv = kvh if heads % kvh == 0 else 1
        attrs["num_heads"], attrs["kv_num_heads"] = heads, kv
        shapes["query"] = [b, sq, heads * d + 1]
        shapes["key"], shapes["value"] = [b, skv, kv * d], [b, skv, kv * dv]
        for n in ("past_key", "past_value", "attn_bias"):
            shapes.pop(n, None)
            types.pop(n, None)
        if "key_padding_mask" in shapes:
            shapes["key_padding_mask"] = [b, skv]
    elif mutation == "no_num_heads_3d":
        for n in ("query", "key", "value"):
            if len(shapes[n]) == 4:
                bb, hh, ss, dd = shapes[n]
                shapes[n] = [bb, ss, hh * dd]
        attrs.pop("num_heads", None)
        attrs.pop("kv_num_heads", None)
    elif mutation == "num_heads_disagrees_4d":
        for n in ("query", "key", "value"):
            if len(shapes[n]) == 3:
                bb, ss, hd = shapes[n]
                heads = h if n == "query" else kvh
                shapes[n] = [bb, heads, ss, hd // heads]
        attrs["num_heads"] = h + 1
    elif mutation == "missing_value":
        node_inputs[:] = ["query", "key"]
        for n in list(shapes):
            if n not in ("query", "key"):
                del shapes[n], types[n]
    elif mutation == "too_many_outputs":
        outputs = 4
    return outputs


def feeds_for(types: dict, shapes: dict, spec: dict) -> dict:
    rng = np.random.default_rng(spec["data_seed"])
    feeds = {}
    for name, shape in shapes.items():
        t = types[name]
        if t in ("bool",):
            feeds[name] = rng.random(shape) > 0.3
        elif t in ("int32", "int64", "uint8", "int8"):
            feeds[name] = rng.integers(0, 2, size=shape).astype(t)
        elif t == "float64":
            feeds[name] = rng.standard_normal(shape)
        else:
            feeds[name] = opspec.round_to(rng.standard_normal(shape).astype(np.float32), t)
    return feeds


def _error(params, error, node, keywords):
    clean, text = check.ort_error(error, node, keywords)
    return (CLEAN if clean else UNCLEAN), text


def run_case(params: dict, ctx: dict):
    from . import ortio

    spec = params["spec"]
    node = f"hostile_op_{spec['data_seed'] % 100000}"
    kind, path = params["kind"], params["path"]
    attrs = dict(spec["attrs"])
    types, shapes = types_and_shapes(spec)
    node_inputs = None
    outputs = 3 if spec.get("present") else 1
    if kind == "bad":
        node_inputs = [n if n in shapes else "" for n in ortio.INPUT_ORDER]
        outputs = _mutate(spec, params["mutation"], types, shapes, attrs, node_inputs)
        if params["mutation"] not in ("missing_value",):
            node_inputs = None
        # attrs stay ints/floats of the right type
        model = ortio.fa_model(node, types, shapes, attrs, outputs=outputs, symbolic=params["symbolic"],
                               node_inputs=node_inputs, out_type=spec["dtype"])
        keywords = BAD[params["mutation"]]
        try:
            sess = ortio.session(model, path)
        except Exception as e:  # noqa: BLE001 - any error must name the node and the rule
            return _error(params, e, node, keywords)
        feeds = feeds_for(types, shapes, spec)
        try:
            sess.run(None, {k: (v.astype(np.float16) if types[k] == "float16" else v) for k, v in feeds.items()})
        except Exception as e:  # noqa: BLE001
            return _error(params, e, node, keywords)
        return WRONG, f"broken rule '{params['mutation']}' accepted: session created and ran"

    out_shapes = opspec.output_shapes(spec)
    out_type = spec["dtype"]
    model = ortio.fa_model(node, types, shapes, attrs, outputs=outputs, symbolic=params["symbolic"],
                           out_shapes=out_shapes, out_type=out_type)
    inputs = opspec.make_inputs(spec)
    saved = {k: v.copy() for k, v in inputs.items()}
    try:
        sess = ortio.session(model, path)
        got = ortio.run(sess, dict(inputs), spec["dtype"], out_shapes)
    except Exception as e:  # noqa: BLE001
        if kind in ("zero",):
            return _error(params, e, node, ())
        if kind == "big_head" and max(spec["D"], spec["Dv"]) > 4096:
            return _error(params, e, node, ["head size"])
        clean, text = check.ort_error(e, node)
        return WRONG, f"valid input rejected: {text}"
    if kind == "big_head" and max(spec["D"], spec["Dv"]) > 4096:
        return WRONG, f"head size {max(spec['D'], spec['Dv'])} > 4096 accepted on the CPU (documented: an error)"
    for k, v in saved.items():
        if not np.array_equal(v, inputs[k], equal_nan=True):
            return WRONG, f"input {k} was modified"
    heads = spec["H"]
    problem = check.check_output(got[0], inputs, attrs, spec["dtype"], heads)
    if problem is None and spec.get("present"):
        problem = check.check_presents(got[1], got[2], inputs, spec["KVH"])
    if problem:
        return WRONG, problem
    return PASS, ""
