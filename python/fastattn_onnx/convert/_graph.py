"""Small onnx-ir helpers shared by the pattern modules."""
from __future__ import annotations

import numpy as np
import onnx_ir as ir


def constant_array(value: ir.Value | None) -> np.ndarray | None:
    """The value as a NumPy array if it is an initializer or a Constant node's output."""
    if value is None:
        return None
    if value.const_value is not None:
        return value.const_value.numpy()
    node = value.producer()
    if node is None or node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
        return None
    for name, attr in node.attributes.items():
        if name == "value":
            return attr.value.numpy()
        if name in ("value_float", "value_int"):
            return np.asarray(attr.value)
        if name in ("value_floats", "value_ints"):
            return np.asarray(list(attr.value))
    return None


def scalar(value: ir.Value | None) -> float | None:
    """A one-element constant as a Python float, else None."""
    array = constant_array(value)
    if array is None or array.size != 1:
        return None
    return float(array.reshape(()))


def producer_op(value: ir.Value | None, *op_types: str) -> ir.Node | None:
    """The producing node of `value` if it is a default-domain node of one of `op_types`."""
    if value is None:
        return None
    node = value.producer()
    if node is None or node.domain not in ("", "ai.onnx") or node.op_type not in op_types:
        return None
    return node


def attribute(node: ir.Node, name: str, default=None):
    """The attribute's value, or `default` when the node does not set it."""
    attr = node.attributes.get(name)
    return default if attr is None else attr.value


def ints_attr(node: ir.Node, name: str) -> tuple[int, ...] | None:
    attr = node.attributes.get(name)
    return None if attr is None else tuple(int(x) for x in attr.value)


def axes_of(node: ir.Node) -> tuple[int, ...] | None:
    """Unsqueeze/Squeeze axes whether given as attribute (opset < 13) or input."""
    attr = ints_attr(node, "axes")
    if attr is not None:
        return attr
    if len(node.inputs) > 1:
        array = constant_array(node.inputs[1])
        if array is not None:
            return tuple(int(x) for x in array.reshape(-1))
    return None


def input_at(node: ir.Node, i: int) -> ir.Value | None:
    """Input i, or None when it is omitted (trailing optional inputs may be left out)."""
    return node.inputs[i] if i < len(node.inputs) else None


def output_read(node: ir.Node, i: int) -> bool:
    """Whether output i exists and anything (a node or the graph outputs) reads it."""
    if i >= len(node.outputs):
        return False
    value = node.outputs[i]
    return bool(list(value.uses())) or value.is_graph_output()


def only_consumer(value: ir.Value) -> ir.Node | None:
    """The single node reading `value`, or None if it has several readers or is a graph output."""
    uses = list(value.uses())
    if len(uses) != 1 or value.is_graph_output():
        return None
    return uses[0].node


def _walk_back(values: list[ir.Value], size_only=(), limit: int | None = None) -> tuple[list[ir.Node], set[str]]:
    """Nodes computing `values` and the graph-input names they read; the walk does not go past
    nodes whose op type is in `size_only` (ops that read only their input's size), and stops
    once it has more than `limit` nodes (when given)."""
    seen: set[int] = set()
    nodes: list[ir.Node] = []
    inputs: set[str] = set()
    stack = list(values)
    while stack:
        value = stack.pop()
        if value is None:
            continue
        if value.is_graph_input():
            inputs.add(value.name)
            continue
        node = value.producer()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        nodes.append(node)
        if limit is not None and len(nodes) > limit:
            break
        if node.op_type in size_only and node.domain in ("", "ai.onnx"):
            continue
        stack.extend(node.inputs)
    return nodes, inputs


def backward_slice(values: list[ir.Value]) -> tuple[list[ir.Node], set[str]]:
    """Nodes computing `values` and the graph-input names they read."""
    return _walk_back(values)


def size_slice(value: ir.Value, limit: int | None = None) -> tuple[list[ir.Node], set[str]]:
    """Nodes computing `value`, not past Shape/Size, and the graph inputs whose values it reads
    (the walk stops past `limit` nodes)."""
    return _walk_back([value], size_only=("Shape", "Size"), limit=limit)


def value_inputs(value: ir.Value) -> set[str]:
    """Graph inputs whose values (not just sizes) `value` depends on: the walk stops at Shape
    and Size, which read only a tensor's size."""
    return _walk_back([value], size_only=("Shape", "Size"))[1]
