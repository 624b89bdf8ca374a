"""Small ONNX models with one com.fastattention::FastAttention node (onnx.helper only).

Used by the tests, the demo and the benchmark; models/build_fastattention_model.py is its CLI:
    python models/build_fastattention_model.py out.onnx --layout 3d --num-heads 4 --kv-num-heads 2
"""
from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from .constants import OP_DOMAIN, OP_SINCE_VERSION, OP_TYPE

OPSET = 21
IR_VERSION = 10

# The dtype names build_model takes: query/key/value element types, key_padding_mask element types.
ELEMENT_TYPES = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "bfloat16": TensorProto.BFLOAT16}
MASK_TYPES = {"bool": TensorProto.BOOL, "int32": TensorProto.INT32, "int64": TensorProto.INT64}


def build_model(*, layout: str = "3d", batch=1, seq_q=4, seq_kv=4, seq_past=0, num_heads=4, kv_num_heads=None,
                head_dim=8, head_dim_v=None, dtype: str = "float32", attn_bias_shape=None, key_padding_mask=None,
                present: bool = False, causal=None, window_size=None, softcap=None, scale=None,
                set_num_heads_attr: bool | None = None, node_name: str = "fast_attention_0",
                extra_attrs: dict | None = None, shapes: dict | None = None) -> onnx.ModelProto:
    """One FastAttention node. Dims may be ints or strings (symbolic). `shapes` overrides any input's
    declared shape by name (for bad-input tests); `key_padding_mask` is a dtype name or None."""
    kvh = kv_num_heads or num_heads
    dv = head_dim_v or head_dim
    elem = ELEMENT_TYPES[dtype]
    s_total = seq_kv + seq_past if isinstance(seq_kv, int) and isinstance(seq_past, int) else "S_total"
    if layout == "3d":
        q_shape = [batch, seq_q, num_heads * head_dim]
        k_shape = [batch, seq_kv, kvh * head_dim]
        v_shape = [batch, seq_kv, kvh * dv]
    else:
        q_shape = [batch, num_heads, seq_q, head_dim]
        k_shape = [batch, kvh, seq_kv, head_dim]
        v_shape = [batch, kvh, seq_kv, dv]
    shapes = dict(shapes or {})
    inputs = [helper.make_tensor_value_info("query", elem, shapes.get("query", q_shape)),
              helper.make_tensor_value_info("key", elem, shapes.get("key", k_shape)),
              helper.make_tensor_value_info("value", elem, shapes.get("value", v_shape))]
    names = ["query", "key", "value", "", "", "", ""]
    if attn_bias_shape is not None:
        inputs.append(helper.make_tensor_value_info("attn_bias", elem, shapes.get("attn_bias", attn_bias_shape)))
        names[3] = "attn_bias"
    if key_padding_mask is not None:
        inputs.append(helper.make_tensor_value_info("key_padding_mask", MASK_TYPES[key_padding_mask],
                                                    shapes.get("key_padding_mask", [batch, s_total])))
        names[4] = "key_padding_mask"
    if seq_past:
        inputs.append(helper.make_tensor_value_info("past_key", elem,
                                                    shapes.get("past_key", [batch, kvh, seq_past, head_dim])))
        inputs.append(helper.make_tensor_value_info("past_value", elem,
                                                    shapes.get("past_value", [batch, kvh, seq_past, dv])))
        names[5], names[6] = "past_key", "past_value"
    while names and names[-1] == "":
        names.pop()
    hdv = num_heads * dv if isinstance(dv, int) else None
    out_shape = [batch, seq_q, hdv] if layout == "3d" else [batch, num_heads, seq_q, dv]
    outputs = [helper.make_tensor_value_info("output", elem, out_shape)]
    out_names = ["output"]
    if present:
        out_names += ["present_key", "present_value"]
        outputs += [helper.make_tensor_value_info("present_key", elem, [batch, kvh, s_total, head_dim]),
                    helper.make_tensor_value_info("present_value", elem, [batch, kvh, s_total, dv])]
    attrs = {}
    if set_num_heads_attr if set_num_heads_attr is not None else layout == "3d":
        attrs["num_heads"] = num_heads
        if kv_num_heads:
            attrs["kv_num_heads"] = kv_num_heads
    for key, val in (("causal", causal), ("window_size", window_size), ("softcap", softcap), ("scale", scale)):
        if val is not None:
            attrs[key] = val
    attrs.update(extra_attrs or {})
    node = helper.make_node(OP_TYPE, names, out_names, name=node_name, domain=OP_DOMAIN, **attrs)
    graph = helper.make_graph([node], "fastattention", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET),
                                                    helper.make_opsetid(OP_DOMAIN, OP_SINCE_VERSION)],
                              producer_name="fastattn_onnx.models")
    model.ir_version = IR_VERSION
    return model


def build_gqa_decode_model(*, batch: int, num_heads: int, kv_num_heads: int, head_dim: int, capacity: int,
                           dtype: str = "float16") -> onnx.ModelProto:
    """One com.microsoft::GroupQueryAttention node as onnxruntime-genai's builder emits it for a
    decoder (separate Q/K/V, past/present [B, KV, capacity, D] meant for a shared buffer), for
    timing one generation step."""
    elem = ELEMENT_TYPES[dtype]
    vi = helper.make_tensor_value_info
    inputs = [vi("query", elem, [batch, "S", num_heads * head_dim]),
              vi("key", elem, [batch, "S", kv_num_heads * head_dim]),
              vi("value", elem, [batch, "S", kv_num_heads * head_dim]),
              vi("past_key", elem, [batch, kv_num_heads, capacity, head_dim]),
              vi("past_value", elem, [batch, kv_num_heads, capacity, head_dim]),
              vi("seqlens_k", TensorProto.INT32, [batch]),
              vi("total_sequence_length", TensorProto.INT32, [])]
    outputs = [vi("output", elem, [batch, "S", num_heads * head_dim]),
               vi("present_key", elem, [batch, kv_num_heads, capacity, head_dim]),
               vi("present_value", elem, [batch, kv_num_heads, capacity, head_dim])]
    node = helper.make_node("GroupQueryAttention", [i.name for i in inputs], [o.name for o in outputs],
                            name="group_query_attention_0", domain="com.microsoft", num_heads=num_heads,
                            kv_num_heads=kv_num_heads)
    graph = helper.make_graph([node], "gqa_decode", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = IR_VERSION
    return model
