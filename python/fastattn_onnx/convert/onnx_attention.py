"""ONNX Attention (opset 23+) becomes FastAttention where its meaning maps exactly.

Match here; check and replace are shared with the other op family (fused_op.FusedOpMatch).
"""
from __future__ import annotations

import onnx_ir as ir

from ._graph import attribute, input_at, output_read
from .fused_op import FusedOpMatch
from .rules import NoMatch


def match(node: ir.Node) -> FusedOpMatch:
    if output_read(node, 3):
        raise NoMatch("qk_matmul_output is read")
    if input_at(node, 6) is not None:
        raise NoMatch("nonpad_kv_seqlen (external cache lengths) is not mapped")
    for name in ("left_window_size", "right_window_size"):
        if attribute(node, name, -1) not in (-1, None):
            raise NoMatch(f"{name} is not mapped")
    if (input_at(node, 4) is None) != (input_at(node, 5) is None):
        raise NoMatch("past_key without past_value")
    return FusedOpMatch(node=node, query=node.inputs[0], key=node.inputs[1], value=node.inputs[2],
                        num_heads=attribute(node, "q_num_heads"),
                        kv_num_heads=attribute(node, "kv_num_heads"),
                        scale=attribute(node, "scale"),
                        softcap=float(attribute(node, "softcap", 0.0) or 0.0),
                        causal=bool(attribute(node, "is_causal", 0)),
                        mask=input_at(node, 3),  # attn_mask: bool (True = attend) or additive
                        past_key=input_at(node, 4), past_value=input_at(node, 5))


RULES = {("", "Attention"): match}
