"""`fastattn_onnx.attention` on tensors already on a GPU: torch CUDA tensors, or any object with
`__cuda_array_interface__`. They are described to the extension as (pointer, dtype, dims, element
strides), so strided views (a [B, S, H, D] tensor transposed to [B, H, S, D]) need no copy, and the
kernel is enqueued on the caller's stream (torch's current stream, or `stream=`): the call is
ordered with the caller's own work and returns before the kernel is done, as torch ops do.
Host arrays go to the CPU kernel as before.
"""
from __future__ import annotations

import operator

from . import _kernels

_INPUTS = ("query", "key", "value", "attn_bias", "key_padding_mask", "past_key", "past_value")
_OUTPUTS = ("out", "present_key", "present_value")
_ATTRIBUTES = ("num_heads", "kv_num_heads", "scale", "causal", "window_size", "softcap")
# __cuda_array_interface__ typestr -> the contract's dtype names (bfloat16 has no typestr).
_TYPESTR = {"<f4": "float32", "<f2": "float16", "|b1": "bool", "<i4": "int32", "<i8": "int64",
            "<f8": "float64", "|u1": "uint8", "|i1": "int8"}


def _is_torch_cuda(x) -> bool:
    return type(x).__module__.startswith("torch") and bool(getattr(x, "is_cuda", False))


def is_device_tensor(x) -> bool:
    return x is not None and (_is_torch_cuda(x) or hasattr(x, "__cuda_array_interface__"))


_TORCH_DTYPE_NAMES: dict = {}  # torch.dtype -> the contract's dtype name ("float16", ...)


def _describe_torch(x) -> tuple:
    dtype = _TORCH_DTYPE_NAMES.get(x.dtype)
    if dtype is None:
        dtype = _TORCH_DTYPE_NAMES.setdefault(x.dtype, str(x.dtype).replace("torch.", ""))
    # torch.Size and the strides tuple go to the extension as they are (any sequence of ints).
    return x.data_ptr(), dtype, x.shape, x.stride()


def _describe(x, name: str, is_torch: bool | None = None) -> tuple:
    """(pointer, dtype name, dims, element strides) of a device tensor."""
    if is_torch if is_torch is not None else _is_torch_cuda(x):
        return _describe_torch(x)
    cai = getattr(x, "__cuda_array_interface__", None)
    if cai is None:
        raise TypeError(f"{name} is on the host while query is on a CUDA device: pass every tensor on "
                        "the same device")
    dtype = _TYPESTR.get(cai["typestr"])
    if dtype is None:
        raise TypeError(f"{name} has an element type FastAttention does not take ({cai['typestr']})")
    shape = list(cai["shape"])
    itemsize = int(cai["typestr"][2:])
    if cai.get("strides") is None:  # C-contiguous
        strides, step = [], 1
        for dim in reversed(shape):
            strides.insert(0, step)
            step *= dim
    else:
        strides = [s // itemsize for s in cai["strides"]]
    return int(cai["data"][0]), dtype, shape, strides


def _device_of(x) -> tuple[str, int]:
    if _is_torch_cuda(x):
        return "cuda", x.device.index or 0
    return "cuda", 0  # __cuda_array_interface__ has no device field: the current device


def _as_attribute(value, is_float: bool):
    """Python numbers as the attribute types they stand for (NumPy scalars too), as the host
    path reads them; anything else is passed on for the contract's reader to name."""
    # Fast path: the plain int / float a caller usually passes is already that type.
    if type(value) is (float if is_float else int):
        return value
    try:
        return float(value) if is_float and not isinstance(value, str) else operator.index(value)
    except (TypeError, ValueError):
        return value


# Output shapes by (attributes, input dtypes and dims): the contract's shape inference is needed
# here only to allocate outputs; the extension validates every call again before the launch.
_SHAPES: dict = {}
_SHAPES_MAX = 256


def _output_dims(attributes: dict, described: list) -> list:
    """The output dims infer_outputs gives for these inputs (its errors raised as they are)."""
    inputs = [None if d is None else (d[1], d[2]) for d in described]
    try:
        key = (tuple(attributes.items()), tuple(map(type, attributes.values())),
               tuple(None if i is None else (i[0], tuple(i[1])) for i in inputs))
        dims = _SHAPES.get(key)
    except TypeError:  # an unhashable attribute value: the reader names it below
        key = dims = None
    if dims is None:
        dims = [None if s is None else s[1] for s in _kernels.infer_outputs(attributes, inputs)]
        if key is not None:
            if len(_SHAPES) >= _SHAPES_MAX:
                _SHAPES.clear()
            _SHAPES[key] = dims
    return dims


def _current_stream(query, ordinal: int) -> int:
    """torch's current stream on query's device, as an integer handle."""
    import torch

    raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    if raw is not None:  # the handle itself, without building a torch.cuda.Stream object
        return raw(ordinal)
    return torch.cuda.current_stream(query.device).cuda_stream


def attention_on_device(query, key, value, *, attn_bias=None, key_padding_mask=None, past_key=None,
                        past_value=None, return_present=False, out=None, present_key=None,
                        present_value=None, stream=None, **attributes):
    tensors = (query, key, value, attn_bias, key_padding_mask, past_key, past_value)
    is_torch = [t is not None and _is_torch_cuda(t) for t in tensors]
    kind = "cuda"
    # get_device(): the CUDA ordinal as an int, without building a torch.device.
    ordinal = query.get_device() if is_torch[0] else 0  # no device field in __cuda_array_interface__
    for name, t, torch_t in zip(_INPUTS, tensors, is_torch):
        if torch_t and t.get_device() != ordinal:
            raise ValueError(f"{name} is on cuda:{t.device.index}, query on cuda:{ordinal}")
    described = [None if t is None else _describe(t, name, torch_t)
                 for name, t, torch_t in zip(_INPUTS, tensors, is_torch)]
    return_present = return_present or present_key is not None or present_value is not None
    outputs = [out, present_key, present_value] if return_present else [out, None, None]
    if outputs[0] is None or (return_present and (present_key is None or present_value is None)):
        # Something to allocate: its shape (and the input rules, raised here as before) from the
        # contract. With every output given, the extension's own check is the only one needed.
        shapes = _output_dims(attributes, described)
        for i, name in enumerate(_OUTPUTS):
            if outputs[i] is not None or (i > 0 and not return_present):
                continue
            if not is_torch[0]:
                raise TypeError(f"{name}= is required for __cuda_array_interface__ inputs (only torch "
                                "tensors can be allocated here)")
            outputs[i] = query.new_empty(shapes[i])
        checked = True
    else:
        checked = False
    if stream is None:
        stream = _current_stream(query, ordinal) if is_torch[0] else 0
    try:
        out_described = [None if o is None else _describe(o, n) for o, n in zip(outputs, _OUTPUTS)]
        _kernels.attention_on_device(attributes, described, out_described, kind, ordinal, int(stream))
    except (TypeError, ValueError):
        if checked:
            raise
        # The input rules come first, as when they were checked before the outputs were described.
        try:
            _kernels.infer_outputs(attributes, [None if d is None else (d[1], d[2]) for d in described])
        except (TypeError, ValueError) as rule:
            raise rule from None
        raise
    return tuple(outputs) if return_present else outputs[0]


def attention(query, key, value, *, num_heads=None, kv_num_heads=None, scale=None, causal=0,
              window_size=-1, softcap=0.0, attn_bias=None, key_padding_mask=None, past_key=None,
              past_value=None, return_present=False, num_threads=0, out=None, present_key=None,
              present_value=None, dtype=None, stream=None):
    """FastAttention forward with the com.fastattention::FastAttention contract.

    NumPy arrays (or anything numpy.asarray accepts) run on the CPU kernel (`num_threads` worker
    threads; `dtype="bfloat16"` reads uint16 arrays as bfloat16 bits). torch CUDA tensors (or
    `__cuda_array_interface__` objects, with `out=` given) run on their GPU, enqueued on torch's
    current stream (or `stream=`, an integer handle). out / present_key / present_value: optional
    preallocated outputs; giving a present returns (out, present_key, present_value) as
    return_present=True does.
    """
    if type(query).__module__.startswith("torch") and getattr(query.device, "type", None) == "npu":
        # Ascend NPU: torch_npu's fused operator with the plan of the EP's NPU device (ascend.py; never run).
        from .ascend import attention_npu

        return attention_npu(query, key, value, num_heads=num_heads, kv_num_heads=kv_num_heads, scale=scale,
                             causal=causal, window_size=window_size, softcap=softcap, attn_bias=attn_bias,
                             key_padding_mask=key_padding_mask, past_key=past_key, past_value=past_value,
                             return_present=return_present, out=out, present_key=present_key,
                             present_value=present_value)
    if is_device_tensor(query):
        if dtype is not None:
            raise ValueError("dtype= applies to host arrays only (torch tensors carry bfloat16)")
        attributes = {k: _as_attribute(v, k in ("scale", "softcap")) for k, v in
                      dict(num_heads=num_heads, kv_num_heads=kv_num_heads, scale=scale, causal=causal,
                           window_size=window_size, softcap=softcap).items() if v is not None}
        return attention_on_device(query, key, value, attn_bias=attn_bias,
                                   key_padding_mask=key_padding_mask, past_key=past_key,
                                   past_value=past_value, return_present=return_present, out=out,
                                   present_key=present_key, present_value=present_value,
                                   stream=stream, **attributes)
    if stream is not None:
        raise ValueError("stream= applies to CUDA tensors only")
    return _kernels.attention(query, key, value, num_heads=num_heads, kv_num_heads=kv_num_heads,
                              scale=scale, causal=causal, window_size=window_size, softcap=softcap,
                              attn_bias=attn_bias, key_padding_mask=key_padding_mask,
                              past_key=past_key, past_value=past_value,
                              return_present=return_present, num_threads=num_threads, out=out,
                              present_key=present_key, present_value=present_value, dtype=dtype)
