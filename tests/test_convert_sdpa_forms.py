"""torch's scaled_dot_product_attention exported directly (models/export_sdpa.py): every form its
ONNX decomposition writes fuses and verifies: the NaN guard on the probabilities, the default
scale split over Q and K^T (computed from the shape by TorchScript), dynamo's reshaped K^T,
boolean and additive masks, is_causal, and enable_gqa (dynamo only: TorchScript cannot export it).
"""
from __future__ import annotations

import math

import onnx
import pytest

from convert_helpers import providers_running_fastattention  # noqa: F401  (models/ on sys.path)
import export_sdpa

from fastattn_onnx.convert import convert, inputs

# (exporter, mask, is_causal, enable_gqa)
FORMS = [("torchscript", "none", False, False), ("torchscript", "bool", False, False),
         ("torchscript", "float", False, False), ("torchscript", "none", True, False),
         ("dynamo", "none", False, False), ("dynamo", "bool", False, True),
         ("dynamo", "float", False, False), ("dynamo", "none", True, True)]


@pytest.mark.parametrize("exporter,mask,causal,gqa", FORMS,
                         ids=["-".join(map(str, f)) for f in FORMS])
def test_sdpa_form_fuses_and_verifies(exporter, mask, causal, gqa, tmp_path):
    source = export_sdpa.export_block(str(tmp_path / "block.onnx"), exporter, mask=mask,
                                      is_causal=causal, kv_heads=2 if gqa else 4)
    ops = [n.op_type for n in onnx.load(source).graph.node]
    if mask == "none":
        assert "Softmax" in ops  # the decomposition, not an Attention op
    result = convert(source, str(tmp_path / "block.fa.onnx"))
    assert result.fused == 1 and not result.report.left, result.report.summary()
    assert result.verify.ok, result.verify.summary()
    row = result.report.fused[0]
    assert (row.num_heads, row.kv_num_heads, row.head_size) == (4, 2 if gqa else 4, 16)
    assert row.causal == causal
    assert (row.key_padding_mask == "attention_mask") == (mask != "none")
    node = next(n for n in onnx.load(result.output_path).graph.node if n.op_type == "FastAttention")
    scale = next((a.f for a in node.attribute if a.name == "scale"), None)
    assert scale is not None and math.isclose(scale, 1 / math.sqrt(16), rel_tol=1e-6)
    on_ep, elsewhere = providers_running_fastattention(result.output_path,
                                                       inputs.make_inputs(inputs.plan_inputs(result.model)))
    assert on_ep == 1 and not elsewhere


def test_default_scale_from_shape_is_read_from_the_probes(tmp_path):
    """TorchScript writes SDPA's default scale as Sqrt(1 / Sqrt(Cast(Shape(q)[-1]))) on Q and
    K^T: a number only the probes give (the same at every input size)."""
    source = export_sdpa.export_block(str(tmp_path / "block.onnx"), "torchscript", mask="none",
                                      hidden=96, heads=4)  # head size 24: 1/sqrt(24)
    ops = [n.op_type for n in onnx.load(source).graph.node]
    assert ops.count("Sqrt") >= 2 and "Shape" in ops
    result = convert(source, str(tmp_path / "block.fa.onnx"))
    assert result.fused == 1 and result.verify.ok, result.report.summary()
    node = next(n for n in onnx.load(result.output_path).graph.node if n.op_type == "FastAttention")
    scale = next(a.f for a in node.attribute if a.name == "scale")
    assert math.isclose(scale, 1 / math.sqrt(24), rel_tol=1e-6)
