"""Shared by tests/test_convert_*.py: small exported models (once per session) and checks."""
from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "models"))  # export_hf, export_kv_cache, build_fused_ops

import export_hf  # noqa: E402

# Small enough for 2 shared cores; GQA on llama (4 query heads over 2 kv heads).
SIZES = {"llama": dict(hidden=64, heads=4, kv_heads=2, layers=2),
         "mistral": dict(hidden=64, heads=4, kv_heads=2, layers=2, sliding_window=40),
         "gemma2": dict(hidden=64, heads=4, kv_heads=2, layers=2, sliding_window=40),
         "qwen2": dict(hidden=64, heads=4, kv_heads=2, layers=2),
         "gpt2": dict(hidden=64, heads=4, layers=2),
         "bert": dict(hidden=64, heads=4, layers=2)}
CASES = [(arch, exporter) for arch in ("llama", "mistral", "gpt2", "bert")
         for exporter in ("dynamo", "torchscript")]
LAYERS = 2

_exported: dict[tuple[str, str], str] = {}


def exported(arch: str, exporter: str, tmp_path_factory) -> str:
    """Path of the exported model, exported once per test session."""
    key = (arch, exporter)
    if key not in _exported:
        directory = tmp_path_factory.mktemp(f"{arch}-{exporter}")
        path = str(directory / f"{arch}-{exporter}.onnx")
        _exported[key] = export_hf.export_model(arch, exporter, path, **SIZES[arch])
    return _exported[key]


def providers_running_fastattention(path: str, feeds: dict) -> tuple[int, set[str]]:
    """(nodes FastAttentionEP ran, providers other than it that ran a FastAttention kernel), from
    ORT's profiling JSON with default optimizations.

    By count rather than by name: an EP-compiled node appears in the profile under a generated
    name, and fastattn_onnx.node_placement's name recovery assumes every other graph node shows
    up in the profile, which Constant nodes (TorchScript exports) do not.
    """
    import json

    import onnxruntime as ort

    import fastattn_onnx

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.log_severity_level = 3
    fastattn_onnx.register_custom_ops(options)
    session = ort.InferenceSession(path, options, providers=[fastattn_onnx.EP_NAME, "CPUExecutionProvider"])
    session.run(None, feeds)
    profile = session.end_profiling()
    with open(profile, encoding="utf-8") as f:
        events = json.load(f)
    os.remove(profile)
    ours, others = set(), set()
    for event in events:
        args = event.get("args", {})
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        if args.get("provider") == fastattn_onnx.EP_NAME:
            ours.add(event["name"])
        elif args.get("op_name") == "FastAttention":
            others.add(args.get("provider"))
    return len(ours), others
