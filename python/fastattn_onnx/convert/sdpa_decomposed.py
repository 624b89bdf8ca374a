"""Decomposed attention: Softmax(scale * Q @ K^T + bias) @ V, as exporters write it.

match() reads the structure backwards from a Softmax (scores.py); the head counts, sizes and what
each mask means come from probing the model in check() (analysis.py), never from user flags;
fusion() describes the FastAttention node that replaces it (emit.py).
"""
from __future__ import annotations

import dataclasses
import math

import onnx_ir as ir

from . import kv_cache, layout
from ._graph import attribute, only_consumer, producer_op
from .analysis import Probes
from .emit import AttentionFusion
from .gqa_repeat import unrepeated
from .rules import NoMatch, find_matches
from .exporter_forms import nan_guard
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
    keep_fills: list[float] = dataclasses.field(default_factory=list)  # each Where's fill value
    softcap: float = 0.0
    repeat_kind: str | None = None  # repeat_kv form removed from K and V, if any
    repeated_key: ir.Value | None = None  # K and V as the graph had them, repeated to H heads
    repeated_value: ir.Value | None = None
    scores_matmul: ir.Node | None = None
    scale_factors: list = dataclasses.field(default_factory=list)  # (size-derived scalar, ±1)
    key_reshapes: tuple[ir.Value, ir.Value] | None = None  # dynamo's K^T: [B*H,S,D], [B,H,D,S]
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
    added_biases: list[ir.Value] = dataclasses.field(default_factory=list)  # summed onto attn_bias

    @property
    def name(self) -> str:
        return self.softmax.name or self.pv_matmul.name or "attention"

    @property
    def output(self) -> ir.Value:
        return self.pv_matmul.outputs[0]

    def probe_values(self) -> list[ir.Value]:
        values = [self.query, self.key, self.value, *self.biases, *self.keep_masks]
        values += [v for v in (self.past_key, self.past_value) if v is not None]
        values += [v for v, _ in self.scale_factors] + list(self.key_reshapes or ())
        values += [v for v in (self.repeated_key,) if v is not None]
        if self.layout_3d:
            values += [self.layout_3d[n] for n in ("query", "key", "value", "merged")]
        return values

    def check(self, probes: Probes) -> None:
        _resolve_scale(self, probes)
        _check_key_reshapes(self, probes)
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
            softcap=self.softcap, attn_bias=self.attn_bias, added_biases=self.added_biases,
            keep_mask_like=self.query if self.attn_bias_is_keep_mask else None,
            key_padding_mask=self.key_padding_mask, past_key=self.past_key,
            past_value=self.past_value, present_readers_stay=True, shape_sources=shape_sources,
            layout="3d" if plan else "4d", kv_repeat_removed=self.repeat_kind)


def _softmax_axis(softmax: ir.Node) -> int:
    """The axis attribute, or its default: -1 from opset 13; 1 before, where Softmax flattens the
    input to 2D at `axis` and normalises over every axis from there (only axis == rank - 1, here
    3 or -1, is the key axis alone)."""
    version = softmax.version
    if version is None and softmax.graph is not None:
        version = softmax.graph.opset_imports.get("")
    default = -1 if version is None or version >= 13 else 1
    return attribute(softmax, "axis", default)


def match(softmax: ir.Node) -> AttentionMatch:
    axis = _softmax_axis(softmax)
    if axis not in (-1, 3):
        raise NoMatch(f"softmax over axis {axis}, not the key axis")
    probs = softmax.outputs[0]
    consumer = only_consumer(probs)
    while consumer is not None and consumer.op_type == "Cast" and consumer.domain == "":
        probs = consumer.outputs[0]
        consumer = only_consumer(probs)
    if consumer is None and (guard := nan_guard(probs)) is not None:
        probs = guard.outputs[0]
        consumer = only_consumer(probs)
    if consumer is None:
        readers = sorted({use.node.op_type for use in probs.uses()})
        raise NoMatch(f"attention probabilities are read by another consumer ({', '.join(readers)})")
    if consumer.op_type != "MatMul" or consumer.inputs[0] is not probs:
        raise NoMatch(f"attention probabilities feed {consumer.op_type}, not MatMul(P, V)")
    scores, biases, keeps = peel_biases(softmax.inputs[0])
    scores, softcap = peel_softcap(scores)
    size_factors = []  # scale factors computed from sizes: read from the probes in check()
    scores, scale = peel_scale(skip_casts(scores), size_factors)
    qk = producer_op(scores, "MatMul")
    if qk is None:
        raise NoMatch("no Q @ K^T MatMul before the softmax")
    if data_readers(qk.outputs[0]) != 1 or data_readers(softmax.inputs[0]) != 1:
        raise NoMatch("scores are read by another consumer")
    query, q_factor = peel_scale(qk.inputs[0], size_factors)
    key, key_layout, k_factor, key_reshapes = untranspose_key(qk.inputs[1], size_factors)
    value = consumer.inputs[1]
    found = AttentionMatch(softmax=softmax, pv_matmul=consumer, query=query, key=key,
                           key_layout=key_layout, value=value,
                           scale=scale * q_factor * k_factor, biases=biases, scores_matmul=qk,
                           softcap=softcap, keep_masks=[k for k, _ in keeps],
                           keep_fills=[f for _, f in keeps], scale_factors=size_factors,
                           key_reshapes=key_reshapes)
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


def _resolve_scale(found: AttentionMatch, probes: Probes) -> None:
    """Multiplies in the size-derived factors: one number, the same on every probe."""
    for value, power in found.scale_factors:
        arrays = [probe[value.name] for probe in probes.arrays]
        numbers = {float(a.reshape(())) if a.size == 1 else None for a in arrays}
        if None in numbers or len(numbers) != 1:
            raise NoMatch("a scale factor computed from sizes is not one number for every "
                          "input size")
        number = numbers.pop()
        if not math.isfinite(number) or number == 0:
            raise NoMatch(f"a scale factor computed from sizes is {number}")
        found.scale *= number ** power


def _check_key_reshapes(found: AttentionMatch, probes: Probes) -> None:
    """Dynamo's K^T, Reshape(Transpose(Reshape(K, [B*H, S, D])), [B, H, D, S]), is K with the
    last two axes swapped exactly when the two shapes are these, on every probe."""
    if found.key_reshapes is None:
        return
    flat, key_t = found.key_reshapes
    key = found.repeated_key or found.key  # the keys as Q @ K^T reads them
    for k, f, t in zip(probes.shapes(key), probes.shapes(flat), probes.shapes(key_t)):
        if len(k) != 4 or f != (k[0] * k[1], k[2], k[3]) or t != (k[0], k[1], k[3], k[2]):
            raise NoMatch(f"K^T reshapes keys {k} through {f} to {t}, not a transpose of "
                          "the last two axes")


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
    """Causal/window structure and key padding from the masks; the rest stays additive.

    A term read as structure becomes a hard mask: its keys are removed outright. The original
    only adds the blocking value; with -inf that is the same, with a finite one (-10000,
    dtype-min) only while nothing else added to the scores can lower the visible keys as far.
    Besides Q K^T and the structure terms (0 at every key they keep, so they never lower a key
    that stays visible) the terms are general biases: any function of the inputs, e.g.
    Where(scores > 0, 0, -10000), which lowers visible keys by the same 10000. So beside a
    general bias only -inf terms become hard masks; finite ones stay additive, summed with it.
    (Q K^T itself must stay within 1e4 in a row for the original's own -10000 to mask; that
    much is taken from the model, not proven.)
    """
    free = []  # general additive biases, then the finite masks that must stay beside them
    pure_keeps = []  # keep-masks that are no structure: made a -inf bias (at most one)
    meanings, structure_biases = [], []  # structure read; (bias, meaning) not yet decided
    for bias in found.biases:
        meaning = probes.mask_meaning(bias)
        if meaning is None:
            free.append(bias)
        else:
            structure_biases.append((bias, meaning))
    for keep, fill in zip(found.keep_masks, found.keep_fills):
        # Where(keep, scores, fill) sets the fill, so it is a pure mask whatever keep computes.
        hard = fill == -math.inf
        if free and not hard:
            raise NoMatch(f"Where(keep, scores, {fill:g}) beside a general additive bias: the "
                          "bias can lower kept keys to the fill, so neither a hard mask nor a "
                          "bias equals it")
        meaning = probes.mask_meaning(keep)
        if meaning is None:
            pure_keeps.append(keep)
        else:
            meanings.append(meaning)
    for bias, meaning in structure_biases:
        if free and not meaning.hard:
            free.append(bias)  # finite blocking beside a general bias: kept additive
        else:
            meanings.append(meaning)
    if len(pure_keeps) > 1:
        raise NoMatch("several general keep-masks before the softmax")
    if len({(m.causal, m.window_size) for m in meanings if m.causal or m.window_size > 0}) > 1:
        raise NoMatch("masks with different causal/window structure")
    pads = {m.padding_input for m in meanings if m.padding_input}
    if len(pads) > 1:
        raise NoMatch("key padding from several inputs")
    found.causal = any(m.causal for m in meanings)
    found.window_size = max((m.window_size for m in meanings), default=-1)
    found.key_padding_mask = probes.graph_input(pads.pop()) if pads else None
    other_types = {str(probes.dtype(t)) for t in free} - {str(probes.dtype(found.query))}
    if other_types:  # the op's attn_bias has the query's type (a keep-mask is made so)
        raise NoMatch(f"additive bias of type {', '.join(sorted(other_types))}, not the query's")
    terms = pure_keeps + free
    found.attn_bias = terms[0] if terms else None
    found.added_biases = terms[1:]
    found.attn_bias_is_keep_mask = bool(pure_keeps)
