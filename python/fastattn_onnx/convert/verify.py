"""Prove the converted model computes what the original does, in ONNX Runtime, on random inputs.

One sample proves little: a mask read from the probes may hold only for the sizes and padding
the probes had. So both models run on several samples (samples()): the main sizes with left and
right padding, length 1, length 2 with one padded token on either side, batch 1, and scattered
padding at a length past 16 that is not a multiple of it. Each output's worst sample is reported.

Outputs are compared at real (non-padding) token positions only: at a padding query position
every key is blocked, where the original softmax spreads uniformly over blocked keys and the
fused op returns zeros. Those positions are padding by definition and never read downstream.

Tolerance: an output passes when max |converted - original| <= tolerance * max |original| (the
difference taken in float64, so the comparison adds no error of its own). The tolerance follows the
precision the changed part of the graph computes in, not the outputs' type: a float16 graph with
float32 inputs and outputs (ONNX Runtime's float16 converter's default) rounds every attention in
float16, so the original itself is only float16-accurate, and the two models may differ by that
much while both are equally close to the exact (float64) result. The precision is the lowest float
type among the fused nodes' queries, the values they replaced and everything computed from their
outputs (ConvertReport.compute_type): 1e-4 for float32, 1e-2 for float16, 3e-2 for bfloat16
(COMPUTE_TOLERANCE). An unrelated low-precision branch computes the same in both models and does
not loosen the check. Without known types the outputs' own types decide. A tolerance given by the
caller (`--tolerance`) replaces it for every float output; integer and bool outputs must always
match exactly. Only the two models are compared: a file holds no higher-precision version of
itself, so whether the converted model is closer to the exact result than the original cannot be
checked here.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from . import inputs as model_inputs
from .loading import ConvertError

# Maximum absolute difference allowed, relative to the largest magnitude of the output, by the
# float type the graph computes in (numpy's names; lowest precision first).
COMPUTE_TOLERANCE = {"bfloat16": 3e-2, "float16": 1e-2, "float32": 1e-4, "float64": 1e-8}


@dataclasses.dataclass
class Tolerance:
    relative: float  # of each float output's largest magnitude
    why: str  # "float16 compute", "given", "float32 outputs"

    def __str__(self) -> str:
        return f"tolerance {self.relative:.3g} of each output's scale ({self.why})"


def lowest_precision(type_names) -> str | None:
    """The least precise of these float type names that COMPUTE_TOLERANCE knows, or None."""
    names = set(type_names)
    known = [name for name in COMPUTE_TOLERANCE if name in names]
    return known[0] if known else None


def choose_tolerance(compute_type: str | None, given: float | None = None) -> Tolerance | None:
    """A given tolerance, else the compute precision's; None: each output's own type decides."""
    if given is not None:
        try:
            relative = float(given)
        except (TypeError, ValueError):
            relative = float("nan")
        if not (np.isfinite(relative) and relative >= 0):
            raise ValueError(f"tolerance must be a finite number >= 0, got {given!r}")
        return Tolerance(relative, "given")
    if compute_type in COMPUTE_TOLERANCE:
        return Tolerance(COMPUTE_TOLERANCE[compute_type], f"{compute_type} compute")
    return None


@dataclasses.dataclass
class OutputCheck:
    name: str
    max_abs_error: float
    scale: float
    tolerance: float
    ok: bool


@dataclasses.dataclass
class VerifyResult:
    ok: bool
    outputs: list[OutputCheck]  # per output, its worst sample
    sizes: dict  # the main sample's sizes
    converted_providers: list[str]
    samples: list[dict] = dataclasses.field(default_factory=list)  # sizes, padding, ok, worst
    tolerance: str = ""  # which relative tolerance float outputs had, and why

    def summary(self) -> str:
        worst = max(self.outputs, key=_badness)
        state = "passed" if self.ok else "FAILED"
        failed = [s for s in self.samples if not s["ok"]]
        where = f" on {_describe(failed[0])}" if failed else ""
        return (f"verify {state}: {len(self.outputs)} output(s), {len(self.samples)} input "
                f"sample(s), worst {worst.name} max|diff| {worst.max_abs_error:.3g} "
                f"(allowed {worst.tolerance:.3g}){where}; {self.tolerance}")


def _badness(check: OutputCheck) -> float:
    return check.max_abs_error / max(check.tolerance, 1e-30)


def _describe(sample: dict) -> str:
    sizes = sample["sizes"]
    return f"batch {sizes.get('batch')}, length {sizes.get('seq')}, padding {sample['padding']}"


class VerifyError(RuntimeError):
    def __init__(self, result: VerifyResult):
        super().__init__(result.summary())
        self.result = result


def _tolerance(array: np.ndarray, chosen: Tolerance | None) -> float:
    if array.dtype.name not in COMPUTE_TOLERANCE:
        return 0.0  # integer/bool outputs must match exactly
    return chosen.relative if chosen is not None else COMPUTE_TOLERANCE[array.dtype.name]


def _by_output_types(outputs: list) -> Tolerance:
    """What each output's own type allows, for the summary (no compute type known)."""
    lowest = lowest_precision(np.asarray(o).dtype.name for o in outputs)
    if lowest is None:
        return Tolerance(0.0, "no float outputs: exact match")
    return Tolerance(COMPUTE_TOLERANCE[lowest], f"{lowest} outputs")


def _valid_positions(array: np.ndarray, rows: np.ndarray | None,
                     seq: int | None = None) -> np.ndarray:
    """Entries of `array` at real token positions ([B, S] rows on axis 0 and the first S axis;
    with a cache the mask covers past + new tokens, and an axis of the `seq` new tokens takes
    the mask's last `seq` columns)."""
    if rows is None or array.ndim < 2 or array.shape[0] != rows.shape[0]:
        return array.reshape(-1)
    for length, columns in ((rows.shape[1], rows), (seq, rows[:, -seq:] if seq else None)):
        if columns is None or length > rows.shape[1]:
            continue
        for axis in range(1, array.ndim):
            if array.shape[axis] == length:
                return np.moveaxis(array, axis, 1)[columns]
    return array.reshape(-1)


def fused_session(path_or_bytes, providers=None, options=None):
    """An InferenceSession able to run com.fastattention nodes (the plugin EP first)."""
    import onnxruntime as ort

    import fastattn_onnx  # noqa: F401  (registers FastAttentionEP)

    if options is None:
        options = ort.SessionOptions()
        options.log_severity_level = 3
    # The op's schema comes with the custom-op library; without it ORT 1.31 rejects the model
    # at load ("not a registered function/op") before the EP is asked. Placement stays the EP's.
    fastattn_onnx.register_custom_ops(options)
    providers = providers or [fastattn_onnx.EP_NAME, "CPUExecutionProvider"]
    return ort.InferenceSession(path_or_bytes, options, providers=providers)


def compare_outputs(names, expected, actual, rows, seq: int | None = None,
                    tolerance: Tolerance | None = None) -> list[OutputCheck]:
    checks = []
    for name, want, got in zip(names, expected, actual):
        want_v = _valid_positions(np.asarray(want), rows, seq)
        got_v = _valid_positions(np.asarray(got), rows, seq)
        if want_v.shape != got_v.shape:
            checks.append(OutputCheck(name, float("inf"), 0.0, 0.0, False))
            continue
        want64, got64 = want_v.astype(np.float64), got_v.astype(np.float64)
        scale = float(np.max(np.abs(want64))) if want64.size else 0.0
        allowed = _tolerance(np.asarray(want), tolerance) * max(scale, 1e-6)
        error = float(np.max(np.abs(want64 - got64))) if want64.size else 0.0
        if not np.isfinite(error):
            error = float("inf")
        checks.append(OutputCheck(name, error, scale, allowed, error <= allowed))
    return checks


def samples(sizes: dict | None = None) -> list[tuple[dict, str]]:
    """(sizes, padding pattern) of each verification sample; the first is the main one."""
    given = {k: v for k, v in (sizes or {}).items() if k not in ("batch", "seq", "total")}
    seq = {**model_inputs.DEFAULT_DIMS, **(sizes or {})}["seq"]
    scattered = max(17, seq + 2)
    scattered += scattered % 16 == 0  # past 16 (two tiles), never a multiple of 16
    return [(sizes or {}, "mixed"),  # left and right padding beside a full row
            ({**given, "batch": 1, "seq": 1}, "none"),
            ({**given, "batch": 1, "seq": 2}, "right"),  # one padded token, batch 1
            ({**given, "batch": 2, "seq": 2}, "left"),
            ({**given, "batch": 2, "seq": scattered}, "holes")]


def verify(original_path: str, converted_path: str, sizes: dict | None = None,
           seed: int = 0, tolerance: Tolerance | None = None) -> VerifyResult:
    """Run both models on the same random inputs (samples()); raise nothing, return the
    comparison. A sample the original itself cannot run (other than the main one) is skipped.
    tolerance: see choose_tolerance(); None: each output's type decides."""
    import onnxruntime as ort

    original_ir = ir.load(original_path)
    plans = model_inputs.plan_inputs(original_ir)
    del original_ir
    options = ort.SessionOptions()
    options.log_severity_level = 3
    reference = ort.InferenceSession(original_path, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in reference.get_outputs()]
    references = []  # (sizes, padding, feeds, expected): all first, then one session at a time
    for k, (sample_sizes, padding) in enumerate(samples(sizes)):
        feeds = model_inputs.make_inputs(plans, sample_sizes, padded=padding, seed=seed + k)
        try:
            references.append((sample_sizes, padding, feeds, reference.run(names, feeds)))
        except Exception:
            if k == 0:
                raise
            # the original does not run at these sizes: nothing to compare
    del reference
    try:
        converted = fused_session(converted_path)
        actual = [converted.run(names, feeds) for _, _, feeds, _ in references]
    except Exception as error:  # a converted model ORT rejects is a conversion failure
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:400]
        raise ConvertError(f"the converted model does not run in ONNX Runtime: {first}") from None
    worst, runs = {}, []
    for (sample_sizes, padding, feeds, expected), got in zip(references, actual):
        resolved = {**model_inputs.DEFAULT_DIMS, **sample_sizes}
        checks = compare_outputs(names, expected, got, model_inputs.row_validity(plans, feeds),
                                 seq=resolved["seq"], tolerance=tolerance)
        for check in checks:
            if check.name not in worst or _badness(check) > _badness(worst[check.name]):
                worst[check.name] = check
        runs.append({"sizes": resolved, "padding": padding, "ok": all(c.ok for c in checks),
                     "worst": dataclasses.asdict(max(checks, key=_badness))})
    outputs = [worst[name] for name in names]
    used = tolerance or _by_output_types(references[0][3])
    return VerifyResult(all(r["ok"] for r in runs), outputs,
                        {**model_inputs.DEFAULT_DIMS, **(sizes or {})},
                        converted.get_providers(), runs, str(used))
