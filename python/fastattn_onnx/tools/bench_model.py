"""`python -m fastattn_onnx bench model.onnx`: the model's median latency before and after
conversion, next to onnxruntime.transformers.optimizer's result on the same file.

Each contender runs in its own process, started by exec, and reports that process's own peak
RSS (see common.peak_rss_bytes); runs are taken round-robin, one per contender per round, so
load on the shared machine hits all contenders alike. All contenders get the same inputs, made
once here.

Sizes: --batch and --seq-len set the input axes the model leaves free. Where its inputs fix a
size (a ViT's pixel_values, an export at one length), that size is used, and a request for
another is refused. With nothing fused, only the original is timed: there is no speed-up to
report.

The Amdahl bound printed with the ratio assumes only attention can shrink: the converted model's
time outside its FastAttention nodes (from its ORT profile) plus the FLOPs of the attention
shapes that ran (from the same profile; keys hidden by causal or window skipped) at the
machine's SGEMM rate (ORT's own MatMul, same threads).
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from ..constants import EP_NAME
from .common import peak_rss_bytes, session_options, sgemm_rate

DEFAULT_SEQ_LEN, DEFAULT_BATCH = 4096, 1
# As the convert command's: 2 a request the model rules out (or a model it cannot read),
# 3 the converted model does not match the original.
EXIT_OK, EXIT_BAD_REQUEST, EXIT_VERIFY_FAILED = 0, 2, 3
TOKEN_KINDS = ("ids", "mask", "positions", "token_types")


def add_model_bench(subparsers_or_parser) -> argparse.ArgumentParser:
    """Adds the model-bench arguments (a `bench-model` subcommand if given subparsers)."""
    if isinstance(subparsers_or_parser, argparse.ArgumentParser):
        parser = subparsers_or_parser
    else:
        parser = subparsers_or_parser.add_parser(
            "bench-model", help="median latency of a model before/after convert")
    parser.add_argument("model", help="the .onnx model to time")
    parser.add_argument("--seq-len", type=int, help=f"prefill length (default: the one the "
                        f"model's inputs fix, else {DEFAULT_SEQ_LEN})")
    parser.add_argument("--batch", type=int, help=f"batch size (default: the one the model's "
                        f"inputs fix, else {DEFAULT_BATCH})")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.set_defaults(run=lambda a: run_model_bench(a.model, a.seq_len, a.batch, a.repeats,
                                                      a.threads))
    return parser


# ---- sizes: what the model's inputs fix, and what a request may set -------------------------

class SizeConflict(ValueError):
    """A --batch or --seq-len that the model's fixed input sizes rule out."""


@dataclasses.dataclass
class ModelSizes:
    """The batch and sequence length a bench runs at, and which input fixed each (if one did)."""

    batch: int | None  # None: no input has a batch axis
    seq: int | None  # None: no input has a sequence axis (a ViT's patch count is set inside)
    batch_fixed_by: str = ""  # e.g. "pixel_values[0]"
    seq_fixed_by: str = ""


def _axis_role(plan, axis: int) -> str | None:
    """"batch", "seq" or None (left to inputs.make_inputs) for one axis of one input.

    A named dim says it ("batch_size", "seq_len"; a "past" length is neither: this bench runs
    without a cache). Otherwise: exports put the batch first, token inputs are [batch, seq],
    embeddings [batch, seq, hidden] (a fixed axis 1 of a float input may be channels instead).
    """
    dim = plan.dims[axis]
    named = isinstance(dim, str) and not dim.startswith("?")  # "?x:1": plan_inputs' unnamed dim
    if named and "past" in dim.lower():
        return None
    if named and "batch" in dim.lower():
        return "batch"
    if named and ("seq" in dim.lower() or "total" in dim.lower()):
        return "seq"
    rank = len(plan.dims)
    if axis == 0 and rank >= 2:
        return "batch"
    if axis == 1 and rank == 2 and plan.kind in TOKEN_KINDS:
        return "seq"
    if axis == 1 and rank == 3 and plan.kind == "float" and isinstance(dim, str):
        return "seq"
    return None


def _shapes_text(plans) -> str:
    return ", ".join(f"{p.name} [{', '.join(str(d) for d in p.dims)}]" for p in plans)


def _resolve(role: str, option: str, requested: int | None, default: int,
             plans) -> tuple[int | None, str]:
    """(size, the input axis that fixed it or "") for one role; SizeConflict for a request
    the model's inputs rule out."""
    axes = [(p, i) for p in plans for i in range(len(p.dims)) if _axis_role(p, i) == role]
    free = any(isinstance(p.dims[i], str) for p, i in axes)
    # A fixed 1 beside a free axis is a broadcast axis (position_ids [1, seq]), not a fixed size.
    fixed = [(f"{p.name}[{i}]", p.dims[i]) for p, i in axes
             if isinstance(p.dims[i], int) and not (free and p.dims[i] == 1)]
    word = "sequence" if role == "seq" else role
    if requested is not None:
        for where, size in fixed:
            if size != requested:
                raise SizeConflict(f"{option} {requested} cannot apply: the model fixes input "
                                   f"{where} at {size} (inputs: {_shapes_text(plans)})")
        if not axes:
            raise SizeConflict(f"{option} {requested} cannot apply: no input of the model has a "
                               f"{word} axis (inputs: {_shapes_text(plans)}); the model sets its "
                               f"{word} {'length' if role == 'seq' else 'size'} itself")
        return requested, ""
    if fixed:
        return fixed[0][1], fixed[0][0]
    return (default if axes else None), ""


def model_sizes(plans, batch: int | None = None, seq_len: int | None = None) -> ModelSizes:
    """The sizes to run at: the request, else what the model's inputs fix, else the defaults."""
    batch, batch_from = _resolve("batch", "--batch", batch, DEFAULT_BATCH, plans)
    seq, seq_from = _resolve("seq", "--seq-len", seq_len, DEFAULT_SEQ_LEN, plans)
    return ModelSizes(batch, seq, batch_from, seq_from)


def _feed_sizes(plans, sizes: ModelSizes) -> dict:
    """inputs.make_inputs' sizes: its own words, plus every free dim given a role here by its
    name (make_inputs would give an export's opaque "s0" inputs.FALLBACK_DIM)."""
    by_role = {"batch": sizes.batch or DEFAULT_BATCH, "seq": sizes.seq or DEFAULT_SEQ_LEN}
    feed_sizes = {**by_role, "total": by_role["seq"], "past": 0}
    for plan in plans:
        for axis, dim in enumerate(plan.dims):
            role = _axis_role(plan, axis)
            if role and isinstance(dim, str):
                feed_sizes[dim.lower()] = by_role[role]
    return feed_sizes


def _sizes_text(sizes: ModelSizes) -> str:
    def one(name: str, size: int | None, fixed_by: str, absent: str) -> str:
        if size is None:
            return f"{name}: {absent}"
        return f"{name}={size}" + (f" (fixed by input {fixed_by})" if fixed_by else "")

    return "  ".join([one("B", sizes.batch, sizes.batch_fixed_by, "no batch axis"),
                      one("S", sizes.seq, sizes.seq_fixed_by,
                          "no input has a sequence axis")])


# ---- one contender's process ----------------------------------------------------------------

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


def write_feeds(feeds: dict, path: str) -> str:
    """The inputs every contender runs on, made once (a contender that planned its own would
    load the whole model for it, and count that in its peak)."""
    with open(path, "wb") as f:
        pickle.dump(feeds, f)
    return path


def _profile(spec: dict, feeds: dict) -> dict:
    """One profiled run: seconds per node, FastAttentionEP's seconds, and the input shapes of
    each FastAttentionEP node in node order. Shares only, never medians."""
    profiled = _session(spec, profile_dir=spec["tmpdir"])
    profiled.run(None, feeds)
    with open(profiled.end_profiling(), encoding="utf-8") as f:
        events = json.load(f)
    node_s: dict[str, float] = {}
    ep_s, ep_nodes = 0.0, {}
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        name, args = event["name"][: -len("_kernel_time")], event.get("args", {})
        node_s[name] = node_s.get(name, 0.0) + event["dur"] * 1e-6
        if args.get("provider") == EP_NAME:
            ep_s += event["dur"] * 1e-6
            shapes = [next(iter(s.values())) for s in args.get("input_type_shape", [])]
            ep_nodes[int(args.get("node_index", len(ep_nodes)))] = shapes
    return {"node_s": node_s, "ep_s": ep_s,
            "attention_shapes": [ep_nodes[i] for i in sorted(ep_nodes)]}


def _serve(spec: dict) -> None:
    """A contender's process: loads its session, then answers one command per line on stdin.

    "run" times one run; "rss" reports this process's own peak; "sgemm" the machine's SGEMM
    rate; "profile" a profiled run (it replaces the session, so it comes last).
    """
    session = _session(spec)
    with open(spec["feeds"], "rb") as f:
        feeds = pickle.load(f)
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
            print(json.dumps({"gib": peak_rss_bytes() / 2**30}), flush=True)
        elif command == "sgemm":
            print(json.dumps({"gflops": sgemm_rate(spec["threads"])}), flush=True)
        elif command == "profile":
            del session
            print(json.dumps(_profile(spec, feeds)), flush=True)
            return
        else:
            return


# ---- the parent: contenders side by side ----------------------------------------------------

class _Contender:
    def __init__(self, label: str, spec: dict):
        self.label, self.times = label, []
        # A new program (fork and exec): its peak starts at its own, not this process's.
        command = [sys.executable, "-m", "fastattn_onnx.tools.bench_model", "--serve", json.dumps(spec)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)

    def wait_ready(self) -> None:
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


@dataclasses.dataclass
class Timing:
    label: str
    times_s: list[float]
    peak_rss_gib: float  # the contender's own process

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)


def contender_spec(path: str, fused: bool, feeds_path: str, threads: int, tmpdir: str) -> dict:
    """What a contender's process needs: the model, whether it runs on FastAttentionEP, the
    inputs (see write_feeds), its threads and where its profile may go."""
    return {"path": path, "fused": fused, "feeds": feeds_path, "threads": threads, "tmpdir": tmpdir}


def time_contenders(specs: list[tuple[str, dict]], repeats: int,
                    measure_attention: bool = False) -> tuple[list[Timing], dict]:
    """Times each (label, spec) in its own process, round-robin, and reads each one's own peak.

    With measure_attention, also the machine's SGEMM rate (asked of the first contender after
    its peak is read, so the GEMM's matrices stay out of it) and the last contender's profile.
    """
    contenders, measured = [], {}
    try:
        for label, spec in specs:
            contenders.append(_Contender(label, spec))
        for contender in contenders:  # all load at once: loading is not timed
            contender.wait_ready()
        for _ in range(repeats):
            for contender in contenders:
                contender.times.append(contender.ask("run")["s"])
        timings = [Timing(c.label, c.times, c.ask("rss")["gib"]) for c in contenders]
        if measure_attention:
            measured["sgemm_gflops"] = contenders[0].ask("sgemm")["gflops"]
            measured.update(contenders[-1].ask("profile"))
    finally:
        for contender in contenders:
            contender.close()
    return timings, measured


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


# ---- attention's cost: what ran, and the best it could cost ---------------------------------

@dataclasses.dataclass
class AttentionRun:
    """One FastAttention node as it ran: sizes from the profile, masking from the graph."""

    batch: int
    seq_q: int
    seq_kv: int
    width: int  # num_heads * head_size
    causal: bool
    window: int  # -1: none


def _visible_pairs(seq_q: int, seq_kv: int, causal: bool, window: int) -> int:
    """(query, key) pairs that attention must compute: causal aligned bottom-right and the
    window as the op defines them (README, "The op"). Each row sees one run of keys."""
    rows = np.arange(seq_q) + (seq_kv - seq_q)  # each query row's position among the keys
    first = np.maximum(rows - window + 1, 0) if window > 0 else np.zeros_like(rows)
    if causal:
        last = rows
    else:
        last = rows + window - 1 if window > 0 else np.full_like(rows, seq_kv - 1)
    last = np.minimum(last, seq_kv - 1)
    return int(np.clip(last - first + 1, 0, None).sum())


def _layer_flops(run: AttentionRun) -> float:
    """Q K^T and P V (2 FLOPs a multiply-add each) over the visible pairs."""
    return 4.0 * run.batch * run.width * _visible_pairs(run.seq_q, run.seq_kv, run.causal, run.window)


def _attention_flops(report, batch: int, seq: int) -> float:
    """Every fused layer at prefill length seq, causal ones with the hidden half skipped."""
    return sum(_layer_flops(AttentionRun(batch, seq, seq, f.num_heads * f.head_size, f.causal, -1))
               for f in report.fused)


def attention_runs(converted_model, ran_shapes: list) -> list[AttentionRun]:
    """The FastAttention nodes that ran on FastAttentionEP, from the profile's input shapes (in
    node order) and the graph's causal/window attributes (in graph order: one order in a stack
    of layers). [] where they cannot be paired up."""
    masking = [(bool(n.attributes.get_int("causal", 0)), n.attributes.get_int("window_size", -1))
               for n in converted_model.graph if n.op_type == "FastAttention"]
    if len(masking) != len(ran_shapes):
        if len(set(masking)) != 1:
            return []
        masking = masking[:1] * len(ran_shapes)  # alike anyway: order does not matter
    runs = []
    for (causal, window), shapes in zip(masking, ran_shapes):
        if len(shapes) < 2:
            return []
        query, key = shapes[0], shapes[1]
        if len(query) == 4:  # [B, heads, S, D]
            runs.append(AttentionRun(query[0], query[2], key[2], query[1] * query[3], causal, window))
        else:  # [B, S, heads * D]
            runs.append(AttentionRun(query[0], query[1], key[1], query[2], causal, window))
    return runs


def _attention_split(profiled: dict, median_s: float, attention_nodes) -> tuple[float, float]:
    """(attention seconds, other seconds) of a median run, split by the shares of a profile."""
    node_s = profiled.get("node_s") or {}
    total = max(sum(node_s.values()), 1e-9)
    share = sum(v for k, v in node_s.items() if attention_nodes(k)) / total
    return share * median_s, (1.0 - share) * median_s


def _bound_at_sgemm_rate(original_s: float, converted_other_s: float, flops: float,
                         sgemm_gflops: float) -> tuple[float | None, float]:
    """(bound on the speed-up vs the original, best attention seconds).

    Only attention can shrink: the converted model's time outside its FastAttention nodes
    stays, and attention costs at best its FLOPs (hidden keys skipped) at the machine's SGEMM
    rate, so the ratio cannot pass original / (other + attention FLOPs / SGEMM rate).
    """
    if not flops or sgemm_gflops <= 0:
        return None, 0.0
    ideal = flops / (sgemm_gflops * 1e9)
    return original_s / (converted_other_s + ideal), ideal


def _amdahl_bound(original_s: float, converted_other_s: float, report, batch: int, seq: int,
                  sgemm_gflops: float) -> tuple[float | None, float]:
    """The bound with every fused layer at batch x seq: an estimate before any run (the bench
    itself prices the shapes that ran)."""
    return _bound_at_sgemm_rate(original_s, converted_other_s,
                                _attention_flops(report, batch, seq), sgemm_gflops)


# ---- what is printed ------------------------------------------------------------------------

def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.0f} ms" if ms >= 100 else f"{ms:.1f} ms" if ms >= 1 else f"{ms:.3f} ms"


def _size(gib: float) -> str:
    return f"{gib:.2f} GiB" if gib >= 1 else f"{gib * 1024:.0f} MiB"


def _why_nothing_fused(report) -> str:
    if not report.found:
        return "no attention subgraph found"
    reasons = collections.Counter(item.reason for item in report.left)
    listed = "; ".join(reason + (f" (x{count})" if count > 1 else "")
                       for reason, count in reasons.items())
    return f"{report.found} attention subgraph(s) found, none fused" + (f": {listed}" if listed else "")


def _print_timings(timings: list[Timing]) -> None:
    def ms(seconds: float, width: int = 0) -> str:
        return f"{seconds * 1e3:{width}.{1 if seconds >= 0.01 else 3}f}"

    for t in timings:
        print(f"{t.label:<44} median {ms(t.median_s, 9)} ms  (min {ms(min(t.times_s))}, "
              f"max {ms(max(t.times_s))})   peak RSS {_size(t.peak_rss_gib)}")


def _runs_text(runs: list[AttentionRun]) -> str:
    sizes = sorted({(r.batch, r.seq_q, r.seq_kv) for r in runs})
    return ", ".join(f"B={b} S_q={q} S_kv={k}" for b, q, k in sizes)


def _original_attention_line(original_s: float, other_s: float) -> str:
    """Attention's time in the original: the original less what the converted model spent
    outside attention (the same nodes), unless noise or a slower rest leaves nothing."""
    attention_s = original_s - other_s
    if attention_s > 0:
        return f"so attention and its mask took about {_ms(attention_s)} of the original's {_ms(original_s)}"
    return (f"attention's time in the original cannot be told here: the original's "
            f"{_ms(original_s)} is no more than the converted model's {_ms(other_s)} outside "
            f"attention (noise at this size, or the rest ran slower)")


def _amdahl_line(original_s: float, ours_s: float, ep_s: float, other_s: float, ideal_s: float,
                 bound: float, sgemm_gflops: float) -> str:
    head = (f"Amdahl bound on the speed-up vs original: {bound:.2f}x (the converted model's "
            f"{_ms(other_s)} outside attention, plus attention's FLOPs at the machine's SGEMM rate, "
            f"{sgemm_gflops:.0f} GFLOP/s by ORT MatMul 2048^3: {_ms(ideal_s)})")
    reached = original_s / ours_s
    if reached <= bound:
        return head + f"; measured {reached:.2f}x = {100 * reached / bound:.0f}% of it"
    # Above the bound only if the profile puts attention under its FLOPs at the SGEMM rate.
    return (head + f"; measured {reached:.2f}x is above it, so the bound does not hold at this "
            f"size: the profile gives the FastAttention nodes {_ms(ep_s)}, less than their FLOPs "
            f"at the SGEMM rate")


def _print_comparison(timings: list[Timing], measured: dict, converted_model) -> None:
    original, ours = timings[0].median_s, timings[-1].median_s
    print(f"speed-up vs original: {original / ours:.2f}x")
    for t in timings[1:-1]:
        print(f"speed-up vs {t.label.split(',')[0]}: {t.median_s / ours:.2f}x")
    ep_s, other_s = _attention_split(measured, ours, lambda name: name.startswith(EP_NAME))
    runs = attention_runs(converted_model, measured.get("attention_shapes", []))
    flops = sum(_layer_flops(r) for r in runs)
    rate = f" ({flops / ep_s / 1e9:.0f} GFLOP/s)" if flops and ep_s > 0 else ""
    at = f" at {_runs_text(runs)}" if runs else ""
    print(f"converted: FastAttention nodes {_ms(ep_s)}{rate}{at}, the rest {_ms(other_s)} "
          f"(ORT profile shares of the median)")
    print(_original_attention_line(original, other_s))
    bound, ideal_s = _bound_at_sgemm_rate(original, other_s, flops, measured["sgemm_gflops"])
    if bound is None:
        print("Amdahl bound on the speed-up vs original: not computed (the profile's "
              "FastAttentionEP nodes do not pair up with the graph's FastAttention nodes)")
    else:
        print(_amdahl_line(original, ours, ep_s, other_s, ideal_s, bound, measured["sgemm_gflops"]))


def _anchor_specs(model_path: str, report, base: dict) -> list[tuple[str, dict]]:
    """The same file after ORT's optimizer and after onnxscript's fusions, as contenders."""
    anchors = (("ORT optimizer", lambda out: _ort_optimized(model_path, report, out), "ort_optimized"),
               ("onnxscript ort_fusions", lambda out: _onnxscript_fused(model_path, out), "onnxscript_fused"))
    specs = []
    for name, make, file_stem in anchors:
        anchor_path, anchor_fused, how = make(os.path.join(base["tmpdir"], f"{file_stem}.onnx"))
        if anchor_path:
            specs.append((f"{name}, {anchor_fused} fused (CPU EP)", contender_spec(anchor_path, False, **base)))
        else:
            print(f"{name}: skipped ({how})")
    return specs


def _refuse(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def run_model_bench(model_path: str, seq_len: int | None = None, batch: int | None = None,
                    repeats: int = 5, threads: int = 2) -> int:
    from ..convert import ConvertError, VerifyError, convert, inputs
    from ..convert.loading import load_model

    try:
        plans = inputs.plan_inputs(load_model(model_path))
        sizes = model_sizes(plans, batch, seq_len)
    except (ConvertError, SizeConflict) as error:  # before anything is converted or timed
        return _refuse(str(error), EXIT_BAD_REQUEST)
    feeds = inputs.make_inputs(plans, _feed_sizes(plans, sizes), padded=False)
    with tempfile.TemporaryDirectory() as tmpdir:
        converted_path = os.path.join(tmpdir, "converted.onnx")
        try:
            result = convert(model_path, converted_path, verify=True)
        except ConvertError as error:
            return _refuse(str(error), EXIT_BAD_REQUEST)
        except VerifyError as error:
            return _refuse(f"the converted model does not match the original: {error}",
                           EXIT_VERIFY_FAILED)
        report = result.report
        print(f"model: {model_path}  {_sizes_text(sizes)}  threads={threads} repeats={repeats}")
        print("inputs: " + ", ".join(f"{name} {array.dtype}{list(array.shape)}"
                                     for name, array in feeds.items()))
        verified = result.verify.summary() if result.verify else "nothing to verify"
        print(f"convert: {report.found} attention subgraph(s) found, {len(report.fused)} fused; {verified}")
        base = dict(feeds_path=write_feeds(feeds, os.path.join(tmpdir, "feeds.pkl")),
                    threads=threads, tmpdir=tmpdir)
        original = ("original (CPU EP)", contender_spec(model_path, False, **base))
        if not report.fused:
            # The converted model would be the original again: a ratio would be noise.
            print(f"nothing fused: {_why_nothing_fused(report)}; timing the original only")
            _print_timings(time_contenders([original], repeats)[0])
            return EXIT_OK
        specs = [original, *_anchor_specs(model_path, report, base),
                 (f"converted, {len(report.fused)} fused (FastAttentionEP)",
                  contender_spec(converted_path, True, **base))]
        timings, measured = time_contenders(specs, repeats, measure_attention=True)
    _print_timings(timings)
    _print_comparison(timings, measured, result.model)
    return EXIT_OK


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
