"""Regression tests for issue 14's findings on the op side: attribute types and names (5), hidden
keys holding NaN/inf and NaN queries (6), ONNX Attention with scale <= 0 (7), thread creation
failing (8), the binding's inputs and outputs (9), absurd head sizes (10)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper
from ort_helpers import EP, build_model, cpu_session, ep_session
from reference import attention_reference
from test_attention23 import _session_options, attention_model, feeds_for

import fastattn_onnx
from fastattn_onnx import _kernels

NODE = "hostile_node"


def _with_attribute(attr):
    model = build_model(layout="4d", num_heads=4, head_dim=8, node_name=NODE)
    model.graph.node[0].attribute.append(attr)
    return model


WRONG_TYPES = [
    (helper.make_attribute("causal", 1.0), "attribute causal must be an integer, got a float"),
    (helper.make_attribute("causal", "1"), "attribute causal must be an integer, got a string"),
    (helper.make_attribute("scale", 1), "attribute scale must be a float, got an integer"),
    (helper.make_attribute("window_size", 2.0), "attribute window_size must be an integer, got a float"),
]


@pytest.mark.parametrize("make_session", [cpu_session, ep_session], ids=["custom_op", "ep"])
@pytest.mark.parametrize("attr,rule", WRONG_TYPES, ids=[f"{a.name}-{a.type}" for a, _ in WRONG_TYPES])
def test_wrong_typed_attribute_is_an_error_naming_node_and_attribute(attr, rule, make_session):
    with pytest.raises(Exception) as err:
        make_session(_with_attribute(attr))
    assert NODE in str(err.value) and rule in str(err.value), str(err.value)


def test_misspelt_attribute_is_an_error_on_the_ep_path():
    """ONNX Runtime gives a custom op no list of its node's attributes, so only the EP (which
    sees the graph node) can name a misspelling; onnx.checker rejects it too."""
    with pytest.raises(Exception) as err:
        ep_session(_with_attribute(helper.make_attribute("casual", 1)))
    assert NODE in str(err.value) and "unknown attribute 'casual'" in str(err.value)


@pytest.mark.parametrize("kw,exc,rule", [
    (dict(window_size=2.0), TypeError, "attribute window_size must be an integer, got a float"),
    (dict(causal="1"), TypeError, "attribute causal must be an integer"),
    (dict(scale="x"), TypeError, "attribute scale must be a float"),
    (dict(softcap=float("inf")), ValueError, "softcap must be >= 0"),
    (dict(scale=float("inf")), ValueError, "scale must be a finite number"),
])
def test_binding_attributes_go_through_the_contract(kw, exc, rule):
    q = np.ones((1, 2, 3, 8), np.float32)
    with pytest.raises(exc, match=rule):
        _kernels.attention(q, q, q, **kw)


def test_binding_takes_python_and_numpy_numbers_for_attributes():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 2, 6, 8)).astype(np.float32) for _ in range(3))
    got = _kernels.attention(q, k, v, causal=np.int64(1), scale=1, window_size=np.int32(3), softcap=np.float32(4))
    want, _, _ = attention_reference(q, k, v, causal=True, scale=1.0, window_size=3, softcap=4.0)
    assert np.abs(got - want).max() <= 2e-5


def _inputs(s, d, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((1, 2, s, d)).astype(np.float32) for _ in range(3)]


@pytest.mark.parametrize("s,d,bad", [(20, 16, 15), (300, 64, 153), (700, 64, 350)])
def test_hidden_nan_and_inf_keys_never_reach_rows_that_cannot_see_them(s, d, bad):
    q, k, v = _inputs(s, d)
    k_bad, v_bad = k.copy(), v.copy()
    k_bad[:, :, bad] = np.nan
    v_bad[:, :, bad] = np.inf
    got = _kernels.attention(q, k_bad, v_bad, causal=True)
    want, _, _ = attention_reference(q, k, v, causal=True)
    assert np.isfinite(got[:, :, :bad]).all()
    assert np.abs(got[:, :, :bad] - want[:, :, :bad]).max() <= 2e-5
    assert (~np.isfinite(got[:, :, bad:])).any(axis=-1).all()  # rows that see it: NaN in, NaN out
    mask = np.ones((1, s), bool)
    mask[0, bad] = False  # a padded key with NaN / inf: no row sees it
    got = _kernels.attention(q, k_bad, v_bad, key_padding_mask=mask)
    want, _, _ = attention_reference(q, k, v, key_padding_mask=mask)
    assert np.abs(got - want).max() <= 2e-5


@pytest.mark.parametrize("make_session", [cpu_session, ep_session], ids=["custom_op", "ep"])
def test_hidden_nan_keys_through_onnx_runtime(make_session):
    q, k, v = _inputs(40, 8, seed=3)
    v[:, :, 30] = np.nan
    sess = make_session(build_model(layout="4d", num_heads=2, seq_q=40, seq_kv=40, head_dim=8, causal=1))
    got = sess.run(None, {"query": q, "key": k, "value": v})[0]
    assert np.isfinite(got[:, :, :30]).all() and np.isnan(got[:, :, 30:]).any(axis=-1).all()


@pytest.mark.parametrize("s_q", [1, 2, 3, 130])
def test_nan_query_row_gives_nan_at_every_query_length(s_q):
    q, k, v = _inputs(9, 16, seed=1)
    q = np.repeat(q[:, :, :1], s_q, axis=2).copy()
    q[0, 0, 0, 3] = np.nan
    got = _kernels.attention(q, k, v)
    assert np.isnan(got[0, 0, 0]).all() and np.isfinite(got[0, 1]).all()


def test_onnx_attention_with_non_positive_scale_is_left_to_onnx_runtime():
    """ONNX Runtime's own Attention rejects scale <= 0; with FastAttentionEP the session must fail
    the same way (the EP declines the node), not run it."""
    model = attention_model(attrs={"scale": -0.5}).SerializeToString()
    errors = []
    for providers in ([EP, "CPUExecutionProvider"], ["CPUExecutionProvider"]):
        with pytest.raises(Exception) as err:
            ort.InferenceSession(model, _session_options(), providers=providers)
        errors.append(str(err.value))
    assert all("scale must be greater than 0" in e for e in errors), errors
    model = attention_model(attrs={"scale": 0.5})
    placement = fastattn_onnx.node_placement(model, inputs=feeds_for(model), session_options=_session_options())
    assert placement == {"attention_0": EP}


FAIL_PTHREAD = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
static int calls;
int pthread_create(pthread_t* t, const pthread_attr_t* a, void* (*f)(void*), void* arg) {
  static int (*real)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*);
  if (!real) real = (int (*)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*))dlsym(RTLD_NEXT, "pthread_create");
  const char* after = getenv("FAIL_PTHREAD_AFTER");
  if (after && calls++ >= atoi(after)) return EAGAIN;
  return real(t, a, f, arg);
}
"""


@pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None, reason="no C compiler for the shim")
def test_thread_creation_failure_raises_and_the_process_lives(tmp_path):
    src = tmp_path / "fail_pthread.c"
    src.write_text(FAIL_PTHREAD)
    shim = tmp_path / "fail_pthread.so"
    subprocess.run([shutil.which("gcc") or shutil.which("cc"), "-shared", "-fPIC", "-o", str(shim), str(src), "-ldl"],
                   check=True)
    script = textwrap.dedent("""
        import numpy as np, fastattn_onnx
        q = np.random.default_rng(0).standard_normal((1, 8, 300, 64)).astype(np.float32)
        try:
            fastattn_onnx.attention(q, q, q, num_threads=4)
            print("NO ERROR")
        except RuntimeError as e:
            print("RuntimeError:", e)
        print("alive", fastattn_onnx.attention(q, q, q, num_threads=1).shape)
    """)
    env = dict(os.environ, LD_PRELOAD=str(shim), FAIL_PTHREAD_AFTER="1")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "RuntimeError: could not start 3 worker threads" in done.stdout
    assert "alive (1, 8, 300, 64)" in done.stdout


def test_binding_takes_what_numpy_takes_and_names_what_it_cannot():
    rng = np.random.default_rng(2)
    q, k, v = (rng.standard_normal((1, 2, 4, 8)).astype(np.float32) for _ in range(3))
    want = _kernels.attention(q, k, v)
    torch = pytest.importorskip("torch")
    assert np.array_equal(_kernels.attention(torch.from_numpy(q), k, v), want)
    with pytest.raises(TypeError, match="query dtype must be float32, float16 or bfloat16, got float64"):
        _kernels.attention(q.tolist(), k, v)  # a list becomes float64, named as such
    with pytest.raises(TypeError, match="output must be a NumPy array"):
        _kernels.attention(q, k, v, out=[0.0])


@pytest.mark.parametrize("alias", ["query", "value", "present_key"])
def test_outputs_that_share_memory_with_inputs_or_each_other_are_refused(alias):
    rng = np.random.default_rng(4)
    q, k, v = (rng.standard_normal((1, 2, 4, 8)).astype(np.float32) for _ in range(3))
    if alias == "present_key":
        pk = np.empty((1, 2, 4, 8), np.float32)
        with pytest.raises(ValueError, match="present_value must not share memory with present_key"):
            _kernels.attention(q, k, v, present_key=pk, present_value=pk)
        return
    with pytest.raises(ValueError, match="output must not share memory with an input"):
        _kernels.attention(q, k, v, out=q if alias == "query" else v)


def test_absurd_head_size_is_a_clear_error_not_gigabytes_of_scratch():
    x = np.zeros((1, 1, 2, 5000), np.float32)
    with pytest.raises(ValueError, match="head sizes above 4096 are not supported by the CPU kernel"):
        _kernels.attention(x, x, x)


@pytest.mark.parametrize("scale,magnitude", [(1e10, 1.0), (1e20, 1.0), (0.125, 3e4)])
def test_huge_scores_give_the_softmax_not_zeros(scale, magnitude):
    """Scores past ~2^24 (log2 units) are rerun with an exact shift (tile_kernel.h); they used to
    underflow every probability to 0 and return zeros."""
    rng = np.random.default_rng(5)
    q = (magnitude * rng.standard_normal((1, 3, 5, 16))).astype(np.float32)
    k = (magnitude * rng.standard_normal((1, 3, 6, 16))).astype(np.float32)
    v = rng.standard_normal((1, 3, 6, 16)).astype(np.float32)
    got = _kernels.attention(q, k, v, scale=scale)
    want, _, _ = attention_reference(q, k, v, scale=scale)
    assert np.abs(got - want).max() <= 1e-5


@pytest.mark.parametrize("name", ["num_heads", "kv_num_heads"])
def test_zero_heads_attribute_is_named_not_taken_as_absent(name):
    q = np.ones((1, 2, 3, 8), np.float32)
    with pytest.raises(ValueError, match=f"attribute {name} must be >= 1, got 0"):
        _kernels.attention(q, q, q, **{name: 0})
    model = build_model(layout="4d", num_heads=2, head_dim=8, node_name=NODE, extra_attrs={name: 0})
    for make_session in (cpu_session, ep_session):
        with pytest.raises(Exception) as err:
            make_session(model)
        assert NODE in str(err.value) and f"attribute {name} must be >= 1, got 0" in str(err.value)


def test_binding_names_a_missing_input_and_reads_empty_arrays_by_their_sizes():
    q = np.ones((1, 2, 3, 8), np.float32)
    with pytest.raises(TypeError, match="value is required"):
        _kernels.attention(q, q, None)
    with pytest.raises(ValueError, match="query sequence length must be >= 1"):
        _kernels.attention(q[:, :, :0], q, q)
