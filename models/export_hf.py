"""Build small Hugging Face models from configs (random weights, no hub) and export them to ONNX.

    python models/export_hf.py --arch llama --exporter dynamo -o llama.onnx

Importable: `export_model(arch, exporter, path, **sizes)` is what the tests call.
"""
from __future__ import annotations

import argparse
import os
import warnings

ARCHS = ("llama", "mistral", "gemma2", "qwen2", "gpt2", "bert")
EXPORTERS = ("dynamo", "torchscript")


def build_model(arch: str, hidden: int = 64, heads: int = 4, kv_heads: int | None = None,
                layers: int = 2, vocab: int = 128, intermediate: int | None = None,
                sliding_window: int = 40):
    """A randomly initialised transformers model in eval mode, eager attention."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    intermediate = intermediate or 4 * hidden
    if arch == "llama":
        cfg = tf.LlamaConfig(hidden_size=hidden, num_attention_heads=heads,
                             num_key_value_heads=kv_heads or max(1, heads // 4),
                             num_hidden_layers=layers, intermediate_size=intermediate,
                             vocab_size=vocab, max_position_embeddings=8192)
        model = tf.LlamaForCausalLM(cfg)
    elif arch == "mistral":  # Llama plus a sliding window
        cfg = tf.MistralConfig(hidden_size=hidden, num_attention_heads=heads,
                               num_key_value_heads=kv_heads or max(1, heads // 4),
                               num_hidden_layers=layers, intermediate_size=intermediate,
                               vocab_size=vocab, max_position_embeddings=8192,
                               sliding_window=sliding_window)
        model = tf.MistralForCausalLM(cfg)
    elif arch == "gemma2":  # softcapped scores; layers alternate sliding window and global
        cfg = tf.Gemma2Config(hidden_size=hidden, num_attention_heads=heads,
                              num_key_value_heads=kv_heads or max(1, heads // 4),
                              head_dim=hidden // heads, num_hidden_layers=layers,
                              intermediate_size=intermediate, vocab_size=vocab,
                              max_position_embeddings=8192, sliding_window=sliding_window,
                              attn_logit_softcapping=50.0, final_logit_softcapping=None)
        model = tf.Gemma2ForCausalLM(cfg)
    elif arch == "qwen2":  # biases on the q/k/v projections
        cfg = tf.Qwen2Config(hidden_size=hidden, num_attention_heads=heads,
                             num_key_value_heads=kv_heads or max(1, heads // 4),
                             num_hidden_layers=layers, intermediate_size=intermediate,
                             vocab_size=vocab, max_position_embeddings=8192)
        model = tf.Qwen2ForCausalLM(cfg)
    elif arch == "gpt2":
        cfg = tf.GPT2Config(n_embd=hidden, n_head=heads, n_layer=layers, n_inner=intermediate,
                            vocab_size=vocab, n_positions=1024)
        model = tf.GPT2LMHeadModel(cfg)
    elif arch == "bert":
        cfg = tf.BertConfig(hidden_size=hidden, num_attention_heads=heads, num_hidden_layers=layers,
                            intermediate_size=intermediate, vocab_size=vocab,
                            max_position_embeddings=512)
        model = tf.BertModel(cfg, add_pooling_layer=False)
    else:
        raise ValueError(f"unknown arch {arch!r}; choose from {ARCHS}")
    # Eager attention is the decomposed MatMul/Softmax graph users get from plain exports.
    cfg._attn_implementation = "eager"
    if hasattr(model.config, "_attn_implementation"):
        model.config._attn_implementation = "eager"
    cfg.use_cache = False
    model.config.use_cache = False
    return model.eval()


class _LogitsOnly:
    """Wraps a HF model so the export has plain tensor inputs and one output."""

    def __new__(cls, model, arch):
        import torch

        class Wrapper(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask):
                out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
                return out.logits if arch != "bert" else out.last_hidden_state

        return Wrapper().eval()


def export_model(arch: str, exporter: str, path: str, batch: int = 2, seq: int = 7,
                 **sizes) -> str:
    """Export `arch` with the given torch.onnx exporter to `path`; returns path."""
    import torch

    model = _LogitsOnly(build_model(arch, **sizes), arch)
    vocab = sizes.get("vocab", 128)
    ids = torch.randint(0, vocab, (batch, seq))
    mask = torch.ones(batch, seq, dtype=torch.int64)
    names = dict(input_names=["input_ids", "attention_mask"], output_names=["output"])
    dyn = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
           "output": {0: "batch", 1: "seq"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            batch_dim, seq_dim = torch.export.Dim("batch"), torch.export.Dim("seq")
            torch.onnx.export(model, (ids, mask), path, dynamo=True, optimize=True,
                              dynamic_shapes={"input_ids": {0: batch_dim, 1: seq_dim},
                                              "attention_mask": {0: batch_dim, 1: seq_dim}},
                              external_data=False, verbose=False, **names)
        elif exporter == "torchscript":
            torch.onnx.export(model, (ids, mask), path, dynamo=False, opset_version=17,
                              dynamic_axes=dyn, **names)
        else:
            raise ValueError(f"unknown exporter {exporter!r}; choose from {EXPORTERS}")
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=ARCHS, required=True)
    parser.add_argument("--exporter", choices=EXPORTERS, default="dynamo")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=None)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--intermediate", type=int, default=None)
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args(argv)
    export_model(args.arch, args.exporter, args.output, hidden=args.hidden, heads=args.heads,
                 kv_heads=args.kv_heads, layers=args.layers, intermediate=args.intermediate)
    print(f"wrote {os.path.abspath(args.output)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
