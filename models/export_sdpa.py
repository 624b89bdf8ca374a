"""A one-layer attention block calling torch's scaled_dot_product_attention directly, exported
to ONNX: the forms PyTorch's SDPA decomposition writes for each of its arguments (default
scale, boolean or additive attn_mask, is_causal, enable_gqa), independent of transformers.

    python models/export_sdpa.py --mask bool --gqa --exporter torchscript -o sdpa.onnx
"""
from __future__ import annotations

import argparse
import os
import warnings

MASKS = ("none", "bool", "float")
EXPORTERS = ("dynamo", "torchscript")


def build_block(hidden: int = 64, heads: int = 4, kv_heads: int = 4, mask: str = "bool",
                is_causal: bool = False, scale: float | None = None):
    """forward(x [B, S, hidden], attention_mask [B, S] int64) -> [B, S, hidden]."""
    import torch
    import torch.nn.functional as F

    head_size = hidden // heads

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.q = torch.nn.Linear(hidden, hidden)
            self.k = torch.nn.Linear(hidden, kv_heads * head_size)
            self.v = torch.nn.Linear(hidden, kv_heads * head_size)

        def split(self, t, n):
            return t.view(t.shape[0], t.shape[1], n, head_size).transpose(1, 2)

        def forward(self, x, attention_mask):
            q, k, v = self.split(self.q(x), heads), self.split(self.k(x), kv_heads), \
                self.split(self.v(x), kv_heads)
            keep = attention_mask[:, None, None, :].bool()
            if mask == "bool":
                attn_mask = keep
            elif mask == "float":
                attn_mask = torch.zeros(keep.shape, dtype=x.dtype).masked_fill(~keep, -1e9)
            else:
                attn_mask = None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                                                 scale=scale, enable_gqa=kv_heads != heads)
            return out.transpose(1, 2).reshape(x.shape)

    return Block().eval()


def export_block(path: str, exporter: str, batch: int = 2, seq: int = 7, **options) -> str:
    import torch

    block = build_block(**options)
    hidden = options.get("hidden", 64)
    args = (torch.randn(batch, seq, hidden), torch.ones(batch, seq, dtype=torch.int64))
    names = dict(input_names=["x", "attention_mask"], output_names=["output"])
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            b, s = torch.export.Dim("batch"), torch.export.Dim("seq")
            torch.onnx.export(block, args, path, dynamo=True, optimize=True, verbose=False,
                              dynamic_shapes={"x": {0: b, 1: s}, "attention_mask": {0: b, 1: s}},
                              external_data=False, **names)
        else:
            axes = {"x": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                    "output": {0: "batch", 1: "seq"}}
            torch.onnx.export(block, args, path, dynamo=False, opset_version=17,
                              dynamic_axes=axes, **names)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exporter", choices=EXPORTERS, default="dynamo")
    parser.add_argument("--mask", choices=MASKS, default="bool")
    parser.add_argument("--causal", action="store_true")
    parser.add_argument("--gqa", action="store_true", help="2 kv heads for 4 query heads")
    parser.add_argument("--scale", type=float, default=None)
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args(argv)
    export_block(args.output, args.exporter, mask=args.mask, is_causal=args.causal,
                 kv_heads=2 if args.gqa else 4, scale=args.scale)
    print(f"wrote {os.path.abspath(args.output)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
