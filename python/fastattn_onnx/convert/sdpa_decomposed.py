"""Decomposed attention: Softmax(scale * Q @ K^T + bias) @ V, as exporters write it.

match() reads the structure backwards from a Softmax (scores.py); the head counts, sizes and what
each mask means come from probing the model in check() (analysis.py), never from user flags;
fusion() describes the FastAttention node that replaces it (emit.py).
"""
from __future__ import annotations

import dataclasses

import onnx_ir as ir

from . import kv_cache, layout
from ._graph import attribute, only_consumer, producer_op
from .analysis import Probes
from .emit import AttentionFusion
from .gqa_repeat import unrepeated
from .rules import NoMatch, find_matches
from .scores import data_readers, peel_biases, peel_scale, peel_softcap, skip_casts, untranspose_key


@dataclasses.dataclass
class AttentionMatch:
    softmax: ir.Node
    pv_matmul: ir.Node  # its output is what the fused node replaces
    query: ir.Value  # [B, H, Sq, D]
    key: ir.Value  # [B, Hk, Skv, D], or [B, Skv, Hk, D] when key_layout == "bshd"
    key_layout: str
    value: ir.Value  # [B, Hk, Skv, Dv]
    scale: float
    biases: list[ir.Value]  # additive terms before the softmax
    keep_masks: list[ir.Value] = dataclasses.field(default_factory=list)  # bool: True = keep
    softcap: float = 0.0
    repeat_kind: str | None = None  # repeat_kv form removed from K and V, if any
    repeated_key: ir.Value | None = None  # K and V as the graph had them, repeated to H heads
    repeated_value: ir.Value | None = None
    scores_matmul: ir.Node | None = None
    # KV cache (kv_cache.split_cache): key/value above are then the new tokens only.
    past_key: ir.Value | None = None
    past_value: ir.Value | None = None
    present_key: ir.Value | None = None  # the Concat results the op's present outputs replace
    present_value: ir.Value | None = None
    # 3D layout sources (layout.py): query/key/value [B, S, heads*D] and the merged output
    layout_3d: dict | None = None
    # Filled by the analysis:
    num_heads: int = 0
    kv_num_heads: int = 0
    head_size: int = 0
    value_head_size: int = 0
    causal: bool = False
    window_size: int = -1
    key_padding_mask: ir.Value | None = None
    attn_bias: ir.Value | None = None
    attn_bias_is_keep_mask: bool = False  # attn_bias is a bool keep-mask: made additive on replace

    @property
    def name(self) -> str:
        return self.softmax.name or self.pv_matmul.name or "attention"

    @property
    def output(self) -> ir.Value:
        return self.pv_matmul.outputs[0]

    def probe_values(self) -> list[ir.Value]:
        values = [self.query, self.key, self.value, *self.biases, *self.keep_masks]
        values += [v for v in (self.past_key, self.past_value) if v is not None]
        if self.layout_3d:
            values += [self.layout_3d[n] for n in ("query", "key", "value", "merged")]
        return values

    def check(self, probes: Probes) -> None:
        _check_sizes(self, probes)
        layout.check_3d(self, probes.shape)
        _check_masks(self, probes)

    def fusion(self) -> AttentionFusion:
        plan = self.layout_3d
        if plan:  # [B, S, heads*D] straight from the projections (layout.py)
            query, key, value = plan["query"], plan["key"], plan["value"]
        else:
            query, key, value = self.query, self.key, self.value
        replaced = plan["merged"] if plan else self.output
        shape_sources = []
        if self.value_head_size == self.head_size:  # the output has the query's shape
            if plan:
                # The old 4D output (still read by Shape nodes) had the shape of the query's
                # [B, S, H, D] split, transposed.
                shape_sources = [(self.output, plan["query_bshd"], (0, 2, 1, 3)),
                                 (replaced, plan["query"], (0, 1, 2))]
            else:
                shape_sources = [(self.output, self.query, (0, 1, 2, 3))]
        presents = [self.present_key, self.present_value] if self.past_key is not None else []
        return AttentionFusion(
            source="decomposed", anchor=self.pv_matmul, replaces=[replaced, *presents],
            query=query, key=key, value=value, key_bshd=plan is None and self.key_layout == "bshd",
            num_heads=self.num_heads, kv_num_heads=self.kv_num_heads, head_size=self.head_size,
            scale=self.scale, causal=self.causal, window_size=self.window_size,
            softcap=self.softcap, attn_bias=self.attn_bias,
            keep_mask_like=self.query if self.attn_bias_is_keep_mask else None,
            key_padding_mask=self.key_padding_mask, past_key=self.past_key,
            past_value=self.past_value, present_readers_stay=True, shape_sources=shape_sources,
            layout="3d" if plan else "4d", kv_repeat_removed=self.repeat_kind)


def match(softmax: ir.Node) -> AttentionMatch:
    axis = attribute(softmax, "axis", -1)
    if axis not in (-1, 3):
        raise NoMatch(f"softmax over axis {axis}, not the key axis")
    probs = softmax.outputs[0]
    consumer = only_consumer(probs)
    while consumer is not None and consumer.op_type == "Cast" and consumer.domain == "":
        probs = consumer.outputs[0]
        consumer = only_consumer(probs)
    if consumer is None:
        raise NoMatch("attention probabilities are read by another consumer")
    if consumer.op_type != "MatMul" or consumer.inputs[0] is not probs:
        raise NoMatch(f"attention probabilities feed {consumer.op_type}, not MatMul(P, V)")
    scores, biases, keeps = peel_biases(softmax.inputs[0])
    scores, softcap = peel_softcap(scores)
    scores, scale = peel_scale(skip_casts(scores))
    qk = producer_op(scores, "MatMul")
    if qk is None:
        raise NoMatch("no Q @ K^T MatMul before the softmax")
    if data_readers(qk.outputs[0]) != 1 or data_readers(softmax.inputs[0]) != 1:
        raise NoMatch("scores are read by another consumer")
    query, q_factor = peel_scale(qk.inputs[0])
    key, key_layout, k_factor = untranspose_key(qk.inputs[1])
    value = consumer.inputs[1]
    found = AttentionMatch(softmax=softmax, pv_matmul=consumer, query=query, key=key,
                           key_layout=key_layout, value=value,
                           scale=scale * q_factor * k_factor, biases=biases, scores_matmul=qk,
                           softcap=softcap, keep_masks=keeps)
    if key_layout == "bhsd":
        kv_key, key_repeat = unrepeated(key)
        kv_value, value_repeat = unrepeated(value)
        if key_repeat is not None and key_repeat == value_repeat:
            found.repeated_key, found.repeated_value = key, value
            found.key, found.value, found.repeat_kind = kv_key, kv_value, key_repeat
    kv_cache.split_cache(found)
    layout.find_3d(found)
    return found


RULES = {("", "Softmax"): match}


def find(graph: ir.Graph) -> tuple[list[AttentionMatch], list[tuple[str, str]]]:
    """All decomposed attentions, and (softmax name, reason) for each softmax left alone."""
    return find_matches(graph, RULES)


def _check_sizes(found: AttentionMatch, probes: Probes) -> None:
    q, k, v = probes.shape(found.query), probes.shape(found.key), probes.shape(found.value)
    if len(q) != 4 or len(k) != 4 or len(v) != 4:
        raise NoMatch(f"Q/K/V ranks {len(q)}/{len(k)}/{len(v)}, not 4D")
    kv_heads = k[2] if found.key_layout == "bshd" else k[1]
    head_size = k[3]
    if found.past_key is not None:
        past = probes.shape(found.past_key)
        if len(past) != 4 or past[1] != kv_heads or past[3] != head_size:
            raise NoMatch(f"past key shape {past} does not continue the keys {k}")
    if any(s[1] != q[1] or s[3] != q[3] for s in probes.shapes(found.query)):
        raise NoMatch("query heads/head size change with the input size")
    if q[3] != head_size:
        raise NoMatch(f"query head size {q[3]} differs from key head size {head_size}")
    if v[1] != kv_heads:
        raise NoMatch(f"value has {v[1]} heads, key has {kv_heads}")
    if found.repeat_kind == "tile4d" and kv_heads != 1:
        # Tile orders heads h % Hk; the op groups h // (H/Hk): keep the repeated K/V.
        found.key, found.value = found.repeated_key, found.repeated_value
        found.repeat_kind, kv_heads = None, q[1]
    if q[1] % kv_heads:
        raise NoMatch(f"{q[1]} query heads do not group over {kv_heads} kv heads")
    found.num_heads, found.kv_num_heads, found.head_size = int(q[1]), int(kv_heads), int(q[3])
    found.value_head_size = int(v[3])


def _check_masks(found: AttentionMatch, probes: Probes) -> None:
    """Causal/window structure and key padding from the masks; at most one stays a bias."""
    general, meanings = [], []
    for mask in [*found.biases, *found.keep_masks]:
        meaning = probes.mask_meaning(mask)
        if meaning is None:
            general.append(mask)
        else:
            meanings.append(meaning)
    if len(general) > 1:
        raise NoMatch("several general additive biases before the softmax")
    if len({(m.causal, m.window_size) for m in meanings if m.causal or m.window_size > 0}) > 1:
        raise NoMatch("masks with different causal/window structure")
    pads = {m.padding_input for m in meanings if m.padding_input}
    if len(pads) > 1:
        raise NoMatch("key padding from several inputs")
    found.causal = any(m.causal for m in meanings)
    found.window_size = max((m.window_size for m in meanings), default=-1)
    found.key_padding_mask = probes.graph_input(pads.pop()) if pads else None
    found.attn_bias = general[0] if general else None
    found.attn_bias_is_keep_mask = bool(general) and any(general[0] is k for k in found.keep_masks)
