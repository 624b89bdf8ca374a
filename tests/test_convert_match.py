"""Matching and analysis on real exports, checked against the float64 reference.

Needs no FastAttention runtime: the Q, K, V and masks the analysis picked are read from the
original model, fed to the reference with the inferred attributes, and must reproduce the
original attention output.
"""
from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from convert_helpers import CASES, LAYERS, SIZES, exported
from reference import attention_reference

from fastattn_onnx.convert import analysis, inputs, sdpa_decomposed
from fastattn_onnx.convert.probe import read_values


@pytest.mark.parametrize("arch,exporter", CASES)
def test_analysis_reproduces_original_attention(arch, exporter, tmp_path_factory):
    model = ir.load(exported(arch, exporter, tmp_path_factory))
    matches, skipped = sdpa_decomposed.find(model.graph)
    assert not skipped and len(matches) == LAYERS
    assert analysis.analyse(model, matches) == []

    sizes = SIZES[arch]
    plans = inputs.plan_inputs(model)
    seq = 47 if "sliding_window" in sizes else 11  # past the window when there is one
    feeds = inputs.make_inputs(plans, {"batch": 3, "seq": seq}, padded=True, seed=1)
    rows = inputs.row_validity(plans, feeds)
    wanted = []
    for found in matches:
        assert found.num_heads == sizes["heads"]
        assert found.kv_num_heads == sizes.get("kv_heads", sizes["heads"])
        assert found.head_size == sizes["hidden"] // sizes["heads"]
        assert found.scale == pytest.approx(found.head_size ** -0.5)
        assert found.causal == (arch != "bert")
        assert found.window_size == sizes.get("sliding_window", -1)
        assert found.key_padding_mask is not None and found.key_padding_mask.name == "attention_mask"
        assert found.attn_bias is None
        wanted += [found.query, found.key, found.value, found.output]
    values = read_values(model, wanted, [feeds])[0]
    for found in matches:
        key = values[found.key.name]
        if found.key_layout == "bshd":
            key = key.transpose(0, 2, 1, 3)
        out, _, _ = attention_reference(
            values[found.query.name], key, values[found.value.name],
            num_heads=found.num_heads, kv_num_heads=found.kv_num_heads, scale=found.scale,
            causal=found.causal, window_size=found.window_size,
            key_padding_mask=feeds["attention_mask"])
        original = values[found.output.name]  # [B, H, S, Dv]
        valid = rows[:, None, :, None] & np.ones_like(original, dtype=bool)
        scale = np.abs(original[valid]).max()
        assert np.abs(out - original)[valid].max() <= 1e-5 * scale


def test_probabilities_read_elsewhere_are_left_alone():
    """output_attentions-style graphs: the softmax result is a graph output, so no fusion."""
    import onnx
    from onnx import TensorProto, helper

    q = helper.make_tensor_value_info("q", TensorProto.FLOAT, [1, 2, 5, 8])
    k = helper.make_tensor_value_info("k", TensorProto.FLOAT, [1, 2, 5, 8])
    v = helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, 2, 5, 8])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, None)
    probs = helper.make_tensor_value_info("probs", TensorProto.FLOAT, None)
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["q", "kt"], ["s"]),
             helper.make_node("Softmax", ["s"], ["probs"], axis=-1),
             helper.make_node("MatMul", ["probs", "v"], ["out"])]
    graph = helper.make_graph(nodes, "g", [q, k, v], [out, probs])
    model = ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    matches, skipped = sdpa_decomposed.find(model.graph)
    assert matches == [] and len(skipped) == 1
    assert "another consumer" in skipped[0][1]
    del onnx
