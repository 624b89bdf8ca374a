"""FastAttentionEP on an NVIDIA GPU: its device, memory, copies, stream and Memcpy kernels.

Each case runs a float16 FastAttention model with providers=[FastAttentionEP, CPU], the Python
session's silent CPU fallback off (an EP error must fail the test, not quietly run on the CPU),
compares with the float64 reference and checks where the nodes ran. The tolerance is loose on
purpose: these tests are about the plumbing (stale, zero or host-read data is off by O(1)); the
kernel's numerics have their own tests.
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from ort_helpers import EP, build_model, gpu_ep_marks, max_err
from reference import attention_reference

import fastattn_onnx
from fastattn_onnx import _ort
from fastattn_onnx.tools import doctor

TOL = 1e-2
B, H, KVH, S, D = 2, 8, 2, 128, 64


pytestmark = gpu_ep_marks()


def _model(**kw):
    return build_model(layout="3d", batch=B, seq_q=S, seq_kv=S, num_heads=H, kv_num_heads=KVH, head_dim=D,
                       dtype="float16", causal=1, **kw)


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    shapes = {"query": (B, S, H * D), "key": (B, S, KVH * D), "value": (B, S, KVH * D)}
    return {n: rng.standard_normal(s).astype(np.float16) for n, s in shapes.items()}


def _reference(feeds, q=None):
    return attention_reference(feeds["query"] if q is None else q, feeds["key"], feeds["value"], num_heads=H,
                               kv_num_heads=KVH, causal=True)[0]


def _session(model, provider_options=None):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    providers = [(EP, provider_options) if provider_options else EP, "CPUExecutionProvider"]
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=providers)
    sess.disable_fallback()
    assert sess.get_providers()[0] == EP, "the session fell back to the CPU EP when it was created"
    return sess


def _placement(model, feeds, provider_options=None):
    providers = [(EP, provider_options) if provider_options else EP, "CPUExecutionProvider"]
    return fastattn_onnx.node_placement(model, providers=providers, inputs=feeds)


def test_ep_lists_the_gpu_first_with_its_ordinal_and_memory():
    devices = [d for d in ort.get_ep_devices() if d.ep_name == EP]
    first = dict(devices[0].ep_metadata)
    assert devices[0].device.type == ort.OrtHardwareDeviceType.GPU
    assert first["fastattn.kernel"] == "cuda" and first["fastattn.ordinal"] == "0"
    assert devices[0].ep_options.get("device_id") == "0"
    assert devices[-1].device.type == ort.OrtHardwareDeviceType.CPU
    assert "device: GPU cuda:0" in "\n".join(doctor.report())


def test_plain_run_with_numpy_inputs():
    model, feeds = _model(), _inputs()
    out = _session(model).run(None, feeds)[0]
    assert max_err(out, _reference(feeds)) <= TOL
    assert _placement(model, feeds) == {"fast_attention_0": EP}


def test_io_binding_with_ortvalues_on_the_gpu():
    model, feeds = _model(), _inputs(1)
    sess = _session(model)
    binding = sess.io_binding()
    values = {n: ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0) for n, x in feeds.items()}
    for n, v in values.items():
        assert v.device_name() == "cuda"
        binding.bind_ortvalue_input(n, v)
    binding.bind_output("output", "cuda", 0)
    for _ in range(2):  # the second run reuses the bound device memory
        sess.run_with_iobinding(binding)
        result = binding.get_outputs()[0]
        assert result.device_name() == "cuda"
        assert max_err(result.numpy(), _reference(feeds)) <= TOL


@pytest.mark.parametrize("wait", ["torch.cuda.synchronize", "binding.synchronize_inputs"])
def test_torch_cuda_tensors_bound_by_pointer(wait):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    model, feeds = _model(), _inputs(2)
    sess = _session(model)
    # Written by torch kernels on torch's stream: the ordering rule says wait for them before the run.
    tensors = {n: torch.from_numpy(x).cuda() * 1 for n, x in feeds.items()}
    out = torch.full((B, S, H * D), float("nan"), dtype=torch.float16, device="cuda")
    binding = sess.io_binding()
    for n, t in tensors.items():
        binding.bind_input(n, "cuda", 0, np.float16, list(t.shape), t.data_ptr())
    binding.bind_output("output", "cuda", 0, np.float16, list(out.shape), out.data_ptr())
    if wait == "torch.cuda.synchronize":
        torch.cuda.synchronize()
    else:
        binding.synchronize_inputs()  # OrtEp::Sync: the whole device, torch's stream included
    sess.run_with_iobinding(binding)  # ORT waits for the EP's stream at the end of the run
    assert max_err(out.cpu().numpy(), _reference(feeds)) <= TOL


def test_cpu_nodes_around_the_gpu_node():
    """Abs, Cast (CPU) -> FastAttention (GPU) -> Cast, Neg (CPU): the EP's own Memcpy kernels hand
    the node device memory (ORT's fallback copies would hand it host memory)."""
    model = _model()
    g = model.graph
    g.node[0].input[0] = "query16"
    g.node[0].output[0] = "attention"
    g.node.insert(0, helper.make_node("Abs", ["query"], ["query_abs"], name="abs"))
    g.node.insert(1, helper.make_node("Cast", ["query_abs"], ["query16"], name="cast_in", to=TensorProto.FLOAT16))
    g.node.extend([helper.make_node("Cast", ["attention"], ["attention32"], name="cast_out", to=TensorProto.FLOAT),
                   helper.make_node("Neg", ["attention32"], ["output"], name="neg")])
    g.input[0].type.tensor_type.elem_type = TensorProto.FLOAT
    g.output[0].type.tensor_type.elem_type = TensorProto.FLOAT
    feeds = _inputs(3)
    feeds["query"] = feeds["query"].astype(np.float32)
    out = _session(model).run(None, feeds)[0]
    assert max_err(out, -_reference(feeds, q=np.abs(feeds["query"]))) <= TOL
    cpu = "CPUExecutionProvider"
    assert _placement(model, feeds) == {"abs": cpu, "cast_in": cpu, "fast_attention_0": EP, "cast_out": cpu,
                                        "neg": cpu}


def test_present_outputs_come_back():
    model = build_model(layout="4d", batch=1, seq_q=16, seq_kv=16, seq_past=48, num_heads=4, kv_num_heads=4,
                        head_dim=D, dtype="float16", causal=1, present=True)
    rng = np.random.default_rng(4)
    shapes = {"query": (1, 4, 16, D), "key": (1, 4, 16, D), "value": (1, 4, 16, D), "past_key": (1, 4, 48, D),
              "past_value": (1, 4, 48, D)}
    feeds = {n: rng.standard_normal(s).astype(np.float16) for n, s in shapes.items()}
    got = _session(model).run(None, feeds)
    want = attention_reference(feeds["query"], feeds["key"], feeds["value"], causal=True, past_key=feeds["past_key"],
                               past_value=feeds["past_value"])
    for g, w in zip(got, want):
        assert g.shape == w.shape and max_err(g, w) <= TOL


def test_provider_option_device_id_picks_the_cuda_ordinal():
    model, feeds = _model(), _inputs(5)
    out = _session(model, {"device_id": "0"}).run(None, feeds)[0]
    assert max_err(out, _reference(feeds)) <= TOL
    assert _placement(model, feeds, {"device_id": "0"}) == {"fast_attention_0": EP}


def test_provider_option_device_cpu_keeps_the_gpu_out():
    """By name ORT hands the EP its GPU device; device=cpu makes it claim nothing, so the op runs on the
    CPU EP (the same CPU kernel). Selecting the EP's CPU device runs FastAttentionEP itself on the CPU."""
    model, feeds = _model(), _inputs(6)
    assert _placement(model, feeds, {"device": "cpu"}) == {"fast_attention_0": "CPUExecutionProvider"}
    so = ort.SessionOptions()
    so.log_severity_level = 3
    cpu_device = [d for d in ort.get_ep_devices() if d.ep_name == EP and d.device.type == ort.OrtHardwareDeviceType.CPU]
    so.add_provider_for_devices(cpu_device, {"device": "cpu"})
    # As ep_session_options() does: the EP factory brings the op's domain, the session hook must not.
    so.add_session_config_entry(_ort._OP_DOMAIN_MARK, "ep_factory")
    sess = ort.InferenceSession(model.SerializeToString(), so)
    assert max_err(sess.run(None, feeds)[0], _reference(feeds)) <= TOL
    assert fastattn_onnx.node_placement(model, providers=(), inputs=feeds, session_options=so) == \
        {"fast_attention_0": EP}


def test_bad_provider_option_is_a_clear_error(capfd):
    sess = ort.InferenceSession(_model().SerializeToString(), providers=[(EP, {"device": "tpu"}), "CPUExecutionProvider"])
    # ORT's Python session prints the EP's error and falls back to the CPU EP when it is created.
    assert sess.get_providers() == ["CPUExecutionProvider"]
    assert "FastAttentionEP: provider option device='tpu' is not one of 'cpu', 'cuda'" in capfd.readouterr().out


def test_onnx_attention_with_a_bool_mask_runs_on_the_gpu():
    """The bool mask is made into a bias on the host and comes back in stream-ordered device memory."""
    from test_attention23 import attention_model, feeds_for
    model = attention_model(b=2, h=4, sq=32, skv=32, d=D, dtype="float16", mask=("bool", [2, 4, 32, 32]))
    feeds = feeds_for(model, seed=7, fully_masked_row=False)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = _session(model).run(None, feeds)[0]
    assert max_err(got, want) <= TOL
    assert _placement(model, feeds) == {"attention_0": EP}


# float32 nodes on the GPU: run through the float16 kernels (exact power-of-two rescaling), so
# they are held to float16's error, plus the rounding of the float32 inputs to float16, against
# the float64 reference of the exact float32 inputs.
F32_TOL, F32_REL = 5e-3, 2.0**-11


def _assert_fp16_close(got, want, what="output"):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape and np.isfinite(got).all(), what
    err = np.abs(got - want)
    assert (err <= F32_TOL + F32_REL * np.abs(want)).all(), f"{what}: max abs error {err.max():.3g}"


def test_float32_model_runs_on_the_gpu():
    model = build_model(layout="3d", batch=B, seq_q=S, seq_kv=S, num_heads=H, kv_num_heads=KVH, head_dim=D,
                        dtype="float32", causal=1)
    rng = np.random.default_rng(8)
    feeds = {n: rng.standard_normal(s).astype(np.float32)
             for n, s in {"query": (B, S, H * D), "key": (B, S, KVH * D), "value": (B, S, KVH * D)}.items()}
    out = _session(model).run(None, feeds)[0]
    assert out.dtype == np.float32
    _assert_fp16_close(out, _reference(feeds))
    # FastAttentionEP's GPU device claims it (a float32 node it declined would run on the CPU EP).
    assert _placement(model, feeds) == {"fast_attention_0": EP}


@pytest.mark.parametrize("mask", [None, "int64"])
def test_float32_decode_step_with_past_through_io_binding(mask):
    """One decode step: S_q = 1 over a past of 4096, GQA 32/8, D = 128, inputs and outputs (output,
    presents) bound on the GPU; with `mask`, left padding that differs per batch."""
    b, n, kvh, past, d = 2, 32, 8, 4096, 128
    model = build_model(layout="4d", batch=b, seq_q=1, seq_kv=1, seq_past=past, num_heads=n, kv_num_heads=kvh,
                        head_dim=d, dtype="float32", causal=1, present=True, key_padding_mask=mask)
    rng = np.random.default_rng(9)
    shapes = {"query": (b, n, 1, d), "key": (b, kvh, 1, d), "value": (b, kvh, 1, d),
              "past_key": (b, kvh, past, d), "past_value": (b, kvh, past, d)}
    feeds = {name: rng.standard_normal(s).astype(np.float32) for name, s in shapes.items()}
    if mask:
        m = np.ones((b, past + 1), np.int64)
        m[1, :1500] = 0  # batch 0 unpadded, batch 1 with 1500 leading keys hidden
        feeds["key_padding_mask"] = m
    want = attention_reference(feeds["query"], feeds["key"], feeds["value"], causal=True, past_key=feeds["past_key"],
                               past_value=feeds["past_value"], key_padding_mask=feeds.get("key_padding_mask"))
    sess = _session(model)
    binding = sess.io_binding()
    values = {name: ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0) for name, x in feeds.items()}
    for name, value in values.items():
        binding.bind_ortvalue_input(name, value)
    for name in ("output", "present_key", "present_value"):
        binding.bind_output(name, "cuda", 0)
    for _ in range(2):  # the second run reuses the bound device memory
        sess.run_with_iobinding(binding)
        got = binding.get_outputs()
        assert all(g.device_name() == "cuda" for g in got)
        _assert_fp16_close(got[0].numpy(), want[0])
        np.testing.assert_array_equal(got[1].numpy(), want[1], err_msg="present_key")
        np.testing.assert_array_equal(got[2].numpy(), want[2], err_msg="present_value")
    assert _placement(model, feeds) == {"fast_attention_0": EP}
