"""Attention ops already fused in a model: ONNX Attention (opset 23+) and
com.microsoft.MultiHeadAttention become FastAttention where their meaning maps exactly; every
other form is left with the reason (com.microsoft.GroupQueryAttention among them).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from .. import OP_DOMAIN, OP_TYPE
from ._graph import backward_slice, producer_op, value_inputs
from .gqa_repeat import unrepeated
from .replace import keep_mask_to_bias
from . import masks as mask_rules


@dataclasses.dataclass
class FusedOpMatch:
    node: ir.Node
    query: ir.Value
    key: ir.Value
    value: ir.Value
    num_heads: int | None
    kv_num_heads: int | None
    scale: float | None
    softcap: float = 0.0
    head_size: int = 0
    causal: bool = False
    window_size: int = -1
    mask: ir.Value | None = None  # ONNX Attention attn_mask (bool: True = attend; else additive)
    attn_bias: ir.Value | None = None
    key_padding_mask: ir.Value | None = None
    past_key: ir.Value | None = None
    past_value: ir.Value | None = None
    # 3D K/V that were expanded from fewer kv heads: the [B, Hk, S, D] sources (gqa_repeat.py)
    kv_sources: tuple[ir.Value, ir.Value] | None = None

    @property
    def name(self) -> str:
        return self.node.name or self.node.op_type


class Unsupported(Exception):
    pass


def _input(node: ir.Node, i: int) -> ir.Value | None:
    return node.inputs[i] if i < len(node.inputs) else None


def _attr(node: ir.Node, name: str, default=None):
    attr = node.attributes.get(name)
    return default if attr is None else attr.value


def _output_read(node: ir.Node, i: int) -> bool:
    if i >= len(node.outputs):
        return False
    value = node.outputs[i]
    return bool(list(value.uses())) or value.is_graph_output()


def _match_onnx_attention(node: ir.Node) -> FusedOpMatch:
    if _output_read(node, 3):
        raise Unsupported("qk_matmul_output is read")
    if _input(node, 6) is not None:
        raise Unsupported("nonpad_kv_seqlen (external cache lengths) is not mapped")
    for name in ("left_window_size", "right_window_size"):
        if _attr(node, name, -1) not in (-1, None):
            raise Unsupported(f"{name} is not mapped")
    if (_input(node, 4) is None) != (_input(node, 5) is None):
        raise Unsupported("past_key without past_value")
    return FusedOpMatch(node=node, query=node.inputs[0], key=node.inputs[1], value=node.inputs[2],
                        num_heads=_attr(node, "q_num_heads"),
                        kv_num_heads=_attr(node, "kv_num_heads"), scale=_attr(node, "scale"),
                        softcap=float(_attr(node, "softcap", 0.0) or 0.0),
                        causal=bool(_attr(node, "is_causal", 0)), mask=_input(node, 3),
                        past_key=_input(node, 4), past_value=_input(node, 5))


def _match_mha(node: ir.Node) -> FusedOpMatch:
    if _input(node, 1) is None or _input(node, 2) is None:
        raise Unsupported("packed QKV (key/value empty) is not mapped")
    if _input(node, 3) is not None:
        raise Unsupported("projection bias input is not mapped")
    if _input(node, 8) is not None or _input(node, 9) is not None:
        raise Unsupported("past_sequence_length / cache_indirection (beam search) not mapped")
    if _output_read(node, 3):
        raise Unsupported("qk output is read")
    heads = _attr(node, "num_heads")
    return FusedOpMatch(node=node, query=node.inputs[0], key=node.inputs[1], value=node.inputs[2],
                        num_heads=heads, kv_num_heads=heads, scale=_attr(node, "scale"),
                        causal=bool(_attr(node, "unidirectional", 0)),
                        # attention_bias is additive: probed like a decomposed mask
                        key_padding_mask=_input(node, 4), mask=_input(node, 5),
                        past_key=_input(node, 6), past_value=_input(node, 7))


def _bhsd_behind_3d(value: ir.Value) -> ir.Value | None:
    """x for a 3D value written as Reshape(Transpose(x [B, H, S, D], perm=(0, 2, 1, 3)))."""
    reshape = producer_op(value, "Reshape")
    transpose = producer_op(reshape.inputs[0], "Transpose") if reshape is not None else None
    if transpose is None or _attr(transpose, "perm") is None:
        return None
    return transpose.inputs[0] if tuple(_attr(transpose, "perm")) == (0, 2, 1, 3) else None


def _find_kv_sources(found: FusedOpMatch) -> None:
    """3D K and V expanded from kv heads (repeat_kv before the fused op): keep their sources."""
    if found.past_key is not None:
        return
    sources = []
    for value in (found.key, found.value):
        inner = _bhsd_behind_3d(value)
        source, kind = unrepeated(inner) if inner is not None else (None, None)
        if kind not in ("expand", "tile5d"):
            return
        sources.append(source)
    found.kv_sources = (sources[0], sources[1])


def find(graph: ir.Graph) -> tuple[list[FusedOpMatch], list[tuple[str, str]]]:
    matches, skipped = [], []
    for node in graph:
        kind = (node.domain or "", node.op_type)
        try:
            if kind in (("", "Attention"), ("ai.onnx", "Attention")):
                matches.append(_match_onnx_attention(node))
                _find_kv_sources(matches[-1])
            elif kind == ("com.microsoft", "MultiHeadAttention"):
                matches.append(_match_mha(node))
                _find_kv_sources(matches[-1])
            elif kind == ("com.microsoft", "GroupQueryAttention"):
                skipped.append((node.name or node.op_type, "GroupQueryAttention (seqlens_k, "
                                "shared KV buffers, in-op rotary) is not mapped"))
            elif kind in (("com.microsoft", "Attention"), ("com.microsoft", "PackedAttention"),
                          ("com.microsoft", "PackedMultiHeadAttention")):
                skipped.append((node.name or node.op_type,
                                f"{node.op_type} (packed projection weights) is not mapped"))
        except Unsupported as reason:
            skipped.append((node.name or node.op_type, str(reason)))
    return matches, skipped


def analyse(found: FusedOpMatch, probes: list[dict], feeds: list[dict], mask_inputs: set[str],
            model: ir.Model, plans) -> None:
    """Sizes from the probes; the ONNX Attention mask classified like a decomposed one."""
    q = probes[0][found.query.name].shape
    k = probes[0][found.key.name].shape
    if len(q) != len(k):
        raise Unsupported(f"query rank {len(q)} differs from key rank {len(k)}")
    if len(q) == 4:
        found.num_heads, found.kv_num_heads = int(q[1]), int(k[1])
    elif not found.num_heads:
        raise Unsupported("3D inputs without a head count")
    found.kv_num_heads = found.kv_num_heads or found.num_heads
    if len(q) == 3 and found.kv_sources is not None:
        source_shape = probes[0][found.kv_sources[0].name].shape
        if len(source_shape) == 4 and found.num_heads % source_shape[1] == 0:
            found.kv_num_heads = int(source_shape[1])
        else:
            found.kv_sources = None
    elif found.kv_sources is not None:
        found.kv_sources = None
    found.head_size = int(q[3]) if len(q) == 4 else int(q[2]) // int(found.num_heads)
    if found.key_padding_mask is not None:
        kpm = probes[0][found.key_padding_mask.name]
        if kpm.ndim != 2:
            raise Unsupported(f"key_padding_mask of rank {kpm.ndim} (lengths) is not mapped")
    if found.mask is None:
        return
    from .analysis import mask_samples

    s_total = [p[found.key.name].shape[-2 if len(q) == 4 else 1] for p in probes]
    if found.past_key is not None:
        s_total = [t + p[found.past_key.name].shape[2] for t, p in zip(s_total, probes)]
    if any(p[found.mask.name].shape[-1] != t for p, t in zip(probes, s_total)):
        raise Unsupported("attn_mask shorter than the keys (padded by the op) is not mapped")
    _, reads = backward_slice([found.mask])
    padding_inputs = sorted(reads & mask_inputs)
    arrays, paddings = mask_samples(model, plans, found.mask, probes, feeds, padding_inputs)
    additive = [np.where(a, 0.0, -np.inf) if a.dtype == np.bool_ else a for a in arrays]
    meaning = mask_rules.classify(additive, paddings)
    if value_inputs(found.mask) - mask_inputs:
        meaning = None  # reads other inputs' values: see analysis._masks
    if meaning is not None and meaning.padding_input and found.key_padding_mask is not None:
        meaning = None  # padding already given another way: keep this mask as a bias
    if meaning is None:
        found.attn_bias = found.mask
        return
    found.causal = found.causal or meaning.causal
    found.window_size = meaning.window_size
    if meaning.padding_input:
        found.key_padding_mask = next(v for v in model.graph.inputs
                                      if v.name == meaning.padding_input)
    found.mask = None


def replace(graph: ir.Graph, found: FusedOpMatch, index: int) -> ir.Node:
    new_nodes = []
    bias = found.attn_bias
    if found.mask is not None and found.mask is bias and bias.dtype == ir.DataType.BOOL:
        new_nodes += keep_mask_to_bias(bias, found.query, f"fastattn_{index}")
        bias = new_nodes[-1].outputs[0]
    key, value = found.key, found.value
    if found.kv_sources is not None:  # un-repeated kv heads, back to the 3D layout
        merge = ir.node("Constant", [], {"value": ir.tensor(np.array([0, 0, -1], np.int64))})
        new_nodes.append(merge)
        merged = []
        for source in found.kv_sources:
            transpose = ir.node("Transpose", [source], {"perm": [0, 2, 1, 3]})
            reshape = ir.node("Reshape", [transpose.outputs[0], merge.outputs[0]])
            new_nodes += [transpose, reshape]
            merged.append(reshape.outputs[0])
        key, value = merged
        for j, n in enumerate(new_nodes):
            n.outputs[0].name = n.outputs[0].name or f"fastattn_{index}/kv_{j}"
    attributes = {"num_heads": int(found.num_heads), "kv_num_heads": int(found.kv_num_heads),
                  "causal": int(found.causal)}
    if found.scale is not None:
        attributes["scale"] = float(found.scale)
    if found.softcap > 0:
        attributes["softcap"] = float(found.softcap)
    if found.window_size > 0:
        attributes["window_size"] = int(found.window_size)
    inputs = [found.query, key, value, bias, found.key_padding_mask,
              found.past_key, found.past_value]
    while inputs[-1] is None:
        inputs.pop()
    outputs_read = [i for i in range(3) if _output_read(found.node, i)]
    count = max(outputs_read, default=0) + 1
    fused = ir.node(OP_TYPE, inputs, attributes, domain=OP_DOMAIN, version=1, num_outputs=count,
                    name=f"fastattn_{index}/FastAttention")
    new_nodes.append(fused)
    graph.insert_before(found.node, new_nodes)
    for i in range(count):
        old, new = found.node.outputs[i], fused.outputs[i]
        name = old.name
        new.type, new.shape = old.type, old.shape
        ir.convenience.replace_all_uses_with(old, new, replace_graph_outputs=True)
        old.name = f"{name}__replaced"
        new.name = name
    return fused
