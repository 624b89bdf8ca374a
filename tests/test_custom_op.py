"""FastAttention through the custom-op library (register_custom_ops) on the CPU EP."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from ort_helpers import TOL, bf16_round, cpu_session, max_err, run
from test_ep import CASES, make_case

import fastattn_onnx


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("layout", ["3d", "4d"])
@pytest.mark.parametrize("name,opts", CASES[::2], ids=[c[0] for c in CASES[::2]])
def test_custom_op_matches_reference(name, opts, layout, dtype):
    model, feeds, ref = make_case(layout, dtype, opts, seed=1)
    outs = run(cpu_session(model), feeds, dtype)
    for got, want in zip(outs, ref):
        want = bf16_round(np.asarray(want, np.float32)) if dtype == "bfloat16" else want
        assert max_err(got, want) <= TOL[dtype], (name, layout, dtype)


def test_custom_op_runs_on_cpu_ep():
    model, feeds, _ = make_case("3d", "float32", dict(causal=1))
    so = __import__("ort_helpers").session_options()
    assert fastattn_onnx.node_placement(model, providers=["CPUExecutionProvider"], inputs=feeds,
                                        session_options=so) == {"fast_attention_0": "CPUExecutionProvider"}


def test_output_shapes_inferred_at_session_creation():
    model, _, _ = make_case("3d", "float32", dict(seq_past=3, present=True, num_heads=4, kv_num_heads=2))
    for o in model.graph.output:  # leave the output shapes to InferOutputShapeFn
        o.type.tensor_type.ClearField("shape")
    sess = cpu_session(model)
    assert [o.shape for o in sess.get_outputs()] == [[2, 5, 32], [2, 2, 8, 8], [2, 2, 8, 8]]


def test_symbolic_dims_run_with_any_length():
    model = __import__("ort_helpers").build_model(layout="4d", batch="B", seq_q="S", seq_kv="S", num_heads=2,
                                                  head_dim=8, causal=1)
    sess = cpu_session(model)
    for s in (1, 7):
        feeds = {n: np.random.default_rng(s).standard_normal((3, 2, s, 8)).astype(np.float32)
                 for n in ("query", "key", "value")}
        from reference import attention_reference
        ref = attention_reference(feeds["query"], feeds["key"], feeds["value"], causal=True)[0]
        assert max_err(sess.run(None, feeds)[0], ref) <= TOL["float32"]


def test_onnx_checker_and_shape_inference_accept_the_op():
    model, _, _ = make_case("3d", "float32", dict(seq_past=3, present=True, num_heads=4, kv_num_heads=2))
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    dims = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in inferred.graph.output}
    assert dims == {"output": [2, 5, 32], "present_key": [2, 2, 8, 8], "present_value": [2, 2, 8, 8]}


def test_onnx_shape_inference_rejects_heads_that_do_not_divide():
    model, _, _ = make_case("3d", "float32", dict(num_heads=4, kv_num_heads=2))
    next(a for a in model.graph.node[0].attribute if a.name == "kv_num_heads").i = 3
    with pytest.raises(onnx.shape_inference.InferenceError, match="kv_num_heads must divide num_heads"):
        onnx.shape_inference.infer_shapes(model, strict_mode=True)
