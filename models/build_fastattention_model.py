"""Writes a small ONNX model with one com.fastattention::FastAttention node.

    python models/build_fastattention_model.py out.onnx --layout 3d --num-heads 4 --kv-num-heads 2
"""
from __future__ import annotations

import argparse

import onnx

from fastattn_onnx.model_builders import ELEMENT_TYPES, MASK_TYPES, build_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("output")
    ap.add_argument("--layout", choices=["3d", "4d"], default="3d")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq-q", type=int, default=16)
    ap.add_argument("--seq-kv", type=int, default=16)
    ap.add_argument("--seq-past", type=int, default=0)
    ap.add_argument("--num-heads", type=int, default=4)
    ap.add_argument("--kv-num-heads", type=int, default=None)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--dtype", choices=list(ELEMENT_TYPES), default="float32")
    ap.add_argument("--causal", type=int, default=None)
    ap.add_argument("--window-size", type=int, default=None)
    ap.add_argument("--key-padding-mask", choices=list(MASK_TYPES), default=None)
    ap.add_argument("--present", action="store_true")
    a = ap.parse_args()
    m = build_model(layout=a.layout, batch=a.batch, seq_q=a.seq_q, seq_kv=a.seq_kv, seq_past=a.seq_past,
                    num_heads=a.num_heads, kv_num_heads=a.kv_num_heads, head_dim=a.head_dim, dtype=a.dtype,
                    causal=a.causal, window_size=a.window_size, key_padding_mask=a.key_padding_mask,
                    present=a.present)
    onnx.save(m, a.output)


if __name__ == "__main__":
    main()
