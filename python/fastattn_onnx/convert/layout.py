"""The op's 3D layout: Q/K/V taken straight from the projections ([B, S, heads*D]) and the
output written as [B, S, heads*Dv], so the head split/merge Reshape+Transpose pairs around
the attention go away. Only where every side matches; otherwise the 4D layout stays.
"""
from __future__ import annotations

from typing import Callable

import onnx_ir as ir

from ._graph import ints_attr, producer_op

_BSHD_TO_BHSD = (0, 2, 1, 3)


def split_source(value: ir.Value) -> tuple[ir.Value, ir.Value] | None:
    """(x3, x_bshd) for value = Transpose(x_bshd = Reshape(x3), perm=(0, 2, 1, 3))."""
    transpose = producer_op(value, "Transpose")
    if transpose is None or ints_attr(transpose, "perm") != _BSHD_TO_BHSD:
        return None
    reshape = producer_op(transpose.inputs[0], "Reshape")
    return (reshape.inputs[0], reshape.outputs[0]) if reshape is not None else None


def merged_source(value: ir.Value) -> ir.Value | None:
    """x_bhsd for value = Reshape(Transpose(x_bhsd, perm=(0, 2, 1, 3))), the head merge."""
    reshape = producer_op(value, "Reshape")
    transpose = producer_op(reshape.inputs[0], "Transpose") if reshape is not None else None
    if transpose is None or ints_attr(transpose, "perm") != _BSHD_TO_BHSD:
        return None
    return transpose.inputs[0]


def merge_target(output: ir.Value) -> ir.Node | None:
    """The Reshape in output -> Transpose(0, 2, 1, 3) -> Reshape([B, S, heads*Dv])."""
    readers = [u.node for u in output.uses() if u.node.op_type != "Shape"]
    if len(readers) != 1 or output.is_graph_output():
        return None
    transpose = readers[0]
    if transpose.op_type != "Transpose" or ints_attr(transpose, "perm") != _BSHD_TO_BHSD:
        return None
    readers = [u.node for u in transpose.outputs[0].uses() if u.node.op_type != "Shape"]
    if len(readers) != 1 or readers[0].op_type != "Reshape" or transpose.outputs[0].is_graph_output():
        return None
    return readers[0]


def find_3d(found) -> None:
    """Records the 3D sources on `found` (checked later against probed shapes)."""
    query = split_source(found.query)
    value = split_source(found.value)
    if found.key_layout == "bshd":
        reshape = producer_op(found.key, "Reshape")
        key = (reshape.inputs[0], found.key) if reshape is not None else None
    else:
        key = split_source(found.key)
    target = merge_target(found.output)
    if query and key and value and target:
        found.layout_3d = {"query": query[0], "query_bshd": query[1], "key": key[0],
                           "value": value[0], "merged": target.outputs[0]}


def check_3d(found, shape: Callable[[ir.Value], tuple[int, ...]]) -> None:
    """Keeps the 3D plan only if the probed shapes are exactly the merged head layouts."""
    plan = found.layout_3d
    if plan is None:
        return
    q, k, v, out = (shape(plan[n]) for n in ("query", "key", "value", "merged"))
    heads, kv_heads, d, dv = found.num_heads, found.kv_num_heads, found.head_size, found.value_head_size
    ok = (len(q) == len(k) == len(v) == len(out) == 3 and q[2] == heads * d
          and k[2] == kv_heads * d and v[2] == kv_heads * dv and out[2] == heads * dv
          and out[:2] == q[:2])
    if not ok:
        found.layout_3d = None
