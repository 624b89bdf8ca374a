"""Bad models and inputs give an ONNX Runtime error naming the node and the broken rule, never a crash."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper
from ort_helpers import build_model, cpu_session, ep_session

NODE = "bad_node"

# (id, build_model kwargs, substring of the rule)
STATIC_CASES = [
    ("query_rank_2", dict(shapes={"query": [1, 32]}), "query must be 3D"),
    ("key_rank_differs", dict(layout="4d", shapes={"key": [1, 4, 32]}), "rank"),
    ("query_float64", dict(), "float32, float16 or bfloat16"),
    ("key_dtype_differs", dict(), "key must have the query's element type"),
    ("kv_heads_do_not_divide", dict(num_heads=4, kv_num_heads=3), "must divide num_heads"),
    ("no_num_heads_3d", dict(set_num_heads_attr=False), "num_heads is required for 3D"),
    ("hidden_not_divisible", dict(shapes={"query": [1, 4, 30]}), "not divisible by num_heads"),
    ("head_size_differs", dict(layout="4d", shapes={"key": [1, 4, 4, 6], "value": [1, 4, 4, 6]}),
     "key head size 6 differs"),
    ("kv_length_differs", dict(shapes={"value": [1, 5, 32]}), "key and value sequence lengths differ"),
    ("mask_wrong_shape", dict(key_padding_mask="bool", shapes={"key_padding_mask": [1, 9]}),
     "key_padding_mask must be [B, S_total] = [1, 4]"),
    ("mask_wrong_rank", dict(key_padding_mask="int32", shapes={"key_padding_mask": [4]}), "key_padding_mask must be 2D"),
    ("mask_float", dict(), "key_padding_mask must be bool, int32 or int64"),
    ("past_wrong_length", dict(seq_past=3, shapes={"past_value": [1, 4, 2, 8]}), "past_value must be"),
    ("past_wrong_heads", dict(seq_past=3, shapes={"past_key": [1, 2, 3, 8]}), "past_key must be"),
    ("bias_not_broadcastable", dict(attn_bias_shape=[1, 4, 4, 5]), "attn_bias [1, 4, 4, 5] is not broadcastable"),
    ("causal_2", dict(causal=2), "causal must be 0 or 1"),
    ("softcap_negative", dict(softcap=-1.0), "softcap must be >= 0"),
    ("num_heads_disagrees_4d", dict(layout="4d", set_num_heads_attr=False, extra_attrs={"num_heads": 2}),
     "num_heads 2 disagrees"),
]


def bad_model(name, kw):
    kw = dict(kw)
    m = build_model(num_heads=kw.pop("num_heads", 4), head_dim=8, node_name=NODE, **kw)
    inputs = {i.name: i for i in m.graph.input}
    if name == "query_float64":
        for n in ("query", "key", "value"):
            inputs[n].type.tensor_type.elem_type = TensorProto.DOUBLE
    elif name == "key_dtype_differs":
        inputs["key"].type.tensor_type.elem_type = TensorProto.FLOAT16
    elif name == "mask_float":
        m.graph.input.append(helper.make_tensor_value_info("key_padding_mask", TensorProto.FLOAT, [1, 4]))
        m.graph.node[0].input.extend(["", "key_padding_mask"])
    return m


@pytest.mark.parametrize("make_session", [cpu_session, ep_session], ids=["custom_op", "ep"])
@pytest.mark.parametrize("name,kw,rule", STATIC_CASES, ids=[c[0] for c in STATIC_CASES])
def test_bad_model_fails_at_session_creation(name, kw, rule, make_session):
    model = bad_model(name, kw)
    with pytest.raises(Exception) as err:
        make_session(model)
    text = str(err.value)
    assert NODE in text and rule in text, text


def _symbolic_model(**kw):
    return build_model(layout="4d", batch="B", seq_q="S", seq_kv="S", num_heads=2, head_dim=8, node_name=NODE,
                       **kw)


@pytest.mark.parametrize("make_session", [cpu_session, ep_session], ids=["custom_op", "ep"])
def test_bad_shapes_at_run_name_node_and_rule(make_session):
    """Symbolic dims pass session creation; the rule is checked on the real tensors."""
    sess = make_session(_symbolic_model(key_padding_mask="bool", shapes={"key_padding_mask": ["B", "M"]}))
    x = np.zeros((1, 2, 3, 8), np.float32)
    good = {"query": x, "key": x, "value": x, "key_padding_mask": np.ones((1, 3), bool)}
    sess.run(None, good)
    with pytest.raises(Exception) as err:
        sess.run(None, dict(good, key_padding_mask=np.ones((1, 5), bool)))
    assert NODE in str(err.value) and "key_padding_mask must be [B, S_total] = [1, 3], got [1, 5]" in str(err.value)
    with pytest.raises(Exception) as err:  # key and value lengths differ at run
        sess.run(None, dict(good, value=np.zeros((1, 2, 4, 8), np.float32)))
    assert NODE in str(err.value) and "sequence lengths differ" in str(err.value)
    # The session still works after the errors.
    assert sess.run(None, good)[0].shape == (1, 2, 3, 8)


@pytest.mark.parametrize("make_session", [cpu_session, ep_session], ids=["custom_op", "ep"])
def test_past_of_wrong_length_at_run(make_session):
    sess = make_session(build_model(layout="4d", batch=1, seq_q="S", seq_kv="S", seq_past="P", num_heads=2,
                                    head_dim=8, node_name=NODE, present=True,
                                    shapes={"past_key": [1, 2, "P", 8], "past_value": [1, 2, "Q", 8]}))
    x = np.zeros((1, 2, 2, 8), np.float32)
    with pytest.raises(Exception) as err:
        sess.run(None, {"query": x, "key": x, "value": x, "past_key": np.zeros((1, 2, 3, 8), np.float32),
                        "past_value": np.zeros((1, 2, 4, 8), np.float32)})
    assert NODE in str(err.value) and "past_value must be [B, kv_num_heads, S_past, Dv] = [1, 2, 3, 8]" in str(err.value)


SUBPROCESS_SCRIPT = r"""
import sys
sys.path.insert(0, {tests!r})
from test_bad_input import STATIC_CASES, bad_model
from ort_helpers import cpu_session, ep_session
import numpy as np
n = 0
for name, kw, rule in STATIC_CASES:
    for make in (cpu_session, ep_session):
        try:
            make(bad_model(name, kw))
        except Exception as e:
            n += rule in str(e)
print("ERRORS", n)
"""


def test_bad_models_in_a_subprocess_do_not_abort():
    script = SUBPROCESS_SCRIPT.format(tests=os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"ERRORS {2 * len(STATIC_CASES)}" in r.stdout
