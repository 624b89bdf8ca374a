"""Reading a Softmax's input backwards, as exporters write decomposed attention:
Softmax(Cast?(bias + softcap(scale * Q @ K^T))), with the scale on the scores or folded into Q and K.
"""
from __future__ import annotations

import onnx_ir as ir

from ._graph import ints_attr, producer_op, scalar, size_slice
from .exporter_forms import reshaped_key_transpose
from .masks import BLOCKED
from .rules import NoMatch


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


def skip_casts(value: ir.Value) -> ir.Value:
    """Precision casts around the softmax (fp16 scores, fp32 softmax) do not change the math."""
    while (cast := producer_op(value, "Cast")) is not None:
        value = cast.inputs[0]
    return value


def peel_softcap(value: ir.Value) -> tuple[ir.Value, float]:
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


def peel_biases(value: ir.Value) -> tuple[ir.Value, list[ir.Value], list[tuple[ir.Value, float]]]:
    """(scores, additive biases, (keep-condition, fill) of masking Wheres) before the softmax."""
    biases, keeps = [], []
    value = skip_casts(value)
    while True:
        if (where := _masking_where(value)) is not None:
            # Where(keep, s, fill) == s + Where(keep, 0, fill) wherever a row keeps any key.
            keeps.append((where.inputs[0], scalar(where.inputs[2])))
            value = skip_casts(where.inputs[1])
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
        value = skip_casts(value)
    return value, biases, keeps


def _size_derived(value: ir.Value) -> bool:
    """Whether `value` is computed from tensor sizes only (Shape/Size and constants): the same
    for every input of the same sizes, so its number can be read from the probes."""
    if value.producer() is None:
        return False
    # Bounded: peel_scale asks this of Q and K too, whose slice is most of the model.
    nodes, reads = size_slice(value, limit=16)
    return not reads and len(nodes) <= 16 and any(n.op_type in ("Shape", "Size") for n in nodes)


def peel_scale(value: ir.Value, size_factors: list | None = None) -> tuple[ir.Value, float]:
    """Strip Mul/Div by scalar constants; returns (inner value, accumulated factor).

    With a `size_factors` list, factors computed from sizes (the TorchScript exporter's
    Sqrt(1 / Sqrt(Cast(Shape(q)[-1]))) for SDPA's default scale) are stripped too and appended
    as (value, +1 for Mul or -1 for Div); their numbers come from the probes.
    """
    factor = 1.0
    while True:
        node = producer_op(value, "Mul", "Div")
        if node is None:
            return value, factor
        left, right = (scalar(v) for v in node.inputs)
        sized = [size_factors is not None and right is None and _size_derived(node.inputs[1]),
                 size_factors is not None and left is None and _size_derived(node.inputs[0])]
        if node.op_type == "Div":
            if right is not None and right != 0:
                factor /= right
            elif sized[0]:
                size_factors.append((node.inputs[1], -1))
            else:
                return value, factor
            value = node.inputs[0]
        elif right is not None:
            factor *= right
            value = node.inputs[0]
        elif left is not None:
            factor *= left
            value = node.inputs[1]
        elif sized[0] or sized[1]:
            size_factors.append((node.inputs[1 if sized[0] else 0], 1))
            value = node.inputs[0 if sized[0] else 1]
        else:
            return value, factor


def untranspose_key(key_t: ir.Value, size_factors: list | None = None
                    ) -> tuple[ir.Value, str, float, tuple[ir.Value, ir.Value] | None]:
    """K^T -> (K, its layout "bhsd" or "bshd", the scale factors met on the way, and for
    dynamo's reshaped form its [B*H, S, D] and [B, H, D, S] values, whose shapes check() must
    confirm)."""
    key_t, factor = peel_scale(key_t, size_factors)
    reshaped = reshaped_key_transpose(key_t)
    if reshaped is not None:
        key, flat = reshaped
        key, inner = peel_scale(key, size_factors)
        return key, "bhsd", factor * inner, (flat, key_t)
    transpose = producer_op(key_t, "Transpose")
    if transpose is None:
        made_by = key_t.producer().op_type if key_t.producer() is not None else "a graph input"
        raise NoMatch(f"K^T (the second input of Q @ K^T) is made by {made_by}, not a transpose "
                      "of the keys")
    perm = ints_attr(transpose, "perm")
    key, inner = peel_scale(transpose.inputs[0], size_factors)
    if perm == (0, 1, 3, 2):
        return key, "bhsd", factor * inner, None
    if perm == (0, 2, 3, 1):
        return key, "bshd", factor * inner, None
    raise NoMatch(f"K^T transpose has perm {perm}, not a [B,H,S,D] -> [B,H,D,S] swap")


def data_readers(value: ir.Value) -> int:
    """Readers of the values (Shape only reads the size, typically for the mask: not counted)."""
    return sum(1 for use in value.uses() if use.node.op_type != "Shape") + value.is_graph_output()
