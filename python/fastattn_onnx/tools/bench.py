"""`python -m fastattn_onnx bench cpu` and `bench model.onnx`: speed and memory against anchors.

Every number is a median over repeats taken round-robin (one run of each contender per round),
so that load on the machine hits all contenders alike. Ratios are anchor time / our time.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

from ..constants import EP_NAME
from .common import machine_line, peak_rss_bytes, session_options, sgemm_rate, time_ms

# (S, N, D, causal): the two speed cases plus the non-causal D=64 reference point.
SPEED_CASES = [(4096, 8, 64, True), (4096, 8, 128, False), (4096, 8, 64, False)]
# The foundation issue's goals for those cases: contender -> speed-up over it wanted.
GOALS = {(4096, 8, 64, True): {"torch SDPA": 1.3, "ORT MultiHeadAttention": 3.0},
         (4096, 8, 128, False): {"torch SDPA": 1.0}}
MEMORY_SEQ_LENS = [8192, 16384, 32768]
PAUSE_S = 0.3


@dataclass
class Case:
    seq: int
    heads: int
    head_dim: int
    causal: bool

    def __str__(self) -> str:
        return f"B=1 S={self.seq} N={self.heads} D={self.head_dim} {'causal' if self.causal else 'full'}"

    def attention_flops(self) -> float:
        full = 4.0 * self.seq * self.seq * self.head_dim * self.heads
        return full * (self.seq + 1) / (2 * self.seq) if self.causal else full


def fastattention_session(case: Case, threads: int, layout: str = "3d"):
    """The user's path: a model with one FastAttention node, run with FastAttentionEP."""
    import onnxruntime as ort

    from ..model_builders import build_model

    model = build_model(layout=layout, seq_q=case.seq, seq_kv=case.seq, num_heads=case.heads,
                        head_dim=case.head_dim, causal=int(case.causal))
    return ort.InferenceSession(model.SerializeToString(), session_options(threads),
                                providers=[EP_NAME, "CPUExecutionProvider"])


def ort_mha_session(case: Case, threads: int, causal_as_bias: bool):
    """ONNX Runtime's own fused com.microsoft.MultiHeadAttention on its CPU EP."""
    import onnx.helper as oh
    import onnxruntime as ort
    from onnx import TensorProto

    hidden = case.heads * case.head_dim
    inputs = ["q", "k", "v"] + (["", "", "bias"] if causal_as_bias else [])
    node = oh.make_node("MultiHeadAttention", inputs, ["o"], domain="com.microsoft", num_heads=case.heads,
                        unidirectional=int(case.causal and not causal_as_bias))
    vi = [oh.make_tensor_value_info(n, TensorProto.FLOAT, [1, case.seq, hidden]) for n in "qkv"]
    if causal_as_bias:
        vi.append(oh.make_tensor_value_info("bias", TensorProto.FLOAT, [1, 1, case.seq, case.seq]))
    graph = oh.make_graph([node], "mha", vi, [oh.make_tensor_value_info("o", TensorProto.FLOAT, [1, case.seq, hidden])])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 21), oh.make_opsetid("com.microsoft", 1)],
                          ir_version=10)
    return ort.InferenceSession(model.SerializeToString(), session_options(threads), providers=["CPUExecutionProvider"])


def bench_speed(case: Case, threads: int, repeats: int, layout: str = "3d") -> dict:
    import torch

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    hidden = case.heads * case.head_dim
    q, k, v = (rng.standard_normal((1, case.seq, hidden), dtype=np.float32) for _ in range(3))
    qt, kt, vt = (torch.from_numpy(x).view(1, case.seq, case.heads, case.head_dim).transpose(1, 2).contiguous()
                  for x in (q, k, v))
    # 3d: [B, S, N*D] as projections give it; 4d: [B, N, S, D] as most converted models feed it.
    feeds = dict(zip(("query", "key", "value"), (q, k, v) if layout == "3d" else (x.numpy() for x in (qt, kt, vt))))
    ours = fastattention_session(case, threads, layout)

    def sdpa():
        with torch.no_grad():
            return torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=case.causal)

    contenders = {EP_NAME: lambda: ours.run(None, feeds)}
    contenders["torch SDPA"] = sdpa
    mha = ort_mha_session(case, threads, causal_as_bias=False)
    mha_feeds = {"q": q, "k": k, "v": v}
    contenders["ORT MultiHeadAttention"] = lambda: mha.run(None, mha_feeds)
    if case.causal:  # users can also hand MHA the causal mask as a bias; count the faster of the two
        mha_b = ort_mha_session(case, threads, causal_as_bias=True)
        bias_feeds = dict(mha_feeds, bias=np.triu(np.full((case.seq, case.seq), -np.inf, np.float32), 1)[None, None])
        contenders["ORT MultiHeadAttention(bias)"] = lambda: mha_b.run(None, bias_feeds)

    # Parity first: a fast wrong answer is no answer.
    ref = sdpa().numpy()
    got = contenders[EP_NAME]()[0]
    got = got.reshape(1, case.seq, case.heads, case.head_dim).transpose(0, 2, 1, 3) if layout == "3d" else got
    err = float(np.abs(got - ref).max())
    for fn in contenders.values():  # warm-up
        fn()
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(repeats):
        # Rotate the order, and pause before each call so the previous contender's spinning
        # worker threads (ORT's pools, torch's OpenMP) have parked and do not steal cores.
        for name in names[r % len(names):] + names[:r % len(names)]:
            time.sleep(PAUSE_S)
            samples[name] += time_ms(contenders[name], 1)
    med = {name: statistics.median(ts) for name, ts in samples.items()}
    return {"case": f"{case} {layout}", "max_abs_err_vs_torch": err, "median_ms": med,
            "gflops_ours": case.attention_flops() / med[EP_NAME] / 1e6}


def ceiling_line(case: Case, median_ms: dict[str, float], gemm_gflops: float, goals: dict[str, float]) -> str:
    """Our attention rate, and the rate each goal needs, as shares of the machine's float32 GEMM
    rate: attention is two GEMMs plus a softmax, so a goal near or above 100% is at the ceiling."""
    ours = case.attention_flops() / median_ms[EP_NAME] / 1e6
    parts = [f"ours {ours:.0f} GFLOP/s = {ours / gemm_gflops:.0%} of the GEMM rate"]
    for name, factor in goals.items():
        need = case.attention_flops() * factor / median_ms[name] / 1e6
        parts.append(f"{factor:g}x {name} needs {need:.0f} GFLOP/s ({need / gemm_gflops:.0%})")
    return f"{case}: vs float32 GEMM rate {gemm_gflops:.0f} GFLOP/s: " + "; ".join(parts)


def _peak_rss_child(seq: int, heads: int, head_dim: int, threads: int, which: str) -> None:
    """Runs in a fresh process (started by exec, so its peak starts at its own): extra peak RSS
    of one call after inputs are in memory."""
    rng = np.random.default_rng(0)
    case = Case(seq, heads, head_dim, True)
    x = [rng.standard_normal((1, seq, heads * head_dim), dtype=np.float32) for _ in range(3)]
    if which == "ours":
        sess = fastattention_session(case, threads)
        feeds = dict(zip(("query", "key", "value"), x))
        call = lambda: sess.run(None, feeds)  # noqa: E731
    else:
        import torch

        torch.set_num_threads(threads)
        t = [torch.from_numpy(a).view(1, seq, heads, head_dim).transpose(1, 2).contiguous() for a in x]
        call = lambda: torch.nn.functional.scaled_dot_product_attention(*t, is_causal=True)  # noqa: E731
    before = peak_rss_bytes()
    out = call()
    after = peak_rss_bytes()
    del out
    print(json.dumps({"extra_peak_mib": (after - before) / 2**20}))


def bench_memory(threads: int, heads: int = 8, head_dim: int = 64) -> list[dict]:
    rows = []
    for seq in MEMORY_SEQ_LENS:
        row = {"seq": seq, "output_mib": seq * heads * head_dim * 4 / 2**20}
        for which in ("ours", "torch"):
            code = (f"from fastattn_onnx.tools.bench import _peak_rss_child; "
                    f"_peak_rss_child({seq}, {heads}, {head_dim}, {threads}, {which!r})")
            res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1200)
            if res.returncode != 0:
                raise RuntimeError(f"memory child failed: {res.stderr[-2000:]}")
            row[which] = json.loads(res.stdout.strip().splitlines()[-1])["extra_peak_mib"]
        rows.append(row)
    return rows


def run_cpu(args) -> int:
    import torch

    print(machine_line(args.threads) + f", torch {torch.__version__}")
    cases = SPEED_CASES if not args.quick else [(512, 8, 64, True), (512, 8, 128, False)]
    # The ceiling: ORT's own MatMul at the same threads, before and after the cases (the best of both).
    gemm_rates = [sgemm_rate(args.threads)]
    results = []
    for case in cases:
        r = bench_speed(Case(*case), args.threads, args.repeats, args.layout)
        results.append(r)
        med = r["median_ms"]
        ours = med[EP_NAME]
        parts = [f"{EP_NAME} {ours:8.1f} ms ({r['gflops_ours']:.0f} GFLOP/s)"]
        for name, ms in med.items():
            if name != EP_NAME:
                parts.append(f"{name} {ms:8.1f} ms ({ms / ours:.2f}x)")
        print(f"cpu f32 {r['case']}: " + " | ".join(parts) + f" | max|err| vs torch {r['max_abs_err_vs_torch']:.1e}")
    gemm_rates.append(sgemm_rate(args.threads))
    print(f"float32 GEMM rate of this machine (ORT MatMul 2048^3, {args.threads} threads, best of before and after): "
          f"{max(gemm_rates):.0f} GFLOP/s")
    for case, r in zip(cases, results):
        print(ceiling_line(Case(*case), r["median_ms"], max(gemm_rates), GOALS.get(case, {})))
    if args.memory:
        for row in bench_memory(args.threads):
            print(f"peak extra memory of one call, B=1 S={row['seq']} N=8 D=64 causal: FastAttentionEP "
                  f"{row['ours']:.0f} MiB, torch SDPA {row['torch']:.0f} MiB (output alone {row['output_mib']:.0f} MiB)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


def run(args) -> int:
    if args.target == "genai":
        from .bench_genai import run_from_args

        return run_from_args(args)
    if getattr(args, "model_dir", None):
        print(f"error: bench {args.target}: unexpected argument {args.model_dir!r} (a MODEL_DIR goes with 'genai')",
              file=sys.stderr)
        return 2
    if args.repeats is None:
        args.repeats = 7
    if args.target == "cpu":
        return run_cpu(args)
    if args.target == "gpu":
        from .bench_gpu import run_gpu

        return run_gpu(args)
    if args.target == "npu":
        from .bench_npu import run_npu

        return run_npu(args)
    from .bench_model import run_model_bench

    return run_model_bench(args.target, seq_len=args.seq_len, batch=args.batch, repeats=args.repeats,
                           threads=args.threads)


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="speed and memory against PyTorch SDPA and ONNX Runtime's own attention")
    p.add_argument("target", help="'cpu', 'gpu' or 'npu' for the kernel benchmarks, 'genai' for an "
                   "onnxruntime-genai model folder (MODEL_DIR), or a model.onnx to time before/after convert")
    p.add_argument("model_dir", nargs="?", help="genai: the folder onnxruntime-genai's model builder wrote")
    p.add_argument("--dtype", choices=("float16", "bfloat16"), default="float16", help="gpu: element type")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=None, help="default 7 (genai: 3, --quick 2)")
    p.add_argument("--memory", action="store_true", help="cpu: also the peak extra memory at S=8K..32K")
    p.add_argument("--layout", choices=("3d", "4d"), default="3d",
                   help="cpu: FastAttention inputs as [B, S, N*D] (3d) or [B, N, S, D] (4d)")
    p.add_argument("--quick", action="store_true", help="cpu, gpu, genai: short sequences (a smoke run, not the goals)")
    p.add_argument("--prompts", help="genai: prompt lengths, comma-separated (default 512,2048,8192; --quick 64,256)")
    p.add_argument("--decode-steps", type=int, help="genai: tokens decoded after each prompt (default 32; --quick 8)")
    p.add_argument("--json", help="cpu: write the results here")
    p.add_argument("--seq-len", type=int, help="model: prefill length (default: the length the "
                   "model's inputs fix, else 4096); refused where its inputs fix another")
    p.add_argument("--batch", type=int, help="model: batch size (default: the one the model's "
                   "inputs fix, else 1); refused where its inputs fix another")
    p.set_defaults(run=run)
