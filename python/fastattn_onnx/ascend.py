"""FastAttention on Ascend NPUs through torch_npu, with the one plan the EP's NPU backend uses
(kernels/ascend/fia_plan.h, exposed as `_kernels.ascend_plan`).

`plan(...)` takes the arguments of `fastattn_onnx.attention` (arrays, torch tensors, or
(dtype name, shape[, element strides]) tuples; key_padding_mask with its values) and returns the
plan as a dict: "reason" is "" when CANN's aclnnFusedInferAttentionScore computes the node exactly
(then the operator's arguments follow), else why it does not.

`attention_npu(...)` is what `fastattn_onnx.attention` calls for tensors on an "npu" device: it
runs torch_npu.npu_fused_infer_attention_score with the plan's arguments. It has NEVER RUN: no
Ascend NPU or torch_npu exists where this was written; tests check the keyword arguments it
passes (`npu_call_kwargs`) and the plan against an emulator of the operator's documented
semantics (tests/ascend/). Install torch_npu with `pip install 'fastattn-onnx[ascend]'`.
"""
from __future__ import annotations

import numpy as np

from . import _kernels

_INPUTS = ("query", "key", "value", "attn_bias", "key_padding_mask", "past_key", "past_value")


def is_npu_tensor(x) -> bool:
    device = getattr(x, "device", None)
    return type(x).__module__.startswith("torch") and getattr(device, "type", None) == "npu"


def _describe(x, name):
    """(dtype name, dims, element strides) of an array, a torch tensor or a spec tuple."""
    if x is None:
        return None
    if isinstance(x, tuple) and x and isinstance(x[0], str):
        if len(x) not in (2, 3):
            raise TypeError(f"{name}: a spec is (dtype name, shape[, element strides])")
        return (x[0], [int(d) for d in x[1]], None if len(x) == 2 or x[2] is None else [int(s) for s in x[2]])
    if type(x).__module__.startswith("torch"):
        return (str(x.dtype).replace("torch.", ""), list(x.shape), list(x.stride()))
    a = x if isinstance(x, np.ndarray) else np.asarray(x)
    return (str(a.dtype), list(a.shape), [s // a.itemsize for s in a.strides])


def _host_values(x):
    if type(x).__module__.startswith("torch"):
        return x.detach().cpu().numpy()  # a device tensor is read back (the plan needs its values)
    if isinstance(x, tuple):
        raise TypeError("key_padding_mask must be given with its values (the plan reads them)")
    return np.asarray(x)


def plan(query, key, value, *, num_heads=None, kv_num_heads=None, scale=None, causal=0, window_size=-1,
         softcap=0.0, attn_bias=None, key_padding_mask=None, past_key=None, past_value=None,
         return_present=False, kv_len=None, allow_low_precision=False, low_precision_dtype="float16") -> dict:
    """The aclnnFusedInferAttentionScore plan for this node (see the module docstring).
    kv_len: GroupQueryAttention's per-batch valid key counts (the FastAttention op has none)."""
    attributes = {k: v for k, v in dict(num_heads=num_heads, kv_num_heads=kv_num_heads, scale=scale, causal=causal,
                                        window_size=window_size, softcap=softcap).items() if v is not None}
    tensors = (query, key, value, attn_bias, key_padding_mask, past_key, past_value)
    inputs = [_describe(t, name) for t, name in zip(tensors, _INPUTS)]
    visible = None
    if key_padding_mask is not None:
        visible = (_host_values(key_padding_mask) != 0).astype(np.uint8)
    return _kernels.ascend_plan(attributes, inputs, return_present=return_present, key_visible=visible,
                                kv_len=None if kv_len is None else [int(x) for x in kv_len],
                                allow_low_precision=allow_low_precision, low_precision_dtype=low_precision_dtype)


def npu_call_kwargs(p: dict) -> dict:
    """The non-tensor keyword arguments of torch_npu.npu_fused_infer_attention_score for plan p
    (names from torch_npu's documentation of that function)."""
    if p["reason"]:
        raise ValueError(f"the plan declines this node: {p['reason']}")
    return {
        "num_heads": p["num_heads"],
        "scale": p["scale_value"],
        "pre_tokens": p["pre_tokens"],
        "next_tokens": p["next_tokens"],
        "input_layout": p["input_layout"],
        "num_key_value_heads": p["num_key_value_heads"],
        "sparse_mode": p["sparse_mode"],
        "inner_precise": p["inner_precise"],
        "actual_seq_lengths": list(p["actual_seq_lengths"]) or None,
        "actual_seq_lengths_kv": list(p["actual_seq_lengths_kv"]) or None,
    }


_COMPRESSED_MASKS: dict = {}  # device -> the 2048 x 2048 bool mask, built once per device


def attention_npu(query, key, value, *, num_heads=None, kv_num_heads=None, scale=None, causal=0, window_size=-1,
                  softcap=0.0, attn_bias=None, key_padding_mask=None, past_key=None, past_value=None,
                  return_present=False, out=None, present_key=None, present_value=None,
                  allow_low_precision=False, low_precision_dtype="float16"):
    """The FastAttention contract on torch_npu tensors (never run; see the module docstring)."""
    import torch
    import torch_npu  # noqa: F401  (the `ascend` extra)

    return_present = return_present or present_key is not None or present_value is not None
    # torch_npu takes no strided tensors: dense copies make the plan's layout always available.
    q, k, v = query.contiguous(), key.contiguous(), value.contiguous()
    p = plan(q, k, v, num_heads=num_heads, kv_num_heads=kv_num_heads, scale=scale, causal=causal,
             window_size=window_size, softcap=softcap, attn_bias=attn_bias, key_padding_mask=key_padding_mask,
             past_key=past_key, past_value=past_value, return_present=return_present,
             allow_low_precision=allow_low_precision, low_precision_dtype=low_precision_dtype)
    if p["reason"]:
        raise ValueError(f"FastAttention on an Ascend NPU: the operator cannot compute this node: {p['reason']}")
    compute = torch.float16 if p["compute_dtype"] == "float16" else torch.bfloat16
    b, kvh = p["key_shape"][0], p["num_key_value_heads"]
    t, d = (p["key_shape"][2], p["key_shape"][3]) if p["input_layout"] == "BNSD" else (p["key_shape"][1], p["key_shape"][2] // kvh)

    def bnsd(x):  # a node's key/value as [B, KVH, S, D]
        return x if x.dim() == 4 else x.view(b, x.shape[1], kvh, d).transpose(1, 2)

    k4, v4 = bnsd(k), bnsd(v)
    if past_key is not None:
        k4, v4 = torch.cat([past_key, k4], dim=2), torch.cat([past_value, v4], dim=2)
    if p["kv_source"] == "inputs":
        k_op, v_op = k.reshape(p["key_shape"]), v.reshape(p["value_shape"])
    elif p["input_layout"] == "BNSD":
        k_op, v_op = k4.contiguous(), v4.contiguous()
    else:
        k_op, v_op = (x.transpose(1, 2).reshape(b, t, kvh * d) for x in (k4, v4))
    tensors = {"pse_shift": None, "atten_mask": None, "kv_padding_size": None}
    if attn_bias is not None:
        n, sq = p["pse_shape"][1], p["pse_shape"][2]
        bias = attn_bias.reshape((1,) * (4 - attn_bias.dim()) + tuple(attn_bias.shape))
        tensors["pse_shift"] = bias.expand(-1 if bias.shape[0] > 1 else p["pse_shape"][0], n, sq, t).to(compute).contiguous()
    if p["mask"] == "compressed":
        key_dev = str(q.device)
        if key_dev not in _COMPRESSED_MASKS:
            _COMPRESSED_MASKS[key_dev] = torch.from_numpy(_kernels.ascend_compressed_mask()).to(torch.bool).to(q.device)
        tensors["atten_mask"] = _COMPRESSED_MASKS[key_dev]
    elif p["mask"] == "explicit":
        tensors["atten_mask"] = torch.from_numpy(p["explicit_mask"]).to(torch.bool).to(q.device)
    if p["kv_padding_size"] is not None:
        tensors["kv_padding_size"] = torch.tensor([p["kv_padding_size"]], dtype=torch.int64, device=q.device)
    result, _ = torch_npu.npu_fused_infer_attention_score(
        q.reshape(p["query_shape"]).to(compute), k_op.to(compute), v_op.to(compute), **tensors, **npu_call_kwargs(p))
    if p["zero_out_batches"]:  # decode rows with no visible key: zeros (the operator's are undefined)
        result[p["zero_out_batches"]] = 0
    result = result.reshape(query.shape).to(query.dtype)
    if out is not None:
        out.copy_(result)
        result = out
    if not return_present:
        return result
    presents = []
    for given, full in ((present_key, k4), (present_value, v4)):
        if given is None:
            presents.append(full.contiguous())
        else:
            given.copy_(full)
            presents.append(given)
    return result, presents[0], presents[1]
