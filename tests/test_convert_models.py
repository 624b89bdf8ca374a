"""Convert real exports end to end and run them on the FastAttention runtime.

Each model (transformers' default attn_implementation "sdpa" and "eager", both torch.onnx
exporters): every attention layer fused, the S x S mask construction gone, the converted
model verified against the original in ONNX Runtime, every FastAttention node placed on
FastAttentionEP, and at least as many layers fused as onnxscript's ort_fusions and
onnxruntime.transformers.optimizer fuse in the same file.
"""
from __future__ import annotations

import onnx
import pytest

from convert_helpers import MODEL_CASES, attention_layers, exported, providers_running_fastattention
from fusion_table import onnxscript_count, ort_optimizer_count

from fastattn_onnx.convert import convert, inputs

# transformers 5.x Whisper builds its masks with torch.diff, which TorchScript cannot export.
NOT_EXPORTABLE = {("whisper", "torchscript"): "TorchScript has no ONNX export for aten::diff "
                                              "(transformers' Whisper masks)"}


@pytest.fixture(scope="module", params=MODEL_CASES, ids=lambda c: "-".join(c))
def converted(request, tmp_path_factory):
    arch, exporter, attn = request.param
    if (arch, exporter) in NOT_EXPORTABLE:
        pytest.skip(NOT_EXPORTABLE[arch, exporter])
    source = exported(arch, exporter, tmp_path_factory, attn=attn)
    output = str(tmp_path_factory.mktemp("converted") / f"{arch}-{exporter}-{attn}.fa.onnx")
    result = convert(source, output, verify=True)
    return arch, exporter, attn, source, result


def test_every_layer_fused_and_verified(converted):
    arch, _, _, _, result = converted
    layers = attention_layers(arch)
    assert result.found == layers and result.fused == layers, result.report.summary()
    assert result.verify is not None and result.verify.ok, result.verify.summary()


def test_mask_construction_removed_and_model_valid(converted):
    arch, exporter, attn, source, result = converted
    model = onnx.load(result.output_path)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version <= 10
    ops = [n.op_type for n in model.graph.node]
    assert "Softmax" not in ops and ops.count("FastAttention") == attention_layers(arch)
    # Nothing but the fused nodes (and shape reads) looks at the [B, S] mask any more.
    readers = {n.op_type for n in model.graph.node if "attention_mask" in n.input}
    assert readers <= {"FastAttention", "Shape"}, readers
    # Where Q/K/V come straight from projections, the head split/merge transposes go too.
    if attn == "eager" and (arch == "bert" or (arch, exporter) == ("gpt2", "torchscript")):
        assert {f.layout for f in result.report.fused} == {"3d"} and "Transpose" not in ops
    original = onnx.load(source)
    assert [i.name for i in model.graph.input] == [i.name for i in original.graph.input]
    assert [o.name for o in model.graph.output] == [o.name for o in original.graph.output]


def test_fused_nodes_run_on_fastattention_ep(converted):
    arch, _, _, _, result = converted
    plans = inputs.plan_inputs(result.model)
    feeds = inputs.make_inputs(plans)
    # Each FastAttention node must run somewhere, and none ran elsewhere.
    on_ep, elsewhere = providers_running_fastattention(result.output_path, feeds)
    assert on_ep == attention_layers(arch) and not elsewhere, (on_ep, elsewhere)


def test_fuses_at_least_as_many_as_ort_optimizer(converted):
    arch, _, _, source, result = converted
    assert result.fused >= ort_optimizer_count(source, arch)


def test_fuses_at_least_as_many_as_onnxscript_ort_fusions(converted):
    """onnxscript's ort_fusions, the stronger anchor on dynamo exports."""
    _, _, _, source, result = converted
    assert result.fused >= onnxscript_count(source)
