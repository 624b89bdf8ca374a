"""Shared by tests/test_convert_*.py: small exported models (once per session) and checks."""
from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "models"))  # export_hf, export_kv_cache, build_fused_ops

import export_hf  # noqa: E402
from fusion_table import SIZES, TABLE_ARCHS, attention_layers  # noqa: E402,F401

CASES = [(arch, exporter) for arch in ("llama", "mistral", "gpt2", "bert")
         for exporter in ("dynamo", "torchscript")]
# transformers' default export path (attn_implementation="sdpa") and eager, every table arch.
MODEL_CASES = [(arch, exporter, attn) for arch in TABLE_ARCHS for attn in ("sdpa", "eager")
               for exporter in ("dynamo", "torchscript")]
LAYERS = 2

_exported: dict[tuple[str, str, str], str] = {}


def exported(arch: str, exporter: str, tmp_path_factory, attn: str = "eager") -> str:
    """Path of the exported model, exported once per test session."""
    key = (arch, exporter, attn)
    if key not in _exported:
        directory = tmp_path_factory.mktemp(f"{arch}-{exporter}-{attn}")
        path = str(directory / f"{arch}-{exporter}-{attn}.onnx")
        _exported[key] = export_hf.export_model(arch, exporter, path, attn_implementation=attn,
                                                **SIZES[arch])
    return _exported[key]


def providers_running_fastattention(path: str, feeds: dict) -> tuple[int, set[str]]:
    """(FastAttention nodes placed on FastAttentionEP, providers other than it that got one), from
    a profiled run with default optimizations (fastattn_onnx.node_placement)."""
    import onnx

    import fastattn_onnx

    placement = fastattn_onnx.node_placement(path, inputs=feeds)
    names = [n.name for n in onnx.load(path, load_external_data=False).graph.node if n.op_type == "FastAttention"]
    where = [placement.get(name, "not run") for name in names]
    return sum(p == fastattn_onnx.EP_NAME for p in where), {p for p in where if p != fastattn_onnx.EP_NAME}
