"""Put one com.fastattention::FastAttention node in place of each analysed match."""
from __future__ import annotations

import numpy as np
import onnx_ir as ir

from .. import OP_DOMAIN, OP_TYPE
from .sdpa_decomposed import AttentionMatch


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


def fused_node(found: AttentionMatch, index: int) -> list[ir.Node]:
    """The new nodes (a layout Transpose if the key is [B, S, H, D], then FastAttention)."""
    nodes = []
    query, key, value = found.query, found.key, found.value
    if found.layout_3d is not None:
        query, key, value = (found.layout_3d[n] for n in ("query", "key", "value"))
    elif found.key_layout == "bshd":
        transpose = ir.node("Transpose", [key], {"perm": [0, 2, 1, 3]},
                            name=f"fastattn_{index}/key_to_bhsd")
        transpose.outputs[0].name = f"fastattn_{index}/key_bhsd"
        nodes.append(transpose)
        key = transpose.outputs[0]
    attributes = {"num_heads": found.num_heads, "kv_num_heads": found.kv_num_heads,
                  "scale": float(found.scale), "causal": int(found.causal)}
    if found.window_size > 0:
        attributes["window_size"] = int(found.window_size)
    if found.softcap > 0:
        attributes["softcap"] = float(found.softcap)
    bias = found.attn_bias
    if bias is not None and found.attn_bias_is_keep_mask:
        nodes += keep_mask_to_bias(bias, found.query, f"fastattn_{index}")
        bias = nodes[-1].outputs[0]
    inputs = [query, key, value, bias, found.key_padding_mask,
              found.past_key, found.past_value]
    while inputs[-1] is None:
        inputs.pop()
    node = ir.node(OP_TYPE, inputs, attributes, domain=OP_DOMAIN, version=1,
                   num_outputs=3 if found.past_key is not None else 1,
                   name=f"fastattn_{index}/FastAttention")
    nodes.append(node)
    return nodes


def _reroute_shape_reads(graph: ir.Graph, output: ir.Value, query: ir.Value, index: int,
                         perm: tuple[int, ...] = (0, 1, 2, 3)) -> None:
    """Shape(out) and Shape(Transpose(out)) become Gather(Shape(query), perm): the same numbers
    (out has the query's [B, H, S, D] shape when Dv == D) without a data dependence on attention,
    and without relying on the custom op's inferred output shape when ORT folds shapes."""
    pending = [(output, perm)]
    k = sum(1 for node in graph if (node.name or "").startswith(f"fastattn_{index}/query_shape_"))
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
                shape = ir.node("Shape", [query], name=f"fastattn_{index}/query_shape_{k}")
                indices = ir.node("Constant", [], {"value": ir.tensor(np.asarray(picked, np.int64))},
                                  name=f"fastattn_{index}/shape_perm_{k}")
                gather = ir.node("Gather", [shape.outputs[0], indices.outputs[0]], {"axis": 0},
                                 name=f"fastattn_{index}/shape_{k}")
                for j, new in enumerate((shape, indices, gather)):
                    new.outputs[0].name = f"fastattn_{index}/shape_{k}_{j}"
                graph.insert_before(node, [shape, indices, gather])
                ir.convenience.replace_all_uses_with(node.outputs[0], gather.outputs[0],
                                                     replace_graph_outputs=True)
                k += 1


def replace(graph: ir.Graph, found: AttentionMatch, index: int) -> ir.Node:
    new_nodes = fused_node(found, index)
    fused = new_nodes[-1]
    old = found.layout_3d["merged"] if found.layout_3d else found.output
    new = fused.outputs[0]
    new.type, new.shape = old.type, old.shape
    graph.insert_before(found.pv_matmul, new_nodes)
    old_name = old.name
    ir.convenience.replace_all_uses_with(old, new, replace_graph_outputs=True)
    old.name = f"{old_name}__replaced"
    new.name = old_name  # keeps graph output names and readable value names
    if found.past_key is not None:
        for old_present, new_present in zip((found.present_key, found.present_value), fused.outputs[1:]):
            name = old_present.name
            new_present.type, new_present.shape = old_present.type, old_present.shape
            # Only graph outputs move to the op's present: any other reader of the Concat keeps
            # it (it may sit before the fused node), so no cycle can form.
            outputs = graph.outputs
            if old_present.is_graph_output():
                for i, value in enumerate(outputs):
                    if value is old_present:
                        outputs[i] = new_present
                old_present.name = f"{name}__replaced"
                new_present.name = name
            else:
                new_present.name = f"{name}__present"
    if found.value_head_size == found.head_size:
        if found.layout_3d is not None:
            # The old 4D output (still read by Shape nodes) had the shape of the query's
            # [B, S, H, D] split, transposed.
            _reroute_shape_reads(graph, found.output, found.layout_3d["query_bshd"], index,
                                 perm=(0, 2, 1, 3))
            _reroute_shape_reads(graph, new, found.layout_3d["query"], index, perm=(0, 1, 2))
        else:
            _reroute_shape_reads(graph, new, found.query, index)
    return fused
