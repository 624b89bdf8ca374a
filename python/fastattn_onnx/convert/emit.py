"""The one place FastAttention nodes are made.

Every rule family describes what it found as an AttentionFusion; emit() builds the
com.fastattention::FastAttention node (with the few adapter nodes its inputs need) and puts it in
place of the values it replaces; report_row() is its line in the report.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from ..constants import OP_DOMAIN, OP_SINCE_VERSION, OP_TYPE
from .report import FusedAttention


@dataclasses.dataclass
class AttentionFusion:
    source: str  # the rule family, as the report names it
    anchor: ir.Node  # the new nodes go right before it
    replaces: list[ir.Value]  # what the op's outputs take over: output[, present_key, present_value]
    query: ir.Value
    key: ir.Value
    value: ir.Value
    num_heads: int
    kv_num_heads: int
    head_size: int
    scale: float | None  # None: the op's default, 1/sqrt(head size)
    causal: bool = False
    window_size: int = -1
    softcap: float = 0.0
    attn_bias: ir.Value | None = None
    # Further additive terms of attn_bias's type (masks that must stay additive beside a general
    # bias): the op gets their sum.
    added_biases: list[ir.Value] = dataclasses.field(default_factory=list)
    # Set when attn_bias is a bool keep-mask: it becomes additive in this value's float type.
    keep_mask_like: ir.Value | None = None
    key_padding_mask: ir.Value | None = None
    past_key: ir.Value | None = None
    past_value: ir.Value | None = None
    key_bshd: bool = False  # key given as [B, S, Hk, D]: transposed to the op's [B, Hk, S, D]
    kv_merge_heads: bool = False  # K/V given as [B, Hk, S, D] beside a 3D query: made [B, S, Hk*D]
    # Other readers of the replaced presents keep reading them (a cache Concat that stays, so no
    # cycle can form through the new node); only graph outputs move to the op's presents.
    present_readers_stay: bool = False
    # (value, same-shaped source, perm): Shape reads of the value and of its Transposes are taken
    # from the source's shape instead (see _reroute_shape_reads).
    shape_sources: list[tuple[ir.Value, ir.Value, tuple[int, ...]]] = dataclasses.field(
        default_factory=list)
    layout: str = "4d"  # for the report: "3d", "4d" or "as-is" (an op's own layout)
    kv_repeat_removed: str | None = None  # for the report: the repeat_kv form taken out


def contract_violation(fusion: AttentionFusion) -> str | None:
    """What the op's contract (core/op_contract.cc) would refuse in this node, or None: a model
    the original runs must not become one ONNX Runtime rejects (a scale made inf, a mask cast to
    an integer type)."""
    if fusion.scale is not None and not np.isfinite(fusion.scale):
        return f"the scale {fusion.scale} is not a finite number (the op's rule)"
    if fusion.softcap is not None and not (np.isfinite(fusion.softcap) and fusion.softcap >= 0):
        return f"the softcap {fusion.softcap} is not a finite number >= 0 (the op's rule)"
    query_type = fusion.query.dtype
    for bias in [fusion.attn_bias, *fusion.added_biases]:
        if bias is None or bias.dtype is None or query_type is None:
            continue
        allowed = {query_type} | ({ir.DataType.BOOL} if fusion.keep_mask_like is not None else set())
        if bias.dtype not in allowed:
            return f"an additive mask of type {bias.dtype.name} beside a {query_type.name} query (the op's rule)"
    return None


def keep_mask_to_bias(keep: ir.Value, like: ir.Value, prefix: str) -> list[ir.Node]:
    """Where(keep, 0, -inf) in `like`'s float type: a bool keep-mask as the op's additive bias."""
    values = ir.node("Constant", [], {"value": ir.tensor(np.array([0.0, -np.inf], np.float32))})
    typed = ir.node("CastLike", [values.outputs[0], like])
    zero_index = ir.node("Constant", [], {"value": ir.tensor(np.array(0, np.int64))})
    low_index = ir.node("Constant", [], {"value": ir.tensor(np.array(1, np.int64))})
    zero = ir.node("Gather", [typed.outputs[0], zero_index.outputs[0]], {"axis": 0})
    low = ir.node("Gather", [typed.outputs[0], low_index.outputs[0]], {"axis": 0})
    where = ir.node("Where", [keep, zero.outputs[0], low.outputs[0]], name=f"{prefix}/mask_to_bias")
    nodes = [values, typed, zero_index, low_index, zero, low, where]
    for j, node in enumerate(nodes):
        node.outputs[0].name = f"{prefix}/bias_{j}"
    return nodes


def _merge_heads(key: ir.Value, value: ir.Value) -> list[ir.Node]:
    """Transpose + Reshape of K and V from [B, Hk, S, D] to [B, S, Hk*D] (the last two nodes)."""
    shape = ir.node("Constant", [], {"value": ir.tensor(np.array([0, 0, -1], np.int64))})
    nodes = [shape]
    for source in (key, value):
        transpose = ir.node("Transpose", [source], {"perm": [0, 2, 1, 3]})
        nodes += [transpose, ir.node("Reshape", [transpose.outputs[0], shape.outputs[0]])]
    return nodes


def _attributes(fusion: AttentionFusion) -> dict:
    attributes = {"num_heads": int(fusion.num_heads), "kv_num_heads": int(fusion.kv_num_heads)}
    if fusion.scale is not None:
        attributes["scale"] = float(fusion.scale)
    attributes["causal"] = int(fusion.causal)
    if fusion.window_size > 0:
        attributes["window_size"] = int(fusion.window_size)
    if fusion.softcap > 0:
        attributes["softcap"] = float(fusion.softcap)
    return attributes


def emit(graph: ir.Graph, fusion: AttentionFusion, prefix: str) -> ir.Node:
    """Insert the FastAttention node (named `prefix`/FastAttention) and rewire the graph to it;
    the nodes it replaces are left for dead-node removal."""
    nodes = []
    key, value, bias = fusion.key, fusion.value, fusion.attn_bias
    if fusion.key_bshd:
        transpose = ir.node("Transpose", [key], {"perm": [0, 2, 1, 3]}, name=f"{prefix}/key_to_bhsd")
        transpose.outputs[0].name = f"{prefix}/key_bhsd"
        nodes.append(transpose)
        key = transpose.outputs[0]
    if fusion.keep_mask_like is not None:
        nodes += keep_mask_to_bias(bias, fusion.keep_mask_like, prefix)
        bias = nodes[-1].outputs[0]
    for j, term in enumerate(fusion.added_biases):  # of attn_bias's type (the rule checks)
        nodes.append(ir.node("Add", [bias, term], name=f"{prefix}/bias_sum_{j}"))
        nodes[-1].outputs[0].name = f"{prefix}/bias_sum_{j}"
        bias = nodes[-1].outputs[0]
    if fusion.kv_merge_heads:
        nodes += _merge_heads(key, value)
        key, value = nodes[-3].outputs[0], nodes[-1].outputs[0]
        for j, node in enumerate(nodes):
            node.outputs[0].name = node.outputs[0].name or f"{prefix}/kv_{j}"
    inputs = [fusion.query, key, value, bias, fusion.key_padding_mask,
              fusion.past_key, fusion.past_value]
    while inputs[-1] is None:
        inputs.pop()
    fused = ir.node(OP_TYPE, inputs, _attributes(fusion), domain=OP_DOMAIN,
                    version=OP_SINCE_VERSION, num_outputs=len(fusion.replaces),
                    name=f"{prefix}/FastAttention")
    graph.insert_before(fusion.anchor, [*nodes, fused])
    # Before the rewiring, while the Shape reads still read the replaced values.
    for old, source, perm in fusion.shape_sources:
        _reroute_shape_reads(graph, old, source, prefix, perm)
    for i, (old, new) in enumerate(zip(fusion.replaces, fused.outputs)):
        _take_place(graph, old, new, readers_move=i == 0 or not fusion.present_readers_stay)
    return fused


def _take_place(graph: ir.Graph, old: ir.Value, new: ir.Value, readers_move: bool) -> None:
    """`new` replaces `old` for its readers (or only as a graph output) and takes its name, so
    graph output names and readable value names stay."""
    name = old.name
    new.type, new.shape = old.type, old.shape
    if readers_move:
        ir.convenience.replace_all_uses_with(old, new, replace_graph_outputs=True)
    elif old.is_graph_output():
        outputs = graph.outputs
        for i, output in enumerate(outputs):
            if output is old:
                outputs[i] = new
    else:  # the old value stays, with its readers and its name
        new.name = f"{name}__present"
        return
    old.name = f"{name}__replaced"
    new.name = name


def _reroute_shape_reads(graph: ir.Graph, output: ir.Value, source: ir.Value, prefix: str,
                         perm: tuple[int, ...]) -> None:
    """Shape(output) and Shape(Transpose(output)) become Gather(Shape(source), perm): the same
    numbers without a data dependence on attention, and without relying on the custom op's
    inferred output shape when ORT folds shapes."""
    pending = [(output, perm)]
    k = sum(1 for node in graph if (node.name or "").startswith(f"{prefix}/query_shape_"))
    while pending:
        value, perm = pending.pop()
        for use in list(value.uses()):
            node = use.node
            if node.domain not in ("", "ai.onnx"):
                continue
            if node.op_type == "Transpose":
                inner = tuple(int(p) for p in node.attributes["perm"].value)
                pending.append((node.outputs[0], tuple(perm[p] for p in inner)))
            elif node.op_type == "Shape":
                start = node.attributes.get("start")
                end = node.attributes.get("end")
                picked = list(perm)[slice(start.value if start else None, end.value if end else None)]
                shape = ir.node("Shape", [source], name=f"{prefix}/query_shape_{k}")
                indices = ir.node("Constant", [], {"value": ir.tensor(np.asarray(picked, np.int64))},
                                  name=f"{prefix}/shape_perm_{k}")
                gather = ir.node("Gather", [shape.outputs[0], indices.outputs[0]], {"axis": 0},
                                 name=f"{prefix}/shape_{k}")
                for j, new in enumerate((shape, indices, gather)):
                    new.outputs[0].name = f"{prefix}/shape_{k}_{j}"
                graph.insert_before(node, [shape, indices, gather])
                ir.convenience.replace_all_uses_with(node.outputs[0], gather.outputs[0],
                                                     replace_graph_outputs=True)
                k += 1


def report_row(fusion: AttentionFusion, node: ir.Node) -> FusedAttention:
    return FusedAttention(
        node=node.name, source=fusion.source, num_heads=int(fusion.num_heads),
        kv_num_heads=int(fusion.kv_num_heads), head_size=fusion.head_size, causal=fusion.causal,
        window_size=fusion.window_size,
        key_padding_mask=fusion.key_padding_mask.name if fusion.key_padding_mask else None,
        attn_bias=fusion.attn_bias.name if fusion.attn_bias else None,
        kv_repeat_removed=fusion.kv_repeat_removed, kv_cache=fusion.past_key is not None,
        softcap=fusion.softcap, layout=fusion.layout)
