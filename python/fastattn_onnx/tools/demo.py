"""`python -m fastattn_onnx demo [--model exported.onnx]`: the README's main job.

1. Builds a small attention model two ways — plain ONNX operators (what an exporter writes:
   MatMul, Softmax and an S x S causal mask) and one FastAttention node — runs the first on ONNX
   Runtime's CPU EP and the second on FastAttentionEP, and prints parity with a float64
   reference and the speed-up.
2. With --model (an exported transformer; models/export_hf.py makes one), converts it with
   `fastattn_onnx.convert` (verified), runs original and converted side by side on the same
   inputs and prints parity and the speed-up.
"""
from __future__ import annotations

import statistics

import numpy as np
import onnx
import onnx.helper as oh
from onnx import TensorProto, numpy_helper

from ..constants import EP_NAME
from ..model_builders import IR_VERSION, OPSET, build_model
from .common import machine_line, session_options, time_ms


def plain_onnx_attention_model(seq: int, num_heads: int, head_dim: int, causal: bool) -> onnx.ModelProto:
    """Decomposed attention on 3D [1, S, N*D] inputs, as torch exporters write it."""
    hidden = num_heads * head_dim
    inits = [numpy_helper.from_array(np.array([1, seq, num_heads, head_dim], np.int64), "split_heads"),
             numpy_helper.from_array(np.array([1, seq, hidden], np.int64), "merge_heads"),
             numpy_helper.from_array(np.array(1.0 / np.sqrt(head_dim), np.float32), "scale")]
    nodes = []
    for name in ("query", "key", "value"):
        nodes.append(oh.make_node("Reshape", [name, "split_heads"], [f"{name}_4d"]))
        perm = [0, 2, 3, 1] if name == "key" else [0, 2, 1, 3]  # K goes straight to K^T
        nodes.append(oh.make_node("Transpose", [f"{name}_4d"], [f"{name}_t"], perm=perm))
    nodes += [oh.make_node("MatMul", ["query_t", "key_t"], ["scores_raw"]),
              oh.make_node("Mul", ["scores_raw", "scale"], ["scores"])]
    last = "scores"
    if causal:
        mask = np.triu(np.full((seq, seq), -np.inf, np.float32), 1)[None, None]
        inits.append(numpy_helper.from_array(mask, "causal_mask"))
        nodes.append(oh.make_node("Add", ["scores", "causal_mask"], ["scores_masked"]))
        last = "scores_masked"
    nodes += [oh.make_node("Softmax", [last], ["probs"], axis=-1),
              oh.make_node("MatMul", ["probs", "value_t"], ["context"]),
              oh.make_node("Transpose", ["context"], ["context_t"], perm=[0, 2, 1, 3]),
              oh.make_node("Reshape", ["context_t", "merge_heads"], ["output"])]
    graph = oh.make_graph(nodes, "plain_attention",
                          [oh.make_tensor_value_info(n, TensorProto.FLOAT, [1, seq, hidden]) for n in ("query", "key", "value")],
                          [oh.make_tensor_value_info("output", TensorProto.FLOAT, [1, seq, hidden])], inits)
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", OPSET)], ir_version=IR_VERSION)


def _reference(q, k, v, num_heads, causal):
    b, s, hidden = q.shape
    d = hidden // num_heads
    split = lambda x: x.astype(np.float64).reshape(b, s, num_heads, d).transpose(0, 2, 1, 3)  # noqa: E731
    scores = split(q) @ split(k).transpose(0, 1, 3, 2) / np.sqrt(d)
    if causal:
        scores = np.where(np.tril(np.ones((s, s), bool)), scores, -np.inf)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return (p @ split(v)).transpose(0, 2, 1, 3).reshape(b, s, hidden)


def _median_ms(fn, repeats):
    fn()  # warm-up
    return statistics.median(time_ms(fn, repeats))


def run_kernel_demo(seq: int, num_heads: int, head_dim: int, threads: int, repeats: int) -> bool:
    import onnxruntime as ort

    ok = True
    rng = np.random.default_rng(1)
    for causal in (True, False):
        plain = ort.InferenceSession(plain_onnx_attention_model(seq, num_heads, head_dim, causal).SerializeToString(),
                                     session_options(threads), providers=["CPUExecutionProvider"])
        fused_model = build_model(seq_q=seq, seq_kv=seq, num_heads=num_heads, head_dim=head_dim, causal=int(causal))
        fused = ort.InferenceSession(fused_model.SerializeToString(), session_options(threads),
                                     providers=[EP_NAME, "CPUExecutionProvider"])
        feeds = {n: rng.standard_normal((1, seq, num_heads * head_dim), dtype=np.float32)
                 for n in ("query", "key", "value")}
        ref = _reference(feeds["query"], feeds["key"], feeds["value"], num_heads, causal)
        err_fused = float(np.abs(fused.run(None, feeds)[0] - ref).max())
        err_plain = float(np.abs(plain.run(None, feeds)[0] - ref).max())
        t_plain = _median_ms(lambda: plain.run(None, feeds), repeats)
        t_fused = _median_ms(lambda: fused.run(None, feeds), repeats)
        ok &= err_fused <= 2e-5
        print(f"attention S={seq} N={num_heads} D={head_dim} {'causal' if causal else 'full  '}: "
              f"max|err| vs float64: FastAttentionEP {err_fused:.1e}, plain ONNX Runtime {err_plain:.1e} | "
              f"FastAttentionEP {t_fused:.1f} ms, plain ONNX Runtime {t_plain:.1f} ms, speed-up {t_plain / t_fused:.2f}x")
    return ok


def run_model_demo(model_path: str, seq: int, threads: int, repeats: int) -> bool:
    import os

    import onnxruntime as ort

    from ..convert import convert, sample_inputs

    out_path = os.path.splitext(model_path)[0] + ".fa.onnx"
    result = convert(model_path, out_path, verify=True)
    print(f"convert {os.path.basename(model_path)}: {result.found} attention subgraphs found, {result.fused} fused; "
          f"verify: {result.verify.summary() if result.verify else 'skipped'} -> {result.output_path}")
    if not result.fused:  # nothing written: nothing to compare
        print(result.report.summary())
        return False
    original = ort.InferenceSession(model_path, session_options(threads), providers=["CPUExecutionProvider"])
    converted = ort.InferenceSession(out_path, session_options(threads), providers=[EP_NAME, "CPUExecutionProvider"])
    feeds = sample_inputs(model_path, batch=1, seq=seq)
    want, got = original.run(None, feeds), converted.run(None, feeds)
    rel = max(float(np.abs(g - w).max() / max(np.abs(w).max(), 1e-30)) for g, w in zip(got, want))
    t_orig = _median_ms(lambda: original.run(None, feeds), repeats)
    t_conv = _median_ms(lambda: converted.run(None, feeds), repeats)
    ok = rel <= 1e-4
    print(f"model S={seq}: max|converted - original| / max|original| = {rel:.1e} | original (CPU EP) {t_orig:.1f} ms, "
          f"converted (FastAttentionEP) {t_conv:.1f} ms, speed-up {t_orig / t_conv:.2f}x")
    return ok


def run(args) -> int:
    print(machine_line(args.threads))
    ok = run_kernel_demo(args.seq_len, 8, 64, args.threads, args.repeats)
    if args.model:
        ok &= run_model_demo(args.model, args.model_seq_len, args.threads, args.repeats)
    print("parity: OK" if ok else "parity: FAILED")
    return 0 if ok else 1


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="the main job: build a model, run it with FastAttentionEP, print parity and speed")
    p.add_argument("--model", help="an exported model to convert and run side by side (models/export_hf.py)")
    p.add_argument("--seq-len", type=int, default=2048, help="attention demo: sequence length")
    p.add_argument("--model-seq-len", type=int, default=1024, help="model demo: prefill length")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.set_defaults(run=run)
