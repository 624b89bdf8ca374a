"""com.microsoft::GroupQueryAttention nodes (as onnxruntime-genai's model builder emits them):
FastAttentionEP takes those it maps exactly and matches ONNX Runtime's own CPU kernel on them, through
a prompt and generation steps with the KV cache fed back (shared past/present buffer via IOBinding,
and present = past + new); the rest stay on the CPU EP with the reason in the verbose log."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from ort_helpers import EP

import fastattn_onnx

NODE = "gqa_0"
ELEM = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}
NP = {"float32": np.float32, "float16": np.float16}
RTOL = {"float32": 1e-5, "float16": 2e-3}
ATOL = {"float32": 2e-5, "float16": 2e-3}

INPUTS = ["query", "key", "value", "past_key", "past_value", "seqlens_k", "total_sequence_length", "cos_cache",
          "sin_cache", "position_ids", "attention_bias", "head_sink", "k_scale", "v_scale", "q_norm_weight",
          "k_norm_weight", "query_seqlens"]


def gqa_model(*, b=2, n=4, kv=2, d=16, packed=False, past=True, rotary_half=0, max_pos=32, position_ids=False,
              bias_heads=None, head_sink=False, dtype="float32", attrs=None, extra_inputs=None, qk_output=False,
              past_dtype=None):
    """One GroupQueryAttention node with symbolic S (new tokens), P (past rows) and T (total)."""
    elem = ELEM[dtype]
    a = dict(num_heads=n, kv_num_heads=kv)
    a.update(attrs or {})
    vis, inits = [], []
    names = [""] * len(INPUTS)

    def add(name, type_, shape):
        vis.append(helper.make_tensor_value_info(name, type_, shape))
        names[INPUTS.index(name)] = name

    add("query", elem, [b, "S", (n + 2 * kv) * d if packed else n * d])
    if not packed:
        add("key", elem, [b, "S", kv * d])
        add("value", elem, [b, "S", kv * d])
    if past:
        add("past_key", past_dtype or elem, [b, kv, "P", d])
        add("past_value", past_dtype or elem, [b, kv, "P", d])
    add("seqlens_k", TensorProto.INT32, [b])
    add("total_sequence_length", TensorProto.INT32, [])
    if rotary_half:
        a["do_rotary"] = 1
        inv = 1.0 / (10000 ** (np.arange(rotary_half) / rotary_half))
        ang = np.arange(max_pos)[:, None] * inv[None, :]
        for nm, arr in (("cos_cache", np.cos(ang)), ("sin_cache", np.sin(ang))):
            inits.append(numpy_helper.from_array(arr.astype(NP[dtype]), nm))
            names[INPUTS.index(nm)] = nm
    if position_ids:
        add("position_ids", TensorProto.INT64, [b, "S"])
    if bias_heads is not None:
        add("attention_bias", elem, [b, bias_heads, "S", "T"])
    if head_sink:
        add("head_sink", elem, [n])
    for name, type_, shape in extra_inputs or []:
        add(name, type_, shape)
    while names[-1] == "":
        names.pop()
    outs = ["output", "present_key", "present_value"] + (["output_qk"] if qk_output else [])
    node = helper.make_node("GroupQueryAttention", names, outs, name=NODE, domain="com.microsoft", **a)
    cache_elem = past_dtype if past_dtype else elem
    out_vis = [helper.make_tensor_value_info(o, cache_elem if o.startswith("present") else elem, None) for o in outs]
    graph = helper.make_graph([node], "gqa", vis, out_vis, initializer=inits)
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10
    return model


def _so(level=3):
    so = ort.SessionOptions()
    so.log_severity_level = level
    so.intra_op_num_threads = 2
    return so


def sessions(model):
    data = model.SerializeToString()
    return (ort.InferenceSession(data, _so(), providers=[EP, "CPUExecutionProvider"]),
            ort.InferenceSession(data, _so(), providers=["CPUExecutionProvider"]))


class Steps:
    """Feeds of a prompt (right-padded batch) then generation steps of one token each."""

    def __init__(self, model, lengths, steps, seed=0, n=4, kv=2, d=16, packed=False, dtype="float32",
                 position_offset=0, bias_heads=None, head_sink=False, chunk=1):
        self.rng = np.random.default_rng(seed)
        self.lengths, self.steps, self.n, self.kv, self.d = list(lengths), steps, n, kv, d
        self.packed, self.dtype, self.offset = packed, NP[dtype], position_offset
        self.bias_heads, self.head_sink, self.chunk = bias_heads, head_sink, chunk
        self.inputs = {i.name for i in model.graph.input}
        self.sink = self.rng.standard_normal(n).astype(self.dtype)

    def feeds(self, step):
        b = len(self.lengths)
        if step == 0:
            s = max(self.lengths)
            totals = list(self.lengths)
        else:  # `chunk` new tokens a step (ONNX Runtime takes more than one only for batch 1)
            s = self.chunk
            totals = [n + step * s for n in self.lengths]
        total = max(totals) if step else s
        f = {}
        hid = (self.n + 2 * self.kv) * self.d if self.packed else self.n * self.d
        f["query"] = self.rng.standard_normal((b, s, hid)).astype(self.dtype)
        if not self.packed:
            f["key"] = self.rng.standard_normal((b, s, self.kv * self.d)).astype(self.dtype)
            f["value"] = self.rng.standard_normal((b, s, self.kv * self.d)).astype(self.dtype)
        f["seqlens_k"] = np.array([t - 1 for t in totals], np.int32)
        f["total_sequence_length"] = np.array(total, np.int32)
        if "position_ids" in self.inputs:
            if step == 0:
                pos = np.tile(np.arange(s), (b, 1)) + self.offset
            else:
                pos = np.array([[t - s + i + self.offset for i in range(s)] for t in totals])
            f["position_ids"] = pos.astype(np.int64)
        if "attention_bias" in self.inputs:
            f["attention_bias"] = self.rng.standard_normal((b, self.bias_heads, s, total)).astype(self.dtype)
        if "head_sink" in self.inputs:
            f["head_sink"] = self.sink
        return f, totals, s


def check_close(got, want, dtype, what):
    np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want, np.float64), rtol=RTOL[dtype],
                               atol=ATOL[dtype], err_msg=what)


def compare_outputs(got, want, totals, s, step, dtype):
    """Only rows ONNX Runtime defines: a right-padded prompt's rows past a batch's length are not."""
    out_g, pk_g, pv_g = got[:3]
    out_w, pk_w, pv_w = want[:3]
    assert out_g.shape == out_w.shape and pk_g.shape == pk_w.shape
    assert out_g.ndim == 3 and pk_g.ndim == 4, "output [B, S, hidden] and present [B, KV, C, D] out of order"
    for bi, t in enumerate(totals):
        rows = min(s, t) if step == 0 else s
        check_close(out_g[bi, :rows], out_w[bi, :rows], dtype, f"output, batch {bi}, step {step}")
        check_close(pk_g[bi, :, :t], pk_w[bi, :, :t], dtype, f"present_key, batch {bi}, step {step}")
        check_close(pv_g[bi, :, :t], pv_w[bi, :, :t], dtype, f"present_value, batch {bi}, step {step}")


def run_separate(model, lengths=(5, 3), steps=3, dtype="float32", **kw):
    """present = past + new: each session feeds its own present back as the next past."""
    ep, cpu = sessions(model)
    gen = Steps(model, lengths, steps, dtype=dtype, **kw)
    kv, d = gen.kv, gen.d
    past = {"past_key": np.zeros((len(lengths), kv, 0, d), NP[dtype]),
            "past_value": np.zeros((len(lengths), kv, 0, d), NP[dtype])}
    past_ep, past_cpu = dict(past), dict(past)
    for step in range(steps + 1):
        f, totals, s = gen.feeds(step)
        has_past = "past_key" in gen.inputs
        got = ep.run(None, {**f, **(past_ep if has_past else {})})
        want = cpu.run(None, {**f, **(past_cpu if has_past else {})})
        compare_outputs(got, want, totals, s, step, dtype)
        past_ep = {"past_key": got[1], "past_value": got[2]}
        past_cpu = {"past_key": want[1], "past_value": want[2]}
        if not has_past:
            break


def shared_buffer_steps(sess, gen, max_len, dtype, device="cpu", fill=0.0):
    """genai's past_present_share_buffer: one OrtValue per cache (on `device`, its rows starting as
    `fill`) bound as both past input and present output, through the prompt and gen.steps steps.
    Returns (output, present_key, present_value, totals, s) per step."""
    b = len(gen.lengths)
    gen.rng = np.random.default_rng(0)  # the same feeds for every session
    start = np.full((b, gen.kv, max_len, gen.d), fill, NP[dtype])
    # A CPU OrtValue wraps the array's memory: one copy each, or key and value would share it.
    cache = {k: ort.OrtValue.ortvalue_from_numpy(start.copy(), device, 0) for k in ("key", "value")}
    per_step = []
    for step in range(gen.steps + 1):
        f, totals, s = gen.feeds(step)
        binding = sess.io_binding()
        binding.bind_output("output")  # first: copy_outputs_to_cpu() lists outputs in binding order
        for k, v in f.items():
            binding.bind_cpu_input(k, v)
        for k in ("key", "value"):
            binding.bind_ortvalue_input(f"past_{k}", cache[k])
            binding.bind_ortvalue_output(f"present_{k}", cache[k])
        sess.run_with_iobinding(binding)
        outs = binding.copy_outputs_to_cpu()
        per_step.append((outs[0], cache["key"].numpy().copy(), cache["value"].numpy().copy(), totals, s))
    return per_step


def run_shared(model, lengths=(5, 3), steps=3, max_len=12, dtype="float32", **kw):
    """The shared buffer on FastAttentionEP and on the CPU EP, step by step."""
    gen = Steps(model, lengths, steps, dtype=dtype, **kw)
    results = [shared_buffer_steps(ort.InferenceSession(model.SerializeToString(), _so(), providers=providers), gen,
                                   max_len, dtype)
               for providers in ([EP, "CPUExecutionProvider"], ["CPUExecutionProvider"])]
    for step, (g, w) in enumerate(zip(*results)):
        compare_outputs(g[:3], w[:3], g[3], g[4], step, dtype)


def placement(model, lengths=(5, 3), dtype="float32", **kw):
    gen = Steps(model, lengths, 0, dtype=dtype, **kw)
    f, _, _ = gen.feeds(0)
    if "past_key" in gen.inputs:
        f.update(past_key=np.zeros((len(lengths), gen.kv, 0, gen.d), NP[dtype]),
                 past_value=np.zeros((len(lengths), gen.kv, 0, gen.d), NP[dtype]))
    return fastattn_onnx.node_placement(model, inputs=f, session_options=_so())


# (id, model options, feed options)
CLAIMED = [
    ("separate", dict(), dict()),
    ("packed", dict(packed=True), dict(packed=True)),
    ("gqa_4to1", dict(n=8, kv=2), dict(n=8, kv=2)),
    ("mqa", dict(n=4, kv=1), dict(n=4, kv=1)),
    # ONNX Runtime wants cos_cache.shape[1] a multiple of 8: rotary dim 16 < head size 32.
    ("rotary_half_partial", dict(d=32, rotary_half=8), dict(d=32)),
    ("rotary_interleaved_partial", dict(d=32, rotary_half=8, attrs=dict(rotary_interleaved=1)), dict(d=32)),
    ("rotary_full_packed", dict(rotary_half=8, packed=True), dict(packed=True)),
    ("rotary_position_ids", dict(rotary_half=8, position_ids=True), dict(position_offset=3)),
    ("local_window", dict(attrs=dict(local_window_size=3)), dict()),
    ("softcap_scale", dict(attrs=dict(softcap=2.0, scale=0.3)), dict()),
    ("attention_bias", dict(bias_heads=4), dict(bias_heads=4)),
    ("attention_bias_head_broadcast", dict(bias_heads=1), dict(bias_heads=1)),
    ("smooth_softmax", dict(attrs=dict(smooth_softmax=1)), dict()),
    ("head_sink", dict(head_sink=True), dict(head_sink=True)),
    ("window_rotary_softcap_packed_mqa", dict(n=4, kv=1, packed=True, rotary_half=8,
                                               attrs=dict(local_window_size=2, softcap=5.0)),
     dict(n=4, kv=1, packed=True)),
]


@pytest.mark.parametrize("name,model_kw,feed_kw", CLAIMED, ids=[c[0] for c in CLAIMED])
def test_claimed_gqa_matches_ort_cpu_separate_cache(name, model_kw, feed_kw):
    model = gqa_model(**model_kw)
    assert placement(model, **feed_kw) == {NODE: EP}
    run_separate(model, **feed_kw)


@pytest.mark.parametrize("name,model_kw,feed_kw", CLAIMED, ids=[c[0] for c in CLAIMED])
def test_claimed_gqa_matches_ort_cpu_shared_buffer(name, model_kw, feed_kw):
    model = gqa_model(**model_kw)
    assert placement(model, **feed_kw) == {NODE: EP}
    run_shared(model, **feed_kw)


def test_batch_one_prompt_and_decode():
    model = gqa_model(b=1, rotary_half=8)
    run_separate(model, lengths=(6,), steps=4)
    run_shared(model, lengths=(6,), steps=4, max_len=16)


@pytest.mark.parametrize("rotary", [0, 8])
def test_multi_token_steps_after_the_prompt(rotary):
    """Chunked prefill / speculative steps: S > 1 tokens after the first prompt (batch 1)."""
    model = gqa_model(b=1, rotary_half=rotary, attrs=dict(local_window_size=4))
    run_separate(model, lengths=(3,), steps=3, chunk=3)
    run_shared(model, lengths=(3,), steps=3, chunk=3, max_len=16)


def test_equal_lengths_batch():
    run_separate(gqa_model(), lengths=(4, 4), steps=2)


def test_no_past_prompt_only():
    model = gqa_model(past=False)
    assert placement(model) == {NODE: EP}
    run_separate(model, steps=0)


def test_float16_separate_and_shared():
    model = gqa_model(dtype="float16", rotary_half=8)
    assert placement(model, dtype="float16") == {NODE: EP}
    run_separate(model, dtype="float16")
    run_shared(model, dtype="float16")


def _declined(model, capfd):
    """Creates an EP session with verbose logging and returns what was logged about the node."""
    capfd.readouterr()
    # The EP logs through ONNX Runtime's default logger: INFO for this session only.
    ort.set_default_logger_severity(1)
    try:
        ort.InferenceSession(model.SerializeToString(), _so(level=1), providers=[EP, "CPUExecutionProvider"])
    except Exception:  # noqa: BLE001  (ONNX Runtime's own kernel may refuse such a node; the log says ours)
        pass
    finally:
        ort.set_default_logger_severity(2)  # ONNX Runtime's default (warnings)
    err = capfd.readouterr()
    text = err.out + err.err
    lines = [ln for ln in text.splitlines() if f"GroupQueryAttention node '{NODE}' left to other EPs" in ln]
    return "\n".join(lines)


DECLINED = [
    ("kv_scales", dict(extra_inputs=[("k_scale", TensorProto.FLOAT, [1]), ("v_scale", TensorProto.FLOAT, [1])]),
     "k_scale / v_scale are given"),
    ("kv_cache_int8", dict(past_dtype=TensorProto.INT8, attrs=dict(k_quant_type="PER_TENSOR",
                                                                     v_quant_type="PER_TENSOR",
                                                                     kv_cache_bit_width=8)),
     "quantized KV cache"),
    ("sliding_window_cache", dict(attrs=dict(sliding_window_cache=1, local_window_size=4)), "sliding_window_cache"),
    ("qk_norm", dict(extra_inputs=[("q_norm_weight", TensorProto.FLOAT, [16]),
                                   ("k_norm_weight", TensorProto.FLOAT, [16])]), "q_norm_weight / k_norm_weight"),
    ("query_seqlens", dict(extra_inputs=[("query_seqlens", TensorProto.INT32, [2])]), "query_seqlens is given"),
    ("qk_output", dict(attrs=dict(qk_output=1), qk_output=True), "qk_output != 0"),
    ("non_causal", dict(attrs=dict(causal=0)), "causal != 1"),
    ("head_sink_and_smooth_softmax", dict(head_sink=True, attrs=dict(smooth_softmax=1)),
     "head_sink together with smooth_softmax"),
    ("head_size_not_multiple_of_8", dict(d=12), "head size is not a multiple of 8"),
    ("rotary_head_size_not_multiple_of_16", dict(d=24, rotary_half=8), "not a multiple of 16"),
]


def _schema_inputs() -> set[str]:
    """The inputs the installed onnxruntime's GroupQueryAttention schema has (they grow by version)."""
    from onnxruntime.capi import _pybind_state as C

    return {i.name for s in C.get_all_operator_schema()
            if s.name == "GroupQueryAttention" and s.domain == "com.microsoft" for i in s.inputs}


@pytest.mark.parametrize("name,model_kw,reason", DECLINED, ids=[c[0] for c in DECLINED])
def test_declined_gqa_logs_the_reason(name, model_kw, reason, capfd):
    missing = [n for n, *_ in model_kw.get("extra_inputs", []) if n not in _schema_inputs()]
    if missing:
        pytest.skip(f"onnxruntime {ort.__version__}'s GroupQueryAttention has no input {missing[0]}")
    logged = _declined(gqa_model(**model_kw), capfd)
    assert reason in logged, logged or "nothing logged about the node"


def test_declined_gqa_runs_on_the_cpu_ep():
    model = gqa_model(attrs=dict(causal=0))
    assert placement(model) == {NODE: "CPUExecutionProvider"}


def test_placement_knows_gqa_nodes():
    """node_placement can name a claimed GroupQueryAttention node (it hides behind a fused name)."""
    from fastattn_onnx.placement import _EP_OP_TYPES
    assert ("com.microsoft", "GroupQueryAttention") in _EP_OP_TYPES
