"""com.microsoft::GroupQueryAttention on FastAttentionEP's GPU device, against onnxruntime's own CPU
kernel as the oracle (float16): the cases of tests/test_gqa_ep.py through a prompt and generation
steps, with the KV cache fed back both ways (present = past + new; and genai's shared buffer, here a
CUDA OrtValue bound as past and present and updated in place), plus the cache's rows past the valid
lengths filled with NaN (they must never reach a result), and a long decode over a past of 1000+
rows (split-KV with per-batch lengths, the GQA rows packed into one tile).

The Python session's silent CPU fallback is off, so an EP error fails the test.
"""
from __future__ import annotations

import copy

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from ort_helpers import EP, bf16_round, gpu_ep_marks, to_bf16_bits
from test_gqa_ep import CLAIMED, NODE, Steps, gqa_model, shared_buffer_steps

import fastattn_onnx

# The GPU multiplies float16 P (rounded) by V and rounds K after rotary once, as onnxruntime does;
# both stay within a few float16 ulps of onnxruntime's CPU kernel on unit-variance inputs.
RTOL = ATOL = 4e-3


pytestmark = gpu_ep_marks()


def _so():
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return so


def _sessions(model):
    data = model.SerializeToString()
    gpu = ort.InferenceSession(data, _so(), providers=[EP, "CPUExecutionProvider"])
    gpu.disable_fallback()
    cpu = ort.InferenceSession(data, _so(), providers=["CPUExecutionProvider"])
    return gpu, cpu


def _close(got, want, what):
    np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want, np.float64), rtol=RTOL, atol=ATOL,
                               err_msg=what)


def _compare(got, want, totals, s, step):
    """Only the rows onnxruntime defines (a right-padded prompt's rows past a batch's length are not)."""
    assert got[0].ndim == 3 and got[1].ndim == 4, "output [B, S, hidden] and present [B, KV, C, D] out of order"
    for bi, t in enumerate(totals):
        rows = min(s, t) if step == 0 else s
        _close(got[0][bi, :rows], want[0][bi, :rows], f"output, batch {bi}, step {step}")
        _close(got[1][bi, :, :t], want[1][bi, :, :t], f"present_key, batch {bi}, step {step}")
        _close(got[2][bi, :, :t], want[2][bi, :, :t], f"present_value, batch {bi}, step {step}")


def _placed_on_gpu(model, feeds):
    placement = fastattn_onnx.node_placement(model, inputs=feeds, session_options=_so())
    assert placement == {NODE: EP}, placement


def run_separate(model, lengths=(5, 3), steps=3, **kw):
    gpu, cpu = _sessions(model)
    gen = Steps(model, lengths, steps, dtype="float16", **kw)
    empty = np.zeros((len(lengths), gen.kv, 0, gen.d), np.float16)
    past_gpu = past_cpu = {"past_key": empty, "past_value": empty}
    for step in range(steps + 1):
        f, totals, s = gen.feeds(step)
        if step == 0:
            _placed_on_gpu(model, {**f, **past_gpu})
        got = gpu.run(None, {**f, **past_gpu})
        want = cpu.run(None, {**f, **past_cpu})
        _compare(got, want, totals, s, step)
        past_gpu = {"past_key": got[1], "past_value": got[2]}
        past_cpu = {"past_key": want[1], "past_value": want[2]}


def run_shared(model, lengths=(5, 3), steps=3, max_len=12, fill=np.nan, **kw):
    """One CUDA OrtValue per cache, bound as past and present: updated in place on the GPU. Its rows
    start as `fill` (genai does not clear them); the oracle's CPU cache starts as zeros."""
    gen = Steps(model, lengths, steps, dtype="float16", **kw)
    gpu, cpu = _sessions(model)
    got = shared_buffer_steps(gpu, gen, max_len, "float16", device="cuda", fill=fill)
    want = shared_buffer_steps(cpu, gen, max_len, "float16")
    for step, (g, w) in enumerate(zip(got, want)):
        _compare(g[:3], w[:3], g[3], g[4], step)


@pytest.mark.parametrize("name,model_kw,feed_kw", CLAIMED, ids=[c[0] for c in CLAIMED])
def test_gpu_gqa_matches_ort_cpu_separate_cache(name, model_kw, feed_kw):
    run_separate(gqa_model(dtype="float16", **model_kw), **feed_kw)


@pytest.mark.parametrize("name,model_kw,feed_kw", CLAIMED, ids=[c[0] for c in CLAIMED])
def test_gpu_gqa_matches_ort_cpu_shared_cuda_buffer_with_nan_rows(name, model_kw, feed_kw):
    run_shared(gqa_model(dtype="float16", **model_kw), **feed_kw)


@pytest.mark.parametrize("rotary", [0, 8])
def test_gpu_gqa_multi_token_steps(rotary):
    """Chunked prefill / speculative steps: S > 1 new tokens over a past (batch 1)."""
    model = gqa_model(b=1, rotary_half=rotary, dtype="float16", attrs=dict(local_window_size=4))
    run_separate(model, lengths=(3,), steps=3, chunk=3)
    run_shared(model, lengths=(3,), steps=3, chunk=3, max_len=16)


@pytest.mark.parametrize("sink", ["none", "head_sink", "smooth_softmax"])
def test_gpu_gqa_long_prompt_and_decode_over_a_long_past(sink):
    """Llama-like heads (32 query heads over 8 KV heads, D = 128, rotary on 64 dims), a right-padded
    batch of prompts of 700 and 1100 tokens in a 2048-row shared buffer, then decode steps: tiles
    past the lengths, split-KV with per-batch ends and packed GQA rows (the sinks then applied by
    the split merge)."""
    kw = dict(head_sink=True) if sink == "head_sink" else {}
    attrs = dict(smooth_softmax=1) if sink == "smooth_softmax" else None
    model = gqa_model(n=32, kv=8, d=128, rotary_half=32, max_pos=2048, dtype="float16", attrs=attrs, **kw)
    run_shared(model, lengths=(700, 1100), steps=3, max_len=2048, n=32, kv=8, d=128, **kw)


def test_gpu_gqa_large_garbage_in_the_cache_does_not_leak():
    """Rows past the valid lengths holding huge finite values and infinities change nothing."""
    model = gqa_model(dtype="float16", rotary_half=8)
    run_shared(model, fill=np.inf)
    run_shared(model, fill=60000.0)


def test_gpu_gqa_float32_stays_with_onnxruntime(capfd):
    """float32 GroupQueryAttention is declined on the GPU (onnxruntime's CUDA kernel is 16-bit too):
    the node runs on the CPU EP, and the reason is logged."""
    model = gqa_model(dtype="float32")
    gen = Steps(model, (5, 3), 0)
    f, _, _ = gen.feeds(0)
    empty = np.zeros((2, gen.kv, 0, gen.d), np.float32)
    f.update(past_key=empty, past_value=empty)
    placement = fastattn_onnx.node_placement(model, inputs=f, session_options=_so())
    assert placement == {NODE: "CPUExecutionProvider"}, placement
    capfd.readouterr()
    ort.set_default_logger_severity(1)
    try:
        so = _so()
        so.log_severity_level = 1
        ort.InferenceSession(model.SerializeToString(), so, providers=[EP, "CPUExecutionProvider"])
    finally:
        ort.set_default_logger_severity(2)
    err = capfd.readouterr()
    assert "float16 or bfloat16 only" in err.out + err.err


class _RoundedSteps(Steps):
    """Steps whose float inputs are rounded to bfloat16 (kept as float32 for the oracle)."""

    def feeds(self, step):
        f, totals, s = super().feeds(step)
        return {k: bf16_round(v) if v.dtype == np.float32 else v for k, v in f.items()}, totals, s


def _as_bfloat16(model):
    """The float32 model with bfloat16 inputs, outputs and cos/sin caches."""
    m = copy.deepcopy(model)
    for vi in list(m.graph.input) + list(m.graph.output):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = TensorProto.BFLOAT16
    for t in m.graph.initializer:
        arr = numpy_helper.to_array(t)
        t.CopyFrom(helper.make_tensor(t.name, TensorProto.BFLOAT16, arr.shape, to_bf16_bits(arr).tobytes(), raw=True))
    return m


def _rounded_caches(model):
    """The float32 model with its cos/sin caches rounded to bfloat16 (what the bfloat16 model holds)."""
    m = copy.deepcopy(model)
    for t in m.graph.initializer:
        t.CopyFrom(numpy_helper.from_array(bf16_round(numpy_helper.to_array(t)), t.name))
    return m


def test_gpu_gqa_bfloat16_against_ort_float32_on_the_same_values():
    """bfloat16 has no onnxruntime CPU kernel: the GPU's bfloat16 node against onnxruntime's float32
    CPU kernel fed the same (bfloat16-representable) values, through a right-padded prompt and three
    decode steps with rotary on half the head, in a shared cache of torch bfloat16 CUDA tensors
    (bound by pointer, unused rows NaN). Tolerance: bfloat16's P and output rounding (2^-8)."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 8:
        pytest.skip("bfloat16 needs an sm_80 or newer GPU visible to torch")
    b, n, kv, d, max_len, lengths = 2, 8, 2, 64, 64, (20, 13)
    model32 = _rounded_caches(gqa_model(b=b, n=n, kv=kv, d=d, rotary_half=16, max_pos=64))
    gen = _RoundedSteps(model32, lengths, 3, n=n, kv=kv, d=d)
    cpu = ort.InferenceSession(model32.SerializeToString(), _so(), providers=["CPUExecutionProvider"])
    want = shared_buffer_steps(cpu, gen, max_len, "float32")
    sess = ort.InferenceSession(_as_bfloat16(model32).SerializeToString(), _so(), providers=[EP, "CPUExecutionProvider"])
    sess.disable_fallback()
    bf16, elem = torch.bfloat16, TensorProto.BFLOAT16
    cache = {k: torch.full((b, kv, max_len, d), float("nan"), dtype=bf16, device="cuda") for k in ("key", "value")}
    gen.rng = np.random.default_rng(0)  # the oracle's feeds again
    for step in range(gen.steps + 1):
        f, totals, s = gen.feeds(step)
        binding = sess.io_binding()
        out = torch.empty((b, s, n * d), dtype=bf16, device="cuda")
        binding.bind_output("output", "cuda", 0, elem, list(out.shape), out.data_ptr())
        keep = []
        for name, v in f.items():
            if v.dtype != np.float32:
                binding.bind_cpu_input(name, v)
                continue
            t = torch.from_numpy(v).to(device="cuda", dtype=bf16)  # exact: already bfloat16 values
            keep.append(t)
            binding.bind_input(name, "cuda", 0, elem, list(t.shape), t.data_ptr())
        for k in ("key", "value"):
            c = cache[k]
            binding.bind_input(f"past_{k}", "cuda", 0, elem, list(c.shape), c.data_ptr())
            binding.bind_output(f"present_{k}", "cuda", 0, elem, list(c.shape), c.data_ptr())
        torch.cuda.synchronize()  # torch wrote the inputs on its own stream
        sess.run_with_iobinding(binding)
        got = [x.float().cpu().numpy() for x in (out, cache["key"], cache["value"])]
        for bi, t in enumerate(totals):
            rows = min(s, t) if step == 0 else s
            for g, w, what in ((got[0][bi, :rows], want[step][0][bi, :rows], "output"),
                               (got[1][bi, :, :t], want[step][1][bi, :, :t], "present_key"),
                               (got[2][bi, :, :t], want[step][2][bi, :, :t], "present_value")):
                np.testing.assert_allclose(g, w, rtol=3e-2, atol=3e-2, err_msg=f"{what}, batch {bi}, step {step}")
