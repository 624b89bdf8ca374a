"""com.microsoft.Attention (packed projection weights, what onnxruntime.transformers.optimizer
makes of BERT) becomes MatMul + Add + Split into 3D Q, K, V, then FastAttention.

What the op means is ONNX Runtime's CPU kernel (checked against sessions): qkv = input @ weights
+ bias, split at qkv_hidden_sizes (else in three equal parts); mask_index as in microsoft_mha.py;
attention_bias added to the scores; unidirectional is causal. Its packed [2, B, H, P, D] past and
present, in-op rotary and shared cache buffer are left alone with the reason.
"""
from __future__ import annotations

import dataclasses

import onnx_ir as ir

from ._graph import attribute, input_at, ints_attr, output_read
from .analysis import Probes
from .microsoft_mha import OrtAttentionMatch, ort_scale
from .rules import NoMatch


@dataclasses.dataclass
class PackedAttentionMatch(OrtAttentionMatch):
    """query, key and value all name the op's input [B, S, in] until fusion() projects it: the
    probes read its batch, length and type there."""
    weights: ir.Value | None = None  # [in, Hq + Hk + Hv]
    qkv_hidden_sizes: tuple[int, ...] | None = None

    def __post_init__(self):
        self.kv_sources = None

    def probe_values(self) -> list[ir.Value]:
        values = super().probe_values()
        return values if _static_width(self.weights) else values + [self.weights]

    def check(self, probes: Probes) -> None:
        rank = len(probes.shape(self.query))
        if rank != 3:
            raise NoMatch(f"input of rank {rank} is not mapped")
        width = _static_width(self.weights) or int(probes.shape(self.weights)[-1])
        sizes = self.qkv_hidden_sizes or (width // 3,) * 3
        heads = self.num_heads
        if len(sizes) != 3 or sum(sizes) != width or sizes[0] != sizes[1]:
            raise NoMatch(f"qkv_hidden_sizes {list(sizes)} beside weights of width {width}")
        if not heads or sizes[0] % heads or sizes[2] % heads:
            raise NoMatch(f"hidden sizes {list(sizes)} not divisible by num_heads {heads}")
        self.widths, self.head_size, self.kv_num_heads = tuple(sizes), sizes[0] // heads, heads
        self.key_seq_axis = 1
        self.check_masks(probes)

    def adapter_nodes(self) -> list[ir.Node]:
        if self.weights is None:  # made already
            return super().adapter_nodes()
        nodes = self.new_adapter_nodes()
        dtype = self.query.dtype
        packed = nodes.op("MatMul", [self.query, self.weights], "qkv", dtype=dtype)
        if self.projection_bias is not None:  # one Add on the packed projection
            packed = nodes.op("Add", [packed, self.projection_bias], "qkv_biased", dtype=dtype)
        self.query, self.key, self.value = nodes.split(packed, self.widths, 2,
                                                       ("query", "key", "value"))
        self.weights = self.projection_bias = None
        return nodes.nodes + super().adapter_nodes()


def _static_width(weights: ir.Value) -> int | None:
    shape = weights.shape
    if shape is None or len(shape) != 2 or not isinstance(shape[1], int):
        return None
    return int(shape[1])


def match(node: ir.Node) -> PackedAttentionMatch:
    if attribute(node, "do_rotary", 0):
        raise NoMatch("do_rotary (rotary embedding inside the op) is not mapped")
    if attribute(node, "past_present_share_buffer", 0) or input_at(node, 6) is not None:
        raise NoMatch("past_present_share_buffer / past_sequence_length (a shared cache buffer) "
                      "is not mapped")
    if input_at(node, 4) is not None:
        raise NoMatch("past (the packed [2, B, H, P, D] cache) is not mapped")
    if output_read(node, 1):
        raise NoMatch("present (the packed [2, B, H, S, D] cache) is read")
    heads, source = attribute(node, "num_heads"), node.inputs[0]
    return PackedAttentionMatch(node=node, query=source, key=source, value=source,
                                num_heads=heads, kv_num_heads=heads, scale=ort_scale(node),
                                causal=bool(attribute(node, "unidirectional", 0)),
                                weights=node.inputs[1], projection_bias=input_at(node, 2),
                                mask_index=input_at(node, 3), mask=input_at(node, 5),
                                qkv_hidden_sizes=ints_attr(node, "qkv_hidden_sizes"),
                                finite_masking=True,
                                mask_filter_value=float(attribute(node, "mask_filter_value", -10000.0)))


RULES = {("com.microsoft", "Attention"): match}
