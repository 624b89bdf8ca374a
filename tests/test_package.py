"""The Python package's registration side: library path, EP name, version check, doctor, the
op's constants (fastattn_onnx.constants) against what the compiled library and onnx report, and
the session hook (every InferenceSession created after the import can run the op)."""
from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import fastattn_onnx
from fastattn_onnx import _kernels, _ort
from fastattn_onnx.constants import ATTRIBUTE_DEFAULTS, EP_NAME, OP_DOMAIN, OP_SINCE_VERSION, OP_TYPE
from fastattn_onnx.tools import doctor


def test_library_and_ep_name():
    assert os.path.isfile(fastattn_onnx.get_library_path())
    assert fastattn_onnx.get_ep_name() == "FastAttentionEP"
    assert "FastAttentionEP" in [d.ep_name for d in ort.get_ep_devices()]


def test_old_onnxruntime_gives_a_clear_import_error(monkeypatch):
    monkeypatch.setattr(ort, "__version__", "1.26.2")
    with pytest.raises(ImportError, match=r"onnxruntime >= 1\.27.*1\.26\.2"):
        _ort.check_onnxruntime()


def test_doctor_reports_the_ep_device_and_kernels():
    text = "\n".join(doctor.report())
    assert "FastAttentionEP: registered" in text
    assert "device: CPU" in text
    cuda_built = any(name == "cuda" for name, _ in _kernels.backends())
    assert "CPU vector ISA:" in text and ("CUDA built" if cuda_built else "CUDA not built") in text


def test_constants_match_the_library_contract():
    """constants.py spells what the C++ contract (core/op_contract.h) says, as the library reports it."""
    contract = _kernels.op_contract()
    assert (contract["domain"], contract["op_type"], contract["since_version"], contract["ep_name"]) == \
           (OP_DOMAIN, OP_TYPE, OP_SINCE_VERSION, EP_NAME)
    assert contract["attributes"] == ATTRIBUTE_DEFAULTS


def test_the_registered_ep_is_named_ep_name():
    library = fastattn_onnx.get_library_path()
    ours = [d for d in ort.get_ep_devices()
            if os.path.isfile(d.ep_metadata.get("library_path", ""))
            and os.path.samefile(d.ep_metadata["library_path"], library)]
    assert ours, "no EP device comes from our library"
    assert {d.ep_name for d in ours} == {EP_NAME}


def test_the_onnx_schema_has_the_constants():
    schema = onnx.defs.get_schema(OP_TYPE, OP_SINCE_VERSION, OP_DOMAIN)
    assert (schema.domain, schema.name, schema.since_version) == (OP_DOMAIN, OP_TYPE, OP_SINCE_VERSION)
    defaults = {name: onnx.helper.get_attribute_value(a.default_value) if a.default_value.type else None
                for name, a in schema.attributes.items()}
    assert defaults == ATTRIBUTE_DEFAULTS


# --- The session hook: after `import fastattn_onnx` every InferenceSession knows the op ----------

def _fastattention_case():
    """A model with one FastAttention node (GQA, causal), its inputs and the float64 reference output."""
    from ort_helpers import random_inputs
    from reference import attention_reference

    from fastattn_onnx.model_builders import build_model

    model = build_model(batch=2, seq_q=5, seq_kv=5, num_heads=4, kv_num_heads=2, head_dim=8, causal=1)
    feeds = random_inputs({"query": (2, 5, 32), "key": (2, 5, 16), "value": (2, 5, 16)}, "float32")
    ref = attention_reference(feeds["query"], feeds["key"], feeds["value"], num_heads=4, kv_num_heads=2,
                              causal=True)[0]
    return model, feeds, ref


def _plain_model() -> onnx.ModelProto:
    """Softmax(x @ W) without the op: what every other model in a process looks like."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Softmax", ["xw"], ["y"], axis=-1)],
        "plain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


@pytest.fixture
def session_hook_off():
    fastattn_onnx.set_session_hook(False)
    yield
    fastattn_onnx.set_session_hook(True)


def _op_domain_source(session: ort.InferenceSession) -> str | None:
    """What brought com.fastattention to the session's options (the mark register_custom_ops sets)."""
    return _ort._config_entry(session.get_session_options(), _ort._OP_DOMAIN_MARK)


@pytest.mark.parametrize("providers", [["CPUExecutionProvider"], None, [EP_NAME, "CPUExecutionProvider"]],
                         ids=["cpu_ep", "no_providers", "fastattention_ep"])
@pytest.mark.parametrize("source", ["bytes", "path"])
def test_every_session_runs_the_op_after_import(providers, source, tmp_path):
    """The issue's failure: with the CPU EP (or no providers=) the model did not load."""
    model, feeds, ref = _fastattention_case()
    if source == "path":
        onnx.save(model, str(tmp_path / "model.onnx"))
        model_arg = str(tmp_path / "model.onnx")
    else:
        model_arg = model.SerializeToString()
    kwargs = {} if providers is None else {"providers": providers}
    sess = ort.InferenceSession(model_arg, **kwargs)
    assert sess.get_providers()[0] == (EP_NAME if providers and providers[0] == EP_NAME else "CPUExecutionProvider")
    np.testing.assert_allclose(sess.run(None, feeds)[0], ref, rtol=0, atol=2e-5)


def test_the_cpu_ep_and_fastattention_ep_give_the_same_output():
    model, feeds, _ = _fastattention_case()
    data = model.SerializeToString()
    on_cpu = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    on_ep = ort.InferenceSession(data, providers=[EP_NAME, "CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(on_cpu, on_ep, rtol=0, atol=1e-6)


def _options_prepared_by(how: str) -> ort.SessionOptions:
    if how == "ep_session_options":
        return fastattn_onnx.ep_session_options()
    so = ort.SessionOptions()
    if how == "register_custom_ops":
        fastattn_onnx.register_custom_ops(so)
    elif how == "register_custom_ops_library":  # what a caller may write without our helper
        so.register_custom_ops_library(fastattn_onnx.get_library_path())
    return so


@pytest.mark.parametrize("how", ["nothing", "register_custom_ops", "register_custom_ops_library",
                                 "ep_session_options"])
def test_callers_session_options_get_the_domain_once(how):
    """ONNX Runtime refuses the domain twice ("Domain already set in registry"): however the caller
    prepared the options, and however many sessions reuse them, the op is added once."""
    model, feeds, ref = _fastattention_case()
    so = _options_prepared_by(how)
    for providers in (["CPUExecutionProvider"], [EP_NAME, "CPUExecutionProvider"], None):
        kwargs = {} if providers is None or how == "ep_session_options" else {"providers": providers}
        sess = ort.InferenceSession(model.SerializeToString(), so, **kwargs)
        np.testing.assert_allclose(sess.run(None, feeds)[0], ref, rtol=0, atol=2e-5)
    assert _op_domain_source(sess) == ("ep_factory" if how == "ep_session_options" else "custom_ops_library")


def test_ep_session_options_refuses_options_that_have_the_library():
    so = ort.SessionOptions()
    fastattn_onnx.register_custom_ops(so)
    with pytest.raises(ValueError, match="already have the com.fastattention op library"):
        fastattn_onnx.ep_session_options(so)


def test_ep_session_options_picks_the_device_the_provider_options_name():
    """device=cpu selects the EP's CPU device (on a GPU machine too); a device_id no CUDA device has
    is an error naming the devices there are, not a silent pick of another device."""
    model, feeds, ref = _fastattention_case()
    so = fastattn_onnx.ep_session_options(provider_options={"device": "cpu"})
    placed = fastattn_onnx.node_placement(model, providers=(), inputs=feeds, session_options=so)
    assert set(placed.values()) == {"FastAttentionEP"}, placed
    so = fastattn_onnx.ep_session_options(provider_options={"device": "cpu"})
    out = ort.InferenceSession(model.SerializeToString(), so).run(None, feeds)[0]
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="no FastAttentionEP device matches .*devices here: .*cpu:0"):
        fastattn_onnx.ep_session_options(provider_options={"device_id": "7"})


def test_models_without_the_op_are_unaffected(session_hook_off):
    data = _plain_model().SerializeToString()
    x = {"x": np.arange(8, dtype=np.float32).reshape(2, 4) / 8}
    without_hook = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    assert _op_domain_source(without_hook) is None
    fastattn_onnx.set_session_hook(True)
    with_hook = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    assert _op_domain_source(with_hook) == "custom_ops_library"
    np.testing.assert_array_equal(with_hook.run(None, x)[0], without_hook.run(None, x)[0])


def _assert_opted_out():
    model, feeds, ref = _fastattention_case()
    data = model.SerializeToString()
    with pytest.raises(Exception, match="FastAttention.*is not a registered function/op"):
        ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    assert _op_domain_source(ort.InferenceSession(_plain_model().SerializeToString())) is None
    named = ort.InferenceSession(data, providers=[EP_NAME, "CPUExecutionProvider"])  # naming the EP still works
    np.testing.assert_allclose(named.run(None, feeds)[0], ref, rtol=0, atol=2e-5)


def test_opt_out_by_environment_variable(monkeypatch):
    monkeypatch.setenv("FASTATTN_NO_SESSION_HOOK", "1")
    assert not fastattn_onnx.session_hook_enabled()
    _assert_opted_out()


def test_opt_out_by_function(session_hook_off):
    assert not fastattn_onnx.session_hook_enabled()
    _assert_opted_out()


def test_installing_the_hook_again_changes_nothing():
    hook, register_library = ort.InferenceSession._register_ep_custom_ops, ort.SessionOptions.register_custom_ops_library
    assert fastattn_onnx.install_session_hook() is True
    assert ort.InferenceSession._register_ep_custom_ops is hook
    assert ort.SessionOptions.register_custom_ops_library is register_library


def test_sessions_sharing_options_across_threads():
    """Threads that create sessions from one SessionOptions at once add the domain once between them."""
    from concurrent.futures import ThreadPoolExecutor

    model, feeds, ref = _fastattention_case()
    data = model.SerializeToString()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1

    def create_and_run(i):
        providers = ["CPUExecutionProvider"] if i % 2 else [EP_NAME, "CPUExecutionProvider"]
        return ort.InferenceSession(data, so, providers=providers).run(None, feeds)[0]

    with ThreadPoolExecutor(max_workers=4) as pool:
        outputs = list(pool.map(create_and_run, range(8)))
    for out in outputs:
        np.testing.assert_allclose(out, ref, rtol=0, atol=2e-5)
