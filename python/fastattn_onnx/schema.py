"""ONNX schema of com.fastattention::FastAttention (since_version 1), registered with onnx.defs.

Lets onnx.checker and onnx.shape_inference accept models that use the op. Importing this module
registers it once.
"""
from __future__ import annotations

import onnx
from onnx import defs

DOMAIN = "com.fastattention"
OP_TYPE = "FastAttention"
SINCE_VERSION = 1

_P = defs.OpSchema.FormalParameter
_Opt = defs.OpSchema.FormalParameterOption
_A = defs.OpSchema.Attribute
_AT = defs.OpSchema.AttrType


def _dims(t: onnx.TypeProto | None):
    """Dims as int or str (symbolic) or None (unknown); None if the rank is unknown."""
    if t is None or not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    out = []
    for d in t.tensor_type.shape.dim:
        out.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
    return out


def _attr_int(ctx, name, default=None):
    a = ctx.get_attribute(name)
    return default if a is None else a.i


def _infer(ctx) -> None:
    q_type = ctx.get_input_type(0)
    if q_type is None or not q_type.HasField("tensor_type"):
        return
    elem = q_type.tensor_type.elem_type
    q, k, v = (_dims(ctx.get_input_type(i)) for i in range(3))
    past = _dims(ctx.get_input_type(5)) if ctx.get_num_inputs() > 5 and ctx.has_input(5) else None
    num_heads = _attr_int(ctx, "num_heads")
    kv_heads = _attr_int(ctx, "kv_num_heads", num_heads)
    out_dims = present_k = present_v = None
    if q is not None and k is not None and v is not None:
        if len(q) not in (3, 4) or len(k) != len(q) or len(v) != len(q):
            raise onnx.shape_inference.InferenceError(
                "[FastAttention] query, key and value must all be 3D or all 4D")
        b = q[0]
        if len(q) == 3:
            if not num_heads:
                raise onnx.shape_inference.InferenceError("[FastAttention] num_heads is required for 3D inputs")
            if num_heads % kv_heads:
                raise onnx.shape_inference.InferenceError("[FastAttention] kv_num_heads must divide num_heads")
            d = q[2] // num_heads if isinstance(q[2], int) else None
            dv = v[2] // kv_heads if isinstance(v[2], int) else None
            out_dims = [b, q[1], v[2] * num_heads // kv_heads if isinstance(v[2], int) else None]
            s_kv = k[1]
        else:
            kv_heads = k[1]
            d, dv = q[3], v[3]
            out_dims = [b, q[1], q[2], dv]
            s_kv = k[2]
        s_total = None
        if past is None and not (ctx.get_num_inputs() > 5 and ctx.has_input(5)):
            s_total = s_kv
        elif past is not None and isinstance(past[2], int) and isinstance(s_kv, int):
            s_total = past[2] + s_kv
        present_k = [b, kv_heads, s_total, d]
        present_v = [b, kv_heads, s_total, dv]
    for i, dims in enumerate((out_dims, present_k, present_v)):
        if i >= ctx.get_num_outputs() or not ctx.has_output(i):
            continue
        shape = None if dims is None else [x if x is not None else None for x in dims]
        ctx.set_output_type(i, onnx.helper.make_tensor_type_proto(elem, shape))


def _make_schema() -> defs.OpSchema:
    schema = defs.OpSchema(
        OP_TYPE, DOMAIN, SINCE_VERSION,
        doc="FastAttention: softmax(scale*QK^T [softcap] + attn_bias, masked by causal/window/key_padding_mask) V "
            "with GQA/MQA and a KV cache; accumulates in float32.",
        inputs=[
            _P("query", "T", "[B, S_q, num_heads*D] or [B, num_heads, S_q, D]"),
            _P("key", "T", "[B, S_kv, kv_num_heads*D] or [B, kv_num_heads, S_kv, D]"),
            _P("value", "T", "[B, S_kv, kv_num_heads*Dv] or [B, kv_num_heads, S_kv, Dv]"),
            _P("attn_bias", "T", "additive, broadcastable to [B, num_heads, S_q, S_total]", param_option=_Opt.Optional),
            _P("key_padding_mask", "M", "[B, S_total], nonzero = key visible", param_option=_Opt.Optional),
            _P("past_key", "T", "[B, kv_num_heads, S_past, D]", param_option=_Opt.Optional),
            _P("past_value", "T", "[B, kv_num_heads, S_past, Dv]", param_option=_Opt.Optional),
        ],
        outputs=[
            _P("output", "T", "same rank as query"),
            _P("present_key", "T", "[B, kv_num_heads, S_total, D]", param_option=_Opt.Optional),
            _P("present_value", "T", "[B, kv_num_heads, S_total, Dv]", param_option=_Opt.Optional),
        ],
        type_constraints=[
            ("T", ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"], "query/key/value element type"),
            ("M", ["tensor(bool)", "tensor(int32)", "tensor(int64)"], "key_padding_mask element type"),
        ],
        attributes=[
            _A("num_heads", _AT.INT, "query heads (required for 3D inputs)", required=False),
            _A("kv_num_heads", _AT.INT, "key/value heads; divides num_heads (default num_heads)", required=False),
            _A("scale", _AT.FLOAT, "score scale (default 1/sqrt(D))", required=False),
            _A("causal", onnx.helper.make_attribute("causal", 0), "1: bottom-right aligned causal mask"),
            _A("window_size", onnx.helper.make_attribute("window_size", -1), "local window; -1 = none"),
            _A("softcap", onnx.helper.make_attribute("softcap", 0.0), "tanh softcap; 0 = none"),
        ],
    )
    schema.set_type_and_shape_inference_function(_infer)
    return schema


def register() -> None:
    """Registers the schema unless onnx already knows it (idempotent)."""
    try:
        defs.get_schema(OP_TYPE, SINCE_VERSION, DOMAIN)
        return
    except defs.SchemaError:
        pass
    defs.register_schema(_make_schema())


register()
