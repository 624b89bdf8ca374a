"""FastAttention through the plugin EP: placement on FastAttentionEP and parity with the float64 reference."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from ort_helpers import (EP, TOL, bf16_round, build_model, ep_session, max_err, random_inputs, run,
                         session_options)
from reference import attention_reference

import fastattn_onnx

# (id, options): the model/reference options of one case; B=2, S_q=5, S_kv=5 unless given.
CASES = [
    ("plain", {}),
    ("gqa_causal", dict(num_heads=4, kv_num_heads=2, causal=1)),
    ("mqa_window", dict(num_heads=4, kv_num_heads=1, window_size=3)),
    ("causal_window", dict(causal=1, window_size=2, seq_q=3, seq_kv=6)),
    ("mask_bool", dict(key_padding_mask="bool")),
    ("mask_int32", dict(key_padding_mask="int32", causal=1)),
    ("mask_int64", dict(key_padding_mask="int64")),
    ("bias_full", dict(attn_bias="full")),
    ("bias_broadcast", dict(attn_bias="b11s")),
    ("past_present", dict(seq_past=3, seq_q=2, seq_kv=2, present=True, causal=1, num_heads=4, kv_num_heads=2)),
    ("past_mask_bias", dict(seq_past=4, seq_q=1, seq_kv=1, present=True, key_padding_mask="bool", attn_bias="full")),
    ("softcap_scale_dv", dict(softcap=5.0, scale=0.3, head_dim_v=4)),
]


def make_case(layout, dtype, opts, seed=0):
    o = dict(opts)
    b, h = 2, o.pop("num_heads", 2)
    kvh = o.pop("kv_num_heads", None) or h
    sq, skv, sp = o.pop("seq_q", 5), o.pop("seq_kv", 5), o.pop("seq_past", 0)
    d = 8
    dv = o.pop("head_dim_v", None) or d
    st = sp + skv
    bias_kind = o.pop("attn_bias", None)
    bias_shape = {"full": [b, h, sq, st], "b11s": [b, 1, 1, st], None: None}[bias_kind]
    mask_type = o.get("key_padding_mask")
    model = build_model(layout=layout, batch=b, seq_q=sq, seq_kv=skv, seq_past=sp, num_heads=h,
                        kv_num_heads=kvh if kvh != h else None, head_dim=d, head_dim_v=dv, dtype=dtype,
                        attn_bias_shape=bias_shape, **o)
    shapes = {}
    if layout == "3d":
        shapes.update(query=(b, sq, h * d), key=(b, skv, kvh * d), value=(b, skv, kvh * dv))
    else:
        shapes.update(query=(b, h, sq, d), key=(b, kvh, skv, d), value=(b, kvh, skv, dv))
    if bias_shape:
        shapes["attn_bias"] = tuple(bias_shape)
    if sp:
        shapes.update(past_key=(b, kvh, sp, d), past_value=(b, kvh, sp, dv))
    masks = {}
    if mask_type:
        m = np.ones((b, st), dtype=bool)
        m[0, :2] = False  # left padding in row 0
        m[1, -1] = False
        masks["key_padding_mask"] = m.astype({"bool": bool, "int32": np.int32, "int64": np.int64}[mask_type])
    feeds = random_inputs(shapes, dtype, seed=seed, masks=masks)
    ref = attention_reference(feeds["query"], feeds["key"], feeds["value"], num_heads=h, kv_num_heads=kvh,
                              scale=o.get("scale"), causal=bool(o.get("causal")), window_size=o.get("window_size", -1),
                              softcap=o.get("softcap", 0.0), attn_bias=feeds.get("attn_bias"),
                              key_padding_mask=feeds.get("key_padding_mask"), past_key=feeds.get("past_key"),
                              past_value=feeds.get("past_value"))
    return model, feeds, ref


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("layout", ["3d", "4d"])
@pytest.mark.parametrize("name,opts", CASES, ids=[c[0] for c in CASES])
def test_ep_matches_reference(name, opts, layout, dtype):
    model, feeds, ref = make_case(layout, dtype, opts)
    outs = run(ep_session(model), feeds, dtype)
    assert len(outs) == (3 if opts.get("present") else 1)
    for got, want in zip(outs, ref):
        want = bf16_round(np.asarray(want, np.float32)) if dtype == "bfloat16" else want
        assert got.shape == want.shape
        assert max_err(got, want) <= TOL[dtype], (name, layout, dtype)


@pytest.mark.parametrize("layout", ["3d", "4d"])
def test_fast_attention_nodes_run_on_the_ep(layout):
    model, feeds, _ = make_case(layout, "float32", dict(causal=1, num_heads=4, kv_num_heads=2))
    placement = fastattn_onnx.node_placement(model, inputs=feeds, session_options=session_options())
    assert placement == {"fast_attention_0": EP}


def test_model_loads_with_only_the_ep_registered():
    """Through add_provider_for_devices the EP brings its own com.fastattention domain."""
    model, feeds, ref = make_case("3d", "float32", dict(causal=1))
    sess = ort.InferenceSession(model.SerializeToString(), fastattn_onnx.ep_session_options())
    assert sess.get_providers()[0] == EP
    assert max_err(sess.run(None, feeds)[0], ref[0]) <= TOL["float32"]


def test_named_provider_just_works_after_import():
    """The brief's promise: import fastattn_onnx, then name the EP in providers=[...]."""
    model, feeds, ref = make_case("3d", "float32", dict(causal=1, num_heads=4, kv_num_heads=2))
    sess = ort.InferenceSession(model.SerializeToString(), providers=[EP, "CPUExecutionProvider"])
    assert sess.get_providers()[0] == EP
    assert max_err(sess.run(None, feeds)[0], ref[0]) <= TOL["float32"]
    # The same user SessionOptions serve several sessions: the library is added to it only once.
    so = ort.SessionOptions()
    for _ in range(2):
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=[EP, "CPUExecutionProvider"])
        assert max_err(sess.run(None, feeds)[0], ref[0]) <= TOL["float32"]
    placement = fastattn_onnx.node_placement(model, inputs=feeds, providers=[EP, "CPUExecutionProvider"])
    assert placement == {"fast_attention_0": EP}


def test_ep_lists_a_cpu_device():
    devices = [d for d in ort.get_ep_devices() if d.ep_name == EP]
    assert devices and devices[-1].device.type == ort.OrtHardwareDeviceType.CPU


def test_register_ep_is_idempotent_and_thread_safe():
    import threading
    results = []
    threads = [threading.Thread(target=lambda: results.append(fastattn_onnx.register_ep())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 4
    assert len([d for d in ort.get_ep_devices() if d.ep_name == EP]) == 1


def test_two_nodes_in_one_graph_both_on_the_ep():
    import onnx
    from onnx import helper
    model, feeds, ref = make_case("4d", "float32", dict(causal=1))
    g = model.graph
    second = helper.make_node("FastAttention", ["output", "key", "value"], ["output2"], name="fast_attention_1",
                              domain="com.fastattention")
    g.node.append(second)
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("output2", onnx.TensorProto.FLOAT, None))
    placement = fastattn_onnx.node_placement(model, inputs=feeds, session_options=session_options())
    assert placement == {"fast_attention_0": EP, "fast_attention_1": EP}
    out2 = ep_session(model).run(None, feeds)[0]
    want = attention_reference(ref[0].astype(np.float32), feeds["key"], feeds["value"])[0]
    assert max_err(out2, want) <= TOL["float32"]


@pytest.mark.parametrize("layout", ["3d", "4d"])
def test_zero_length_past_and_decode_loop(layout):
    """First decoding step feeds an empty past; later steps feed the previous present."""
    model = build_model(layout=layout, batch=1, seq_q="S", seq_kv="S", seq_past="P", num_heads=4, kv_num_heads=2,
                        head_dim=8, causal=1, present=True)
    sess = ep_session(model)
    rng = np.random.default_rng(3)
    shape = (lambda s, h: (1, s, h * 8)) if layout == "3d" else (lambda s, h: (1, h, s, 8))
    q, k, v = rng.standard_normal(shape(3, 4)), rng.standard_normal(shape(3, 2)), rng.standard_normal(shape(3, 2))
    q, k, v = (x.astype(np.float32) for x in (q, k, v))
    empty = np.zeros((1, 2, 0, 8), np.float32)
    out, pk, pv = sess.run(None, dict(query=q, key=k, value=v, past_key=empty, past_value=empty))
    ref = attention_reference(q, k, v, num_heads=4, kv_num_heads=2, causal=True)
    assert max(max_err(a, b) for a, b in zip((out, pk, pv), ref)) <= TOL["float32"]
    q1, k1, v1 = (x[..., :1, :] if layout == "4d" else x[:, :1] for x in
                  (rng.standard_normal(q.shape), rng.standard_normal(k.shape), rng.standard_normal(v.shape)))
    q1, k1, v1 = (x.astype(np.float32) for x in (q1, k1, v1))
    out1 = sess.run(None, dict(query=q1, key=k1, value=v1, past_key=pk, past_value=pv))[0]
    ref1 = attention_reference(q1, k1, v1, num_heads=4, kv_num_heads=2, causal=True, past_key=pk, past_value=pv)[0]
    assert max_err(out1, ref1) <= TOL["float32"]


def test_concurrent_runs_of_one_session():
    from concurrent.futures import ThreadPoolExecutor
    model, feeds, ref = make_case("4d", "float32", dict(causal=1, num_heads=4, kv_num_heads=2))
    sess = ep_session(model)
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda _: sess.run(None, feeds)[0], range(8)))
    assert all(max_err(o, ref[0]) <= TOL["float32"] for o in outs)


def test_shared_key_value_and_constant_bias():
    """The fused node lists a value once even when two inputs use it; initializers arrive as inputs."""
    from onnx import numpy_helper
    model, feeds, _ = make_case("4d", "float32", dict(attn_bias="b11s"))
    node = model.graph.node[0]
    node.input[2] = "key"  # value := key
    bias = feeds.pop("attn_bias")
    model.graph.initializer.append(numpy_helper.from_array(bias, "attn_bias"))
    for name in ("value", "attn_bias"):
        model.graph.input.remove(next(i for i in model.graph.input if i.name == name))
    feeds.pop("value")
    ref = attention_reference(feeds["query"], feeds["key"], feeds["key"], attn_bias=bias)[0]
    assert max_err(ep_session(model).run(None, feeds)[0], ref) <= TOL["float32"]
    assert fastattn_onnx.node_placement(model, inputs=feeds, session_options=session_options()) == \
        {"fast_attention_0": EP}
