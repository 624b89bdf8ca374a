"""com.microsoft.MultiHeadAttention becomes FastAttention where its meaning maps exactly; the
other com.microsoft attention ops are left alone with the reason.

Match here; check and replace are shared with the other op family (fused_op.FusedOpMatch).
"""
from __future__ import annotations

import onnx_ir as ir

from ._graph import attribute, input_at, output_read
from .fused_op import FusedOpMatch
from .rules import NoMatch


def match(node: ir.Node) -> FusedOpMatch:
    if input_at(node, 1) is None or input_at(node, 2) is None:
        raise NoMatch("packed QKV (key/value empty) is not mapped")
    if input_at(node, 3) is not None:
        raise NoMatch("projection bias input is not mapped")
    if input_at(node, 8) is not None or input_at(node, 9) is not None:
        raise NoMatch("past_sequence_length / cache_indirection (beam search) not mapped")
    if output_read(node, 3):
        raise NoMatch("qk output is read")
    heads = attribute(node, "num_heads")
    return FusedOpMatch(node=node, query=node.inputs[0], key=node.inputs[1], value=node.inputs[2],
                        num_heads=heads, kv_num_heads=heads, scale=attribute(node, "scale"),
                        causal=bool(attribute(node, "unidirectional", 0)),
                        # attention_bias is additive: probed like a decomposed mask
                        key_padding_mask=input_at(node, 4), mask=input_at(node, 5),
                        past_key=input_at(node, 6), past_value=input_at(node, 7),
                        finite_masking=True)


def _not_mapped(reason: str):
    def left_alone(node: ir.Node) -> FusedOpMatch:
        raise NoMatch(reason)
    return left_alone


_PACKED = "(packed projection weights) is not mapped"
RULES = {
    ("com.microsoft", "MultiHeadAttention"): match,
    ("com.microsoft", "GroupQueryAttention"): _not_mapped(
        "GroupQueryAttention (seqlens_k, shared KV buffers, in-op rotary) is not mapped"),
    ("com.microsoft", "Attention"): _not_mapped(f"Attention {_PACKED}"),
    ("com.microsoft", "PackedAttention"): _not_mapped(f"PackedAttention {_PACKED}"),
    ("com.microsoft", "PackedMultiHeadAttention"): _not_mapped(f"PackedMultiHeadAttention {_PACKED}"),
}
