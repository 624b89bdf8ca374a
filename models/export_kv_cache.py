"""A small decoder with an explicit KV cache (past_key_i/past_value_i in, present_* out), written
the way Hugging Face's Llama attention is (GQA repeat_kv; eager: an additive causal + padding
mask and MatMul/Softmax; sdpa: a boolean mask and torch's scaled_dot_product_attention),
exported with either torch exporter. Random weights, no hub.

    python models/export_kv_cache.py --exporter torchscript -o decoder_kv.onnx
"""
from __future__ import annotations

import argparse
import warnings


def build_decoder(hidden: int = 64, heads: int = 4, kv_heads: int = 2, layers: int = 2,
                  vocab: int = 128, attention: str = "eager"):
    import torch
    from torch import nn

    head_size = hidden // heads

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.q = nn.Linear(hidden, heads * head_size, bias=False)
            self.k = nn.Linear(hidden, kv_heads * head_size, bias=False)
            self.v = nn.Linear(hidden, kv_heads * head_size, bias=False)
            self.o = nn.Linear(heads * head_size, hidden, bias=False)

        def forward(self, x, mask, past_key, past_value):
            b, s, _ = x.shape
            q = self.q(x).view(b, s, heads, head_size).transpose(1, 2)
            k = self.k(x).view(b, s, kv_heads, head_size).transpose(1, 2)
            v = self.v(x).view(b, s, kv_heads, head_size).transpose(1, 2)
            key = torch.cat([past_key, k], dim=2)
            value = torch.cat([past_value, v], dim=2)
            rep = heads // kv_heads
            key_r = key[:, :, None].expand(b, kv_heads, rep, key.shape[2], head_size) \
                .reshape(b, heads, key.shape[2], head_size)
            value_r = value[:, :, None].expand(b, kv_heads, rep, value.shape[2], head_size) \
                .reshape(b, heads, value.shape[2], head_size)
            if attention == "sdpa":
                out = torch.nn.functional.scaled_dot_product_attention(q, key_r, value_r,
                                                                       attn_mask=mask)
            else:
                scores = torch.matmul(q, key_r.transpose(2, 3)) / head_size ** 0.5 + mask
                out = torch.matmul(torch.softmax(scores, dim=-1), value_r)
            out = out.transpose(1, 2).reshape(b, s, heads * head_size)
            return self.o(out), key, value

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab, hidden)
            self.layers = nn.ModuleList(Attention() for _ in range(layers))
            self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
            self.head = nn.Linear(hidden, vocab, bias=False)

        def forward(self, input_ids, attention_mask, *past):
            x = self.embed(input_ids)
            s = input_ids.shape[1]
            total = attention_mask.shape[1]
            i = torch.arange(s)[:, None] + (total - s)
            j = torch.arange(total)[None, :]
            allowed = (j <= i)[None, None] & attention_mask[:, None, None, :].bool()
            mask = allowed if attention == "sdpa" else \
                torch.where(allowed, 0.0, torch.finfo(torch.float32).min)
            presents = []
            for n, (layer, norm) in enumerate(zip(self.layers, self.norms)):
                h, key, value = layer(norm(x), mask, past[2 * n], past[2 * n + 1])
                x = x + h
                presents += [key, value]
            return (self.head(x), *presents)

    torch.manual_seed(0)
    return Decoder().eval()


def export_decoder(exporter: str, path: str, hidden: int = 64, heads: int = 4, kv_heads: int = 2,
                   layers: int = 2, attention: str = "eager") -> str:
    import torch

    model = build_decoder(hidden, heads, kv_heads, layers, attention=attention)
    b, s, p, d = 2, 3, 4, hidden // heads
    ids = torch.randint(0, 128, (b, s))
    mask = torch.ones(b, p + s, dtype=torch.int64)
    past = [torch.randn(b, kv_heads, p, d) for _ in range(2 * layers)]
    past_names = [f"past_{kind}_{n}" for n in range(layers) for kind in ("key", "value")]
    present_names = [f"present_{kind}_{n}" for n in range(layers) for kind in ("key", "value")]
    names = dict(input_names=["input_ids", "attention_mask", *past_names],
                 output_names=["logits", *present_names])
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
            past_len = torch.export.Dim("past")
            # The mask's length is seq + past: left for the exporter to derive.
            shapes = ({0: batch, 1: seq}, {0: batch, 1: torch.export.Dim.AUTO},
                      tuple({0: batch, 2: past_len} for _ in past))  # *past is one argument
            torch.onnx.export(model, (ids, mask, *past), path, dynamo=True, optimize=True,
                              dynamic_shapes=shapes, **names)
        else:
            axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "total"},
                    "logits": {0: "batch", 1: "seq"}}
            axes.update({n: {0: "batch", 2: "past"} for n in past_names})
            axes.update({n: {0: "batch", 2: "total"} for n in present_names})
            torch.onnx.export(model, (ids, mask, *past), path, dynamo=False, opset_version=17,
                              dynamic_axes=axes, **names)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exporter", choices=("dynamo", "torchscript"), default="torchscript")
    parser.add_argument("--attention", choices=("eager", "sdpa"), default="eager")
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args(argv)
    print(f"wrote {export_decoder(args.exporter, args.output, attention=args.attention)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
