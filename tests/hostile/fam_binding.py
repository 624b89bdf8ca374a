"""The NumPy binding, fastattn_onnx.attention: anything numpy.asarray accepts as input (strided,
transposed, negative-stride, Fortran, read-only, unaligned views, array-likes, memoryviews,
lists), preallocated outputs (right, wrongly typed/shaped/laid out, and aliasing inputs or each
other, which must be a ValueError), inputs aliasing each other, thread counts, several Python
threads at once, a forked child, and inputs that are not arrays at all.

Inputs must never be modified; a result must match the float64 reference."""
from __future__ import annotations

import random
import subprocess
import sys
import threading

import numpy as np

from . import check, opspec
from .cases import CLEAN, CRASH, HANG, PASS, TRACEBACK, UNCLEAN, WRONG

NAME = "binding"
CI_CASES = 250
LONG_CASES = 4000
BATCH = 35
CASE_TIMEOUT = 90

KINDS = ["numerics", "numerics", "representations", "representations", "out", "out", "alias_inputs",
         "threads", "concurrent", "not_arrays", "dtype_keyword", "fork"]
REPRESENTATIONS = ["c", "strided_view", "transposed_view", "negative_stride", "fortran", "readonly",
                   "array_like", "memoryview", "unaligned", "list", "big_endian", "subclass"]
OUT_VARIANTS = ["ok", "overlap", "adjacent", "wrong_dtype", "wrong_shape", "non_contiguous", "readonly",
                "list", "fortran", "present_ok", "present_overlap_past", "present_overlap_out",
                "present_adjacent", "same_object_as_input"]

try:
    import ml_dtypes

    BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover
    BF16 = None


def make_case(seed: int) -> dict:
    r = random.Random(seed)
    kind = KINDS[seed % len(KINDS)] if r.random() < 0.5 else r.choice(KINDS)
    p = {"kind": kind}
    if kind == "numerics":
        roll = r.random()
        p["spec"] = opspec.make_spec(r, nonfinite=roll < 0.35, zero_sizes=0.35 <= roll < 0.5)
        p["bf16_as"] = r.choice(["ml_dtypes", "uint16"])
        p["num_threads"] = r.choice([0, 0, 1, 2, 3])
        if roll > 0.97:
            p["spec"].update(B=1, H=1, KVH=1, Sq=2, Skv=3, Sp=0, bias=None, kpm=None, nonfinite=None)
            p["spec"]["D"] = p["spec"]["Dv"] = r.choice([4096, 4097, 6000])
            p["spec"]["attrs"] = {"num_heads": 1} if p["spec"]["layout"] == "3d" else {}
            p["big_head"] = True
        return p
    spec = opspec.make_spec(r)
    _shrink_small(spec)
    p["spec"] = spec
    p["bf16_as"] = r.choice(["ml_dtypes", "uint16"])
    if kind == "representations":
        p["reps"] = {n: r.choice(REPRESENTATIONS) for n in opspec.input_shapes(spec)}
    elif kind == "out":
        p["variant"] = r.choice(OUT_VARIANTS)
        p["target"] = r.choice(sorted(opspec.input_shapes(spec)))
    elif kind == "alias_inputs":
        p["how"] = r.choice(["qkv_same_object", "kv_overlapping", "past_overlaps_key", "mask_is_float_bytes"])
    elif kind == "threads":
        p["num_threads"] = r.choice([0, 1, 2, 3, 4, 7, 16, 64, -1, -7, 2**31, 2.0, "2", None])
    elif kind == "concurrent":
        p["threads"] = r.choice([2, 3, 4])
        p["calls"] = r.choice([2, 5, 10])
        p["seeds"] = [r.randrange(2**31) for _ in range(p["threads"])]
    elif kind == "not_arrays":
        p["what"] = r.choice(["none", "string", "zero_d", "object_array", "ragged_list", "dict", "giant_zero_size",
                              "complex", "int_array", "bytes"])
        p["slot"] = r.choice(["query", "key", "value", "attn_bias", "key_padding_mask", "past_key"])
    elif kind == "dtype_keyword":
        p["dtype_kw"] = r.choice(["bfloat16", "float16", "float32", "", 5, "BFLOAT16"])
    elif kind == "fork":
        p["threads_parent"] = r.choice([2, 3])
        p["threads_child"] = r.choice([0, 2, 3])
    return p


def _shrink_small(spec):
    spec["Sq"] = min(spec["Sq"], 40)
    spec["Skv"] = min(spec["Skv"], 60)
    spec["Sp"] = min(spec["Sp"], 20)
    if spec["bias"] is not None:
        spec["bias"] = opspec._fit_bias(spec["bias"], spec)


# ---- converting a spec's float32 arrays to what the binding takes ---------------------------------

def to_binding_dtype(x: np.ndarray, dtype: str, bf16_as: str):
    if x.dtype != np.float32:
        return x
    if dtype == "float16":
        return x.astype(np.float16)
    if dtype == "bfloat16":
        if bf16_as == "ml_dtypes" and BF16 is not None:
            return x.astype(BF16)
        from ort_helpers import to_bf16_bits

        return to_bf16_bits(x)
    return x


def from_binding(y) -> np.ndarray:
    y = np.asarray(y)
    if y.dtype == np.uint16:
        from ort_helpers import from_bf16_bits

        return from_bf16_bits(y)
    return y.astype(np.float32)


def _dtype_kw(spec, bf16_as):
    return {"dtype": "bfloat16"} if spec["dtype"] == "bfloat16" and (bf16_as != "ml_dtypes" or BF16 is None) else {}


class ArrayLike:
    def __init__(self, a):
        self._a = a

    def __array__(self, dtype=None, copy=None):
        return self._a if dtype is None else self._a.astype(dtype)


class Sub(np.ndarray):
    pass


def represent(x: np.ndarray, how: str, rng: np.random.Generator):
    """(object equal to x as numpy.asarray sees it, must the binding accept it?)"""
    if how == "c":
        return x, True
    if how == "strided_view":
        buf = np.zeros(x.shape[:-1] + (x.shape[-1] * 2 + 1,), x.dtype) if x.ndim else np.zeros(1, x.dtype)
        view = buf[..., 1::2][..., : x.shape[-1]] if x.ndim else x
        view[...] = x
        return view, True
    if how == "transposed_view" and x.ndim >= 2:
        buf = np.ascontiguousarray(np.swapaxes(x, 0, 1))
        return np.swapaxes(buf, 0, 1), True
    if how == "negative_stride" and x.ndim >= 1:
        buf = np.ascontiguousarray(x[::-1])
        return buf[::-1], True
    if how == "fortran":
        return np.asfortranarray(x), True
    if how == "readonly":
        y = x.copy()
        y.setflags(write=False)
        return y, True
    if how == "array_like":
        return ArrayLike(x.copy()), True
    if how == "memoryview" and x.dtype != BF16:
        return memoryview(np.ascontiguousarray(x)), True
    if how == "unaligned" and x.itemsize > 1:
        raw = np.zeros(x.nbytes + x.itemsize, np.uint8)
        y = np.ndarray(x.shape, x.dtype, buffer=raw, offset=1)
        y[...] = x
        return y, True
    if how == "list":
        # numpy.asarray makes float64 of Python floats (not a dtype the op takes); masks stay exact
        return x.tolist(), x.dtype.kind in "biu" and x.dtype != np.uint16
    if how == "big_endian" and x.dtype.itemsize > 1 and x.dtype != BF16:
        return x.astype(x.dtype.newbyteorder(">")), None  # either: converted, or a clean error
    if how == "subclass":
        return x.view(Sub), True
    return x, True


def _call(inputs: dict, spec: dict, **kw):
    import fastattn_onnx

    attrs = spec["attrs"]
    return fastattn_onnx.attention(
        inputs["query"], inputs["key"], inputs["value"], attn_bias=inputs.get("attn_bias"),
        key_padding_mask=inputs.get("key_padding_mask"), past_key=inputs.get("past_key"),
        past_value=inputs.get("past_value"), **attrs, **kw)


def _check_result(result, inputs32: dict, spec: dict, presents: bool) -> str | None:
    if presents:
        if not (isinstance(result, tuple) and len(result) == 3):
            return f"expected (out, present_key, present_value), got {type(result).__name__}"
        out = from_binding(result[0])
    else:
        if isinstance(result, tuple):
            return "got a tuple where one output was expected"
        out = from_binding(result)
    want_shape = opspec.output_shapes(spec)[0]
    if list(out.shape) != want_shape:
        return f"output shape {list(out.shape)}, expected {want_shape}"
    problem = check.check_output(out, inputs32, spec["attrs"], spec["dtype"], spec["H"])
    if problem is None and presents:
        problem = check.check_presents(from_binding(result[1]), from_binding(result[2]), inputs32, spec["KVH"])
    return problem


def _unchanged(before: dict, after: dict) -> str | None:
    for name, b in before.items():
        a = after.get(name)
        if isinstance(a, (list, ArrayLike, memoryview)) or a is None:
            continue
        if not np.array_equal(np.ascontiguousarray(a).view(np.uint8), np.ascontiguousarray(b).view(np.uint8)):
            return f"input {name} was modified by the call"
    return None


def _error(e, keywords, expect_error: bool | None, want_type=None):
    """An exception of the binding: a rule (ValueError/TypeError/RuntimeError naming it) is a clean
    error; any other exception type escaping the binding counts as a traceback."""
    clean, text = check.binding_error(e, keywords)
    if expect_error is False:
        return WRONG, f"valid input rejected: {text}"
    if not isinstance(e, check.BINDING_ERRORS):
        return TRACEBACK, text
    if want_type is not None and not isinstance(e, want_type):
        return UNCLEAN, f"expected {want_type.__name__}: {text}"
    return (CLEAN if clean else UNCLEAN), text


def run_case(p: dict, ctx: dict):
    return globals()["_run_" + p["kind"]](p)


def _prepared(p):
    spec = p["spec"]
    inputs32 = opspec.make_inputs(spec)
    given = {n: to_binding_dtype(x, spec["dtype"], p.get("bf16_as", "ml_dtypes")) for n, x in inputs32.items()}
    return spec, inputs32, given


def _run_numerics(p):
    spec, inputs32, given = _prepared(p)
    before = {n: np.ascontiguousarray(x).copy() for n, x in given.items()}
    presents = bool(spec.get("present"))
    big = p.get("big_head") and max(spec["D"], spec["Dv"]) > 4096
    try:
        result = _call(given, spec, num_threads=p["num_threads"], return_present=presents,
                       **_dtype_kw(spec, p.get("bf16_as")))
    except Exception as e:  # noqa: BLE001
        if big:
            return _error(e, ["head size"], True)
        return _error(e, [], None if spec.get("zero") else False)
    if big:
        return WRONG, f"head size {max(spec['D'], spec['Dv'])} > 4096 accepted on the CPU (documented: an error)"
    problem = _unchanged(before, given) or _check_result(result, inputs32, spec, presents)
    return (WRONG, problem) if problem else (PASS, "")


def _run_representations(p):
    spec, inputs32, given = _prepared(p)
    rng = np.random.default_rng(spec["data_seed"])
    reps, must = {}, True
    for name, x in given.items():
        obj, ok = represent(x, p["reps"][name], rng)
        reps[name] = obj
        if ok is None:
            must = None if must else must
        elif not ok:
            must = False
    before = {n: np.ascontiguousarray(np.asarray(o)).copy() for n, o in reps.items()
              if isinstance(o, np.ndarray)}
    try:
        result = _call(reps, spec, **_dtype_kw(spec, p.get("bf16_as")))
    except Exception as e:  # noqa: BLE001
        if must is True:
            return WRONG, f"rejected an input numpy.asarray accepts ({p['reps']}): {check.binding_error(e)[1]}"
        return _error(e, [], None)
    if must is False:
        # a float list becomes float64: accepting it would be a silent dtype change
        return WRONG, f"accepted float64 input from a list ({p['reps']})"
    problem = _unchanged(before, reps) or _check_result(result, inputs32, spec, False)
    return (WRONG, problem) if problem else (PASS, "")


def _views_in_one_buffer(arrays: dict, placement: list):
    """Each (name, offset in bytes) of placement gets a view into one shared byte buffer, holding
    the same values as arrays[name]; returns the views."""
    end = max(off + arrays[n].nbytes for n, off in placement) + 64
    raw = np.zeros(end, np.uint8)
    views = {}
    for n, off in placement:
        a = arrays[n]
        v = np.ndarray(a.shape, a.dtype, buffer=raw, offset=off)
        v[...] = a
        views[n] = v
    return raw, views


def _align(n, k=16):
    return (n + k - 1) // k * k


def _run_out(p):
    spec, inputs32, given = _prepared(p)
    variant, target = p["variant"], p["target"]
    presents = variant.startswith("present")
    shapes = opspec.output_shapes(spec)
    out_dtype = np.asarray(given["query"]).dtype
    out_template = np.zeros(shapes[0], out_dtype)
    expect, keywords = "ok", []
    kw = dict(_dtype_kw(spec, p.get("bf16_as")))
    args = dict(given)
    if variant == "ok":
        kw["out"] = np.full(shapes[0], np.nan, np.float32).astype(out_dtype)
    elif variant in ("overlap", "adjacent", "same_object_as_input"):
        src = given[target]
        if variant == "same_object_as_input":
            if src.shape == out_template.shape and src.dtype == out_dtype:
                kw["out"] = src
            else:
                variant = "overlap"
        if variant != "same_object_as_input":
            arrays = {"in": src, "out": out_template}
            if variant == "overlap" and src.nbytes and out_template.nbytes:
                off_out = _align(max(0, src.nbytes - max(1, out_template.nbytes // 2)))
                off_out = min(off_out, _align(src.nbytes) - 16) if src.nbytes >= 16 else 0
                placement = [("in", 0), ("out", max(0, off_out))]
            else:
                placement = [("in", 0), ("out", _align(src.nbytes))]
                variant = "adjacent"
            _, views = _views_in_one_buffer(arrays, placement)
            args[target] = views["in"]
            kw["out"] = views["out"]
        if variant != "adjacent":
            expect, keywords = "error", ["share memory", "overlap", "alias"]
    elif variant == "wrong_dtype":
        kw["out"] = np.zeros(shapes[0], np.float64)
        expect, keywords = "error", ["out"]
    elif variant == "wrong_shape":
        kw["out"] = np.zeros([s + 1 for s in shapes[0]], out_dtype)
        expect, keywords = "error", ["out"]
    elif variant == "non_contiguous":
        big = np.zeros(shapes[0][:-1] + [shapes[0][-1] * 2], out_dtype)
        kw["out"] = big[..., ::2]
        expect, keywords = ("error", ["out"]) if big.size and shapes[0][-1] > 1 else ("either", [])
    elif variant == "readonly":
        o = np.zeros(shapes[0], out_dtype)
        o.setflags(write=False)
        kw["out"] = o
        expect, keywords = "error", ["out", "writeable"]
    elif variant == "list":
        kw["out"] = out_template.tolist()
        expect, keywords = "error", ["out"]
    elif variant == "fortran":
        o = np.asfortranarray(np.zeros(shapes[0], out_dtype))
        kw["out"] = o
        expect = "error" if not o.flags.c_contiguous else "ok"
        keywords = ["out", "contiguous"]
    elif presents:
        kv_dt = np.asarray(given["key"]).dtype
        pk_t, pv_t = np.zeros(opspec.output_shapes({**spec, "present": True})[1], kv_dt), \
            np.zeros(opspec.output_shapes({**spec, "present": True})[2], kv_dt)
        if variant == "present_ok":
            kw["present_key"], kw["present_value"] = pk_t, pv_t
        elif variant == "present_adjacent":
            _, views = _views_in_one_buffer({"pk": pk_t, "pv": pv_t, "out": out_template},
                                            [("pk", 0), ("pv", _align(pk_t.nbytes)),
                                             ("out", _align(pk_t.nbytes) + _align(pv_t.nbytes))])
            kw.update(present_key=views["pk"], present_value=views["pv"], out=views["out"])
        elif variant == "present_overlap_out" and pk_t.nbytes and out_template.nbytes:
            _, views = _views_in_one_buffer({"pk": pk_t, "out": out_template}, [("pk", 0), ("out", 0)])
            kw.update(present_key=views["pk"], out=views["out"], present_value=pv_t)
            expect, keywords = "error", ["share memory"]
        elif variant == "present_overlap_past" and "past_key" in given and pk_t.nbytes:
            _, views = _views_in_one_buffer({"past": given["past_key"], "pk": pk_t}, [("past", 0), ("pk", 0)])
            args["past_key"] = views["past"]
            kw.update(present_key=views["pk"], present_value=pv_t)
            expect, keywords = "error", ["share memory"]
        else:
            kw["present_key"], kw["present_value"] = pk_t, pv_t
    before = {n: np.ascontiguousarray(x).copy() for n, x in args.items() if isinstance(x, np.ndarray)}
    presents = "present_key" in kw
    try:
        result = _call(args, spec, **kw)
    except Exception as e:  # noqa: BLE001
        if expect == "ok":
            return WRONG, f"valid output buffer rejected ({variant}): {check.binding_error(e)[1]}"
        # documented: an output sharing memory with an input (or another output) is a ValueError
        return _error(e, keywords, None, ValueError if "share memory" in keywords else None)
    if expect == "error":
        return WRONG, f"accepted an output that {variant.replace('_', ' ')} ({target}); must be an error"
    if expect == "either":
        return PASS, ""
    # overlapping inputs are rejected, so the inputs must be as they were
    problem = _unchanged(before, args) or _check_result(result, inputs32, spec, presents)
    if problem is None and "out" in kw:
        res0 = result[0] if presents else result
        if not np.shares_memory(res0, kw["out"]):
            problem = "the result is not the given out array"
    return (WRONG, problem) if problem else (PASS, "")


def _run_alias_inputs(p):
    spec, inputs32, given = _prepared(p)
    how = p["how"]
    args = dict(given)
    ref = dict(inputs32)
    if how == "qkv_same_object":
        # one array as query, key and value (4D, same heads, sizes and head sizes)
        q = given["query"]
        spec = dict(spec, layout="4d", Skv=spec["Sq"], KVH=spec["H"], Dv=spec["D"], Sp=0, bias=None, kpm=None,
                    present=False, attrs={k: v for k, v in spec["attrs"].items() if k not in ("num_heads",
                                                                                             "kv_num_heads")})
        q32 = opspec.make_inputs(spec)["query"]
        q = to_binding_dtype(q32, spec["dtype"], p.get("bf16_as"))
        args, ref = {"query": q, "key": q, "value": q}, {"query": q32, "key": q32, "value": q32}
    elif how == "kv_overlapping" and given["key"].dtype == given["value"].dtype:
        k = given["key"]
        off = _align(max(0, k.nbytes // 2))
        _, views = _views_in_one_buffer({"k": k}, [("k", 0)])
        raw = np.zeros(off + given["value"].nbytes + k.nbytes + 64, np.uint8)
        kv = np.ndarray(k.shape, k.dtype, buffer=raw, offset=0)
        kv[...] = k
        vv = np.ndarray(given["value"].shape, k.dtype, buffer=raw, offset=off)
        args["key"], args["value"] = kv, vv
        ref["key"], ref["value"] = from_binding(kv.copy()), from_binding(vv.copy())
    elif how == "past_overlaps_key" and "past_key" in given and given["past_key"].dtype == given["key"].dtype:
        pk = given["past_key"]
        raw = np.zeros(pk.nbytes + given["key"].nbytes + 64, np.uint8)
        pkv = np.ndarray(pk.shape, pk.dtype, buffer=raw, offset=0)
        pkv[...] = pk
        kvw = np.ndarray(given["key"].shape, pk.dtype, buffer=raw, offset=_align(pk.nbytes // 2))
        args["past_key"], args["key"] = pkv, kvw
        ref["past_key"], ref["key"] = from_binding(pkv.copy()), from_binding(kvw.copy())
    elif how == "mask_is_float_bytes" and "key_padding_mask" in given:
        m = given["key_padding_mask"]
        if m.dtype == np.int32 and given["query"].dtype == np.float32 and given["query"].size >= m.size:
            view = given["query"].reshape(-1)[: m.size].view(np.int32).reshape(m.shape)
            args["key_padding_mask"] = view
            ref["key_padding_mask"] = view.copy()
    before = {n: np.ascontiguousarray(x).copy() for n, x in args.items()}
    try:
        result = _call(args, spec, **_dtype_kw(spec, p.get("bf16_as")))
    except Exception as e:  # noqa: BLE001
        return WRONG, f"inputs sharing memory rejected ({how}): {check.binding_error(e)[1]}"
    problem = _unchanged(before, args) or _check_result(result, ref, spec, False)
    return (WRONG, problem) if problem else (PASS, "")


def _run_threads(p):
    spec, inputs32, given = _prepared(p)
    n = p["num_threads"]
    if isinstance(n, int) and not isinstance(n, bool) and -(2**31) <= n < 2**31:
        expect = "either" if n < 0 else "ok"
    else:
        expect = "error"
    try:
        result = _call(given, spec, num_threads=n, **_dtype_kw(spec, p.get("bf16_as")))
    except Exception as e:  # noqa: BLE001
        if expect == "ok":
            return WRONG, f"num_threads={n!r} rejected: {check.binding_error(e)[1]}"
        return _error(e, ["num_threads", "incompatible function arguments"], None)
    if expect == "error":
        return WRONG, f"num_threads={n!r} accepted"
    problem = _check_result(result, inputs32, spec, False)
    return (WRONG, problem) if problem else (PASS, "")


def _run_concurrent(p):
    problems = []
    lock = threading.Lock()

    def work(seed):
        r = random.Random(seed)
        for _ in range(p["calls"]):
            spec = opspec.make_spec(r)
            _shrink_small(spec)
            bf16_as = r.choice(["ml_dtypes", "uint16"])
            inputs32 = opspec.make_inputs(spec)
            given = {n: to_binding_dtype(x, spec["dtype"], bf16_as) for n, x in inputs32.items()}
            try:
                result = _call(given, spec, num_threads=r.choice([0, 1, 2, 3]), **_dtype_kw(spec, bf16_as))
                problem = _check_result(result, inputs32, spec, False)
            except Exception as e:  # noqa: BLE001
                problem = f"raised {type(e).__name__}: {e}"
            if problem:
                with lock:
                    problems.append(f"thread seed {seed}: {problem}")

    threads = [threading.Thread(target=work, args=(s,)) for s in p["seeds"]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    if any(t.is_alive() for t in threads):
        return HANG, "a calling thread did not finish in 60 s"
    return (WRONG, "; ".join(problems[:3])) if problems else (PASS, "")


def _run_not_arrays(p):
    spec, inputs32, given = _prepared(p)
    what, slot = p["what"], p["slot"]
    bad = {"none": None, "string": "query", "zero_d": np.float32(1.0), "object_array": np.array([object()] * 4),
           "ragged_list": [[1.0, 2.0], [3.0]], "dict": {"a": 1}, "complex": np.ones((1, 2, 2, 4), np.complex64),
           "int_array": np.ones(np.shape(given["query"]), np.int32), "bytes": b"\x00" * 16,
           "giant_zero_size": np.zeros((0, 2**40, 8), np.float32)}[what]
    args = dict(given)
    args[slot] = bad
    if slot == "past_key" and "past_value" not in args:
        args["past_value"] = given["key"] if spec["layout"] == "4d" else None
    ref = dict(inputs32)
    expect_ok = False
    if what == "none" and slot in ("attn_bias", "key_padding_mask") or \
            (what == "none" and slot == "past_key" and args.get("past_value") is None):
        expect_ok = True  # None is "not given"
        ref.pop(slot, None)
    elif what == "zero_d" and slot == "attn_bias" and spec["dtype"] == "float32":
        expect_ok = True  # a scalar bias broadcasts to every score (of the query's type: else refused)
        ref["attn_bias"] = np.float32(1.0)
    try:
        result = _call(args, spec, **_dtype_kw(spec, p.get("bf16_as")))
    except Exception as e:  # noqa: BLE001
        return _error(e, [], False if expect_ok else None)
    if expect_ok:
        problem = _check_result(result, ref, spec, False)
        return (WRONG, problem) if problem else (PASS, "")
    if what == "giant_zero_size":
        return PASS, "accepted a zero-size input with a 2**40 axis"
    return WRONG, f"{slot} = {what} accepted"


def _run_dtype_keyword(p):
    spec, inputs32, given = _prepared(p)
    kw = p["dtype_kw"]
    args = dict(given)
    if kw == "bfloat16":
        from ort_helpers import to_bf16_bits

        spec = dict(spec, dtype="bfloat16")
        inputs32 = {n: (opspec.round_to(x, "bfloat16") if x.dtype == np.float32 else x) for n, x in inputs32.items()}
        args = {n: (to_bf16_bits(x) if x.dtype == np.float32 else x) for n, x in inputs32.items()}
    try:
        result = _call(args, spec, dtype=kw)
    except Exception as e:  # noqa: BLE001
        if kw == "bfloat16":
            return WRONG, f"dtype='bfloat16' with uint16 bits rejected: {check.binding_error(e)[1]}"
        return _error(e, ["dtype", "incompatible function arguments"], None)
    if kw != "bfloat16":
        # dtype= may only name bfloat16 (to read uint16 arrays); anything else must not pass silently
        if kw == "float32" or kw == "":
            return WRONG, f"dtype={kw!r} accepted (the binding documents only 'bfloat16')"
        return WRONG, f"dtype={kw!r} accepted"
    problem = _check_result(result, inputs32, spec, False)
    return (WRONG, problem) if problem else (PASS, "")


FORK_SCRIPT = r"""
import os, sys, numpy as np
sys.path[:0] = {paths!r}
import fastattn_onnx
from reference import attention_reference
rng = np.random.default_rng(0)
q, k, v = (rng.standard_normal((1, 4, 130, 32)).astype(np.float32) for _ in range(3))
want = attention_reference(q, k, v, causal=True)[0]
fastattn_onnx.attention(q, k, v, causal=True, num_threads={parent})
pid = os.fork()
if pid == 0:
    try:
        got = fastattn_onnx.attention(q, k, v, causal=True, num_threads={child})
        os._exit(0 if np.abs(got - want).max() < 2e-5 else 3)
    except BaseException as e:
        print("child raised", type(e).__name__, e, file=sys.stderr, flush=True)
        os._exit(4)
_, status = os.waitpid(pid, 0)
if os.WIFSIGNALED(status):
    sys.exit(100 + os.WTERMSIG(status))
if os.WEXITSTATUS(status):
    sys.exit(os.WEXITSTATUS(status))
got = fastattn_onnx.attention(q, k, v, causal=True, num_threads={parent})
sys.exit(0 if np.abs(got - want).max() < 2e-5 else 5)
"""


def _run_fork(p):
    import os

    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = FORK_SCRIPT.format(paths=[tests] + [x for x in sys.path if x], parent=p["threads_parent"],
                                child=p["threads_child"])
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return HANG, "a forked child's call (or the parent's next call) did not finish in 60 s"
    rc = done.returncode
    if rc == 0:
        return PASS, ""
    if rc < 0 or rc >= 100:
        return CRASH, f"status {rc}: {done.stderr[-800:]}"
    return WRONG, {3: "the forked child got a wrong result", 4: "the forked child's call raised",
                   5: "the parent's call after the fork was wrong"}.get(rc, f"status {rc}") + f": {done.stderr[-800:]}"
