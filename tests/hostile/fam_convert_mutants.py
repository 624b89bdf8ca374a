"""The converter on mutated models: hand-built decomposed and fused-op models (models/) and real
Hugging Face exports (models/export_hf.py, exported once per run, cached), each with one or two
mutations -- a softmax axis, a transpose perm, a constant (scale, mask value, shape), inputs
swapped, a node dropped, a Cast target, a Trilu direction, an opset or IR version, an attribute
type, truncated or flipped bytes.

Whatever happens must be a conversion whose result computes what the (mutated) original
computes, or a ConvertError / VerifyError (the CLI's one-line errors); never another exception
(a Traceback from the CLI), a crash or a hang; the input file never changes."""
from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import tempfile

import numpy as np

from .cases import PASS, SKIP

NAME = "convert_mutants"
CI_CASES = 60
LONG_CASES = 2000
BATCH = 15
CASE_TIMEOUT = 180
CASE_COST = 3.0

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HAND_BUILT = ["decomposed", "decomposed_where", "decomposed_positions", "decomposed_plain", "attention23", "mha",
              "gqa"]
CI_EXPORTS = [("llama", "torchscript")]
LONG_EXPORTS = [("llama", "torchscript"), ("bert", "torchscript"), ("gpt2", "torchscript"),
                ("mistral", "torchscript"), ("llama", "dynamo"), ("bert", "dynamo")]
SIZES = {"llama": dict(hidden=64, heads=4, kv_heads=2, layers=2), "bert": dict(hidden=64, heads=4, layers=2),
         "gpt2": dict(hidden=64, heads=4, layers=2),
         "mistral": dict(hidden=64, heads=4, kv_heads=2, layers=2, sliding_window=40)}
MUTATIONS = ["softmax_axis", "transpose_perm", "float_const", "int_const", "swap_inputs", "drop_node", "cast_to",
             "trilu_flip", "opset", "ir_version", "attr_type", "remove_initializer", "truncate", "flip_bytes",
             "rename_value", "none"]


def _cache_dir() -> str:
    d = os.path.join(tempfile.gettempdir(), "fastattn-hostile-cache")
    os.makedirs(d, exist_ok=True)
    return d


EXPORT_SCRIPT = r"""
import sys, warnings
warnings.filterwarnings("ignore")
sys.path.insert(0, {models!r})
import export_hf
export_hf.export_model({arch!r}, {exporter!r}, {path!r}, **{sizes!r})
"""


def prepare(ctx: dict) -> None:
    """Exports the real models this run uses (once per machine: cached by the exporter's source)."""
    exports = LONG_EXPORTS if ctx.get("long") else CI_EXPORTS
    ctx["exports"] = {}
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        ctx["exports_skip"] = "torch/transformers not installed: no real exports"
        return
    with open(os.path.join(ROOT, "models", "export_hf.py"), "rb") as f:
        key = hashlib.sha256(f.read()).hexdigest()[:12]
    for arch, exporter in exports:
        path = os.path.join(_cache_dir(), f"{arch}-{exporter}-{key}.onnx")
        if not os.path.exists(path):
            script = EXPORT_SCRIPT.format(models=os.path.join(ROOT, "models"), arch=arch, exporter=exporter,
                                          path=path + ".tmp", sizes=SIZES[arch])
            done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
            if done.returncode != 0 or not os.path.exists(path + ".tmp"):
                continue
            os.replace(path + ".tmp", path)
            data = path + ".tmp.data"
            if os.path.exists(data):  # an export with external data is not used (kept simple)
                os.unlink(path)
                continue
        ctx["exports"][f"{arch}-{exporter}"] = path


def make_case(seed: int) -> dict:
    r = random.Random(seed)
    base = r.choice(HAND_BUILT + ["export"] * 3)
    muts = [MUTATIONS[seed % len(MUTATIONS)]] if r.random() < 0.5 else [r.choice(MUTATIONS)]
    if r.random() < 0.3:
        muts.append(r.choice(MUTATIONS))
    return {"base": base, "export_pick": r.randrange(1000), "mutations": muts, "mut_seed": r.randrange(2**31),
            "verify": r.random() < 0.8}


def _base_model(p: dict, ctx: dict):
    import onnx

    sys.path.insert(0, os.path.join(ROOT, "models"))
    base = p["base"]
    if base == "export":
        exports = sorted(ctx.get("exports", {}).items())
        if not exports:
            return None
        name, path = exports[p["export_pick"] % len(exports)]
        return onnx.load(path)
    if base.startswith("decomposed"):
        import build_decomposed

        kw = {"decomposed": {}, "decomposed_where": {"where_masking": True},
              "decomposed_positions": {"mask_from_positions": True},
              "decomposed_plain": {"softcap": 0.0, "split_scale": False}}[base]
        if base == "decomposed_plain":
            return build_decomposed.build_decomposed_model(softcap=30.0, split_scale=False)
        return build_decomposed.build_decomposed_model(**kw)
    import build_fused_ops

    return build_fused_ops.build_fused_model({"attention23": "attention", "mha": "mha", "gqa": "gqa"}[base])


def _mutate_proto(model, what: str, r: random.Random) -> str:
    """Applies one structural mutation in place; returns what it did."""
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    nodes = list(g.node)

    def pick(op_types=None, cond=None):
        cands = [n for n in nodes if (op_types is None or n.op_type in op_types) and (cond is None or cond(n))]
        return r.choice(cands) if cands else None

    if what == "softmax_axis":
        n = pick(["Softmax"])
        if n:
            new = r.choice([-2, 0, 1, 2, 3])
            for a in n.attribute:
                if a.name == "axis":
                    a.i = new
                    break
            else:
                n.attribute.append(helper.make_attribute("axis", new))
            return f"Softmax {n.name!r} axis -> {new}"
    elif what == "transpose_perm":
        n = pick(["Transpose"])
        if n:
            for a in n.attribute:
                if a.name == "perm":
                    perm = list(a.ints)
                    r.shuffle(perm)
                    del a.ints[:]
                    a.ints.extend(perm)
                    return f"Transpose {n.name!r} perm -> {perm}"
    elif what in ("float_const", "int_const"):
        want_float = what == "float_const"
        kinds = (TensorProto.FLOAT, TensorProto.FLOAT16) if want_float else (TensorProto.INT64, TensorProto.INT32)
        # small initializers and Constant nodes (exporters put scales, mask values and shapes there)
        tensors = [t for t in g.initializer if t.data_type in kinds and np.prod(t.dims) <= 16]
        for n in nodes:
            if n.op_type == "Constant":
                for a in n.attribute:
                    if a.name == "value" and a.t.data_type in kinds and np.prod(a.t.dims) <= 16:
                        tensors.append(a.t)
        if tensors:
            t = r.choice(tensors)
            a = numpy_helper.to_array(t).copy()
            if a.size:
                i = r.randrange(a.size)
                flat = a.reshape(-1)
                if want_float:
                    flat[i] = flat[i] * r.choice([0.5, -1.0, 1.0001, 0.0, 2.0]) if r.random() < 0.7 else \
                        r.choice([np.inf, -np.inf, np.nan, -1e4, 1e30])
                else:
                    flat[i] = r.choice([flat[i] + 1, flat[i] - 1, -1, 0, 2**40 if a.dtype == np.int64 else 7])
                name = t.name
                t.CopyFrom(numpy_helper.from_array(a, name))
                return f"constant {name!r}[{i}] -> {flat[i]!r}"
    elif what == "swap_inputs":
        n = pick(cond=lambda n: len([x for x in n.input if x]) >= 2)
        if n:
            ins = list(n.input)
            ins[0], ins[1] = ins[1], ins[0]
            del n.input[:]
            n.input.extend(ins)
            return f"{n.op_type} {n.name!r} inputs swapped"
    elif what == "drop_node":
        n = pick(cond=lambda n: n.input and n.output and n.input[0])
        if n:
            src, dst = n.input[0], n.output[0]
            g.node.remove(n)
            for m in g.node:
                for k, x in enumerate(m.input):
                    if x == dst:
                        m.input[k] = src
            for o in g.output:
                if o.name == dst:
                    o.name = src
            return f"{n.op_type} {n.name!r} dropped"
    elif what == "cast_to":
        n = pick(["Cast"])
        if n:
            to = r.choice([TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.INT64, TensorProto.BOOL])
            for a in n.attribute:
                if a.name == "to":
                    a.i = to
            return f"Cast {n.name!r} to {to}"
    elif what == "trilu_flip":
        n = pick(["Trilu"])
        if n:
            for a in n.attribute:
                if a.name == "upper":
                    a.i = 1 - a.i
                    break
            else:
                n.attribute.append(helper.make_attribute("upper", 1))
            return f"Trilu {n.name!r} flipped"
    elif what == "opset":
        v = r.choice([7, 11, 13, 17, 21, 23, 24, 25, 99])
        for o in model.opset_import:
            if o.domain in ("", "ai.onnx"):
                o.version = v
        return f"default opset -> {v}"
    elif what == "ir_version":
        model.ir_version = r.choice([1, 3, 7, 11, 99])
        return f"ir_version -> {model.ir_version}"
    elif what == "attr_type":
        n = pick(cond=lambda n: any(a.type == 2 for a in n.attribute))  # an INT attribute
        if n:
            a = r.choice([a for a in n.attribute if a.type == 2])
            value = float(a.i)
            n.attribute.remove(a)
            n.attribute.append(helper.make_attribute(a.name, value))
            return f"{n.op_type} {n.name!r} attribute {a.name} int -> float"
    elif what == "remove_initializer":
        if len(g.initializer):
            t = r.choice(list(g.initializer))
            g.initializer.remove(t)
            return f"initializer {t.name!r} removed"
    elif what == "rename_value":
        n = pick(cond=lambda n: n.output)
        if n:
            n.output[0] = n.output[0] + "_renamed"
            return f"{n.op_type} {n.name!r} output renamed (dangling consumers)"
    return f"{what}: nothing to mutate"


def _mutated_bytes(model, muts, seed) -> tuple[bytes, list]:
    r = random.Random(seed)
    done = []
    for what in muts:
        if what in ("truncate", "flip_bytes", "none"):
            continue
        done.append(_mutate_proto(model, what, r))
    data = model.SerializeToString()
    for what in muts:
        if what == "truncate" and len(data) > 8:
            cut = r.randrange(1, len(data))
            data = data[:cut]
            done.append(f"truncated to {cut} bytes")
        elif what == "flip_bytes" and data:
            b = bytearray(data)
            for _ in range(r.choice([1, 2, 8])):
                i = r.randrange(len(b))
                b[i] ^= 1 << r.randrange(8)
            data = bytes(b)
            done.append("bytes flipped")
    return data, done


def run_case(p: dict, ctx: dict):
    from .fam_convert_graphs import _digest

    model = _base_model(p, ctx)
    if model is None:
        return SKIP, ctx.get("exports_skip", "no real export available")
    data, done = _mutated_bytes(model, p["mutations"], p["mut_seed"])
    d = tempfile.mkdtemp(dir=ctx["workdir"], prefix="mut-")
    try:
        src = os.path.join(d, "model.onnx")
        with open(src, "wb") as f:
            f.write(data)
        outcome, detail = _convert(src, os.path.join(d, "model.fa.onnx"), p)
        return outcome, f"[{'; '.join(done) or 'unmutated'}] {detail}"
    finally:
        import shutil

        shutil.rmtree(d, ignore_errors=True)


def _convert(src: str, out: str, p: dict):
    import traceback

    from fastattn_onnx.convert import ConvertError, VerifyError, convert, sample_inputs

    from .cases import CLEAN, TRACEBACK, WRONG
    from .fam_convert_graphs import _digest

    digest = _digest(src)
    try:
        result = convert(src, out, verify=p["verify"])
    except (ConvertError, VerifyError, OSError) as e:
        if _digest(src) != digest:
            return WRONG, "the input file changed"
        return CLEAN, f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
    except Exception as e:  # noqa: BLE001
        return TRACEBACK, "".join(traceback.format_exception(e))[-2500:]
    if _digest(src) != digest:
        return WRONG, "the input file changed"
    if result.fused == 0:
        return PASS, f"nothing fused ({len(result.report.left)} left alone)"
    # independent check: unpadded inputs (no fully padded rows), sizes the verify did not use
    import onnxruntime as ort

    from ort_helpers import ep_session, session_options

    try:
        orig = ort.InferenceSession(src, session_options(custom_ops=False), providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - the mutated original does not load: nothing to compare
        return PASS, f"fused {result.fused}; the original does not load in ONNX Runtime ({str(e)[:120]})"
    with open(out, "rb") as f:
        try:
            conv = ep_session(f.read())
        except Exception as e:  # noqa: BLE001
            return WRONG, f"fused {result.fused}, the original loads but the converted model does not: {str(e)[:300]}"
    for batch, seq in ((1, 7), (2, 19)):
        try:
            feeds = sample_inputs(src, batch=batch, seq=seq, padded=False, seed=seq)
            want = orig.run(None, feeds)
        except Exception:  # noqa: BLE001 - the original cannot run these sizes
            continue
        try:
            got = conv.run(None, feeds)
        except Exception as e:  # noqa: BLE001
            return WRONG, f"fused {result.fused}; the original runs (batch {batch}, seq {seq}), the converted fails: " \
                          f"{str(e)[:300]}"
        for o, w, g in zip(orig.get_outputs(), want, got):
            w64, g64 = np.asarray(w, np.float64), np.asarray(g, np.float64)
            if w64.shape != g64.shape:
                return WRONG, f"output {o.name}: shape {g64.shape} vs original {w64.shape}"
            if (np.isnan(w64) != np.isnan(g64)).any():
                return WRONG, f"output {o.name}: NaN pattern differs from the original (batch {batch}, seq {seq})"
            fin = np.isfinite(w64)
            err = float(np.max(np.abs(np.where(fin, g64 - w64, 0.0)), initial=0.0))
            scale = float(np.max(np.abs(np.where(fin, w64, 0.0)), initial=0.0))
            if err > 1e-4 * max(scale, 1.0):
                fused = "; ".join(str(f) for f in result.report.fused)[:300]
                return WRONG, (f"fused ({fused}); output {o.name} max|diff| {err:.3g} vs the original (scale "
                               f"{scale:.3g}, batch {batch}, seq {seq})")
    return PASS, f"fused {result.fused}"
