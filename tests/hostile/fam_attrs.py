"""Attributes of every type and value on the three paths (custom op, FastAttentionEP, binding).

Documented: a wrongly typed attribute (causal=1.0, scale as an int, window_size=2.0, a string,
list or tensor) is an error naming the node and the attribute on both ONNX Runtime paths; a
misspelt attribute is an error on the EP path (the custom op's kernel gets no list of names, so
there it is ignored: then the result must be the one without it); window_size is -1 or >= 1,
causal 0 or 1, heads >= 1 and dividing, softcap >= 0, scale finite. The binding reads the same
rules from Python values (an int is accepted where a float is expected)."""
from __future__ import annotations

import math
import random

import numpy as np
from onnx import helper, numpy_helper

from . import check, opspec
from .cases import CLEAN, PASS, TRACEBACK, UNCLEAN, WRONG

NAME = "attrs"
CI_CASES = 150
LONG_CASES = 1500
BATCH = 45
CASE_TIMEOUT = 60

INT_ATTRS = ["num_heads", "kv_num_heads", "causal", "window_size"]
FLOAT_ATTRS = ["scale", "softcap"]
MISSPELT = ["casual", "Causal", "window", "windowsize", "window_sizes", "num_head", "numheads",
            "soft_cap", "scales", "kv_heads", "kv_num_head", "is_causal", "sliding_window", ""]
# (attribute, value, expectation): "ok" runs and matches the reference with that value; "error"
# is a clean error naming the attribute; "either" is one or the other.
VALUES = [("causal", 2, "error"), ("causal", -1, "error"), ("causal", 100, "error"), ("causal", 1, "ok"),
          ("window_size", 0, "error"), ("window_size", -2, "error"), ("window_size", -1000, "error"),
          ("window_size", 2**40, "ok"), ("window_size", 2**63 - 1, "ok"), ("window_size", -(2**63), "error"),
          ("window_size", 1, "ok"),
          ("num_heads", 0, "error"), ("num_heads", -1, "error"), ("num_heads", -(2**63), "error"),
          ("num_heads", 2**62, "error"),
          ("kv_num_heads", 0, "error"), ("kv_num_heads", -3, "error"), ("kv_num_heads", 2**40, "error"),
          ("softcap", -1.0, "error"), ("softcap", -1e-30, "error"), ("softcap", float("nan"), "error"),
          ("softcap", float("inf"), "either_nocap"), ("softcap", 1e30, "ok"), ("softcap", 1e-30, "ok"),
          ("scale", float("nan"), "error"), ("scale", float("inf"), "error"), ("scale", float("-inf"), "error"),
          ("scale", 0.0, "ok"), ("scale", -1.0, "ok"), ("scale", 1e10, "ok"), ("scale", 1e20, "ok"),
          ("scale", 1e-30, "ok")]


def make_case(seed: int) -> dict:
    r = random.Random(seed)
    spec = opspec.make_spec(r, dtypes=("float32",))
    spec.update(B=r.choice([1, 2]), Sq=r.choice([1, 3, 5]), Skv=r.choice([1, 4, 6]), Sp=r.choice([0, 0, 2]),
                present=False, bias=None)
    spec["D"] = spec["Dv"] = r.choice([4, 8, 16])
    spec["layout"] = "3d" if r.random() < 0.7 else "4d"
    attrs = {"num_heads": spec["H"], "kv_num_heads": spec["KVH"]} if spec["layout"] == "3d" else {}
    spec["attrs"] = attrs
    path = r.choice(["custom", "ep", "binding"])
    kind = r.choice(["type", "type", "misspelt", "value", "value"])
    params = {"path": path, "kind": kind, "spec": spec}
    if kind == "type":
        name = r.choice(INT_ATTRS + FLOAT_ATTRS)
        params["name"] = name
        params["as"] = r.choice(["float", "string", "ints", "floats", "tensor"] if name in INT_ATTRS
                                else ["int", "string", "ints", "floats", "tensor"])
    elif kind == "misspelt":
        params["name"] = r.choice(MISSPELT)
        params["value"] = r.choice([1, 0, 2, 1.0])
    else:
        name, value, expect = VALUES[r.randrange(len(VALUES))]
        params.update(name=name, value=value if not (isinstance(value, float) and not math.isfinite(value))
                      else repr(value), expect=expect)
    return params


def _value(params):
    v = params.get("value")
    return float(v) if isinstance(v, str) else v


def _onnx_attribute(name: str, kind: str, base):
    if kind == "float":
        return helper.make_attribute(name, float(base))
    if kind == "int":
        return helper.make_attribute(name, int(base))
    if kind == "string":
        return helper.make_attribute(name, str(base))
    if kind == "ints":
        return helper.make_attribute(name, [int(base), int(base)])
    if kind == "floats":
        return helper.make_attribute(name, [float(base)])
    return helper.make_attribute(name, numpy_helper.from_array(np.array(base, np.float32 if isinstance(base, float)
                                                                          else np.int64)))


def _base_value(name: str, spec: dict):
    return {"num_heads": spec["H"], "kv_num_heads": spec["KVH"], "causal": 1, "window_size": 2,
            "scale": 0.25, "softcap": 5.0}[name]


def _python_value(kind: str, base):
    return {"float": float(base), "int": int(base), "string": str(base), "ints": [int(base)],
            "floats": [float(base)], "tensor": np.array(base)}[kind]


def run_case(params: dict, ctx: dict):
    spec = params["spec"]
    node = f"hostile_attr_{spec['data_seed'] % 100000}"
    path, kind, name = params["path"], params["kind"], params["name"]
    attrs = dict(spec["attrs"])
    extra = []  # AttributeProtos (ONNX) of the case
    py_extra = {}  # keywords (binding)
    ref_attrs = dict(attrs)  # what the result must equal if the case is accepted
    if kind == "type":
        base = _base_value(name, spec)
        attrs.pop(name, None)
        extra.append(_onnx_attribute(name, params["as"], base))
        py_extra[name] = _python_value(params["as"], base)
        if path == "binding" and params["as"] == "int" and name in FLOAT_ATTRS:
            expect, keywords = "ok", [name]  # a Python int where a float is expected: accepted
            ref_attrs[name] = float(py_extra[name])
        elif path == "binding" and params["as"] == "tensor":
            # a 0-d NumPy array is a number to Python code: an error, or read as that number
            expect, keywords = "either", [name]
            ref_attrs[name] = base
        else:
            expect, keywords = "error", [name]
    elif kind == "misspelt":
        value = params["value"]
        if name == "":
            extra.append(helper.make_attribute("x", value))
            extra[-1].name = ""
        else:
            extra.append(helper.make_attribute(name, value))
        py_extra[name or "_"] = value
        expect = {"ep": "error", "custom": "either", "binding": "error"}[path]
        keywords = [name] if (name and path != "binding") else (["incompatible function arguments", "keyword"]
                                                                  if path == "binding" else [])
    else:
        value = _value(params)
        expect = params["expect"]
        keywords = [name]
        attrs[name] = value
        ref_attrs[name] = value
        if expect == "either_nocap":
            ref_attrs.pop("softcap", None)
        if name in ("num_heads", "kv_num_heads") and spec["layout"] == "4d" and expect == "error":
            keywords = [name, "heads"]
        py_extra = {}

    inputs = opspec.make_inputs(spec)
    try:
        if path == "binding":
            import fastattn_onnx

            kw = {k: v for k, v in attrs.items()}
            kw.update(py_extra)
            if kind == "misspelt" and not name:
                kw.pop("_", None)
                kw[""] = params["value"]
            got = fastattn_onnx.attention(inputs["query"], inputs["key"], inputs["value"],
                                          key_padding_mask=inputs.get("key_padding_mask"),
                                          past_key=inputs.get("past_key"), past_value=inputs.get("past_value"), **kw)
        else:
            from . import fam_op, ortio

            types, shapes = fam_op.types_and_shapes(spec)
            model = ortio.fa_model(node, types, shapes, attrs, attributes=extra,
                                   out_shapes=opspec.output_shapes(spec))
            sess = ortio.session(model, path)
            got = ortio.run(sess, dict(inputs), "float32", opspec.output_shapes(spec))[0]
    except Exception as e:  # noqa: BLE001
        if path == "binding":
            clean, text = check.binding_error(e, keywords)
        else:
            clean, text = check.ort_error(e, node, keywords)
        if expect == "ok":
            return WRONG, f"valid attribute rejected: {text}"
        if path == "binding" and not isinstance(e, check.BINDING_ERRORS):
            return TRACEBACK, text
        return (CLEAN if clean else UNCLEAN), text
    if expect == "error":
        return WRONG, f"accepted silently ({kind} {name!r}" + (f" as {params['as']}" if kind == "type" else
                                                                f" = {params.get('value')!r}") + ")"
    problem = check.check_output(got, inputs, ref_attrs, "float32", spec["H"])
    if problem:
        return WRONG, f"accepted ({kind} {name!r} = {params.get('value', params.get('as'))!r}) but {problem}"
    return PASS, ""
