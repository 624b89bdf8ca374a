"""ONNX Attention (opset 23/24) nodes: FastAttentionEP takes those it reproduces exactly and matches
ONNX Runtime's own CPU kernel on them; the rest stay on the CPU EP."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from ort_helpers import EP, TOL, max_err

import fastattn_onnx

ELEM = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}
NP = {"float32": np.float32, "float16": np.float16}


def attention_model(*, layout="4d", b=2, h=4, kvh=None, sq=3, skv=3, sp=0, d=8, dtype="float32", mask=None,
                    attrs=None, opset=23, qk_output=False, dims=None):
    """One Attention node. mask: None or (kind, shape) with kind "float" (the query's type) or "bool"."""
    kvh = kvh or h
    elem = ELEM[dtype]
    if layout == "4d":
        shapes = {"Q": [b, h, sq, d], "K": [b, kvh, skv, d], "V": [b, kvh, skv, d]}
    else:
        shapes = {"Q": [b, sq, h * d], "K": [b, skv, kvh * d], "V": [b, skv, kvh * d]}
    shapes.update(dims or {})
    inputs = [helper.make_tensor_value_info(n, elem, shapes[n]) for n in ("Q", "K", "V")]
    names = ["Q", "K", "V", "", "", ""]
    if mask:
        inputs.append(helper.make_tensor_value_info("attn_mask", TensorProto.BOOL if mask[0] == "bool" else elem,
                                                    mask[1]))
        names[3] = "attn_mask"
    if sp:
        inputs += [helper.make_tensor_value_info("past_key", elem, [b, kvh, sp, d]),
                   helper.make_tensor_value_info("past_value", elem, [b, kvh, sp, d])]
        names[4:6] = ["past_key", "past_value"]
    while names[-1] == "":
        names.pop()
    outs = ["Y"] + (["present_key", "present_value"] if sp or qk_output else [])
    if qk_output:
        outs.append("qk")
    node = helper.make_node("Attention", names, outs, name="attention_0", **(attrs or {}))
    graph = helper.make_graph([node], "attention", inputs, [helper.make_tensor_value_info(o, elem, None) for o in outs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


def feeds_for(model, seed=0, fully_masked_row=True):
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in model.graph.input:
        shape = [d.dim_value if d.dim_value else 3 for d in i.type.tensor_type.shape.dim]
        t = i.type.tensor_type.elem_type
        if t == TensorProto.BOOL:
            m = rng.random(shape) > 0.3
            if fully_masked_row:
                m[..., 0, :] = False
            feeds[i.name] = m
        else:
            x = rng.standard_normal(shape).astype(np.float32)
            if i.name == "attn_mask" and fully_masked_row:
                x[..., 0, :] = -np.inf
            feeds[i.name] = x.astype(np.float16 if t == TensorProto.FLOAT16 else np.float32)
    return feeds


def _session_options():
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 2
    return so


def compare_with_ort_cpu(model, dtype="float32", seed=0):
    data = model.SerializeToString()
    feeds = feeds_for(model, seed)
    want = ort.InferenceSession(data, _session_options(), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = ort.InferenceSession(data, _session_options(), providers=[EP, "CPUExecutionProvider"]).run(None, feeds)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        assert max_err(g, w) <= TOL[dtype]
    return fastattn_onnx.node_placement(model, inputs=feeds, session_options=_session_options())


CLAIMED = [
    ("plain_4d", dict()),
    ("gqa_4d", dict(h=4, kvh=2)),
    ("gqa_3d", dict(layout="3d", h=4, kvh=2, attrs=dict(q_num_heads=4, kv_num_heads=2))),
    ("mqa_3d_causal", dict(layout="3d", h=4, kvh=1, attrs=dict(q_num_heads=4, kv_num_heads=1, is_causal=1))),
    ("causal_4d", dict(sq=5, skv=5, attrs=dict(is_causal=1))),
    ("causal_past_present", dict(sq=2, skv=2, sp=3, kvh=2, attrs=dict(is_causal=1))),
    ("decode_causal_past", dict(sq=1, skv=1, sp=6, attrs=dict(is_causal=1))),
    ("float_mask_softcap_scale", dict(sp=2, mask=("float", [3, 5]), attrs=dict(softcap=2.0, scale=0.4))),
    ("float_mask_4d", dict(mask=("float", [2, 4, 3, 3]))),
    ("bool_mask_2d", dict(mask=("bool", [3, 3]))),
    # ONNX Runtime's CPU kernel needs the mask's q axis spelled out (no [B, 1, 1, S] broadcast).
    ("bool_mask_4d_causal", dict(mask=("bool", [2, 1, 3, 3]), attrs=dict(is_causal=1))),
    ("float16_mask", dict(dtype="float16", mask=("float", [3, 3]), h=4, kvh=2)),
    ("opset24", dict(opset=24, attrs=dict(is_causal=1), sp=2)),
]


@pytest.mark.parametrize("name,kw", CLAIMED, ids=[c[0] for c in CLAIMED])
def test_claimed_attention_matches_ort_cpu(name, kw):
    placement = compare_with_ort_cpu(attention_model(**kw), kw.get("dtype", "float32"))
    assert placement == {"attention_0": EP}


REFUSED = [
    ("qk_matmul_output", dict(attrs=dict(qk_matmul_output_mode=1), qk_output=True)),
    ("causal_sq_ne_skv", dict(sq=2, skv=5, attrs=dict(is_causal=1))),
    ("causal_past_sq_ne_skv", dict(sq=2, skv=3, sp=2, attrs=dict(is_causal=1))),
    ("causal_unknown_lengths", dict(attrs=dict(is_causal=1), dims={"Q": [2, 4, "S", 8], "K": [2, 4, "T", 8],
                                                                    "V": [2, 4, "T", 8]})),
    ("mask_length_unknown", dict(mask=("float", [3, "M"]))),
    ("mask_rank_3", dict(mask=("float", [4, 3, 3]))),
]


@pytest.mark.parametrize("name,kw", REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_attention_stays_on_cpu(name, kw):
    model = attention_model(**kw)
    feeds = feeds_for(model, fully_masked_row=False)  # symbolic dims run as 3
    placement = fastattn_onnx.node_placement(model, inputs=feeds, session_options=_session_options())
    assert placement == {"attention_0": "CPUExecutionProvider"}


def test_ort_cpu_causal_alignment_is_what_the_claim_rule_assumes():
    """ONNX Runtime aligns is_causal at S_past: with S_q != S_kv and no past it is top-left, which is
    why such nodes are refused (ours would be bottom-right)."""
    from reference import attention_reference
    model = attention_model(b=1, h=1, sq=2, skv=4, attrs=dict(is_causal=1))
    feeds = feeds_for(model)
    y = ort.InferenceSession(model.SerializeToString(), _session_options(),
                             providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    top_left = np.where(np.arange(4)[None, :] <= np.arange(2)[:, None], 0.0, -np.inf)
    want = attention_reference(feeds["Q"], feeds["K"], feeds["V"], attn_bias=top_left)[0]
    assert max_err(y, want) <= 1e-5
    bottom_right = attention_reference(feeds["Q"], feeds["K"], feeds["V"], causal=True)[0]
    assert max_err(y, bottom_right) > 1e-2
