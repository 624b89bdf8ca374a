"""Decomposed attention: Softmax(scale * Q @ K^T + bias) @ V, as exporters write it.

match() reads the structure backwards from a Softmax; anything it needs to know about sizes
comes later from probing the model (see analysis.py), never from user flags.
"""
from __future__ import annotations

import dataclasses

import onnx_ir as ir

from ._graph import int_attr, ints_attr, only_consumer, producer_op, scalar
from .masks import BLOCKED
from . import kv_cache, layout
from .gqa_repeat import unrepeated


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


class NoMatch(Exception):
    """Why a Softmax is not the core of a fusable attention."""


def _leads_to_scores(value: ir.Value, depth: int = 8) -> bool:
    """Whether `value` is (scaled, capped, biased) Q @ K^T, i.e. the scores side of an Add."""
    for _ in range(depth):
        node = producer_op(value, "MatMul", "Mul", "Div", "Add", "Cast", "Tanh", "Where")
        if node is None:
            return False
        if node.op_type == "MatMul":
            return True
        if node.op_type in ("Cast", "Tanh"):
            value = node.inputs[0]
            continue
        if node.op_type == "Where":
            value = node.inputs[1]
            continue
        if node.op_type == "Add":
            return any(_leads_to_scores(v, depth - 1) for v in node.inputs)
        value = node.inputs[0] if scalar(node.inputs[1]) is not None else node.inputs[1]
    return False


def _skip_casts(value: ir.Value) -> ir.Value:
    """Precision casts around the softmax (fp16 scores, fp32 softmax) do not change the math."""
    while (cast := producer_op(value, "Cast")) is not None:
        value = cast.inputs[0]
    return value


def _peel_softcap(value: ir.Value) -> tuple[ir.Value, float]:
    """cap * tanh(x / cap) (Gemma-2 style) -> (x, cap); (value, 0.0) if absent."""
    outer = producer_op(value, "Mul")
    if outer is None:
        return value, 0.0
    for tanh_side, cap_side in ((0, 1), (1, 0)):
        cap = scalar(outer.inputs[cap_side])
        tanh = producer_op(outer.inputs[tanh_side], "Tanh")
        if cap is None or cap <= 0 or tanh is None:
            continue
        divide = producer_op(tanh.inputs[0], "Div", "Mul")
        if divide is None:
            continue
        by = scalar(divide.inputs[1])
        if by is not None and (by == cap if divide.op_type == "Div" else abs(by * cap - 1) < 1e-6):
            return divide.inputs[0], cap  # x / cap, or x * (1 / cap)
    return value, 0.0


def _masking_where(value: ir.Value) -> ir.Node | None:
    """Where(keep, scores, fill) with a blocking scalar fill (older GPT-2 exports)."""
    where = producer_op(value, "Where")
    if where is None:
        return None
    fill = scalar(where.inputs[2])
    if fill is None or fill > BLOCKED or not _leads_to_scores(where.inputs[1]):
        return None
    return where


def _peel_biases(value: ir.Value) -> tuple[ir.Value, list[ir.Value], list[ir.Value]]:
    """(scores, additive biases, keep-conditions of masking Wheres) before the softmax."""
    biases, keeps = [], []
    value = _skip_casts(value)
    while True:
        if (where := _masking_where(value)) is not None:
            # Where(keep, s, fill) == s + Where(keep, 0, fill) wherever a row keeps any key.
            keeps.append(where.inputs[0])
            value = _skip_casts(where.inputs[1])
            continue
        add = producer_op(value, "Add")
        if add is None:
            break
        a, b = add.inputs
        if _leads_to_scores(a):
            value, bias = a, b
        elif _leads_to_scores(b):
            value, bias = b, a
        else:
            break
        biases.append(bias)
        value = _skip_casts(value)
    return value, biases, keeps


def _peel_scale(value: ir.Value) -> tuple[ir.Value, float]:
    """Strip Mul/Div by scalar constants; returns (inner value, accumulated factor)."""
    factor = 1.0
    while True:
        node = producer_op(value, "Mul", "Div")
        if node is None:
            return value, factor
        right = scalar(node.inputs[1])
        if node.op_type == "Div":
            if right is None or right == 0:
                return value, factor
            factor /= right
            value = node.inputs[0]
            continue
        left = scalar(node.inputs[0])
        if right is not None:
            factor *= right
            value = node.inputs[0]
        elif left is not None:
            factor *= left
            value = node.inputs[1]
        else:
            return value, factor


def _untranspose_key(key_t: ir.Value) -> tuple[ir.Value, str, float]:
    key_t, factor = _peel_scale(key_t)
    transpose = producer_op(key_t, "Transpose")
    if transpose is None:
        raise NoMatch("K^T is not a Transpose of the keys")
    perm = ints_attr(transpose, "perm")
    key, inner = _peel_scale(transpose.inputs[0])
    if perm == (0, 1, 3, 2):
        return key, "bhsd", factor * inner
    if perm == (0, 2, 3, 1):
        return key, "bshd", factor * inner
    raise NoMatch(f"K^T transpose has perm {perm}, not a [B,H,S,D] -> [B,H,D,S] swap")


def _data_readers(value: ir.Value) -> int:
    """Readers of the values (Shape only reads the size, typically for the mask: not counted)."""
    return sum(1 for use in value.uses() if use.node.op_type != "Shape") + value.is_graph_output()


def match(softmax: ir.Node) -> AttentionMatch:
    axis = int_attr(softmax, "axis", -1)
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
    scores, biases, keeps = _peel_biases(softmax.inputs[0])
    scores, softcap = _peel_softcap(scores)
    scores, scale = _peel_scale(_skip_casts(scores))
    qk = producer_op(scores, "MatMul")
    if qk is None:
        raise NoMatch("no Q @ K^T MatMul before the softmax")
    if _data_readers(qk.outputs[0]) != 1 or _data_readers(softmax.inputs[0]) != 1:
        raise NoMatch("scores are read by another consumer")
    query, q_factor = _peel_scale(qk.inputs[0])
    key, key_layout, k_factor = _untranspose_key(qk.inputs[1])
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


def find(graph: ir.Graph) -> tuple[list[AttentionMatch], list[tuple[str, str]]]:
    """All decomposed attentions, and (softmax name, reason) for each softmax left alone."""
    matches, skipped = [], []
    for node in graph:
        if node.op_type != "Softmax" or node.domain not in ("", "ai.onnx"):
            continue
        try:
            matches.append(match(node))
        except NoMatch as reason:
            skipped.append((node.name or "Softmax", str(reason)))
    return matches, skipped
