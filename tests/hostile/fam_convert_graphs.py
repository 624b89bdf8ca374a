"""The converter on near-miss attention graphs (hostile/graphs.py): whatever it fuses must compute
what the original computes, checked here independently of its own --verify (other batch sizes,
sequence lengths, padding and seeds, ONNX Runtime with and without FastAttentionEP). Leaving a
graph alone, or refusing it with a ConvertError / VerifyError, is fine; any other exception is a
traceback; the input file must not change."""
from __future__ import annotations

import hashlib
import os
import random
import shutil
import time

import numpy as np

from . import graphs
from .cases import CLEAN, PASS, TRACEBACK, WRONG

NAME = "convert_graphs"
CI_CASES = 60
LONG_CASES = 1500
BATCH = 15
CASE_TIMEOUT = 120
CASE_COST = 3.0

# (batch, seq, past) of the independent check: not multiples of 16, 1-token decode, long past
CHECK_SIZES = [(1, 1, 5), (3, 13, 3), (2, 33, 17), (2, 7, 0)]


def make_case(seed: int) -> dict:
    r = random.Random(seed)
    return {"graph": graphs.make_params(r), "data_seed": r.randrange(2**31)}


def _sessions(original_path, converted_path):
    import onnxruntime as ort

    from ort_helpers import ep_session, session_options

    orig = ort.InferenceSession(original_path, session_options(custom_ops=False), providers=["CPUExecutionProvider"])
    with open(converted_path, "rb") as f:
        conv = ep_session(f.read())
    return orig, conv


def compare_models(p: dict, original_path: str, converted_path: str, seed: int) -> str | None:
    orig, conv = _sessions(original_path, converted_path)
    names = [o.name for o in orig.get_outputs()]
    for batch, seq, past in CHECK_SIZES:
        if not p["past"] and past:
            continue
        f = graphs.feeds(p, batch, seq, seed + seq, past=past if p["past"] else 0)
        try:
            want = orig.run(None, f)
        except Exception:  # noqa: BLE001 - the original itself cannot run these sizes
            continue
        got = conv.run(None, f)
        rows = graphs.valid_rows(p, f)
        for name, w, g in zip(names, want, got):
            if w.shape != g.shape:
                return f"{name}: shape {g.shape} vs original {w.shape} (batch {batch}, seq {seq}, past {past})"
            if name == "y":
                keep = np.broadcast_to(rows[:, :, None], w.shape)
            else:
                keep = np.ones(w.shape, bool)
            w64, g64 = w.astype(np.float64), g.astype(np.float64)
            nan_bad = keep & (np.isnan(w64) != np.isnan(g64))
            if nan_bad.any():
                return f"{name}: NaN where the original has none or the reverse (batch {batch}, seq {seq}, past {past})"
            fin = keep & np.isfinite(w64)
            err = float(np.max(np.abs(np.where(fin, g64 - w64, 0.0)), initial=0.0))
            scale = float(np.max(np.abs(np.where(fin, w64, 0.0)), initial=0.0))
            if err > 1e-4 * max(scale, 1.0):
                return (f"{name}: max|diff| {err:.3g} vs original (scale {scale:.3g}; batch {batch}, seq {seq}, "
                        f"past {past})")
    return None


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def convert_and_check(p: dict, model, workdir: str, seed: int, verify: bool = True):
    import onnx

    from fastattn_onnx.convert import ConvertError, VerifyError, convert

    d = os.path.join(workdir, f"g-{os.getpid()}-{time.monotonic_ns()}")
    os.makedirs(d)
    try:
        src = os.path.join(d, "model.onnx")
        onnx.save(model, src)
        digest = _digest(src)
        out = os.path.join(d, "model.fa.onnx")
        try:
            result = convert(src, out, verify=verify)
        except (ConvertError, VerifyError, OSError) as e:
            if _digest(src) != digest:
                return WRONG, "the input file changed"
            return CLEAN, f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
        except Exception as e:  # noqa: BLE001 - would be a Traceback from the CLI
            import traceback

            return TRACEBACK, "".join(traceback.format_exception(e))[-2000:]
        if _digest(src) != digest:
            return WRONG, "the input file changed"
        if result.fused == 0:
            return PASS, "left alone: " + "; ".join(f"{x.node}: {x.reason}" for x in result.report.left)[:300]
        problem = compare_models(p, src, out, seed)
        if problem:
            fused = "; ".join(str(f) for f in result.report.fused)[:400]
            return WRONG, f"fused ({fused}) but differs from the original: {problem}"
        return PASS, f"fused {result.fused}"
    finally:
        shutil.rmtree(d, ignore_errors=True)


def run_case(params: dict, ctx: dict):
    p = params["graph"]
    return convert_and_check(p, graphs.build(p), ctx["workdir"], params["data_seed"])
