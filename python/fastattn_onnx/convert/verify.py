"""Prove the converted model computes what the original does, in ONNX Runtime, on random inputs.

Outputs are compared at real (non-padding) token positions only: at a padding query position
every key is blocked, where the original softmax spreads uniformly over blocked keys and the
fused op returns zeros. Those positions are padding by definition and never read downstream.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from . import inputs as model_inputs
from .loading import ConvertError

# Maximum absolute difference allowed, relative to the largest magnitude of the output.
TOLERANCE = {np.dtype(np.float32): 1e-4, np.dtype(np.float16): 1e-2, np.dtype(np.float64): 1e-8}
BFLOAT16_TOLERANCE = 3e-2


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
    outputs: list[OutputCheck]
    sizes: dict
    converted_providers: list[str]

    def summary(self) -> str:
        worst = max(self.outputs, key=lambda c: c.max_abs_error / max(c.tolerance, 1e-30))
        state = "passed" if self.ok else "FAILED"
        return (f"verify {state}: {len(self.outputs)} output(s), worst {worst.name} "
                f"max|diff| {worst.max_abs_error:.3g} (allowed {worst.tolerance:.3g})")


class VerifyError(RuntimeError):
    def __init__(self, result: VerifyResult):
        super().__init__(result.summary())
        self.result = result


def _tolerance(array: np.ndarray) -> float:
    if array.dtype.name == "bfloat16":
        return BFLOAT16_TOLERANCE
    return TOLERANCE.get(array.dtype, 0.0)  # integer/bool outputs must match exactly


def _valid_positions(array: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    """Entries of `array` at real token positions ([B, S] rows on axis 0 and the first S axis)."""
    if rows is None or array.ndim < 2 or array.shape[0] != rows.shape[0]:
        return array.reshape(-1)
    for axis in range(1, array.ndim):
        if array.shape[axis] == rows.shape[1]:
            moved = np.moveaxis(array, axis, 1)
            return moved[rows]
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


def compare_outputs(names, expected, actual, rows) -> list[OutputCheck]:
    checks = []
    for name, want, got in zip(names, expected, actual):
        want_v = _valid_positions(np.asarray(want), rows)
        got_v = _valid_positions(np.asarray(got), rows)
        if want_v.shape != got_v.shape:
            checks.append(OutputCheck(name, float("inf"), 0.0, 0.0, False))
            continue
        want64, got64 = want_v.astype(np.float64), got_v.astype(np.float64)
        scale = float(np.max(np.abs(want64))) if want64.size else 0.0
        tolerance = _tolerance(np.asarray(want)) * max(scale, 1e-6)
        error = float(np.max(np.abs(want64 - got64))) if want64.size else 0.0
        if not np.isfinite(error):
            error = float("inf")
        checks.append(OutputCheck(name, error, scale, tolerance, error <= tolerance))
    return checks


def verify(original_path: str, converted_path: str, sizes: dict | None = None,
           seed: int = 0) -> VerifyResult:
    """Run both models on the same random inputs; raise nothing, return the comparison."""
    import onnxruntime as ort

    original_ir = ir.load(original_path)
    plans = model_inputs.plan_inputs(original_ir)
    del original_ir
    feeds = model_inputs.make_inputs(plans, sizes, padded=True, seed=seed)
    rows = model_inputs.row_validity(plans, feeds)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    reference = ort.InferenceSession(original_path, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in reference.get_outputs()]
    expected = reference.run(names, feeds)
    del reference
    try:
        converted = fused_session(converted_path)
        actual = converted.run(names, feeds)
    except Exception as error:  # a converted model ORT rejects is a conversion failure
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:400]
        raise ConvertError(f"the converted model does not run in ONNX Runtime: {first}") from None
    checks = compare_outputs(names, expected, actual, rows)
    return VerifyResult(all(c.ok for c in checks), checks,
                        {**model_inputs.DEFAULT_DIMS, **(sizes or {})}, converted.get_providers())
