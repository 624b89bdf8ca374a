"""ONNX models of one FastAttention node from a spec, and running them in ONNX Runtime in any of
the three dtypes (bfloat16 through uint16 bit patterns and I/O binding)."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from ort_helpers import cpu_session, ep_session, from_bf16_bits, to_bf16_bits

import fastattn_onnx

ELEM = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "bfloat16": TensorProto.BFLOAT16,
        "float64": TensorProto.DOUBLE, "int32": TensorProto.INT32, "int64": TensorProto.INT64,
        "bool": TensorProto.BOOL, "uint8": TensorProto.UINT8, "int8": TensorProto.INT8}
INPUT_ORDER = ["query", "key", "value", "attn_bias", "key_padding_mask", "past_key", "past_value"]


def fa_model(node: str, types: dict, shapes: dict, attrs: dict | None = None, attributes=None,
             outputs: int = 1, out_shapes=None, out_type: str = "float32", symbolic: bool = False,
             node_inputs: list | None = None) -> onnx.ModelProto:
    """types/shapes: per input name. attributes: ready AttributeProtos (any type) added after
    attrs. symbolic: every dim a name of its own (rules are then checked at run)."""
    inputs = []
    for name in INPUT_ORDER:
        if name in shapes:
            dims = [f"{name}_{i}" for i in range(len(shapes[name]))] if symbolic else shapes[name]
            inputs.append(helper.make_tensor_value_info(name, ELEM[types[name]], dims))
    names = node_inputs if node_inputs is not None else [n if n in shapes else "" for n in INPUT_ORDER]
    while names and names[-1] == "":
        names.pop()
    out_names = ["output", "present_key", "present_value", "extra_output", "extra_output2"][:outputs]
    outs = [helper.make_tensor_value_info(n, ELEM[out_type], None if (symbolic or out_shapes is None)
                                          else out_shapes[i]) for i, n in enumerate(out_names)]
    node_proto = helper.make_node(fastattn_onnx.OP_TYPE, names, out_names, name=node, domain=fastattn_onnx.OP_DOMAIN,
                                  **(attrs or {}))
    node_proto.attribute.extend(attributes or [])
    graph = helper.make_graph([node_proto], "hostile", inputs, outs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21),
                                                    helper.make_opsetid(fastattn_onnx.OP_DOMAIN, 1)])
    model.ir_version = 10
    return model


def session(model, path: str) -> ort.InferenceSession:
    return ep_session(model) if path == "ep" else cpu_session(model)


def run(sess: ort.InferenceSession, feeds: dict, dtype: str, out_shapes: list) -> list[np.ndarray]:
    """Float feeds given as float32 are converted to dtype; float32 outputs come back."""
    if dtype == "float32":
        return [np.asarray(o, np.float32) for o in sess.run(None, feeds)]
    if dtype == "float16":
        conv = {k: (v.astype(np.float16) if v.dtype == np.float32 else v) for k, v in feeds.items()}
        return [o.astype(np.float32) for o in sess.run(None, conv)]
    binding = sess.io_binding()
    keep = []
    for k, v in feeds.items():
        arr = np.ascontiguousarray(to_bf16_bits(v)) if v.dtype == np.float32 else np.ascontiguousarray(v)
        val = (ort.OrtValue.ortvalue_from_numpy_with_onnx_type(arr, TensorProto.BFLOAT16) if v.dtype == np.float32
               else ort.OrtValue.ortvalue_from_numpy(arr))
        keep += [arr, val]
        binding.bind_ortvalue_input(k, val)
    bufs = []
    for o, shape in zip(sess.get_outputs(), out_shapes):
        buf = np.zeros(shape, np.uint16)
        val = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(buf, TensorProto.BFLOAT16)
        keep.append(val)
        bufs.append(buf)
        binding.bind_ortvalue_output(o.name, val)
    sess.run_with_iobinding(binding)
    return [from_bf16_bits(b) for b in bufs]
