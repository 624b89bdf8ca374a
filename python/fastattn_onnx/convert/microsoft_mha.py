"""com.microsoft.MultiHeadAttention becomes FastAttention where its meaning maps exactly, its
projection bias and key_padding_mask turned into plain ONNX nodes before the fused op
(com.microsoft.Attention, packed, is microsoft_attention.py); the other com.microsoft attention
ops are left alone with the reason.

What the op means is ONNX Runtime's CPU kernel (checked against sessions): the key mask hides key
j where mask[b, j] <= 0 ([B, S_total]) or j >= mask[b] ([B] lengths: right padding) by adding
mask_filter_value (-10000 unless set); unidirectional is causal; scale 0 means 1/sqrt(head size).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from ._graph import attribute, input_at, output_read
from .analysis import Probes
from .fused_op import FusedOpMatch, check_mask, check_sizes, key_totals
from .masks import BLOCKED
from .rules import NoMatch

# The default opset each key mask form's nodes need: Greater on integers (9), Range (11).
MASK_FORM_OPSET = {"keep": 9, "lengths": 11}


class AdapterNodes:
    """Plain ONNX nodes put before the fused op, each (and its output) named <prefix>/<what>."""

    def __init__(self, prefix: str, opset: int):
        self.prefix, self.opset, self.nodes = prefix, opset, []

    def op(self, op_type: str, inputs: list, what: str, dtype=None, **attributes) -> ir.Value:
        node = ir.node(op_type, inputs, attributes, name=f"{self.prefix}/{what}")
        node.outputs[0].name = f"{self.prefix}/{what}"
        if dtype is not None:  # for the contract check of a fusion not yet typed
            node.outputs[0].dtype = dtype
        self.nodes.append(node)
        return node.outputs[0]

    def const(self, array, what: str) -> ir.Value:
        return self.op("Constant", [], what, value=ir.tensor(np.asarray(array)))

    def split(self, value: ir.Value, sizes, axis: int, names: tuple[str, ...]) -> list[ir.Value]:
        """Split into parts of `sizes` on `axis` (the sizes an input from opset 13)."""
        if self.opset >= 13:
            node = ir.node("Split", [value, self.const(np.array(sizes, np.int64), "split_sizes")],
                           {"axis": axis}, num_outputs=len(sizes), name=f"{self.prefix}/split")
        else:
            node = ir.node("Split", [value], {"axis": axis, "split": [int(s) for s in sizes]},
                           num_outputs=len(sizes), name=f"{self.prefix}/split")
        for output, name in zip(node.outputs, names):
            output.name = f"{self.prefix}/{name}"
            if value.dtype is not None:
                output.dtype = value.dtype
        self.nodes.append(node)
        return list(node.outputs)


@dataclasses.dataclass
class OrtAttentionMatch(FusedOpMatch):
    # ORT's key mask (key_padding_mask here, mask_index in Attention): check() reads its form,
    # fusion() makes it the op's key_padding_mask.
    mask_index: ir.Value | None = None
    mask_filter_value: float = -10000.0
    # [Hq + Hk + Hv] added to the 3D Q, K and V projections before the attention.
    projection_bias: ir.Value | None = None
    mask_form: str = dataclasses.field(init=False, default="")  # "keep" [B, S_total] or "lengths"
    widths: tuple[int, int, int] = dataclasses.field(init=False, default=(0, 0, 0))  # Q, K, V
    key_seq_axis: int = dataclasses.field(init=False, default=1)

    def __post_init__(self):
        super().__post_init__()
        if self.projection_bias is not None:
            self.kv_sources = None  # the bias differs per head: K/V are no longer a repeat

    @property
    def mask_name(self) -> str:
        return "mask_index" if self.node.op_type == "Attention" else "key_padding_mask"

    def probe_values(self) -> list[ir.Value]:
        return super().probe_values() + ([self.mask_index] if self.mask_index is not None else [])

    def has_key_padding(self) -> bool:
        return super().has_key_padding() or self.mask_index is not None

    def check(self, probes: Probes) -> None:
        check_sizes(self, probes)
        shapes = [probes.shape(v) for v in (self.query, self.key, self.value)]
        if self.projection_bias is not None:
            if any(len(s) != 3 for s in shapes):
                raise NoMatch("projection bias beside 4D query/key/value is not mapped")
            self.widths = tuple(int(s[2]) for s in shapes)
        self.key_seq_axis = 1 if len(shapes[1]) == 3 else 2
        self.check_masks(probes)

    def check_masks(self, probes: Probes) -> None:
        if self.mask_index is not None:
            self.mask_form = _mask_form(self, probes)
        if self.mask is not None:
            check_mask(self, probes)

    def adapter_nodes(self) -> list[ir.Node]:
        nodes = self.new_adapter_nodes()
        if self.projection_bias is not None:
            parts = nodes.split(self.projection_bias, self.widths, 0,
                                ("query_bias", "key_bias", "value_bias"))
            for side, part in zip(("query", "key", "value"), parts):
                projected = getattr(self, side)
                setattr(self, side, nodes.op("Add", [projected, part], f"{side}_biased",
                                             dtype=projected.dtype))
        if self.mask_index is not None:
            self.key_padding_mask = self._key_visibility(nodes)
        self.projection_bias = self.mask_index = None  # made into nodes: a second call adds none
        return nodes.nodes

    def new_adapter_nodes(self) -> AdapterNodes:
        """Named after the op's output (a unique name), for the model's default opset."""
        return AdapterNodes(f"{self.node.outputs[0].name}/fastattn", default_opset(self.node))

    def _key_visibility(self, nodes: AdapterNodes) -> ir.Value:
        """ORT's key mask as the op's key_padding_mask (bool [B, S_total], True = visible)."""
        mask = self.mask_index
        if self.mask_form == "keep":  # the same for every layer that reads it: made once
            name = f"{mask.name}/key_visible"
            made = [u.node for u in mask.uses() if u.node.name == name
                    and u.node.graph is not None]
            if made:
                return made[0].outputs[0]
            shared = AdapterNodes(mask.name, nodes.opset)
            zero = shared.const(np.zeros((), mask.dtype.numpy() if mask.dtype else np.int32), "zero")
            visible = shared.op("Greater", [mask, zero], "key_visible")
            nodes.nodes += shared.nodes
            return visible
        # lengths: key j visible while j < mask[b]; S_total from this op's keys
        keys, axis = (self.kv_sources[0], 2) if self.kv_sources else (self.key, self.key_seq_axis)
        shape = nodes.op("Shape", [keys], "key_shape")
        count = nodes.op("Gather", [shape, nodes.const(np.array(axis, np.int64), "key_axis")],
                         "key_count", axis=0)
        positions = nodes.op("Range", [nodes.const(np.array(0, np.int64), "first_key"), count,
                                       nodes.const(np.array(1, np.int64), "key_step")], "key_positions")
        lengths = nodes.op("Cast", [mask], "key_lengths", to=int(ir.DataType.INT64))
        column = nodes.op("Reshape", [lengths, nodes.const(np.array([-1, 1], np.int64), "column")],
                          "key_lengths_column")
        return nodes.op("Less", [positions, column], "key_visible")


def _mask_form(found: OrtAttentionMatch, probes: Probes) -> str:
    form = _mask_shape_form(found, probes)
    opset = default_opset(found.node)
    if opset < MASK_FORM_OPSET[form]:
        raise NoMatch(f"{found.mask_name} in a model of opset {opset} (the key mask made from it "
                      f"needs opset {MASK_FORM_OPSET[form]}) is not mapped")
    return form


def _mask_shape_form(found: OrtAttentionMatch, probes: Probes) -> str:
    """"keep" for [B, S_total], "lengths" for [B]; other forms are left alone."""
    name = found.mask_name
    if found.mask_filter_value > BLOCKED:
        raise NoMatch(f"{name} with mask_filter_value {found.mask_filter_value} (a masked key "
                      f"keeps some weight) is not mapped")
    batches = [s[0] for s in probes.shapes(found.query)]
    shapes = probes.shapes(found.mask_index)
    if all(s == (b, t) for s, b, t in zip(shapes, batches, key_totals(found, probes))):
        return "keep"
    if all(s == (b,) for s, b in zip(shapes, batches)):
        if found.past_key is not None:
            raise NoMatch(f"{name} lengths beside a past cache is not mapped")
        return "lengths"
    if all(s == (2 * b,) for s, b in zip(shapes, batches)):
        raise NoMatch(f"{name} of [2B] end and start positions is not mapped")
    raise NoMatch(f"{name} of shape {list(shapes[0])} (per query row, or not [B, S_total]) "
                  f"is not mapped")


def ort_scale(node: ir.Node) -> float | None:
    """The scale attribute; 0 (or unset) is ORT's 1/sqrt(head size), the fused op's default."""
    return attribute(node, "scale") or None


def default_opset(node: ir.Node) -> int:
    return node.graph.opset_imports.get("", 0) if node.graph is not None else 0


def match(node: ir.Node) -> OrtAttentionMatch:
    if input_at(node, 1) is None or input_at(node, 2) is None:
        raise NoMatch("packed QKV (key/value empty) is not mapped")
    if input_at(node, 8) is not None or input_at(node, 9) is not None:
        raise NoMatch("past_sequence_length / cache_indirection (beam search) not mapped")
    if output_read(node, 3):
        raise NoMatch("qk output is read")
    heads = attribute(node, "num_heads")
    return OrtAttentionMatch(node=node, query=node.inputs[0], key=node.inputs[1],
                             value=node.inputs[2], num_heads=heads, kv_num_heads=heads,
                             scale=ort_scale(node), causal=bool(attribute(node, "unidirectional", 0)),
                             projection_bias=input_at(node, 3), mask_index=input_at(node, 4),
                             # attention_bias is additive: probed like a decomposed mask
                             mask=input_at(node, 5), past_key=input_at(node, 6),
                             past_value=input_at(node, 7), finite_masking=True,
                             mask_filter_value=float(attribute(node, "mask_filter_value", -10000.0)))


def _not_mapped(reason: str):
    def left_alone(node: ir.Node) -> FusedOpMatch:
        raise NoMatch(reason)
    return left_alone


_PACKED = "(packed projection weights) is not mapped"
RULES = {
    ("com.microsoft", "MultiHeadAttention"): match,
    ("com.microsoft", "GroupQueryAttention"): _not_mapped(
        "GroupQueryAttention (seqlens_k, shared KV buffers, in-op rotary) is not mapped"),
    ("com.microsoft", "PackedAttention"): _not_mapped(f"PackedAttention {_PACKED}"),
    ("com.microsoft", "PackedMultiHeadAttention"): _not_mapped(f"PackedMultiHeadAttention {_PACKED}"),
}
