"""FastAttentionEP's NPU device over the CANN test double (tests/ascend/cann_double: host memory as
device memory, the operator evaluated by its documented rules through our CPU kernel), with the
real onnxruntime: device listing, placement of FastAttention and Attention-23 nodes, results
against the float64 reference, a declined node on the CPU EP, an operator failure naming the node,
0 and 2 devices, the CANN version and SoC gates, `doctor` and `bench npu`; and backend_check, the
backend over the double without onnxruntime, also cross-built for aarch64 (Atlas boxes) and run
under qemu-user where the cross compiler and qemu are installed (11 s on 2 cores here).

The EP reads FASTATTN_CANN_TEST_DOUBLE once per process, so each scenario runs in a subprocess
(cann_double/npu_ep_worker.py). The double is built with g++ here; without g++ these tests skip.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "cann_double"))
sys.path.insert(0, os.path.dirname(HERE))

import fastattn_onnx  # noqa: E402

WORKER = os.path.join(HERE, "cann_double", "npu_ep_worker.py")
TOL = {"float16": 2e-3, "bfloat16": 1e-2}  # output rounding: 2^-11 / 2^-8 of values near 1


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[str, str]:
    """(libcann_double.so, backend_check) for this machine."""
    import build_double

    try:
        return build_double.build(str(tmp_path_factory.mktemp("cann_double")))
    except RuntimeError as e:
        if "no C++ compiler" in str(e):
            pytest.skip(str(e))
        raise


@pytest.fixture(scope="module")
def double(built) -> str:
    return built[0]


def _env(double_path: str | None, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FASTATTN_CANN", "ASCEND_"))}
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(fastattn_onnx.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([package_root, env.get("PYTHONPATH", "")])
    if double_path:
        env["FASTATTN_CANN_TEST_DOUBLE"] = double_path
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _worker(double_path: str, scenario: str, **extra) -> dict:
    res = subprocess.run([sys.executable, WORKER, scenario], env=_env(double_path, **extra), capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


@pytest.fixture(scope="module")
def main(double) -> dict:
    return _worker(double, "main")


def test_npu_device_listed_before_the_cpu(main):
    kinds = [d["metadata"]["fastattn.kernel"] for d in main["devices"]]
    assert kinds == ["npu", "cpu"]
    npu = main["devices"][0]
    assert npu["type"] == "NPU" and npu["vendor"] == "Huawei" and npu["vendor_id"] == 0x19E5
    md = npu["metadata"]
    assert md["fastattn.ordinal"] == "0"
    assert md["fastattn.npu.soc_name"] == "Ascend910B4" and md["fastattn.npu.cann_version"] == "8.0.RC3"


CASES = ["causal_past_present_4d", "gqa_3d", "key_padding_left_causal", "attn_bias_broadcast", "decode_gqa_past",
         "decode_empty_batch", "empty_batch_right_padding", "mask_with_holes_causal", "past_3d_full_bias", "window_causal_bf16"]
# What the plan gave the operator in each case (the double's summary of the call).
EXPECTED_CALL = {
    "causal_past_present_4d": ["BNSD", "sparse=3", "mask=compressed"],
    "gqa_3d": ["BSH", "sparse=0", "mask=none"],
    "key_padding_left_causal": ["sparse=3", "kv_lengths=[5,8,9]", "kv_padding=yes"],
    "attn_bias_broadcast": ["sparse=0", "pse=[1,4,4,7]"],
    "decode_gqa_past": ["BNSD", "sparse=0", "mask=none"],
    # decode has no invalid-row correction (inner 0): the backend zeroes batch 1 after the call
    "decode_empty_batch": ["BSH", "sparse=0", "inner=0", "mask=none"],
    "empty_batch_right_padding": ["sparse=0", "inner=2", "mask=[2,1,3,6]"],
    "mask_with_holes_causal": ["BSH", "sparse=0", "inner=2", "mask=[2,1,7,7]"],
    "past_3d_full_bias": ["BSH", "sparse=3", "mask=compressed", "pse=[2,4,4,9]"],
    "window_causal_bf16": ["sparse=4", "pre=3", "next=0"],
}


@pytest.mark.parametrize("name", CASES)
def test_fast_attention_on_npu_matches_reference(main, name):
    r = main["fast_attention"][name]
    assert r["operator_runs"] == 1, "the node did not run the (double's) NPU operator"
    for part in EXPECTED_CALL[name]:
        assert part in r["last_run"], r["last_run"]
    assert max(r["errors"]) <= TOL[r["dtype"]], r["errors"]
    if name == "past_3d_full_bias":  # strided: new BSH k/v into BNSD present, BNSD past k/v into the BSH operand
        assert r["strided_copies"] == 4, r["strided_copies"]
    if r["placement"] is not None:
        assert r["placement"] == {"fast_attention_0": "FastAttentionEP"}


def test_attention23_on_npu_matches_onnxruntime(main):
    r = main["attention23"]
    assert r["placement"] == {"attention_0": "FastAttentionEP"} and r["operator_runs"] == 1
    assert r["error"] <= 2e-3


def test_declined_softcap_runs_on_the_cpu_ep(main):
    r = main["softcap"]
    assert r["placement"] == {"fast_attention_0": "CPUExecutionProvider"} and r["operator_runs"] == 0
    assert r["error"] <= 2e-3


def test_group_query_attention_is_declined_on_the_npu_and_runs_on_the_cpu_ep(main):
    r = main["gqa"]
    assert r["placement"] == {"gqa_0": "CPUExecutionProvider"} and r["operator_runs"] == 0
    assert r["error"] == 0.0  # ONNX Runtime's own kernel in both sessions


def test_operator_failure_names_the_node_and_the_session_survives(main):
    r = main["failure"]
    assert r["raised"], "the injected operator failure was not reported"
    msg = r["message"]
    assert "FastAttention node 'failing_node'" in msg and "aclnnFusedInferAttentionScore" in msg and "561002" in msg
    assert "injected failure" in msg  # aclGetRecentErrMsg's text is carried
    assert r["error_after"] <= 2e-3


def test_concurrent_runs_from_several_threads(main):
    assert main["threads"]["operator_runs"] == 6 and main["threads"]["max_error"] <= 2e-3


def test_device_memory_is_returned_when_sessions_end(main):
    # Left: the compressed 2048 x 2048 causal mask, kept once per device for the process.
    assert main["live_allocations_at_end"] == 1


def test_no_npu_device_when_the_count_is_zero(double):
    r = _worker(double, "devices", FASTATTN_CANN_DOUBLE_DEVICES=0)
    assert [d["metadata"]["fastattn.kernel"] for d in r["devices"]] == ["cpu"]
    assert r["operator_runs"] == 0 and r["error"] <= 2e-3


def test_two_npu_devices_and_device_id(double):
    r = _worker(double, "devices", FASTATTN_CANN_DOUBLE_DEVICES=2)
    md = [d["metadata"] for d in r["devices"]]
    assert [(m["fastattn.kernel"], m["fastattn.ordinal"]) for m in md] == [("npu", "0"), ("npu", "1"), ("cpu", "0")]
    assert r["operator_runs"] == 1 and "device=1" in r["last_run"] and r["error"] <= 2e-3


@pytest.mark.parametrize("gate", [{"FASTATTN_CANN_DOUBLE_VERSION": "7.0.0"}, {"FASTATTN_CANN_DOUBLE_VERSION": "none"},
                                  {"FASTATTN_CANN_DOUBLE_SOC": "Ascend310B1"}], ids=["cann_7", "no_version", "soc_310b"])
def test_refused_cann_or_soc_leaves_the_node_to_the_cpu(double, gate):
    r = _worker(double, "devices", **gate)
    assert r["operator_runs"] == 0 and r["error"] <= 2e-3


def _cli(args, double_path=None, **extra):
    return subprocess.run([sys.executable, "-m", "fastattn_onnx", *args], env=_env(double_path, **extra),
                          capture_output=True, text=True, timeout=120)


def test_doctor_without_and_with_cann(double):
    res = _cli(["doctor"])
    assert res.returncode == 0
    assert "CANN not found: libascendcl.so" in res.stdout
    res = _cli(["doctor"], double)
    assert res.returncode == 0
    assert "CANN 8.0.RC3" in res.stdout and "Ascend910B4" in res.stdout


def test_bench_npu_without_cann_exits_with_the_reason():
    res = _cli(["bench", "npu"])
    assert res.returncode != 0
    assert "no Ascend device (CANN not found: libascendcl.so" in res.stdout + res.stderr


def test_backend_over_the_double_matches_the_cpu_kernel(built):
    double_path, check = built
    res = subprocess.run([check], env=_env(double_path), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.startswith("ok 5 cases"), res.stdout + res.stderr


def test_backend_over_the_double_on_aarch64_under_qemu(tmp_path):
    import shutil

    import build_double

    qemu = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
    sysroot = "/usr/aarch64-linux-gnu"
    if not qemu or not os.path.isdir(sysroot):
        pytest.skip("needs qemu-aarch64(-static) and the aarch64 sysroot /usr/aarch64-linux-gnu")
    try:
        double_path, check = build_double.build(str(tmp_path), "aarch64")
    except RuntimeError as e:
        if "no C++ compiler" in str(e):
            pytest.skip(str(e))
        raise
    res = subprocess.run([qemu, "-L", sysroot, check], env=_env(double_path), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0 and res.stdout.startswith("ok 5 cases"), res.stdout + res.stderr
