"""The op's contract is written once (core/op_contract.cc): the NumPy binding, the custom op, the
EP and ONNX's shape inference give the same verdicts with the same words."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from ort_helpers import build_model, cpu_session, ep_session

from fastattn_onnx import _kernels

NODE = "contract_node"


def _qkv(shape=(1, 4, 5, 8)):
    rng = np.random.default_rng(1)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(3)]


@pytest.mark.parametrize("window", [0, -2])
def test_window_size_is_validated_everywhere(window):
    rule = f"attribute window_size must be -1 (none) or >= 1, got {window}"
    with pytest.raises(ValueError, match=r"window_size must be -1 \(none\) or >= 1"):
        _kernels.attention(*_qkv(), window_size=window)
    model = build_model(layout="4d", num_heads=4, head_dim=8, window_size=window, node_name=NODE)
    for make_session in (cpu_session, ep_session):
        with pytest.raises(Exception) as err:
            make_session(model)
        assert NODE in str(err.value) and rule in str(err.value), str(err.value)
    with pytest.raises(onnx.shape_inference.InferenceError, match="window_size must be"):
        onnx.shape_inference.infer_shapes(model, strict_mode=True)


def test_one_rule_text_for_binding_custom_op_and_ep():
    """Heads that do not divide: the same sentence from every caller (it was written five times)."""
    q, k, v = _qkv((1, 5, 24))
    with pytest.raises(ValueError) as binding:
        _kernels.attention(q, k, v, num_heads=4, kv_num_heads=3)
    rule = str(binding.value)
    assert rule == "attribute kv_num_heads must divide num_heads: kv_num_heads = 3, num_heads = 4"
    model = build_model(num_heads=4, kv_num_heads=3, head_dim=6, node_name=NODE)
    for make_session in (cpu_session, ep_session):
        with pytest.raises(Exception) as err:
            make_session(model)
        assert NODE in str(err.value) and rule in str(err.value), str(err.value)


def test_contract_shape_inference_names_the_input_dims_each_output_dim_equals():
    out, present_k, present_v = _kernels.infer_outputs(
        {"num_heads": 4, "kv_num_heads": 2},
        [("float16", [-1, -1, 32]), ("float16", [-1, -1, 16]), ("float16", [-1, -1, 24]), None, None, None, None])
    assert out == ("float16", [-1, -1, 48], [(0, 0), (0, 1), (-1, -1)])
    assert present_k == ("float16", [-1, 2, -1, 8], [(0, 0), (-1, -1), (1, 1), (-1, -1)])
    assert present_v[1] == [-1, 2, -1, 12]
    with pytest.raises(TypeError, match="key must have the query's element type float16, got float32"):
        _kernels.infer_outputs({"num_heads": 4}, [("float16", [1, 2, 32]), ("float32", [1, 2, 32]),
                                                  ("float16", [1, 2, 32])])


def test_backends_are_listed_by_the_dispatch():
    names = [name for name, _ in _kernels.backends()]
    assert names[0] == "cpu"
    assert _kernels.cpu_isa() in dict(_kernels.backends())["cpu"]
