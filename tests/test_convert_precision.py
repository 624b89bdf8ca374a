"""Verification's tolerance follows the precision the graph computes in (issue 15, item 5).

ONNX Runtime's float16 converter keeps float32 inputs and outputs by default: the graph computes
in float16 and only its outputs are float32. Such a model is verified at the float16 tolerance;
the float32 source it came from shows the converted model is as close to exact as its original.
"""
from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from convert_helpers import LAYERS, exported

from fastattn_onnx.convert import convert, fused_session, sample_inputs
from fastattn_onnx.tools import convert_cli


@pytest.fixture(scope="module")
def bert_float16(tmp_path_factory):
    """(the float32 export, its float16 version with float32 inputs and outputs)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    source = exported("bert", "torchscript", tmp_path_factory)
    path = str(tmp_path_factory.mktemp("bert-float16") / "bert-float16.onnx")
    onnx.save(convert_float_to_float16(onnx.load(source), keep_io_types=True), path)
    return source, path


def _run(path: str, feeds: dict, fused: bool = False) -> np.ndarray:
    if fused:
        return fused_session(path).run(None, feeds)[0]
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def _relative_error(got: np.ndarray, want: np.ndarray) -> float:
    want64 = want.astype(np.float64)
    return float(np.abs(got.astype(np.float64) - want64).max() / np.abs(want64).max())


def test_float16_graph_is_verified_at_the_float16_tolerance(bert_float16, tmp_path):
    source, float16 = bert_float16
    feeds = sample_inputs(float16, batch=2, seq=40, seed=1)
    exact, original = _run(source, feeds), _run(float16, feeds)
    assert original.dtype == np.float32  # float32 outputs of a float16 graph, as ORT runs it
    assert 0 < _relative_error(original, exact) < 1e-2

    result = convert(float16, str(tmp_path / "out.onnx"), report_path=str(tmp_path / "r.json"))
    assert result.found == result.fused == LAYERS, result.report.summary()
    assert result.report.compute_type == "float16"
    assert [f.compute_type for f in result.report.fused] == ["float16"] * LAYERS
    assert result.verify.ok, result.verify.summary()
    worst = result.verify.outputs[0]
    assert worst.tolerance == pytest.approx(1e-2 * worst.scale)
    # What the issue saw: the float32 outputs' tolerance would refuse this conversion.
    assert worst.max_abs_error > 1e-4 * worst.scale
    assert "(float16 compute)" in result.verify.tolerance
    assert "(float16 compute)" in result.report.summary()
    assert "float16 compute" in open(tmp_path / "r.json").read()

    # Against the float32 source: the converted model is as close to it as the original is.
    converted = _run(result.output_path, feeds, fused=True)
    assert _relative_error(converted, exact) <= 1.5 * _relative_error(original, exact)


def test_float32_graph_keeps_the_float32_tolerance(bert_float16):
    result = convert(bert_float16[0])
    assert result.fused == LAYERS and result.report.compute_type == "float32"
    worst = result.verify.outputs[0]
    assert worst.tolerance == pytest.approx(1e-4 * worst.scale)
    assert "(float32 compute)" in result.verify.summary()


def test_given_tolerance_fails_verification_and_writes_nothing(bert_float16, tmp_path, capsys):
    output = str(tmp_path / "out.onnx")
    code = convert_cli.main([bert_float16[1], "-o", output, "--tolerance", "1e-9", "--quiet"])
    assert code == convert_cli.EXIT_VERIFY_FAILED == 3
    err = capsys.readouterr().err
    assert err.startswith("error: converted model does not match the original; nothing written")
    assert "tolerance 1e-09 of each output's scale (given)" in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("bad", ["-1", "nan", "inf", "tight"])
def test_tolerance_must_be_a_finite_number_at_least_zero(bad, tmp_path, capsys):
    """Refused before the model is looked at (it need not even exist)."""
    model, output = str(tmp_path / "missing.onnx"), str(tmp_path / "out.onnx")
    with pytest.raises(SystemExit) as exit_:
        convert_cli.main([model, "-o", output, "--tolerance", bad])
    assert exit_.value.code == 2 and "--tolerance" in capsys.readouterr().err
    with pytest.raises(ValueError, match="finite number >= 0"):
        convert(model, output, tolerance=bad if bad == "tight" else float(bad))
    assert os.listdir(tmp_path) == []
