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
