"""ONNX schema of com.fastattention::FastAttention (since_version 1), registered with onnx.defs.

Lets onnx.checker and onnx.shape_inference accept models that use the op. Importing this module
registers it once.
"""
from __future__ import annotations

import onnx
from onnx import TensorProto, defs

from . import _kernels
from .constants import ATTRIBUTE_DEFAULTS, OP_DOMAIN, OP_SINCE_VERSION, OP_TYPE

_P = defs.OpSchema.FormalParameter
_Opt = defs.OpSchema.FormalParameterOption
_A = defs.OpSchema.Attribute
_AT = defs.OpSchema.AttrType


# onnx element types by the contract's names (core/op_contract.cc dtype_name).
_DTYPE_NAMES = {
    TensorProto.FLOAT: "float32", TensorProto.FLOAT16: "float16", TensorProto.BFLOAT16: "bfloat16",
    TensorProto.DOUBLE: "float64", TensorProto.BOOL: "bool", TensorProto.INT8: "int8", TensorProto.UINT8: "uint8",
    TensorProto.INT16: "int16", TensorProto.UINT16: "uint16", TensorProto.INT32: "int32", TensorProto.INT64: "int64",
    TensorProto.UNDEFINED: "unknown",
}
_ELEM_TYPES = {name: elem for elem, name in _DTYPE_NAMES.items()}


def _dims(t: onnx.TypeProto | None):
    """Dims as int or str (symbolic) or None (unknown); None if the rank is unknown."""
    if t is None or not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    out = []
    for d in t.tensor_type.shape.dim:
        out.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
    return out


def _infer(ctx) -> None:
    """The contract's own shape inference (the compiled core, as ONNX Runtime's is), with symbolic
    dims carried over from the input dims each output dim equals."""
    attributes = {}
    for name in ATTRIBUTE_DEFAULTS:
        a = ctx.get_attribute(name)
        if a is not None:  # as its own type: the contract names a wrong one
            attributes[name] = onnx.helper.get_attribute_value(a)
    described, symbolic = [], []
    for i in range(7):
        t = ctx.get_input_type(i) if i < ctx.get_num_inputs() and ctx.has_input(i) else None
        if t is None:
            described.append(None)
            symbolic.append(None)
            continue
        dims = _dims(t)
        elem = t.tensor_type.elem_type if t.HasField("tensor_type") else TensorProto.UNDEFINED
        described.append((_DTYPE_NAMES.get(elem, "an unsupported type"),
                          None if dims is None else [d if isinstance(d, int) else -1 for d in dims]))
        symbolic.append(dims)
    try:
        outputs = _kernels.infer_outputs(attributes, described)
    except (TypeError, ValueError) as e:
        raise onnx.shape_inference.InferenceError(f"[FastAttention] {e}") from None
    for i, out in enumerate(outputs):
        if out is None or i >= ctx.get_num_outputs() or not ctx.has_output(i) or out[0] not in _ELEM_TYPES:
            continue
        dtype, dims, same_as = out
        shape = [d if d >= 0 else (symbolic[src][axis] if src >= 0 and symbolic[src] is not None else None)
                 for d, (src, axis) in zip(dims, same_as)]
        ctx.set_output_type(i, onnx.helper.make_tensor_type_proto(_ELEM_TYPES[dtype], shape))


# Type and description of each attribute; the defaults come from constants.ATTRIBUTE_DEFAULTS.
_ATTRIBUTES = {
    "num_heads": (_AT.INT, "query heads (required for 3D inputs)"),
    "kv_num_heads": (_AT.INT, "key/value heads; divides num_heads (default num_heads)"),
    "scale": (_AT.FLOAT, "score scale (default 1/sqrt(D))"),
    "causal": (_AT.INT, "1: bottom-right aligned causal mask"),
    "window_size": (_AT.INT, "local window; -1 = none"),
    "softcap": (_AT.FLOAT, "tanh softcap; 0 = none"),
}


def _attribute(name: str) -> defs.OpSchema.Attribute:
    kind, doc = _ATTRIBUTES[name]
    default = ATTRIBUTE_DEFAULTS[name]
    if default is None:
        return _A(name, kind, doc, required=False)
    return _A(name, onnx.helper.make_attribute(name, default, attr_type=int(kind)), doc)


def _make_schema() -> defs.OpSchema:
    schema = defs.OpSchema(
        OP_TYPE, OP_DOMAIN, OP_SINCE_VERSION,
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
        attributes=[_attribute(name) for name in ATTRIBUTE_DEFAULTS],
    )
    schema.set_type_and_shape_inference_function(_infer)
    return schema


def register() -> None:
    """Registers the schema unless onnx already knows it (idempotent)."""
    try:
        defs.get_schema(OP_TYPE, OP_SINCE_VERSION, OP_DOMAIN)
        return
    except defs.SchemaError:
        pass
    defs.register_schema(_make_schema())


register()
