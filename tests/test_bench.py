"""`bench cpu`: a smoke run of the real command, and the arithmetic of its ceiling line."""
import argparse

import pytest


def test_ceiling_line_prices_each_goal_against_the_gemm_rate():
    from fastattn_onnx.tools.bench import Case, ceiling_line

    case = Case(seq=1024, heads=2, head_dim=64, causal=False)
    flops = 4.0 * 1024 * 1024 * 64 * 2
    # Ours at 100 GFLOP/s; torch takes 1.5x our time, so 1.2x over it needs 100 / 1.5 * 1.2 = 80 GFLOP/s.
    median_ms = {"FastAttentionEP": flops / 100e9 * 1e3, "torch SDPA": 1.5 * flops / 100e9 * 1e3}
    line = ceiling_line(case, median_ms, 200.0, {"torch SDPA": 1.2})
    assert "ours 100 GFLOP/s = 50% of the GEMM rate" in line
    assert "1.2x torch SDPA needs 80 GFLOP/s (40%)" in line


def test_bench_cpu_quick_prints_every_contender_and_the_ceiling(capsys):
    pytest.importorskip("torch")
    from fastattn_onnx.tools.bench import run_cpu

    args = argparse.Namespace(threads=1, repeats=1, quick=True, layout="4d", memory=False, json=None)
    assert run_cpu(args) == 0
    out = capsys.readouterr().out
    assert out.count("| torch SDPA") == 2 and out.count("| ORT MultiHeadAttention ") == 2
    assert "float32 GEMM rate of this machine" in out
    assert out.count("% of the GEMM rate") == 2


# ---- `bench model.onnx` ---------------------------------------------------------------------

def _save(tmp_path, name: str, nodes, inputs, outputs, initializers=()) -> str:
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, name, inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = str(tmp_path / f"{name}.onnx")
    onnx.save(model, path)
    return path


def _mlp(tmp_path, width: int = 16) -> str:
    """x [n, 8] -> MatMul -> Relu -> MatMul: no attention; [n, width] intermediates."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("w1", (8, width)), ("w2", (width, 4)))]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    return _save(tmp_path, f"mlp{width}", nodes,
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], weights)


def _token_model(tmp_path, ids_dims, position_dims=None) -> str:
    """An embedding lookup of input_ids (plus position_ids if given): inputs with token sizes."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.ones((32, 4), np.float32), "table")
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["y"])]
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ids_dims)]
    if position_dims:
        nodes = [helper.make_node("Add", ["input_ids", "position_ids"], ["ids"]),
                 helper.make_node("Gather", ["table", "ids"], ["y"])]
        inputs.append(helper.make_tensor_value_info("position_ids", TensorProto.INT64, position_dims))
    return _save(tmp_path, "tokens", nodes, inputs,
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [*ids_dims, 4])], [table])


def _plans(path: str):
    import onnx_ir as ir

    from fastattn_onnx.convert import inputs

    return inputs.plan_inputs(ir.load(path))


def test_fixed_input_sizes_are_used_and_a_request_against_them_refused_by_name(tmp_path, capsys):
    from fastattn_onnx.__main__ import main
    from fastattn_onnx.tools.bench_model import ModelSizes, SizeConflict, model_sizes

    fixed = _token_model(tmp_path, [1, 17])
    assert model_sizes(_plans(fixed)) == ModelSizes(1, 17, "input_ids[0]", "input_ids[1]")
    assert model_sizes(_plans(fixed), batch=1, seq_len=17).seq == 17  # the same size: fine
    with pytest.raises(SizeConflict, match=r"--seq-len 64 cannot apply: the model fixes input "
                                           r"input_ids\[1\] at 17"):
        model_sizes(_plans(fixed), seq_len=64)
    # Through the command line: a message and exit code 2, nothing converted or timed.
    assert main(["bench", fixed, "--seq-len", "64"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: --seq-len 64 cannot apply") and "input_ids[1]" in captured.err
    assert captured.out == ""
    # Free axes take the request; position_ids' fixed 1 beside a free batch axis broadcasts.
    free = _token_model(tmp_path, ["batch", "s0"], position_dims=[1, "s0"])
    assert model_sizes(_plans(free)) == ModelSizes(1, 4096)
    assert model_sizes(_plans(free), batch=3, seq_len=9) == ModelSizes(3, 9)


def _vit(path: str) -> str:
    """A 2-layer ViT at 32x32 pixels in 8x8 patches: 17 tokens, fixed by pixel_values' shape."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import warnings

    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=64)
    config._attn_implementation = "eager"
    model = transformers.ViTModel(config, add_pooling_layer=False).eval()

    class LastHiddenState(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vit = model

        def forward(self, pixel_values):
            return self.vit(pixel_values=pixel_values).last_hidden_state

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(LastHiddenState().eval(), (torch.randn(1, 3, 32, 32),), path, dynamo=False,
                          opset_version=17, input_names=["pixel_values"], output_names=["out"])
    return path


def test_vit_is_timed_at_its_own_17_tokens_and_a_seq_len_refused(tmp_path, capsys):
    import re

    from fastattn_onnx.tools.bench_model import run_model_bench

    vit = _vit(str(tmp_path / "vit.onnx"))
    assert run_model_bench(vit, seq_len=64) == 2
    err = capsys.readouterr().err
    assert "--seq-len 64 cannot apply: no input of the model has a sequence axis" in err
    assert "pixel_values [1, 3, 32, 32]" in err

    assert run_model_bench(vit, repeats=1, threads=1) == 0
    out = capsys.readouterr().out
    assert "B=1 (fixed by input pixel_values[0])  S: no input has a sequence axis" in out
    assert "converted, 2 fused (FastAttentionEP)" in out
    assert "FastAttention nodes" in out and "at B=1 S_q=17 S_kv=17," in out
    assert "4096" not in out
    # No negative time, and a share of the bound only where the measurement is under it.
    assert not re.search(r"-\d", out.split("converted:")[-1]), out
    shares = [int(s) for s in re.findall(r"= (\d+)% of it", out)]
    assert shares and shares[0] <= 100 or "does not hold at this size" in out, out


def test_nothing_fused_times_the_original_alone_and_prints_no_ratio(tmp_path, capsys):
    import re

    from fastattn_onnx.tools.bench_model import run_model_bench

    assert run_model_bench(_mlp(tmp_path), repeats=1, threads=1) == 0
    out = capsys.readouterr().out
    assert "nothing fused: no attention subgraph found; timing the original only" in out
    assert "original (CPU EP)" in out and "converted" not in out.split("nothing fused")[-1]
    assert "speed-up" not in out and "Amdahl" not in out and not re.search(r"\d\.\d+x", out), out


def test_nothing_fused_lists_each_reason_once_with_its_count():
    from fastattn_onnx.convert.report import ConvertReport, LeftAlone
    from fastattn_onnx.tools.bench_model import _why_nothing_fused

    left = [LeftAlone("a", "mask not understood"), LeftAlone("b", "softcap on a 3D bias"),
            LeftAlone("c", "mask not understood")]
    report = ConvertReport(found=3, left=left)
    assert _why_nothing_fused(report) == ("3 attention subgraph(s) found, none fused: "
                                          "mask not understood (x2); softcap on a 3D bias")


def test_each_contender_reports_its_own_peak_not_the_parents(tmp_path):
    """Real processes: a 512 MiB peak here, then two contenders about 256 MiB apart."""
    import numpy as np

    from fastattn_onnx.tools.bench_model import contender_spec, time_contenders, write_feeds
    from fastattn_onnx.tools.common import peak_rss_bytes

    ballast = np.ones(2**26)  # 512 MiB, touched: this process's peak is at least that
    parent_gib = peak_rss_bytes() / 2**30
    assert parent_gib >= 0.5
    wide = _mlp(tmp_path, width=256)  # two [n, 256] float32 intermediates: 256 MiB at n = 2^17
    rows = {"small": 1, "big": 2**17}
    specs = [(label, contender_spec(wide, False, write_feeds({"x": np.ones((n, 8), np.float32)},
                                                              str(tmp_path / f"{label}.pkl")),
                                    threads=1, tmpdir=str(tmp_path)))
             for label, n in rows.items()]
    timings, _ = time_contenders(specs, repeats=1)
    peak = {t.label: t.peak_rss_gib for t in timings}
    del ballast
    assert peak["small"] < parent_gib / 4, (peak, parent_gib)  # not the parent's peak
    assert peak["big"] - peak["small"] > 0.15, peak  # each its own


def test_bound_and_attention_time_lines_never_state_the_impossible():
    from fastattn_onnx.tools.bench_model import _amdahl_line, _original_attention_line

    # The original no slower than the converted model's rest: no negative attention time.
    line = _original_attention_line(original_s=0.010, other_s=0.012)
    assert "cannot be told" in line and "-" not in line
    assert _original_attention_line(0.010, 0.004) == \
        "so attention and its mask took about 6.0 ms of the original's 10.0 ms"
    # Measured above the bound (attention under its FLOPs at the SGEMM rate): no share over 100%.
    above = _amdahl_line(original_s=0.010, ours_s=0.005, ep_s=0.001, other_s=0.004, ideal_s=0.002,
                         bound=0.010 / 0.006, sgemm_gflops=100.0)
    assert "measured 2.00x is above it, so the bound does not hold" in above and "%" not in above
    under = _amdahl_line(0.010, 0.005, 0.003, 0.002, 0.001, 0.010 / 0.003, 100.0)
    assert under.endswith("measured 2.00x = 60% of it")


def test_visible_pairs_follow_the_ops_causal_and_window_rule():
    """Against the op's definition (README): key j visible to row i (i' = i + S_kv - S_q) iff
    (not causal or j <= i') and (no window or i' - j < w, and j - i' < w when not causal)."""
    import numpy as np

    from fastattn_onnx.tools.bench_model import _visible_pairs

    for seq_q, seq_kv in ((7, 7), (3, 9), (9, 3)):
        i = np.arange(seq_q)[:, None] + seq_kv - seq_q
        j = np.arange(seq_kv)[None, :]
        for causal in (False, True):
            for window in (-1, 1, 3):
                visible = (j <= i) if causal else np.ones_like(i * j, bool)
                if window > 0:
                    visible = visible & (i - j < window) & ((j - i < window) | causal)
                case = (seq_q, seq_kv, causal, window)
                assert _visible_pairs(*case) == int(visible.sum()), case
