"""A decoder with an explicit KV cache: Concat(past, new) becomes the op's past/present."""
from __future__ import annotations

import onnx
import pytest

from convert_helpers import LAYERS, providers_running_fastattention
import export_kv_cache

from fastattn_onnx.convert import convert, inputs


@pytest.fixture(scope="module", params=[(e, a) for a in ("eager", "sdpa")
                                        for e in ("dynamo", "torchscript")],
                ids=lambda p: "-".join(p))
def converted(request, tmp_path_factory):
    exporter, attention = request.param
    directory = tmp_path_factory.mktemp(f"kv-{exporter}-{attention}")
    source = export_kv_cache.export_decoder(exporter, str(directory / "decoder.onnx"),
                                            attention=attention)
    return source, convert(source, verify=True)


def test_cache_becomes_past_and_present(converted):
    source, result = converted
    assert result.fused == LAYERS and all(f.kv_cache for f in result.report.fused)
    assert result.verify.ok, result.verify.summary()
    assert len(result.verify.outputs) == 1 + 2 * LAYERS  # logits and every present compared
    model, original = onnx.load(result.output_path), onnx.load(source)
    assert [o.name for o in model.graph.output] == [o.name for o in original.graph.output]
    # The op concatenates the cache itself: no Concat reads a past input any more.
    past_names = {i.name for i in model.graph.input if i.name.startswith("past_")}
    assert not [n for n in model.graph.node if n.op_type == "Concat" and past_names & set(n.input)]
    fused = [n for n in model.graph.node if n.op_type == "FastAttention"]
    assert all(len(n.output) == 3 and n.input[5].startswith("past_key") for n in fused)


def test_cache_model_runs_on_fastattention_ep(converted):
    _, result = converted
    feeds = inputs.make_inputs(inputs.plan_inputs(result.model))
    on_ep, elsewhere = providers_running_fastattention(result.output_path, feeds)
    assert on_ep == LAYERS and not elsewhere
