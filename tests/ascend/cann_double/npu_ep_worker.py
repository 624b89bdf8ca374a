"""Runs FastAttentionEP's NPU device over the CANN test double in a fresh process (the EP reads
FASTATTN_CANN_TEST_DOUBLE once, when fastattn_onnx registers it) and prints one JSON object of
observations; tests/ascend/test_npu_ep.py asserts on them.

    FASTATTN_CANN_TEST_DOUBLE=libcann_double.so python npu_ep_worker.py {main,devices}
"""
from __future__ import annotations

import ctypes
import zlib
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402
from ort_helpers import EP, build_model, max_err, random_inputs, run, session_options  # noqa: E402
from reference import attention_reference  # noqa: E402

import fastattn_onnx  # noqa: E402

DOUBLE = ctypes.CDLL(os.environ["FASTATTN_CANN_TEST_DOUBLE"])  # the same handle the EP opened
DOUBLE.cann_double_last_run.restype = ctypes.c_char_p


def operator_runs() -> int:
    return int(DOUBLE.cann_double_operator_runs())


def devices() -> list[dict]:
    return [{"type": d.device.type.name, "vendor": d.device.vendor, "vendor_id": d.device.vendor_id,
             "metadata": dict(d.ep_metadata)} for d in ort.get_ep_devices() if d.ep_name == EP]


def placement(model, feeds) -> dict:
    return fastattn_onnx.node_placement(model, inputs=_typed(feeds, model), session_options=session_options())


def _typed(feeds, model):
    """float32 feeds as the model's element type (float16 here; bfloat16 goes through run())."""
    elem = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    return {k: v.astype(np.float16) if v.dtype == np.float32 and elem[k] == TensorProto.FLOAT16 else v
            for k, v in feeds.items()}


def session(model, providers=None, **options):
    ep = (EP, options) if options else EP
    return ort.InferenceSession(model.SerializeToString(), session_options(),
                                providers=providers or [ep, "CPUExecutionProvider"])


# (name, build_model kwargs, extra reference kwargs builder)
def fast_attention_cases():
    rng = np.random.default_rng(7)
    left = np.ones((3, 9), bool)
    left[0, :4] = False  # batch 0: 4 left-padding keys, batch 1: 1, batch 2: none
    left[1, :1] = False
    empty = np.ones((2, 6), bool)
    empty[0, 4:] = False  # batch 0: right padding; batch 1: no key at all (rows of zeros)
    empty[1, :] = False
    decode_empty = np.zeros((2, 6), bool)
    decode_empty[0, :3] = True  # batch 0: 3 keys; batch 1: none (the runtime zeroes its output)
    holes = rng.random((2, 7)) > 0.35
    holes[:, 0] = True  # every causal row keeps a key... except where the holes say otherwise
    holes[1, 0] = False
    return [
        ("causal_past_present_4d", dict(layout="4d", batch=2, seq_q=5, seq_kv=5, seq_past=3, num_heads=4,
                                        kv_num_heads=4, head_dim=16, dtype="float16", causal=1, present=True), {}),
        ("gqa_3d", dict(layout="3d", batch=2, seq_q=6, seq_kv=6, num_heads=8, kv_num_heads=2, head_dim=32,
                        dtype="float16", set_num_heads_attr=True), {}),
        ("key_padding_left_causal", dict(layout="4d", batch=3, seq_q=9, seq_kv=9, num_heads=2, head_dim=16,
                                         dtype="float16", causal=1, key_padding_mask="bool"),
         {"key_padding_mask": left}),
        ("attn_bias_broadcast", dict(layout="4d", batch=2, seq_q=4, seq_kv=7, num_heads=4, head_dim=16,
                                     dtype="float16", attn_bias_shape=[1, 1, 4, 7]),
         {"attn_bias": rng.standard_normal((1, 1, 4, 7)).astype(np.float16).astype(np.float32)}),
        ("decode_gqa_past", dict(layout="4d", batch=2, seq_q=1, seq_kv=1, seq_past=11, num_heads=8, kv_num_heads=2,
                                 head_dim=64, dtype="float16", causal=1, present=True), {}),
        ("decode_empty_batch", dict(layout="3d", batch=2, seq_q=1, seq_kv=6, num_heads=4, kv_num_heads=2,
                                    head_dim=16, dtype="float16", key_padding_mask="bool", set_num_heads_attr=True),
         {"key_padding_mask": decode_empty}),
        ("empty_batch_right_padding", dict(layout="4d", batch=2, seq_q=3, seq_kv=6, num_heads=2, head_dim=16,
                                           dtype="float16", key_padding_mask="bool"), {"key_padding_mask": empty}),
        ("mask_with_holes_causal", dict(layout="3d", batch=2, seq_q=7, seq_kv=7, num_heads=2, head_dim=16,
                                        dtype="float16", causal=1, key_padding_mask="bool", set_num_heads_attr=True),
         {"key_padding_mask": holes}),
        ("past_3d_full_bias", dict(layout="3d", batch=2, seq_q=4, seq_kv=4, seq_past=5, num_heads=4, kv_num_heads=2,
                                   head_dim=16, dtype="float16", causal=1, present=True, set_num_heads_attr=True,
                                   attn_bias_shape=[2, 4, 4, 9]),
         {"attn_bias": rng.standard_normal((2, 4, 4, 9)).astype(np.float16).astype(np.float32)}),
        ("window_causal_bf16", dict(layout="4d", batch=1, seq_q=12, seq_kv=12, num_heads=2, head_dim=16,
                                    dtype="bfloat16", causal=1, window_size=4), {}),
    ]


def run_fast_attention(name, kw, extra):
    model = build_model(**kw)
    shapes = {i.name: tuple(d.dim_value for d in i.type.tensor_type.shape.dim) for i in model.graph.input}
    feeds = random_inputs({k: s for k, s in shapes.items() if k not in extra}, kw["dtype"],
                          seed=zlib.crc32(name.encode()) % 1000)
    feeds.update(extra)
    before, copies = operator_runs(), int(DOUBLE.cann_double_copy_runs())
    outs = run(session(model), feeds, kw["dtype"])
    ran = operator_runs() - before
    copies = int(DOUBLE.cann_double_copy_runs()) - copies
    heads = kw["num_heads"]
    want = attention_reference(feeds["query"], feeds["key"], feeds["value"], num_heads=heads,
                               kv_num_heads=kw.get("kv_num_heads") or heads, causal=bool(kw.get("causal")),
                               window_size=kw.get("window_size") or -1, attn_bias=feeds.get("attn_bias"),
                               key_padding_mask=feeds.get("key_padding_mask"), past_key=feeds.get("past_key"),
                               past_value=feeds.get("past_value"))
    errors = [max_err(outs[0], want[0])]
    if kw.get("present"):
        errors += [max_err(outs[1], want[1]), max_err(outs[2], want[2])]
    return {"errors": errors, "operator_runs": ran, "strided_copies": copies,
            "last_run": DOUBLE.cann_double_last_run().decode(),
            "placement": placement(model, feeds) if kw["dtype"] == "float16" else None, "dtype": kw["dtype"]}


def attention23_model(causal=True):
    b, h, s, d = 2, 4, 6, 16
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT16, [b, h, s, d]) for n in ("Q", "K", "V")]
    node = helper.make_node("Attention", ["Q", "K", "V"], ["Y"], name="attention_0", is_causal=int(causal))
    outputs = [helper.make_tensor_value_info("Y", TensorProto.FLOAT16, None)]
    graph = helper.make_graph([node], "attention", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    model.ir_version = 10
    return model


def main_scenario() -> dict:
    result = {"devices": devices(), "fast_attention": {}}
    for name, kw, extra in fast_attention_cases():
        result["fast_attention"][name] = run_fast_attention(name, kw, extra)

    # ONNX Attention (opset 23): placed on the NPU device, compared with ONNX Runtime's CPU kernel.
    model = attention23_model()
    feeds = {k: v.astype(np.float16) for k, v in random_inputs({n: (2, 4, 6, 16) for n in "QKV"}, "float16").items()}
    before = operator_runs()
    got = session(model).run(None, feeds)[0].astype(np.float32)
    ran = operator_runs() - before
    want = ort.InferenceSession(model.SerializeToString(), session_options(),
                                providers=["CPUExecutionProvider"]).run(None, feeds)[0].astype(np.float32)
    result["attention23"] = {"error": max_err(got, want), "operator_runs": ran, "placement": placement(model, feeds)}

    # softcap is declined by the plan: the node runs on ONNX Runtime's CPU EP (our custom op), right.
    kw = dict(layout="4d", batch=1, seq_q=5, seq_kv=5, num_heads=2, head_dim=16, dtype="float16", softcap=30.0)
    model = build_model(**kw)
    feeds = random_inputs({"query": (1, 2, 5, 16), "key": (1, 2, 5, 16), "value": (1, 2, 5, 16)}, "float16")
    before = operator_runs()
    out = run(session(model), feeds, "float16")[0]
    want = attention_reference(feeds["query"], feeds["key"], feeds["value"], softcap=30.0)[0]
    result["softcap"] = {"error": max_err(out, want), "operator_runs": operator_runs() - before,
                         "placement": placement(model, feeds)}

    # GroupQueryAttention: the operator's V1 has no in-place cache or rotary, so the NPU device
    # declines it and the node runs on ONNX Runtime's own CPU kernel, unchanged.
    from test_gqa_ep import Steps, gqa_model

    model = gqa_model(dtype="float16", rotary_half=8)
    gen = Steps(model, (5, 3), 0, dtype="float16")
    feeds, _, _ = gen.feeds(0)
    empty = np.zeros((2, gen.kv, 0, gen.d), np.float16)
    feeds.update(past_key=empty, past_value=empty)
    before = operator_runs()
    got = session(model).run(None, feeds)[0].astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(), session_options(),
                                providers=["CPUExecutionProvider"]).run(None, feeds)[0].astype(np.float32)
    result["gqa"] = {"error": max_err(got, want), "operator_runs": operator_runs() - before,
                     "placement": fastattn_onnx.node_placement(model, inputs=feeds, session_options=session_options())}

    # An operator failure: an error naming the node, then the same session runs again.
    kw = dict(layout="4d", batch=1, seq_q=4, seq_kv=4, num_heads=2, head_dim=16, dtype="float16", causal=1,
              node_name="failing_node")
    model = build_model(**kw)
    feeds = random_inputs({"query": (1, 2, 4, 16), "key": (1, 2, 4, 16), "value": (1, 2, 4, 16)}, "float16")
    sess = session(model)
    os.environ["FASTATTN_CANN_DOUBLE_FAIL"] = "aclnnFusedInferAttentionScore=561002"
    try:
        run(sess, feeds, "float16")
        result["failure"] = {"raised": False}
    except Exception as e:  # noqa: BLE001  (onnxruntime's Fail)
        result["failure"] = {"raised": True, "type": type(e).__name__, "message": str(e)}
    finally:
        del os.environ["FASTATTN_CANN_DOUBLE_FAIL"]
    out = run(sess, feeds, "float16")[0]
    want = attention_reference(feeds["query"], feeds["key"], feeds["value"], causal=True)[0]
    result["failure"]["error_after"] = max_err(out, want)

    # Concurrent runs of one session from several threads: each thread sets its device (the double
    # refuses calls from a thread without aclrtSetDevice) and gets the right answer.
    from concurrent.futures import ThreadPoolExecutor

    inputs = [random_inputs({"query": (1, 2, 4, 16), "key": (1, 2, 4, 16), "value": (1, 2, 4, 16)}, "float16",
                            seed=100 + i) for i in range(6)]
    before = operator_runs()
    with ThreadPoolExecutor(3) as pool:
        outs = list(pool.map(lambda f: run(sess, f, "float16")[0], inputs))
    errs = [max_err(o, attention_reference(f["query"], f["key"], f["value"], causal=True)[0])
            for o, f in zip(outs, inputs)]
    result["threads"] = {"max_error": max(errs), "operator_runs": operator_runs() - before}
    del sess
    import gc

    gc.collect()
    result["live_allocations_at_end"] = int(DOUBLE.cann_double_live_allocations())
    return result


def devices_scenario() -> dict:
    """Listing only, plus one run on the last NPU (device_id) or on the CPU device when there is none."""
    listed = devices()
    npus = [d for d in listed if d["metadata"].get("fastattn.kernel") == "npu"]
    kw = dict(layout="4d", batch=1, seq_q=3, seq_kv=3, num_heads=2, head_dim=16, dtype="float16", causal=1)
    model = build_model(**kw)
    feeds = random_inputs({"query": (1, 2, 3, 16), "key": (1, 2, 3, 16), "value": (1, 2, 3, 16)}, "float16")
    options = {"device_id": str(len(npus) - 1)} if npus else {}
    before = operator_runs()
    out = run(session(model, **options), feeds, "float16")[0]
    want = attention_reference(feeds["query"], feeds["key"], feeds["value"], causal=True)[0]
    return {"devices": listed, "error": max_err(out, want), "operator_runs": operator_runs() - before,
            "last_run": DOUBLE.cann_double_last_run().decode()}


if __name__ == "__main__":
    scenario = sys.argv[1]
    out = main_scenario() if scenario == "main" else devices_scenario()
    print("RESULT " + json.dumps(out))
