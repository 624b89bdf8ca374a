"""Build small Hugging Face models from configs (random weights, no hub) and export them to ONNX.

    python models/export_hf.py --arch llama --exporter dynamo -o llama.onnx

Importable: `export_model(arch, exporter, path, **sizes)` is what the tests call.
"""
from __future__ import annotations

import argparse
import os
import warnings

ARCHS = ("llama", "mistral", "gemma2", "qwen2", "gpt2", "bert", "roberta", "vit", "whisper")
ENCODERS = ("bert", "roberta")  # take ids and a padding mask, return hidden states
EXPORTERS = ("dynamo", "torchscript")


def build_model(arch: str, hidden: int = 64, heads: int = 4, kv_heads: int | None = None,
                layers: int = 2, vocab: int = 128, intermediate: int | None = None,
                sliding_window: int = 40, attn_implementation: str = "eager"):
    """A randomly initialised transformers model in eval mode, with the given attention
    implementation ("eager": decomposed MatMul/Softmax; "sdpa": transformers' default, exported
    through PyTorch's scaled_dot_product_attention)."""
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
    elif arch == "roberta":
        cfg = tf.RobertaConfig(hidden_size=hidden, num_attention_heads=heads,
                               num_hidden_layers=layers, intermediate_size=intermediate,
                               vocab_size=vocab, max_position_embeddings=514, pad_token_id=1)
        model = tf.RobertaModel(cfg, add_pooling_layer=False)
    elif arch == "vit":  # 32x32 images in 8x8 patches: 17 tokens, a fixed length
        cfg = tf.ViTConfig(hidden_size=hidden, num_attention_heads=heads, num_hidden_layers=layers,
                           intermediate_size=intermediate, image_size=32, patch_size=8)
        model = tf.ViTModel(cfg, add_pooling_layer=False)
    elif arch == "whisper":  # encoder-decoder: the decoder's cross-attention reads the encoder
        cfg = tf.WhisperConfig(vocab_size=vocab, num_mel_bins=8, d_model=hidden,
                               encoder_layers=layers, decoder_layers=layers,
                               encoder_attention_heads=heads, decoder_attention_heads=heads,
                               encoder_ffn_dim=intermediate, decoder_ffn_dim=intermediate,
                               max_source_positions=WHISPER_FRAMES // 2, max_target_positions=64,
                               pad_token_id=0, bos_token_id=1, eos_token_id=2,
                               decoder_start_token_id=1)
        model = tf.WhisperModel(cfg)
    else:
        raise ValueError(f"unknown arch {arch!r}; choose from {ARCHS}")
    cfg._attn_implementation = attn_implementation
    if hasattr(model.config, "_attn_implementation"):
        model.config._attn_implementation = attn_implementation
    cfg.use_cache = False
    model.config.use_cache = False
    return model.eval()


WHISPER_FRAMES = 32  # mel frames of the encoder input (twice max_source_positions)


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
                return out.last_hidden_state if arch in ENCODERS else out.logits

        class Images(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, pixel_values):
                return self.model(pixel_values=pixel_values).last_hidden_state

        class Speech(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, input_features, decoder_input_ids):
                return self.model(input_features=input_features,
                                  decoder_input_ids=decoder_input_ids,
                                  use_cache=False).last_hidden_state

        wrapper = {"vit": Images, "whisper": Speech}.get(arch, Wrapper)
        return wrapper().eval()


def _example_inputs(arch: str, batch: int, seq: int, vocab: int):
    """(example tensors, input names, the dynamic axes of each input by name)."""
    import torch

    if arch == "vit":
        return (torch.randn(batch, 3, 32, 32),), ["pixel_values"], {"pixel_values": {0: "batch"}}
    if arch == "whisper":
        return ((torch.randn(batch, 8, WHISPER_FRAMES), torch.randint(3, vocab, (batch, seq))),
                ["input_features", "decoder_input_ids"],
                {"input_features": {0: "batch"}, "decoder_input_ids": {0: "batch", 1: "seq"}})
    ids = torch.randint(0, vocab, (batch, seq))
    mask = torch.ones(batch, seq, dtype=torch.int64)
    return ((ids, mask), ["input_ids", "attention_mask"],
            {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}})


def export_model(arch: str, exporter: str, path: str, batch: int = 2, seq: int = 7,
                 **sizes) -> str:
    """Export `arch` with the given torch.onnx exporter to `path`; returns path."""
    import torch

    model = _LogitsOnly(build_model(arch, **sizes), arch)
    args, input_names, axes = _example_inputs(arch, batch, seq, sizes.get("vocab", 128))
    output_axes = {0: "batch"} if arch == "vit" else {0: "batch", 1: "seq"}
    names = dict(input_names=input_names, output_names=["output"])
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            dims = {}
            dynamic = {name: {axis: dims.setdefault(label, torch.export.Dim(label))
                              for axis, label in spec.items()} for name, spec in axes.items()}
            torch.onnx.export(model, args, path, dynamo=True, optimize=True,
                              dynamic_shapes=dynamic, external_data=False, verbose=False, **names)
        elif exporter == "torchscript":
            torch.onnx.export(model, args, path, dynamo=False, opset_version=17,
                              dynamic_axes={**axes, "output": output_axes}, **names)
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
    parser.add_argument("--attn", choices=("eager", "sdpa"), default="eager",
                        help="transformers' attn_implementation (sdpa is its default)")
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args(argv)
    export_model(args.arch, args.exporter, args.output, hidden=args.hidden, heads=args.heads,
                 kv_heads=args.kv_heads, layers=args.layers, intermediate=args.intermediate,
                 attn_implementation=args.attn)
    print(f"wrote {os.path.abspath(args.output)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
