"""What many users already have on disk: BERT (and RoBERTa) after onnxruntime.transformers.optimizer. Its
com.microsoft.Attention (packed weights; mask_index as [B] lengths by default, or the raw [B, S]
mask) and MultiHeadAttention (with its projection bias) become FastAttention, verified against
ONNX Runtime's own run of the optimized model."""
from __future__ import annotations

import onnx
import pytest

from convert_helpers import LAYERS, SIZES, exported, providers_running_fastattention

from fastattn_onnx.convert import convert, inputs

ORT_ATTENTION_OPS = {"Attention", "MultiHeadAttention"}
# The optimizer's options -> the op it makes of torchscript BERT: by default Attention with a [B]
# lengths mask_index, with a raw mask Attention with the int32 [B, S] mask, with
# use_multi_head_attention MultiHeadAttention with a projection bias and the lengths.
FORMS = {"default": "Attention", "raw_mask": "Attention", "multi_head": "MultiHeadAttention"}


def _ort_optimized(source: str, form: str, path: str, arch: str = "bert") -> list[str]:
    """Writes the optimizer's output to `path`; returns its attention op types."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    options.use_multi_head_attention = form == "multi_head"
    if form == "raw_mask":
        options.use_raw_attention_mask(True)
    optimized = optimize_model(source, model_type="bert", num_heads=SIZES[arch]["heads"],
                               hidden_size=SIZES[arch]["hidden"], optimization_options=options)
    optimized.save_model_to_file(path)
    return [n.op_type for n in optimized.model.graph.node if n.op_type in ORT_ATTENTION_OPS]


@pytest.mark.parametrize("arch,exporter,form", [
    ("bert", "torchscript", "default"), ("bert", "torchscript", "raw_mask"),
    ("bert", "torchscript", "multi_head"), ("bert", "dynamo", "default"),
    ("roberta", "torchscript", "default")])
def test_ort_optimized_bert_every_layer_fused(arch, exporter, form, tmp_path_factory, tmp_path):
    path = str(tmp_path / f"{arch}-{exporter}-{form}.ort.onnx")
    ort_ops = _ort_optimized(exported(arch, exporter, tmp_path_factory), form, path, arch)
    if exporter == "torchscript":  # the forms this test is about
        assert ort_ops == [FORMS[form]] * LAYERS, ort_ops
    # (ORT 1.32's BERT patterns do not match dynamo's graph: its attention stays decomposed,
    # with ORT's other fusions around it.)
    result = convert(path, verify=True)
    assert result.found == LAYERS and result.fused == LAYERS, result.report.summary()
    assert result.verify.ok, result.verify.summary()
    sources = {f.source for f in result.report.fused}
    assert sources == ({f"com.microsoft::{ort_ops[0]}"} if ort_ops else {"decomposed"})
    assert all(f.key_padding_mask for f in result.report.fused)
    ops = [n.op_type for n in onnx.load(result.output_path).graph.node]
    assert ops.count("FastAttention") == LAYERS and not ORT_ATTENTION_OPS & set(ops)
    assert "Softmax" not in ops
    feeds = inputs.make_inputs(inputs.plan_inputs(result.model))
    on_ep, elsewhere = providers_running_fastattention(result.output_path, feeds)
    assert on_ep == LAYERS and not elsewhere
