"""`python -m fastattn_onnx bench model.onnx`: the model's median latency before and after
conversion, next to onnxruntime.transformers.optimizer's result on the same file.

Each contender runs in its own process (its peak RSS is its own); runs are taken round-robin,
one per contender per round, so load on the shared machine hits all contenders alike. The Amdahl bound printed
with the ratio assumes only attention can shrink: the converted model's time outside its
FastAttention nodes (from its ORT profile) plus causal-skipping attention FLOPs at the machine's
SGEMM rate (ORT's own MatMul, same threads).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from ..constants import EP_NAME
from .common import session_options, sgemm_rate


def add_model_bench(subparsers_or_parser) -> argparse.ArgumentParser:
    """Adds the model-bench arguments (a `bench-model` subcommand if given subparsers)."""
    if isinstance(subparsers_or_parser, argparse.ArgumentParser):
        parser = subparsers_or_parser
    else:
        parser = subparsers_or_parser.add_parser(
            "bench-model", help="median latency of a model before/after convert")
    parser.add_argument("model", help="the .onnx model to time")
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.set_defaults(run=lambda a: run_model_bench(a.model, a.seq_len, a.batch, a.repeats,
                                                      a.threads))
    return parser


def _feeds(model_path: str, batch: int, seq_len: int) -> dict:
    import onnx_ir as ir

    from ..convert import inputs

    plans = inputs.plan_inputs(ir.load(model_path))
    sizes = {"batch": batch, "seq": seq_len, "total": seq_len, "past": 0}
    return inputs.make_inputs(plans, sizes, padded=False)


def _session(spec: dict, profile_dir: str | None = None):
    import onnxruntime as ort

    options = session_options(spec["threads"])
    if profile_dir:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(profile_dir, "fused" if spec["fused"] else "original")
    providers = ["CPUExecutionProvider"]
    if spec["fused"]:
        from .. import register_custom_ops

        providers = [EP_NAME, "CPUExecutionProvider"]
        register_custom_ops(options)  # the op's schema, so the model loads (see verify.py)
    return ort.InferenceSession(spec["path"], options, providers=providers)


def _serve(spec: dict) -> None:
    """A contender's process: loads its session, then times one run per "run" line on stdin.

    Contenders are timed round-robin (one run each per round), so machine load hits all alike,
    and each keeps its own process so its peak RSS is its own.
    """
    import resource

    session = _session(spec)
    feeds = _feeds(spec["path"], spec["batch"], spec["seq_len"])
    needed = {i.name for i in session.get_inputs()}
    feeds = {k: v for k, v in feeds.items() if k in needed}
    session.run(None, feeds)  # warm-up
    print("ready", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "run":
            start = time.perf_counter()
            session.run(None, feeds)
            print(json.dumps({"s": time.perf_counter() - start}), flush=True)
        elif command == "rss":
            print(json.dumps({"gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}),
                  flush=True)
        elif command == "sgemm":
            print(json.dumps({"gflops": sgemm_rate(spec["threads"])}), flush=True)
        elif command == "profile":
            # The time split between FastAttention nodes and the rest; shares only, never medians.
            del session
            profiled = _session(spec, profile_dir=spec["tmpdir"])
            profiled.run(None, feeds)
            with open(profiled.end_profiling(), encoding="utf-8") as f:
                events = json.load(f)
            per_node: dict[str, float] = {}
            ep_s = 0.0
            for event in events:
                if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                    name = event["name"][: -len("_kernel_time")]
                    per_node[name] = per_node.get(name, 0.0) + event["dur"] * 1e-6
                    if event.get("args", {}).get("provider") == EP_NAME:
                        ep_s += event["dur"] * 1e-6
            print(json.dumps({"node_s": per_node, "ep_s": ep_s}), flush=True)
            return
        else:
            return


class _Contender:
    def __init__(self, label: str, spec: dict):
        self.label, self.times = label, []
        command = [sys.executable, "-m", "fastattn_onnx.tools.bench_model", "--serve", json.dumps(spec)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        self._expect("ready")

    def _expect(self, word: str | None = None):
        line = self.process.stdout.readline()
        if not line:
            error = self.process.stderr.read().strip().splitlines()
            raise RuntimeError(f"{self.label}: {error[-1] if error else 'worker exited'}")
        return line.strip() if word else json.loads(line)

    def ask(self, command: str) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._expect()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait()


def _ort_optimized(model_path: str, report, out_path: str) -> tuple[str | None, int, str]:
    """onnxruntime.transformers.optimizer's version of the file, given what convert inferred."""
    from onnxruntime.transformers.optimizer import optimize_model

    if not report.fused:
        return None, 0, "nothing to tell it (no attention found)"
    first = report.fused[0]
    model_type = "gpt2" if first.causal else "bert"
    try:
        optimized = optimize_model(model_path, model_type=model_type, num_heads=first.num_heads,
                                   hidden_size=first.num_heads * first.head_size, opt_level=1)
    except Exception as error:  # its fusions raise on shapes they do not know
        return None, 0, f"optimize_model raised {type(error).__name__}: {error}"
    fused = sum(1 for n in optimized.model.graph.node
                if n.op_type in ("Attention", "MultiHeadAttention", "GroupQueryAttention"))
    optimized.save_model_to_file(out_path)
    return out_path, fused, f"model_type={model_type}"


def _onnxscript_fused(model_path: str, out_path: str) -> tuple[str | None, int, str]:
    """onnxscript's ort_fusions (MultiHeadAttention/Attention) on the same file: the stronger
    fusion anchor on dynamo exports."""
    import onnx_ir as ir

    try:
        from onnxscript.rewriter.ort_fusions import optimize_for_ort

        model = ir.load(model_path)
        optimize_for_ort(model)
    except Exception as error:
        return None, 0, f"optimize_for_ort raised {type(error).__name__}: {error}"
    fused = sum(1 for n in model.graph
                if n.op_type in ("Attention", "MultiHeadAttention", "GroupQueryAttention"))
    ir.save(model, out_path)
    return out_path, fused, "onnxscript ort_fusions"


def _attention_split(profiled: dict, median_s: float, attention_nodes) -> tuple[float, float]:
    """(attention seconds, other seconds) of a median run, split by the shares of a profile."""
    node_s = profiled.get("node_s") or {}
    total = max(sum(node_s.values()), 1e-9)
    share = sum(v for k, v in node_s.items() if attention_nodes(k)) / total
    return share * median_s, (1.0 - share) * median_s


def _attention_flops(report, batch: int, seq: int) -> float:
    """Both GEMMs of every fused layer at prefill length seq, causal ones with the hidden half skipped."""
    return sum(4.0 * batch * f.num_heads * seq * seq * f.head_size
               * ((seq + 1) / (2 * seq) if f.causal else 1.0) for f in report.fused)


def _amdahl_bound(original_s: float, converted_other_s: float, report, batch: int, seq: int,
                  sgemm_gflops: float) -> tuple[float | None, float]:
    """(bound on the speed-up vs the original, best attention seconds).

    Only attention can shrink: the converted model's time outside its FastAttention nodes
    stays, and attention costs at best its FLOPs (causal ones skipped) at the machine's SGEMM
    rate, so the ratio cannot pass original / (other + attention FLOPs / SGEMM rate).
    """
    flops = _attention_flops(report, batch, seq)
    if not flops or sgemm_gflops <= 0:
        return None, 0.0
    ideal = flops / (sgemm_gflops * 1e9)
    return original_s / (converted_other_s + ideal), ideal


def run_model_bench(model_path: str, seq_len: int = 4096, batch: int = 1, repeats: int = 5,
                    threads: int = 2) -> int:
    from ..convert import convert

    with tempfile.TemporaryDirectory() as tmpdir:
        converted_path = os.path.join(tmpdir, "converted.onnx")
        result = convert(model_path, converted_path, verify=True)
        report = result.report
        print(f"model: {model_path}  B={batch} S={seq_len} threads={threads} repeats={repeats}")
        print(f"convert: {report.found} attention subgraph(s) found, {len(report.fused)} fused; "
              f"{result.verify.summary() if result.verify else 'not verified'}")
        base = dict(batch=batch, seq_len=seq_len, threads=threads, tmpdir=tmpdir)
        specs = [("original (CPU EP)", {**base, "path": model_path, "fused": False})]
        anchors = (("ORT optimizer", lambda out: _ort_optimized(model_path, report, out), "ort_optimized"),
                   ("onnxscript ort_fusions", lambda out: _onnxscript_fused(model_path, out), "onnxscript_fused"))
        for name, make, file_stem in anchors:
            anchor_path, anchor_fused, how = make(os.path.join(tmpdir, f"{file_stem}.onnx"))
            if anchor_path:
                specs.append((f"{name}, {anchor_fused} fused (CPU EP)",
                              {**base, "path": anchor_path, "fused": False}))
            else:
                print(f"{name}: skipped ({how})")
        specs.append((f"converted, {len(report.fused)} fused (FastAttentionEP)",
                      {**base, "path": converted_path, "fused": True}))
        contenders = []
        try:
            for label, spec in specs:
                contenders.append(_Contender(label, spec))
            for _ in range(repeats):
                for contender in contenders:
                    contender.times.append(contender.ask("run")["s"])
            rows = [(c.label, {"median_s": statistics.median(c.times), "min_s": min(c.times),
                               "max_s": max(c.times), "peak_rss_gib": c.ask("rss")["gib"]})
                    for c in contenders]
            sgemm_gflops = contenders[0].ask("sgemm")["gflops"]
            rows[-1][1].update(contenders[-1].ask("profile"))
        finally:
            for contender in contenders:
                contender.close()
    for label, row in rows:
        print(f"{label:<44} median {row['median_s'] * 1e3:9.1f} ms  (min {row['min_s'] * 1e3:.1f}, "
              f"max {row['max_s'] * 1e3:.1f})   peak RSS {row['peak_rss_gib']:.2f} GiB")
    ours = rows[-1][1]["median_s"]
    print(f"speed-up vs original: {rows[0][1]['median_s'] / ours:.2f}x")
    for label, row in rows[1:-1]:
        print(f"speed-up vs {label.split(',')[0]}: {row['median_s'] / ours:.2f}x")
    original, converted = rows[0][1], rows[-1][1]
    ep_s, other_s = _attention_split(converted, ours, lambda name: name.startswith(EP_NAME))
    attention_s = original["median_s"] - other_s  # the nodes outside attention are the same
    flops = _attention_flops(report, batch, seq_len)
    print(f"converted: FastAttention nodes {ep_s * 1e3:.1f} ms ({flops / max(ep_s, 1e-9) / 1e9:.0f} "
          f"GFLOP/s), the rest {other_s * 1e3:.1f} ms (ORT profile shares of the median); "
          f"so attention and its mask took about {attention_s * 1e3:.0f} ms of the original's "
          f"{original['median_s'] * 1e3:.0f} ms")
    bound, ideal_s = _amdahl_bound(original["median_s"], other_s, report, batch, seq_len,
                                   sgemm_gflops)
    if bound:
        reached = original["median_s"] / ours
        print(f"Amdahl bound on the speed-up vs original: {bound:.2f}x (the converted model's "
              f"{other_s * 1e3:.0f} ms outside attention, plus attention's FLOPs at the machine's "
              f"SGEMM rate, {sgemm_gflops:.0f} GFLOP/s by ORT MatMul 2048^3: {ideal_s * 1e3:.0f} ms); "
              f"measured {reached:.2f}x = {100 * reached / bound:.0f}% of it")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"]:
        _serve(json.loads(argv[1]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m fastattn_onnx.tools.bench_model")
    add_model_bench(parser)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
