"""Decomposed forms the exporters above do not write: Trilu causal mask with -inf, Gemma-2
softcapping, a softmax between precision casts, the scale folded into Q and K."""
from __future__ import annotations

import onnx
import pytest

from convert_helpers import providers_running_fastattention  # puts models/ on sys.path
import build_decomposed  # noqa: I001

from fastattn_onnx.convert import convert, inputs


@pytest.mark.parametrize("split_scale", [True, False], ids=["scale-in-q-and-k", "scale-on-scores"])
def test_softcap_trilu_mask_and_scale_forms(split_scale, tmp_path):
    path = str(tmp_path / "decomposed.onnx")
    onnx.save(build_decomposed.build_decomposed_model(softcap=30.0, split_scale=split_scale), path)
    result = convert(path, verify=True)
    assert result.fused == 1, result.report.summary()
    fused = result.report.fused[0]
    assert fused.causal and fused.softcap == 30.0 and fused.attn_bias is None
    assert result.verify.ok, result.verify.summary()
    model = onnx.load(result.output_path)
    node = next(n for n in model.graph.node if n.op_type == "FastAttention")
    scale = next(a.f for a in node.attribute if a.name == "scale")
    assert scale == pytest.approx(build_decomposed.HEAD_SIZE ** -0.5, rel=1e-6)
    # Mask (Trilu/Where), softcap (Tanh) and softmax casts all went with the fusion.
    # (and with the 3D layout, the head split/merge Reshape+Transpose pairs too)
    assert {n.op_type for n in model.graph.node} == {"MatMul", "FastAttention"}
    feeds = inputs.make_inputs(inputs.plan_inputs(result.model))
    on_ep, elsewhere = providers_running_fastattention(result.output_path, feeds)
    assert on_ep == 1 and not elsewhere


def test_gemma2_softcap_and_alternating_window(tmp_path_factory):
    """Gemma-2 (TorchScript): softcapped scores; layer 0 slides a 40-token window, layer 1 is global."""
    from convert_helpers import exported

    result = convert(exported("gemma2", "torchscript", tmp_path_factory), verify=True)
    assert result.fused == 2, result.report.summary()
    assert [f.window_size for f in result.report.fused] == [40, -1]
    assert all(f.causal and f.softcap == 50.0 and f.kv_num_heads == 2 for f in result.report.fused)
    assert result.verify.ok and result.verify.sizes["seq"] > 40, result.verify.summary()


def test_mask_reading_other_input_values_stays_a_bias(tmp_path):
    """A causal mask compared from position_ids values looks causal on probe positions but is
    not causal for every input (packed sequences): it must stay an additive attn_bias."""
    path = str(tmp_path / "positions.onnx")
    onnx.save(build_decomposed.build_decomposed_model(mask_from_positions=True), path)
    result = convert(path, verify=True)
    assert result.fused == 1, result.report.summary()
    fused = result.report.fused[0]
    assert not fused.causal and fused.attn_bias is not None
    assert result.verify.ok, result.verify.summary()


def test_where_masking_and_minus_10000_padding(tmp_path):
    """Older exports: Where(causal, scores, float-min) and (1 - attention_mask) * -10000."""
    path = str(tmp_path / "where.onnx")
    onnx.save(build_decomposed.build_decomposed_model(where_masking=True), path)
    result = convert(path, verify=True)
    assert result.fused == 1, result.report.summary()
    fused = result.report.fused[0]
    assert fused.causal and fused.key_padding_mask == "attention_mask" and fused.attn_bias is None
    assert result.verify.ok, result.verify.summary()
    assert {n.op_type for n in onnx.load(result.output_path).graph.node} == {"MatMul", "FastAttention"}


def test_qwen2_projection_biases(tmp_path_factory):
    """Qwen2 (TorchScript): q/k/v projections with biases, GQA."""
    from convert_helpers import exported

    result = convert(exported("qwen2", "torchscript", tmp_path_factory), verify=True)
    assert result.fused == 2 and result.verify.ok, result.report.summary()
    assert all(f.causal and f.kv_num_heads == 2 and f.key_padding_mask == "attention_mask"
               for f in result.report.fused)
