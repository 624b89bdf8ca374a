"""Shared by tests/test_convert_*.py: small exported models (once per session) and checks."""
from __future__ import annotations

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "models"))

import export_hf  # noqa: E402

# Small enough for 2 shared cores; GQA on llama (4 query heads over 2 kv heads).
SIZES = {"llama": dict(hidden=64, heads=4, kv_heads=2, layers=2),
         "mistral": dict(hidden=64, heads=4, kv_heads=2, layers=2, sliding_window=40),
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


def providers_of_fused_nodes(session_factory, path: str, feeds: dict) -> dict[str, set[str]]:
    """{node name: providers that ran it} for FastAttention nodes, from ORT's own profile."""
    import onnxruntime as ort

    import fastattn_onnx

    placement = getattr(fastattn_onnx, "placement", None)
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.log_severity_level = 3
    session = session_factory(path, options)
    if placement is not None:
        return placement(session)
    session.run(None, feeds)
    profile = session.end_profiling()
    with open(profile, encoding="utf-8") as f:
        events = json.load(f)
    os.remove(profile)
    found: dict[str, set[str]] = {}
    for event in events:
        args = event.get("args", {})
        if event.get("cat") == "Node" and args.get("op_name") == "FastAttention":
            name = event["name"].removesuffix("_kernel_time").removesuffix("_fence_before") \
                .removesuffix("_fence_after")
            found.setdefault(name, set()).add(args.get("provider", "?"))
    return found
