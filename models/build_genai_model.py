"""Build a small onnxruntime-genai model (GroupQueryAttention decoder, genai_config.json, tokenizer)
from a transformers config with random weights, fully offline.

    python models/build_genai_model.py --arch llama --hidden 512 --heads 8 --kv-heads 2 --layers 2 -p fp32 -o build/genai/llama

Steps: a random-weight checkpoint (AutoModelForCausalLM.from_config + save_pretrained) and a
byte-level BPE tokenizer trained here with `tokenizers` on a small built-in text (saved beside it
as a PreTrainedTokenizerFast: tokenizer.json, tokenizer_config.json), then onnxruntime-genai's
model builder on that folder (`-i DIR -e cpu`) with HF_HUB_OFFLINE=1. --no-fuse-qkv passes the
builder's `--extra_options fuse_qkv=false` (separate Q, K and V projections feeding GQA).

Importable: `build_genai_model(arch, out_dir, ...)` is what tests/test_genai.py calls (in_process=True
runs the builder in this process: it saves a Python start-up per model).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

ARCHS = ("llama", "qwen2", "gemma2")
PRECISIONS = ("fp32", "int8", "int4")
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "HF_HUB_DISABLE_TELEMETRY": "1"}

# The tokenizer's training text: enough distinct words for a few hundred merges.
TEXT = """\
Attention is all you need. The quick brown fox jumps over the lazy dog while the cat sat on the mat.
FastAttention carries FlashAttention-2 to hardware it does not serve, with two-level tiling and a
tiling-mask: masks are computed per tile, so no sequence by sequence mask tensor is ever stored.
A language model reads a prompt, fills its key and value cache, then writes one token at a time;
each new token attends to every token before it, or only to the last few inside a sliding window.
Grouped query attention shares each key and value head among several query heads, which keeps the
cache small. Rotary position embeddings turn each query and key by an angle that grows with its
position. Softcapping bounds the scores with a scaled hyperbolic tangent before the softmax.
Hello world! Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 2048 4096 8192. Punctuation, (brackets),
"quotes", 'apostrophes'; colons: and semi-colons. Edge boxes without an accelerator run on the CPU.
"""
SPECIAL_TOKENS = ("<|endoftext|>", "<pad>")  # bos = eos = 0, pad = 1


def make_tokenizer(vocab_size: int = 512):
    """A byte-level BPE tokenizer trained on TEXT, as a transformers PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXT.splitlines() * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIAL_TOKENS[0], eos_token=SPECIAL_TOKENS[0],
                                   pad_token=SPECIAL_TOKENS[1], unk_token=None)


def make_config(arch: str, vocab: int, hidden: int = 64, heads: int = 4, kv_heads: int | None = None,
                layers: int = 2, intermediate: int | None = None, max_positions: int = 4096,
                sliding_window: int = 16, init_range: float = 0.02):
    """A transformers config for `arch` (architectures set, as genai's builder dispatches on it)."""
    import transformers as tf

    common = dict(hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=kv_heads or max(1, heads // 4),
                  num_hidden_layers=layers, intermediate_size=intermediate or 2 * hidden, vocab_size=vocab,
                  max_position_embeddings=max_positions, bos_token_id=0, eos_token_id=0, pad_token_id=1,
                  initializer_range=init_range, tie_word_embeddings=False)
    if arch == "llama":
        cfg, name = tf.LlamaConfig(**common), "LlamaForCausalLM"
    elif arch == "qwen2":  # biases on the q/k/v projections
        cfg, name = tf.Qwen2Config(**common), "Qwen2ForCausalLM"
    elif arch == "gemma2":  # softcapped scores; layers alternate a sliding window and global attention
        head_dim = hidden // heads
        cfg, name = tf.Gemma2Config(**common, head_dim=head_dim, query_pre_attn_scalar=head_dim,
                                    sliding_window=sliding_window, attn_logit_softcapping=50.0,
                                    final_logit_softcapping=30.0), "Gemma2ForCausalLM"
    else:
        raise ValueError(f"arch {arch!r}: one of {', '.join(ARCHS)}")
    cfg.architectures = [name]
    return cfg


def make_checkpoint(arch: str, folder: str, seed: int = 0, **sizes) -> str:
    """Random weights and the local tokenizer, saved as a transformers model folder."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    tokenizer = make_tokenizer()
    torch.manual_seed(seed)
    cfg = make_config(arch, vocab=len(tokenizer), **sizes)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():  # transformers zeroes biases, and genai's builder drops all-zero Q/K/V biases
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.normal_(0.0, cfg.initializer_range)
            elif "norm" in name:  # 1 (Llama, Qwen2) or 0 (Gemma-2, which adds 1): vary them a little
                param.add_(torch.randn_like(param) * 0.1)
    model.generation_config = GenerationConfig(bos_token_id=0, eos_token_id=0, pad_token_id=1)
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def builder_args(checkpoint: str, out_dir: str, precision: str, cache_dir: str, fuse_qkv: bool) -> list[str]:
    args = ["-i", checkpoint, "-o", out_dir, "-p", precision, "-e", "cpu", "-c", cache_dir,
            "--extra_options", "hf_token=false"]
    if not fuse_qkv:
        args.append("fuse_qkv=false")
    return args


def _run_builder_here(args: list[str]) -> None:
    """The builder's own __main__, in this process (argv as the command line would give it)."""
    import contextlib
    import io

    from onnxruntime_genai.models import builder

    saved_argv, saved_env = sys.argv, {k: os.environ.get(k) for k in OFFLINE_ENV}
    os.environ.update(OFFLINE_ENV)
    sys.argv = ["builder", *args]
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):
            a = builder.get_args()
            extra = builder.parse_extra_options(
                a.model_name, a.input, a.output, a.precision, a.execution_provider, a.cache_dir, a.extra_options,
                builder_config_version=a.builder_config_version, target_options=a.target_options,
                drafter_options=a.drafter_options, speculative_options=a.speculative_options,
                runtime_config=a.runtime_config, search=a.search)
            builder.create_model(a.model_name, a.input, a.output, a.precision, a.execution_provider, a.cache_dir,
                                 **extra)
    except BaseException:
        sys.stderr.write(log.getvalue()[-4000:])
        raise
    finally:
        sys.argv = saved_argv
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def build_genai_model(arch: str, out_dir: str, precision: str = "fp32", fuse_qkv: bool = True,
                      checkpoint_dir: str | None = None, in_process: bool = False, quiet: bool = True,
                      **sizes) -> str:
    """Checkpoint + tokenizer (in checkpoint_dir, or a temporary folder), then genai's builder into
    out_dir. Returns out_dir (genai_config.json, model.onnx, model.onnx.data, tokenizer files)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: one of {', '.join(PRECISIONS)}")
    with tempfile.TemporaryDirectory(prefix="genai-build-") as tmp:
        checkpoint = make_checkpoint(arch, checkpoint_dir or os.path.join(tmp, "hf"), **sizes)
        args = builder_args(checkpoint, out_dir, precision, os.path.join(tmp, "cache"), fuse_qkv)
        if in_process:
            _run_builder_here(args)
        else:
            done = subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", *args],
                                  env={**os.environ, **OFFLINE_ENV}, text=True,
                                  capture_output=quiet)
            if done.returncode != 0:
                raise RuntimeError(f"onnxruntime-genai's model builder failed (exit {done.returncode}):\n"
                                   + ((done.stdout or "") + (done.stderr or ""))[-4000:])
    return out_dir


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=ARCHS, required=True)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=None, help="default: heads // 4")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--intermediate", type=int, default=None, help="default: 2 * hidden")
    parser.add_argument("--max-positions", type=int, default=16384,
                        help="context length (genai_config's context_length and max_length)")
    parser.add_argument("--sliding-window", type=int, default=16, help="gemma2: window of its local layers")
    parser.add_argument("--init-range", type=float, default=0.02, help="std of the random weights")
    parser.add_argument("--fuse-qkv", action=argparse.BooleanOptionalAction, default=True,
                        help="one packed QKV projection (the builder's default) or three")
    parser.add_argument("-p", "--precision", choices=PRECISIONS, default="fp32")
    parser.add_argument("--checkpoint", help="also keep the transformers checkpoint in this folder")
    parser.add_argument("-o", "--output", required=True, help="the genai model folder to write")
    parser.add_argument("--verbose", action="store_true", help="show the builder's output")
    a = parser.parse_args(argv)
    out = build_genai_model(a.arch, a.output, a.precision, fuse_qkv=a.fuse_qkv, checkpoint_dir=a.checkpoint,
                            quiet=not a.verbose, hidden=a.hidden, heads=a.heads, kv_heads=a.kv_heads,
                            layers=a.layers, intermediate=a.intermediate, max_positions=a.max_positions,
                            sliding_window=a.sliding_window, init_range=a.init_range)
    print(f"wrote {out} ({a.arch}, {a.precision}, {'fused' if a.fuse_qkv else 'separate'} QKV)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
