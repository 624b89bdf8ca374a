"""`python -m fastattn_onnx convert` on files that are not what it expects."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fastattn_onnx.convert import ConvertError, convert, default_output_path


def _cli(*args):
    """The convert subcommand through the same add_parser/run that __main__ uses."""
    return subprocess.run([sys.executable, "-m", "fastattn_onnx.tools.convert_cli", *args],
                          capture_output=True, text=True)


def test_main_entry_point_has_convert(mlp_path):
    for sibling in ("bench", "demo", "doctor"):  # __main__ imports every subcommand module
        if importlib.util.find_spec(f"fastattn_onnx.tools.{sibling}") is None:
            pytest.skip(f"fastattn_onnx.tools.{sibling} is not in this branch yet")
    done = subprocess.run([sys.executable, "-m", "fastattn_onnx", "convert", mlp_path,
                           "--no-verify", "--allow-unchanged"], capture_output=True, text=True)
    assert done.returncode == 0 and "0 found" in done.stdout, done.stderr


@pytest.fixture()
def mlp_path(tmp_path):
    """A model without attention: MatMul -> Relu -> MatMul."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "w2")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "mlp.onnx"
    onnx.save(model, path)
    return str(path)


def _listing(directory) -> dict:
    """Every file's name and bytes."""
    return {name: open(os.path.join(directory, name), "rb").read()
            for name in os.listdir(directory)}


def test_model_without_attention_exits_6_writing_nothing(mlp_path, tmp_path):
    """Nothing fused: no copy of the input, no report, exit code 6, and the CLI says why."""
    before = _listing(tmp_path)
    done = _cli(mlp_path, "--report", str(tmp_path / "r.json"))
    assert done.returncode == 6, done.stderr
    assert done.stderr.startswith("error: nothing fused: no attention subgraph found\n"), done.stderr
    assert "nothing written" in done.stderr and "Traceback" not in done.stderr
    assert _listing(tmp_path) == before
    result = convert(mlp_path, report_path=str(tmp_path / "r.json"))  # the API: no exception
    assert (result.found, result.fused, result.output_path) == (0, 0, None)
    assert _listing(tmp_path) == before


def test_attention_left_alone_exits_6_with_each_reason(tmp_path):
    """Found but not fused: the count and each left-alone reason on stderr, nothing written."""
    import convert_helpers  # noqa: F401  (puts models/ on sys.path)
    import build_fused_ops

    path = str(tmp_path / "gqa.onnx")
    onnx.save(build_fused_ops.build_fused_model("gqa"), path)
    before = _listing(tmp_path)
    done = _cli(path, "--quiet")
    assert done.returncode == 6, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == "error: nothing fused: 1 attention subgraph(s) found, 0 fused", done.stderr
    assert "GroupQueryAttention" in lines[1] and "is not mapped" in lines[1], done.stderr
    assert done.stdout == "" and _listing(tmp_path) == before


def test_allow_unchanged_writes_the_model_without_attention(mlp_path, tmp_path):
    done = _cli(mlp_path, "--report", str(tmp_path / "r.json"), "--allow-unchanged")
    assert done.returncode == 0, done.stderr
    assert "0 found" in done.stdout
    out = onnx.load(default_output_path(mlp_path))
    original = onnx.load(mlp_path)
    assert [(n.op_type, list(n.input), list(n.output)) for n in out.graph.node] == \
           [(n.op_type, list(n.input), list(n.output)) for n in original.graph.node]
    assert os.path.exists(tmp_path / "r.json")


def test_never_overwrites_the_input(mlp_path):
    with pytest.raises(ConvertError, match="overwrite"):
        convert(mlp_path, mlp_path)
    done = _cli(mlp_path, "-o", mlp_path)
    assert done.returncode != 0 and "overwrite" in done.stderr


def _malformed(kind: str, tmp_path, mlp_path) -> str:
    path = tmp_path / f"{kind}.onnx"
    data = open(mlp_path, "rb").read()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "not_onnx":
        path.write_text("this is not a model\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "opset_too_new":
        model = onnx.load(mlp_path)
        model.opset_import[0].version = onnx.defs.onnx_opset_version() + 5
        onnx.save(model, path)
    return str(path)


@pytest.mark.parametrize("kind", ["truncated", "not_onnx", "empty", "opset_too_new"])
def test_malformed_file_clear_error_nothing_written(kind, tmp_path, mlp_path):
    bad = _malformed(kind, tmp_path, mlp_path)
    before = set(os.listdir(tmp_path))
    done = _cli(bad)
    assert done.returncode != 0
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr, done.stderr
    assert set(os.listdir(tmp_path)) == before
    with pytest.raises(ConvertError):
        convert(bad)


def test_missing_file(tmp_path):
    done = _cli(str(tmp_path / "nope.onnx"))
    assert done.returncode != 0 and "no such file" in done.stderr


def test_metadata_opsets_and_names_preserved(mlp_path, tmp_path):
    model = onnx.load(mlp_path)
    onnx.helper.set_model_props(model, {"author": "tests", "license": "apache"})
    model.producer_name, model.doc_string = "unit-test", "an MLP"
    path = str(tmp_path / "meta.onnx")
    onnx.save(model, path)
    out = onnx.load(convert(path, allow_unchanged=True).output_path)
    assert {p.key: p.value for p in out.metadata_props} == {"author": "tests", "license": "apache"}
    assert (out.producer_name, out.doc_string) == ("unit-test", "an MLP")
    assert [(o.domain, o.version) for o in out.opset_import] == [("", 17)]
    assert out.ir_version == 8


def test_external_data_saved_beside_the_output(tmp_path, monkeypatch, tmp_path_factory):
    """Big models keep their weights in <output>.data (threshold lowered to exercise it)."""
    from convert_helpers import exported

    from fastattn_onnx.convert import loading

    monkeypatch.setattr(loading, "EXTERNAL_DATA_THRESHOLD", 0)
    source = exported("gpt2", "torchscript", tmp_path_factory)
    output = str(tmp_path / "out.onnx")
    result = convert(source, output, verify=True)
    assert result.fused == 2 and result.verify.ok
    assert sorted(os.listdir(tmp_path)) == ["out.onnx", "out.onnx.data"]
    model = onnx.load(output, load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def test_bench_model_smoke(tmp_path_factory, capsys):
    from convert_helpers import exported

    from fastattn_onnx.tools.bench_model import run_model_bench

    assert run_model_bench(exported("llama", "dynamo", tmp_path_factory), seq_len=37, batch=1,
                           repeats=1, threads=1) == 0
    out = capsys.readouterr().out
    assert "speed-up vs original" in out and "converted, 2 fused (FastAttentionEP)" in out
    assert "converted: FastAttention nodes" in out and "Amdahl bound on the speed-up vs original" in out


def test_amdahl_bound_keeps_non_attention_time_and_prices_attention_at_sgemm_rate():
    from types import SimpleNamespace

    from fastattn_onnx.tools.bench_model import _amdahl_bound, _attention_split

    # A profile of 1 s: 0.25 s outside attention; its run's median is 2 s.
    profiled = {"node_s": {"proj": 0.25, "FastAttentionEP_0": 0.75}}
    attention_s, other_s = _attention_split(profiled, 2.0, lambda n: n.startswith("FastAttentionEP"))
    assert (attention_s, other_s) == (pytest.approx(1.5), pytest.approx(0.5))
    fused = [SimpleNamespace(num_heads=2, head_size=64, causal=False)]
    flops = 4.0 * 2 * 1024 * 1024 * 64  # one layer, B=1, S=1024, not causal
    bound, ideal_s = _amdahl_bound(3.0, other_s, SimpleNamespace(fused=fused), 1, 1024,
                                   sgemm_gflops=flops / 0.1 / 1e9)  # attention at best 0.1 s
    assert ideal_s == pytest.approx(0.1)
    assert bound == pytest.approx(3.0 / (0.5 + 0.1))


def test_verify_failure_writes_nothing(tmp_path, tmp_path_factory, capsys):
    """Above tolerance: VerifyError, exit code 3 from the CLI, and no output file."""
    import argparse

    from convert_helpers import exported

    from fastattn_onnx.tools import convert_cli
    from fastattn_onnx.convert import VerifyError

    source = exported("bert", "torchscript", tmp_path_factory)
    output = str(tmp_path / "out.onnx")
    with pytest.raises(VerifyError, match="verify FAILED"):
        convert(source, output, tolerance=0.0)  # nothing passes
    assert os.listdir(tmp_path) == []
    parser = argparse.ArgumentParser()
    convert_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["convert", source, "-o", output, "--quiet", "--tolerance", "0"])
    assert args.run(args) == 3
    assert "does not match the original; nothing written" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_in_memory_models_verified_against_their_original(tmp_path_factory):
    """ModelProto and onnx_ir.Model inputs: verification compares with the unconverted copy."""
    import onnx_ir as ir
    from convert_helpers import exported

    source = exported("bert", "dynamo", tmp_path_factory)
    for model in (onnx.load(source), ir.load(source)):
        result = convert(model)
        assert result.output_path is None and result.fused == 2
        assert result.verify.ok and result.verify.outputs[0].max_abs_error > 0  # really compared
