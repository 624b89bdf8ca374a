"""Small ONNX models around one com.fastattention::FastAttention node (bench, demo, tests)."""
from __future__ import annotations

import onnx
import onnx.helper as oh
from onnx import TensorProto

from . import OP_DOMAIN, OP_TYPE

OPSET = 21
IR_VERSION = 10  # ONNX Runtime 1.27+ reads it; newer onnx writes 11+ by default


def fastattention_model(*, seq_q: int | str, seq_kv: int | str, num_heads: int, head_dim: int,
                        kv_num_heads: int | None = None, head_dim_v: int | None = None, causal: bool = False,
                        layout: str = "3d", batch: int | str = 1, elem_type: int = TensorProto.FLOAT,
                        **attrs) -> onnx.ModelProto:
    """One FastAttention node; dims may be symbolic (str). Extra attrs go on the node."""
    kvh = kv_num_heads or num_heads
    dv = head_dim_v or head_dim
    if layout == "3d":
        shapes = {"query": [batch, seq_q, num_heads * head_dim], "key": [batch, seq_kv, kvh * head_dim],
                  "value": [batch, seq_kv, kvh * dv], "output": [batch, seq_q, num_heads * dv]}
    elif layout == "4d":
        shapes = {"query": [batch, num_heads, seq_q, head_dim], "key": [batch, kvh, seq_kv, head_dim],
                  "value": [batch, kvh, seq_kv, dv], "output": [batch, num_heads, seq_q, dv]}
    else:
        raise ValueError(f"layout must be '3d' or '4d', got {layout!r}")
    node_attrs = {"num_heads": num_heads, "causal": int(causal), **attrs}
    if kv_num_heads is not None:
        node_attrs["kv_num_heads"] = kv_num_heads
    node = oh.make_node(OP_TYPE, ["query", "key", "value"], ["output"], domain=OP_DOMAIN, name="fastattention_0",
                        **node_attrs)
    graph = oh.make_graph(
        [node], "fastattention",
        [oh.make_tensor_value_info(n, elem_type, shapes[n]) for n in ("query", "key", "value")],
        [oh.make_tensor_value_info("output", elem_type, shapes["output"])])
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", OPSET), oh.make_opsetid(OP_DOMAIN, 1)],
                         ir_version=IR_VERSION, producer_name="fastattn_onnx")
