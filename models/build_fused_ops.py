"""Tiny models whose attention is already one fused op (ONNX Attention-23, com.microsoft
MultiHeadAttention (with and without its projection bias), GroupQueryAttention, packed
Attention), built with onnx.helper from random weights.

    python models/build_fused_ops.py --kind attention -o attention23.onnx
    python models/build_fused_ops.py --kind packed --mask 1d -o bert_like.onnx
"""
from __future__ import annotations

import argparse

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

KINDS = ("attention", "mha", "mha_bias", "gqa", "packed")
# How com.microsoft.Attention (kind "packed") gets its mask_index, as ORT's optimizer builds it:
# the int32 [B, S] mask itself, its row sums (lengths: right padding), none; "3d" is a per-query
# [B, S, S] mask (a form the converter leaves alone).
PACKED_MASKS = ("2d", "1d", "none", "3d")
HEADS, KV_HEADS, HEAD_SIZE, HIDDEN, VOCAB = 4, 2, 16, 64, 128


def build_fused_model(kind: str, mask: str = "2d", unidirectional: bool = False,
                      **attributes) -> onnx.ModelProto:
    """`mask` and `unidirectional` are for kind "packed"; `attributes` (scale, mask_filter_value
    ...) go on the MultiHeadAttention or packed Attention node."""
    rng = np.random.default_rng(0)
    kv_width = (KV_HEADS if kind in ("attention", "gqa") else HEADS) * HEAD_SIZE

    def weight(name, shape, scale):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [weight("embedding", (VOCAB, HIDDEN), 0.5), weight("wq", (HIDDEN, HEADS * HEAD_SIZE), 0.2),
             weight("wk", (HIDDEN, kv_width), 0.2), weight("wv", (HIDDEN, kv_width), 0.2)]
    nodes = [helper.make_node("Gather", ["embedding", "input_ids"], ["x"]),
             helper.make_node("MatMul", ["x", "wq"], ["q"]),
             helper.make_node("MatMul", ["x", "wk"], ["k"]),
             helper.make_node("MatMul", ["x", "wv"], ["v"])]
    mask_type = TensorProto.INT64
    if kind == "attention":
        # Padding as a bool [B, 1, S, S] mask (ORT wants the query axis spelled out) + is_causal.
        inits += [numpy_helper.from_array(np.array(v, np.int64), n)
                  for n, v in (("axes_1_2", [1, 2]), ("one", [1]), ("two", [2]))]
        nodes += [helper.make_node("Cast", ["attention_mask"], ["mask_bool"], to=TensorProto.BOOL),
                  helper.make_node("Unsqueeze", ["mask_bool", "axes_1_2"], ["mask_b11s"]),
                  helper.make_node("Shape", ["q"], ["q_shape"]),
                  helper.make_node("Gather", ["q_shape", "one"], ["seq"]),
                  helper.make_node("Shape", ["mask_b11s"], ["mask_shape"]),
                  helper.make_node("ScatterElements", ["mask_shape", "two", "seq"], ["target"], axis=0),
                  helper.make_node("Expand", ["mask_b11s", "target"], ["mask"]),
                  helper.make_node("Attention", ["q", "k", "v", "mask"], ["y"], is_causal=1,
                                   q_num_heads=HEADS, kv_num_heads=KV_HEADS)]
        opsets = [helper.make_opsetid("", 23)]
    elif kind in ("mha", "mha_bias"):
        mask_type = TensorProto.INT32
        bias = ""
        if kind == "mha_bias":  # [3 * hidden], added to q, k and v by the op
            inits.append(weight("qkv_bias", (3 * HEADS * HEAD_SIZE,), 0.5))
            bias = "qkv_bias"
        nodes.append(helper.make_node("MultiHeadAttention", ["q", "k", "v", bias, "attention_mask"],
                                      ["y"], domain="com.microsoft", num_heads=HEADS, **attributes))
        opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    elif kind == "packed":
        mask_type = TensorProto.INT32
        # the embedding and its Gather, then one packed projection in place of wq/wk/wv
        inits = inits[:1] + [weight("qkv_weight", (HIDDEN, 3 * HEADS * HEAD_SIZE), 0.2),
                             weight("qkv_bias", (3 * HEADS * HEAD_SIZE,), 0.5)]
        nodes = nodes[:1] + _mask_index_nodes(mask, inits)
        nodes.append(helper.make_node(
            "Attention", ["x", "qkv_weight", "qkv_bias", "" if mask == "none" else "mask_index"],
            ["y"], domain="com.microsoft", num_heads=HEADS, unidirectional=int(unidirectional),
            **attributes))
        opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    elif kind == "gqa":
        mask_type = TensorProto.INT32
        inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis_1"))
        nodes += [helper.make_node("ReduceSum", ["attention_mask", "axis_1"], ["lengths"], keepdims=0),
                  helper.make_node("Sub", ["lengths", "one_i32"], ["seqlens_k"]),
                  helper.make_node("Shape", ["attention_mask"], ["mask_shape"], start=1, end=2),
                  helper.make_node("Cast", ["mask_shape"], ["total_i32"], to=TensorProto.INT32),
                  helper.make_node("Squeeze", ["total_i32"], ["total"]),
                  helper.make_node("GroupQueryAttention", ["q", "k", "v", "", "", "seqlens_k", "total"],
                                   ["y", "present_k", "present_v"], domain="com.microsoft",
                                   num_heads=HEADS, kv_num_heads=KV_HEADS)]
        inits.append(numpy_helper.from_array(np.array(1, np.int32), "one_i32"))
        opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    else:
        raise ValueError(f"unknown kind {kind!r}; choose from {KINDS}")
    graph = helper.make_graph(
        nodes, kind,
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
         helper.make_tensor_value_info("attention_mask", mask_type, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", HEADS * HEAD_SIZE])],
        inits)
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10
    return model


def _mask_index_nodes(mask: str, inits: list) -> list[onnx.NodeProto]:
    """Nodes making "mask_index" from the int32 attention_mask, in the given form."""
    if mask == "2d":
        return [helper.make_node("Identity", ["attention_mask"], ["mask_index"])]
    if mask == "1d":
        inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis_1"))
        return [helper.make_node("ReduceSum", ["attention_mask", "axis_1"], ["mask_index"],
                                 keepdims=0)]
    if mask == "3d":  # [B, S, S]: query i sees key j where both are tokens
        inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis_1"))
        inits.append(numpy_helper.from_array(np.array([2], np.int64), "axis_2"))
        return [helper.make_node("Unsqueeze", ["attention_mask", "axis_1"], ["mask_b1s"]),
                helper.make_node("Unsqueeze", ["attention_mask", "axis_2"], ["mask_bs1"]),
                helper.make_node("Mul", ["mask_bs1", "mask_b1s"], ["mask_index"])]
    if mask == "none":
        return []
    raise ValueError(f"unknown mask {mask!r}; choose from {PACKED_MASKS}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument("--mask", choices=PACKED_MASKS, default="2d", help="for --kind packed")
    parser.add_argument("--unidirectional", action="store_true", help="for --kind packed")
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args(argv)
    onnx.save(build_fused_model(args.kind, args.mask, args.unidirectional), args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
