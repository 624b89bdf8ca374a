"""Export each architecture with each exporter and attention implementation, convert it, and
print how many attention layers we fuse beside onnxscript's ort_fusions and ONNX Runtime's
transformers optimizer on the same file (the README's fusion table).

    python models/fusion_table.py [--arch bert --arch vit] [--attn sdpa]

Importable: the anchor counts are what tests/test_convert_models.py compares against.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_hf  # noqa: E402

# Small enough for 2 shared cores; GQA on the decoders (4 query heads over 2 kv heads).
SIZES = {"llama": dict(hidden=64, heads=4, kv_heads=2, layers=2),
         "mistral": dict(hidden=64, heads=4, kv_heads=2, layers=2, sliding_window=40),
         "gemma2": dict(hidden=64, heads=4, kv_heads=2, layers=2, sliding_window=40),
         "qwen2": dict(hidden=64, heads=4, kv_heads=2, layers=2),
         "gpt2": dict(hidden=64, heads=4, layers=2),
         "bert": dict(hidden=64, heads=4, layers=2),
         "roberta": dict(hidden=64, heads=4, layers=2),
         "vit": dict(hidden=64, heads=4, layers=2),
         "whisper": dict(hidden=64, heads=4, layers=2)}
TABLE_ARCHS = ("llama", "qwen2", "mistral", "gpt2", "bert", "roberta", "vit", "whisper")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")

ORT_FUSED_OPS = {"Attention", "MultiHeadAttention", "GroupQueryAttention", "PackedAttention",
                 "PackedMultiHeadAttention"}
# What onnxruntime.transformers.optimizer is told about each architecture.
ORT_MODEL_TYPE = {"llama": "gpt2", "mistral": "gpt2", "qwen2": "gpt2", "gemma2": "gpt2",
                  "gpt2": "gpt2", "bert": "bert", "roberta": "bert", "vit": "vit",
                  "whisper": "bart"}


def attention_layers(arch: str) -> int:
    """Attention subgraphs in an export of `arch` at SIZES (whisper: encoder self, decoder self
    and decoder cross attention)."""
    return SIZES[arch]["layers"] * (3 if arch == "whisper" else 1)


def ort_optimizer_count(path: str, arch: str) -> int:
    """Attention ops onnxruntime.transformers.optimizer fuses in the file (0 if it fails)."""
    from onnxruntime.transformers.optimizer import optimize_model

    sizes = SIZES[arch]
    try:
        optimized = optimize_model(path, model_type=ORT_MODEL_TYPE[arch], num_heads=sizes["heads"],
                                   hidden_size=sizes["hidden"], opt_level=1)
    except Exception:  # e.g. IndexError in its GPT-2 postprocess on dynamo exports
        return 0
    return sum(1 for n in optimized.model.graph.node if n.op_type in ORT_FUSED_OPS)


def onnxscript_count(path: str) -> int:
    """Attention ops onnxscript's ort_fusions (optimize_for_ort) fuses in the file."""
    import onnx_ir as ir
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    model = ir.load(path)
    try:
        optimize_for_ort(model)
    except Exception:
        return 0
    return sum(1 for n in model.graph if n.op_type in ORT_FUSED_OPS)


def table_row(arch: str, exporter: str, attn: str, directory: str) -> dict:
    from fastattn_onnx.convert import ConvertError, VerifyError, convert

    path = os.path.join(directory, f"{arch}-{exporter}-{attn}.onnx")
    row = {"arch": arch, "exporter": exporter, "attn": attn, "layers": attention_layers(arch)}
    try:
        export_hf.export_model(arch, exporter, path, attn_implementation=attn, **SIZES[arch])
    except Exception as error:  # e.g. TorchScript has no aten::diff (Whisper's masks)
        message = str(error).strip().splitlines()[-1][:70]
        return {**row, "fused": "-", "verify": f"export failed: {message}", "onnxscript": "-",
                "ort": "-"}
    row.update(onnxscript=onnxscript_count(path), ort=ort_optimizer_count(path, arch))
    try:
        result = convert(path, path.replace(".onnx", ".fa.onnx"))
    except (ConvertError, VerifyError) as error:
        row.update(fused=0, verify=str(error).splitlines()[0][:60])
    else:
        worst = max((c.max_abs_error for c in result.verify.outputs), default=0.0) \
            if result.verify else None
        row.update(fused=result.fused, verify="-" if worst is None else f"{worst:.1e}")
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", action="append", choices=sorted(SIZES))
    parser.add_argument("--attn", action="append", choices=ATTN_IMPLEMENTATIONS)
    parser.add_argument("--exporter", action="append", choices=export_hf.EXPORTERS)
    args = parser.parse_args(argv)
    print("| model | exporter | attn_implementation | fused (ours) | verify max abs diff "
          "| onnxscript ort_fusions | ORT optimizer |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as directory:
        for arch in args.arch or TABLE_ARCHS:
            for attn in args.attn or ATTN_IMPLEMENTATIONS:
                for exporter in args.exporter or export_hf.EXPORTERS:
                    r = table_row(arch, exporter, attn, directory)
                    fused = f"{r['fused']}/{r['layers']}" if r["fused"] != "-" else "-"
                    print(f"| {arch} | {exporter} | {attn} | {fused} "
                          f"| {r['verify']} | {r['onnxscript']} | {r['ort']} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
