"""`python -m fastattn_onnx bench genai MODEL_DIR`: an onnxruntime-genai model (from genai's model
builder) in genai's own generate loop, with FastAttentionEP first and without it.

Per prompt length: prefill latency (Generator.append_tokens of the whole prompt) and decode
tokens/s (Generator.generate_next_token, greedy, with the prompt as the past), each a median over
repeats taken round-robin (one run of each contender per round, the order rotated); the greedy
tokens of the two contenders compared; each contender's peak RSS (its own process, started by
exec: VmHWM, see common.peak_rss_bytes); and GroupQueryAttention's share of the node time from an
ORT profile of genai's decoder session at the longest prompt (genai_config's
session_options.enable_profiling, set through og.Config.overlay), with where those nodes ran.

The model folder is not written: the providers are set on an og.Config in each contender's
process (fastattn_onnx.genai.config), and the prompts are token ids drawn at random (fixed seed)
from the vocabulary, special tokens left out.
"""
from __future__ import annotations

import collections
import gc
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from ..constants import EP_NAME
from .common import peak_rss_bytes

DEFAULT_PROMPTS = (512, 2048, 8192)
QUICK_PROMPTS, QUICK_DECODE_STEPS, QUICK_REPEATS = (64, 256), 8, 2
PAUSE_S = 0.3  # lets the previous contender's spinning ORT workers park
ATTENTION_OPS = ("GroupQueryAttention",)


# ---- a contender's process -------------------------------------------------------------------

def _load(spec: dict, profile_prefix: str | None = None):
    import onnxruntime_genai as og

    from .. import genai

    cfg = genai.config(spec["model_dir"], enabled=spec["enabled"], og=og)
    session_options = {"intra_op_num_threads": spec["threads"], "inter_op_num_threads": 1}
    if profile_prefix:
        session_options["enable_profiling"] = profile_prefix
    cfg.overlay(json.dumps({"model": {"decoder": {"session_options": session_options}}}))
    return og, og.Model(cfg)


def _generate(og, model, prompt: np.ndarray, steps: int) -> dict:
    params = og.GeneratorParams(model)
    total = int(prompt.size) + steps
    params.set_search_options(do_sample=False, max_length=total, min_length=total, batch_size=1)
    generator = og.Generator(model, params)
    start = time.perf_counter()
    generator.append_tokens(prompt[None, :])
    prefill = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        generator.generate_next_token()
    decode = time.perf_counter() - start
    tokens = [int(t) for t in generator.get_sequence(0)[prompt.size:]]
    return {"prefill_s": prefill, "decode_s": decode, "tokens": tokens}


def _profile(spec: dict, prompt: np.ndarray, steps: int) -> dict:
    """One profiled generation: GroupQueryAttention's share of the node time, prefill (the first
    model run) and decode (the rest) apart, and which provider ran what."""
    with tempfile.TemporaryDirectory(prefix="bench-genai-") as tmp:
        og, model = _load(spec, profile_prefix=os.path.join(tmp, "profile"))
        _generate(og, model, prompt, steps)
        del model
        gc.collect()  # ORT writes the profile when genai's session goes
        files = glob.glob(os.path.join(tmp, "profile*.json"))
        if not files:
            return {"error": "onnxruntime-genai wrote no ORT profile (enable_profiling not honoured)"}
        with open(files[0]) as f:
            events = json.load(f)
    return attention_share(events, _attention_node_names(spec["model_dir"]))


def _attention_node_names(model_dir: str) -> list[str]:
    import onnx

    from .. import genai

    with open(genai.config_path(model_dir)) as f:
        filename = json.load(f)["model"]["decoder"].get("filename", "model.onnx")
    graph = onnx.load(os.path.join(model_dir, filename), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type in ATTENTION_OPS]


def attention_share(events: list, attention_nodes: list[str]) -> dict:
    """From ORT profile events: node time per phase and attention's part of it. Attention: the
    GroupQueryAttention nodes by name, plus every node FastAttentionEP ran (its fused nodes have
    names of their own, and it claims attention only)."""
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                  if e.get("cat") == "Session" and e.get("name") == "model_run")
    wanted = set(attention_nodes)
    phases = {"prefill": [0.0, 0.0], "decode": [0.0, 0.0]}  # [attention us, all nodes us]
    placed: dict[str, set] = collections.defaultdict(set)
    for e in events:
        args = e.get("args", {})
        if e.get("cat") != "Node" or "provider" not in args or not e.get("name", "").endswith("_kernel_time"):
            continue
        name = e["name"][: -len("_kernel_time")]
        is_attention = name in wanted or args["provider"] == EP_NAME
        if name in wanted:
            placed[args["provider"]].add(name)
        phase = "prefill" if runs and e["ts"] < runs[0][1] else "decode"
        phases[phase][1] += e["dur"]
        phases[phase][0] += e["dur"] if is_attention else 0.0
    return {"share": {p: (a / t if t else None) for p, (a, t) in phases.items()},
            "placement": {p: len(n) for p, n in placed.items()}, "attention_nodes": len(wanted),
            "ep_fused_events": sum(1 for e in events if e.get("cat") == "Node"
                                   and e.get("args", {}).get("provider") == EP_NAME)}


def _serve(spec: dict) -> None:
    """Answers one command per line on stdin: "run P" (one generation at prompt length P),
    "rss" (this process's own peak), "profile P" (a profiled generation; loads a second model)."""
    og, model = _load(spec)
    prompts = {int(p): np.asarray(ids, dtype=np.int32) for p, ids in spec["prompts"].items()}
    smallest = min(prompts)
    _generate(og, model, prompts[smallest], min(spec["steps"], 4))  # warm-up
    print("ready", flush=True)
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command == "run":
            print(json.dumps(_generate(og, model, prompts[int(arg)], spec["steps"])), flush=True)
        elif command == "rss":
            print(json.dumps({"gib": peak_rss_bytes() / 2**30}), flush=True)
        elif command == "profile":
            del model
            gc.collect()
            print(json.dumps(_profile(spec, prompts[int(arg)], spec["steps"])), flush=True)
            return
        else:
            return


# ---- the parent --------------------------------------------------------------------------------

class _Contender:
    def __init__(self, label: str, spec: dict, tmpdir: str):
        self.label = label
        self.prefill: dict[int, list[float]] = collections.defaultdict(list)
        self.decode: dict[int, list[float]] = collections.defaultdict(list)
        self.tokens: dict[int, list[int]] = {}
        # stderr to a file: genai and ORT may log more than a pipe holds while nobody reads it
        self.stderr = open(os.path.join(tmpdir, f"{'ours' if spec['enabled'] else 'ref'}.stderr"), "w+")
        command = [sys.executable, "-m", "fastattn_onnx.tools.bench_genai", "--serve", json.dumps(spec)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.stderr, text=True)

    def _answer(self):
        line = self.process.stdout.readline()
        if not line:
            self.stderr.seek(0)
            error = [ln for ln in self.stderr.read().strip().splitlines() if ln.strip()]
            raise RuntimeError(f"{self.label}: {error[-1] if error else 'worker exited'}")
        return line.strip()

    def wait_ready(self) -> None:
        if self._answer() != "ready":
            raise RuntimeError(f"{self.label}: worker did not start")

    def ask(self, command: str) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return json.loads(self._answer())

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.close()
            except OSError:
                pass
            self.process.wait(timeout=60)
        self.stderr.close()


def _model_line(model_dir: str, config: dict) -> str:
    decoder = config["model"]["decoder"]
    graph_ops = collections.Counter()
    try:
        import onnx

        graph = onnx.load(os.path.join(model_dir, decoder.get("filename", "model.onnx")), load_external_data=False)
        graph_ops.update(n.op_type for n in graph.graph.node)
    except Exception:  # the line is informative only
        pass
    weights = "int4/int8 weights (MatMulNBits)" if graph_ops.get("MatMulNBits") else "float weights"
    return (f"model: {model_dir} ({config['model'].get('type', '?')}, {decoder.get('num_hidden_layers', '?')} layers, "
            f"{decoder.get('num_attention_heads', '?')} heads / {decoder.get('num_key_value_heads', '?')} KV heads, "
            f"head size {decoder.get('head_size', '?')}, {weights}, "
            f"{graph_ops.get('GroupQueryAttention', 0)} GroupQueryAttention nodes)")


def _prompt_ids(config: dict, lengths, seed: int = 0) -> dict[str, list[int]]:
    model = config["model"]
    special = {model.get(k) for k in ("bos_token_id", "pad_token_id")}
    eos = model.get("eos_token_id")
    special.update(eos if isinstance(eos, list) else [eos])
    pool = np.array([t for t in range(int(model["vocab_size"])) if t not in special], dtype=np.int64)
    rng = np.random.default_rng(seed)
    return {str(n): [int(t) for t in rng.choice(pool, size=n)] for n in lengths}


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.0f} ms" if ms >= 100 else f"{ms:.1f} ms" if ms >= 1 else f"{ms:.3f} ms"


def _share(value) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def run_genai_bench(model_dir: str, prompts=DEFAULT_PROMPTS, threads: int = 2, decode_steps: int = 32,
                    repeats: int = 3, profile: bool = True) -> int:
    from .. import genai

    try:
        import onnxruntime_genai as og
    except ImportError:
        print("error: bench genai needs onnxruntime-genai >= 0.18: pip install 'fastattn-onnx[genai]'",
              file=sys.stderr)
        return 2
    try:
        with open(genai.config_path(model_dir)) as f:
            config = json.load(f)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    context = int(config["model"].get("context_length") or config["search"].get("max_length") or 0)
    lengths = sorted({int(p) for p in prompts})
    too_long = [p for p in lengths if context and p + decode_steps > context]
    lengths = [p for p in lengths if p not in too_long]
    print(_model_line(model_dir, config))
    print(f"onnxruntime-genai {og.__version__}, threads={threads} repeats={repeats} decode steps={decode_steps}; "
          f"prompts of random token ids, greedy")
    if too_long:
        print(f"skipped prompt lengths {too_long}: with {decode_steps} decode steps they pass the model's "
              f"context_length {context}")
    if not lengths:
        print("error: no prompt length fits the model's context length", file=sys.stderr)
        return 2
    base = dict(model_dir=os.path.abspath(model_dir), threads=threads, steps=decode_steps,
                prompts=_prompt_ids(config, lengths))
    others = [name for name, _ in genai.providers(model_dir) if name != EP_NAME]
    ref_label = "without FastAttentionEP (" + (", ".join(others) if others else "CPU EP") + ")"
    with tempfile.TemporaryDirectory(prefix="bench-genai-") as tmpdir:
        contenders = [_Contender(ref_label, dict(base, enabled=False), tmpdir),
                      _Contender(EP_NAME, dict(base, enabled=True), tmpdir)]
        try:
            for c in contenders:
                c.wait_ready()
            for p in lengths:
                for r in range(repeats):
                    for c in contenders[r % 2:] + contenders[:r % 2]:
                        time.sleep(PAUSE_S)
                        got = c.ask(f"run {p}")
                        c.prefill[p].append(got["prefill_s"])
                        c.decode[p].append(got["decode_s"])
                        c.tokens.setdefault(p, got["tokens"])
            rss = {c.label: c.ask("rss")["gib"] for c in contenders}
            profiles = {c.label: c.ask(f"profile {lengths[-1]}") for c in contenders} if profile else {}
        finally:
            for c in contenders:
                c.close()
    ref, ours = contenders
    for p in lengths:
        rp, op = statistics.median(ref.prefill[p]), statistics.median(ours.prefill[p])
        rd, od = (decode_steps / statistics.median(c.decode[p]) for c in (ref, ours))
        same = ref.tokens[p] == ours.tokens[p]
        first = next((i for i, (a, b) in enumerate(zip(ref.tokens[p], ours.tokens[p])) if a != b), None)
        print(f"prompt {p:>6}: prefill {ref.label} {_ms(rp)} | {EP_NAME} {_ms(op)} ({rp / op:.2f}x)   "
              f"decode at past {p}: {rd:.1f} tok/s | {od:.1f} tok/s ({od / rd:.2f}x)   "
              + ("tokens identical" if same else f"TOKENS DIFFER from step {first}"))
    print("peak RSS: " + " | ".join(f"{label} {gib * 1024:.0f} MiB" for label, gib in rss.items()))
    if not profile:
        return 0
    for label, prof in profiles.items():
        if "error" in prof:
            print(f"attention share ({label}): {prof['error']}")
            continue
        share = prof["share"]
        where = ", ".join(f"{n} on {p}" for p, n in sorted(prof["placement"].items()))
        hidden = prof["attention_nodes"] - sum(prof["placement"].values())
        if hidden > 0:  # not named in the profile: inside FastAttentionEP's fused nodes, if it ran any
            inside = f"inside {EP_NAME}'s fused nodes" if prof["ep_fused_events"] else "not in the profile"
            where += (", " if where else "") + f"{hidden} {inside}"
        print(f"attention share of node time, prompt {lengths[-1]} (ORT profile, {label}): prefill "
              f"{_share(share['prefill'])}, decode {_share(share['decode'])}; "
              f"{prof['attention_nodes']} GroupQueryAttention nodes: {where or 'none ran'}")
    return 0


def _parse_lengths(text: str) -> list[int]:
    lengths = [int(x) for x in text.replace(" ", "").split(",") if x]
    if not lengths or min(lengths) < 1:
        raise ValueError(f"--prompts {text!r}: positive lengths, comma-separated")
    return lengths


def run_from_args(args) -> int:
    if not args.model_dir:
        print("error: bench genai MODEL_DIR: give the folder onnxruntime-genai's model builder wrote",
              file=sys.stderr)
        return 2
    quick = getattr(args, "quick", False)
    prompts = _parse_lengths(args.prompts) if args.prompts else (QUICK_PROMPTS if quick else DEFAULT_PROMPTS)
    steps = args.decode_steps if args.decode_steps is not None else (QUICK_DECODE_STEPS if quick else 32)
    repeats = args.repeats if args.repeats is not None else (QUICK_REPEATS if quick else 3)
    try:
        return run_genai_bench(args.model_dir, prompts, threads=args.threads, decode_steps=steps, repeats=repeats)
    except RuntimeError as error:  # a contender's process failed: its last error line
        print(f"error: {error}", file=sys.stderr)
        return 1


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"]:
        _serve(json.loads(argv[1]))
        return 0
    import argparse

    parser = argparse.ArgumentParser(prog="python -m fastattn_onnx.tools.bench_genai")
    parser.add_argument("model_dir")
    parser.add_argument("--prompts")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--decode-steps", type=int)
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--quick", action="store_true")
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
