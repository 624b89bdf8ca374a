"""`python -m fastattn_onnx bench gpu`: our CUDA kernel through the binding on torch tensors and
through ONNX Runtime (FastAttentionEP, I/O binding to the same torch tensors), next to PyTorch
SDPA's flash (FlashAttention-2), efficient (the xformers family: the paper's Volta baseline) and
cuDNN backends, on the issue's cases, in one process on one GPU.

Each contender is timed over `repeats` calls after a warm-up, the median kept: with CUDA events,
except "ours (ORT)", timed by wall clock around run_with_iobinding (ONNX Runtime waits for the
EP's stream before Run returns, so that covers the kernel and ORT's per-run overhead). Inputs are
fresh unit-variance tensors, rotated among several sets so that repeated calls do not measure the
L2 cache. TFLOP/s count 4*B*H*S_q*S_kv*D FLOPs, halved for causal; decode reports the bytes of K
and V read per second. Ratios are ours (binding) / theirs in throughput (> 1: we are faster); the
ORT line also gives its own ratio to flash (FA2).

Each call timed alone includes the host's time to launch it (the GPU waits between the start
event and the kernel), which is what one call costs a caller. A second line per case
("queued") times calls queued back to back, the mean of a run of them between two events: the
kernels' own time, with the launch overheads hidden behind the GPU. ONNX Runtime's Run waits for
its stream, so it has no queued timing.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import statistics
import tempfile
import time

# (B, H, S, D, causal): the prefill cases.
PREFILL = ((8, 32, 1024, 128, True), (2, 32, 4096, 128, True), (1, 32, 16384, 128, True),
           (8, 32, 1024, 64, False), (2, 16, 8192, 64, True), (1, 32, 65536, 128, True))
QUICK = ((2, 8, 512, 64, True), (1, 8, 1000, 128, False))
# Decode: B=16, H=32 over 8 KV heads, one new token over a past of 8192, D=128.
DECODE = dict(batch=16, heads=32, kv_heads=8, past=8192, head_dim=128)
SDPA_BACKENDS = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION")
NAMES = {"FLASH_ATTENTION": "flash (FA2)", "EFFICIENT_ATTENTION": "efficient", "CUDNN_ATTENTION": "cuDNN"}
ORT_NAME = "ours (ORT)"


@dataclasses.dataclass
class Timing:
    name: str
    ms: float | None  # None: the contender refused the case
    why: str = ""


def _event_ms(fn, inputs, calls: int, runs: int) -> float:
    """Median over `runs` runs of the mean time of `calls` calls queued back to back between two
    CUDA events, after two warm-up calls; the inputs rotate from call to call. calls=1: each call
    timed alone."""
    import torch

    for x in inputs[:2]:
        fn(*x)
    times = []
    for r in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for i in range(calls):
            fn(*inputs[(r * calls + i) % len(inputs)])
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return statistics.median(times)


def _input_sets(batch, heads, kv_heads, s_q, s_kv, d, dtype, sets: int):
    import torch

    def one():
        q = torch.randn(batch, heads, s_q, d, dtype=dtype, device="cuda")
        k = torch.randn(batch, kv_heads, s_kv, d, dtype=dtype, device="cuda")
        v = torch.randn(batch, kv_heads, s_kv, d, dtype=dtype, device="cuda")
        return q, k, v
    return [one() for _ in range(sets)]


def _ort_timing(batch, heads, kv_heads, s_q, s_kv, d, causal, dtype, inputs, repeats) -> Timing:
    """One FastAttention node in an onnxruntime session on FastAttentionEP, inputs and output bound
    by pointer to torch CUDA tensors (the binding contender's inputs: the same attributes and
    bytes). Refused, never raised, when the session cannot be made or would not run on the GPU."""
    def refused(why) -> Timing:
        text = str(why).strip()
        # "[ONNXRuntimeError] : 1 : FAIL : Node (n) Op (FastAttention) [...] the reason": keep the reason.
        text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : (Node \([^)]*\) Op \([^)]*\) )?(\[[^\]]*\] )?", "", text)
        return Timing(ORT_NAME, None, text.splitlines()[0][:80] if text else type(why).__name__)

    try:
        import numpy as np
        import onnxruntime as ort
        import torch

        import fastattn_onnx  # noqa: F401  (registers FastAttentionEP with onnxruntime)

        from ..constants import EP_NAME
        from ..device_tensors import attention
        from ..model_builders import ELEMENT_TYPES, build_model
    except Exception as error:  # noqa: BLE001  (the bench goes on without this contender)
        return refused(error)
    session = bindings = outs = None
    try:
        dtype_name = str(dtype).replace("torch.", "")
        if dtype_name not in ELEMENT_TYPES:
            return refused(f"no ONNX element type for {dtype_name}")
        # The element type as bind_input takes it: a NumPy type, or ONNX's enum for bfloat16.
        elem = getattr(np, dtype_name) if dtype_name in ("float16", "float32") else ELEMENT_TYPES[dtype_name]
        if not any(dev.ep_name == EP_NAME and dict(dev.ep_metadata).get("fastattn.kernel") == "cuda"
                   for dev in ort.get_ep_devices()):
            return refused(f"{EP_NAME} lists no CUDA device (CPU-only build, or not registered)")
        ordinal = inputs[0][0].device.index or 0
        # num_heads / kv_num_heads / causal as the binding contender passes them; 4D [B, H, S, D].
        model = build_model(layout="4d", batch=batch, seq_q=s_q, seq_kv=s_kv, num_heads=heads,
                            kv_num_heads=kv_heads, head_dim=d, dtype=dtype_name, causal=int(causal),
                            set_num_heads_attr=True)
        model_bytes = model.SerializeToString()
        ep = (EP_NAME, {"device_id": str(ordinal)}) if ordinal else EP_NAME

        def make_session(profile_prefix=None):
            so = ort.SessionOptions()
            so.log_severity_level = 3  # errors come back as exceptions and are reported on the line
            if profile_prefix:
                so.log_severity_level = 4  # nor "Could not write a profile" when creation fails
                so.enable_profiling = True
                so.profile_file_prefix = profile_prefix
            # enable_fallback=0: an EP error at creation is raised (and reported here), not printed
            # and retried on the CPU EP; disable_fallback(): the same for errors at run time.
            sess = ort.InferenceSession(model_bytes, so, providers=[ep, "CPUExecutionProvider"], enable_fallback=0)
            sess.disable_fallback()
            return sess

        def bind(sess, q, k, v, o):
            binding = sess.io_binding()
            for name, t in (("query", q), ("key", k), ("value", v)):
                binding.bind_input(name, "cuda", ordinal, elem, list(t.shape), t.data_ptr())
            binding.bind_output("output", "cuda", ordinal, elem, list(o.shape), o.data_ptr())
            return binding

        outs = [torch.empty(batch, heads, s_q, d, dtype=dtype, device=q.device) for q, _, _ in inputs]
        torch.cuda.synchronize()  # torch wrote the inputs on its own stream; the EP has another
        # Where the node ran, from a profiled run of a throwaway session on the same binding (the
        # timed session is never profiled): FastAttentionEP, or refused.
        with tempfile.TemporaryDirectory() as tmp:
            probe = make_session(os.path.join(tmp, "placement"))
            probe.run_with_iobinding(bind(probe, *inputs[0], outs[0]))
            with open(probe.end_profiling()) as f:
                providers = {e["args"]["provider"] for e in json.load(f)
                             if e.get("cat") == "Node" and "provider" in e.get("args", {})}
            del probe
        if providers != {EP_NAME}:
            return refused(f"the node ran on {', '.join(sorted(providers)) or 'no provider'}, not {EP_NAME}")
        for o in outs:  # the probe wrote outs[0]: poisoned, so the check below sees the timed session's
            o.fill_(float("nan"))
        torch.cuda.synchronize()
        session = make_session()
        # One binding per input set, bound once: rotating among them rebinds outside the timed region.
        bindings = [bind(session, q, k, v, o) for (q, k, v), o in zip(inputs, outs)]
        for binding in bindings:
            session.run_with_iobinding(binding)
        # The same kernel on the same inputs: a wrong placement or binding shows here.
        q, k, v = inputs[0]
        try:
            want = attention(q, k, v, num_heads=heads, kv_num_heads=kv_heads, causal=int(causal))
        except (ValueError, RuntimeError):
            want = None  # the binding contender refuses it too (its line says why)
        if want is not None:
            torch.cuda.synchronize()
            err = float((outs[0] - want).abs().max().item())
            del want
            if not err <= 5e-2:
                return refused(f"output differs from the binding's by {err:.3g}")
        torch.cuda.synchronize()
        times = []
        for i in range(repeats):
            binding = bindings[i % len(bindings)]
            start = time.perf_counter()
            session.run_with_iobinding(binding)  # returns after the EP's stream is done
            times.append(time.perf_counter() - start)
        return Timing(ORT_NAME, statistics.median(times) * 1e3)
    except Exception as error:  # noqa: BLE001  (onnxruntime raises its own Fail / RuntimeException types)
        return refused(error)
    finally:
        del session, bindings, outs


def _gqa_decode_timing(c, dtype, repeats) -> Timing:
    """One generation step of a com.microsoft::GroupQueryAttention node on FastAttentionEP as
    onnxruntime-genai runs it: the KV cache a shared buffer of capacity past + 64 (torch CUDA
    tensors bound as past and present, updated in place), seqlens_k and total_sequence_length
    bound from host memory. Includes the node's host round trip for those lengths."""
    name = "ours (ORT, GQA node)"
    try:
        import numpy as np
        import onnxruntime as ort
        import torch

        import fastattn_onnx  # noqa: F401

        from ..constants import EP_NAME
        from ..model_builders import build_gqa_decode_model

        dtype_name = str(dtype).replace("torch.", "")
        if dtype_name != "float16":
            return Timing(name, None, "timed in float16 only")
        b, n, kv, d, past = c["batch"], c["heads"], c["kv_heads"], c["head_dim"], c["past"]
        cap = past + 64
        model = build_gqa_decode_model(batch=b, num_heads=n, kv_num_heads=kv, head_dim=d, capacity=cap)
        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=[EP_NAME, "CPUExecutionProvider"],
                                    enable_fallback=0)
        sess.disable_fallback()
        dev = torch.device("cuda")
        q = torch.randn(b, 1, n * d, dtype=dtype, device=dev)
        k = torch.randn(b, 1, kv * d, dtype=dtype, device=dev)
        v = torch.randn(b, 1, kv * d, dtype=dtype, device=dev)
        caches = [torch.randn(b, kv, cap, d, dtype=dtype, device=dev) for _ in range(2)]
        out = torch.empty(b, 1, n * d, dtype=dtype, device=dev)
        seqlens = np.full(b, past, np.int32)  # past rows + the new one, minus one
        total = np.array(past + 1, np.int32)
        binding = sess.io_binding()
        for nm, t in (("query", q), ("key", k), ("value", v), ("past_key", caches[0]), ("past_value", caches[1])):
            binding.bind_input(nm, "cuda", 0, np.float16, list(t.shape), t.data_ptr())
        binding.bind_cpu_input("seqlens_k", seqlens)
        binding.bind_cpu_input("total_sequence_length", total)
        binding.bind_output("output", "cuda", 0, np.float16, list(out.shape), out.data_ptr())
        for nm, t in (("present_key", caches[0]), ("present_value", caches[1])):
            binding.bind_output(nm, "cuda", 0, np.float16, list(t.shape), t.data_ptr())
        torch.cuda.synchronize()
        for _ in range(3):
            sess.run_with_iobinding(binding)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            sess.run_with_iobinding(binding)
            times.append(time.perf_counter() - start)
        # The step's output against SDPA on the cache it read (the new row written at `past`).
        kk = caches[0][:, :, :past + 1].repeat_interleave(n // kv, dim=1)
        vv = caches[1][:, :, :past + 1].repeat_interleave(n // kv, dim=1)
        want = torch.nn.functional.scaled_dot_product_attention(q.view(b, 1, n, d).transpose(1, 2), kk, vv)
        err = float((out.view(b, 1, n, d).transpose(1, 2) - want).abs().max().item())
        if not err <= 5e-2:
            return Timing(name, None, f"output differs from SDPA's by {err:.3g}")
        return Timing(name, statistics.median(times) * 1e3)
    except Exception as error:  # noqa: BLE001  (the bench goes on without this contender)
        return Timing(name, None, str(error).splitlines()[0][:80] if str(error) else type(error).__name__)


def time_case(batch, heads, kv_heads, s_q, s_kv, d, causal, dtype, repeats,
              queued: list[Timing] | None = None) -> list[Timing]:
    """Per-call timings of every contender; with `queued` (a list), also appends the queued
    timings of the binding and of the SDPA backends to it."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from ..device_tensors import attention

    # Enough sets to exceed the L2 cache (50 MiB on an H200) where one set would fit in it.
    one_set = 3 * batch * heads * max(s_q, s_kv) * d * 2
    inputs = _input_sets(batch, heads, kv_heads, s_q, s_kv, d, dtype, 1 if one_set > 2**28 else 4)
    rows = []
    # Queued runs: about 8 calls each, fewer runs than repeats (the longest case runs 0.1 s a call).
    calls, runs = 8, max(3, repeats // 4)

    def ours(q, k, v):
        return attention(q, k, v, num_heads=heads, kv_num_heads=kv_heads, causal=int(causal))
    try:
        rows.append(Timing("ours (binding)", _event_ms(ours, inputs, 1, repeats)))
        if queued is not None:
            queued.append(Timing("ours (binding)", _event_ms(ours, inputs, calls, runs)))
    except (ValueError, RuntimeError) as error:
        rows.append(Timing("ours (binding)", None, str(error).splitlines()[0][:80]))
        if queued is not None:
            queued.append(rows[-1])
    rows.append(_ort_timing(batch, heads, kv_heads, s_q, s_kv, d, causal, dtype, inputs, repeats))
    for backend in SDPA_BACKENDS:
        def sdpa(q, k, v):
            with sdpa_kernel(getattr(SDPBackend, backend)):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal,
                                                      enable_gqa=kv_heads != heads)
        try:
            rows.append(Timing(NAMES[backend], _event_ms(sdpa, inputs, 1, repeats)))
            if queued is not None:
                queued.append(Timing(NAMES[backend], _event_ms(sdpa, inputs, calls, runs)))
        except RuntimeError as error:
            rows.append(Timing(NAMES[backend], None, str(error).splitlines()[0][:60]))
            if queued is not None:
                queued.append(rows[-1])
    del inputs
    torch.cuda.empty_cache()
    return rows


def _line(label: str, rows: list[Timing], work: float, unit: str) -> str:
    ours = rows[0]
    fa2 = next((r for r in rows if r.name == NAMES["FLASH_ATTENTION"]), None)
    parts = []
    for r in rows:
        if r.ms is None:
            parts.append(f"{r.name}: refused ({r.why})")
            continue
        rate = work / (r.ms * 1e-3)
        text = f"{r.name} {r.ms:8.3f} ms {rate:7.1f} {unit}"
        if r is not ours and ours.ms is not None:
            text += f" (ours {r.ms / ours.ms:.2f}x)"
        if r.name == ORT_NAME and fa2 is not None and fa2.ms is not None:
            text += f" ({fa2.ms / r.ms:.2f}x FA2)"
        parts.append(text)
    return f"{label}: " + " | ".join(parts)


def run_gpu(args) -> int:
    import torch

    if not torch.cuda.is_available():
        print("bench gpu: no CUDA device visible to torch")
        return 2
    dtype = getattr(torch, args.dtype)
    print(f"gpu: {torch.cuda.get_device_name()} (sm_{''.join(map(str, torch.cuda.get_device_capability()))}), "
          f"torch {torch.__version__}, {args.dtype}, median of {args.repeats}")
    for batch, heads, seq, d, causal in (QUICK if args.quick else PREFILL):
        flops = 4 * batch * heads * seq * seq * d * (0.5 if causal else 1.0)
        queued: list[Timing] = []
        rows = time_case(batch, heads, heads, seq, seq, d, causal, dtype, args.repeats, queued)
        label = f"B={batch} H={heads} S={seq} D={d} {'causal' if causal else 'full'}"
        print(_line(label, rows, flops / 1e12, "TFLOP/s"), flush=True)
        print(_line(label + " queued", queued, flops / 1e12, "TFLOP/s"), flush=True)
    c = DECODE
    queued = []
    rows = time_case(c["batch"], c["heads"], c["kv_heads"], 1, c["past"], c["head_dim"], False, dtype,
                     args.repeats, queued)
    kv_bytes = 2 * c["batch"] * c["kv_heads"] * c["past"] * c["head_dim"] * torch.finfo(dtype).bits // 8
    label = (f"decode B={c['batch']} H={c['heads']} KV={c['kv_heads']} S_q=1 past={c['past']} "
             f"D={c['head_dim']}")
    print(_line(label, rows, kv_bytes / 1e9, "GB/s"), flush=True)
    print(_line(label + " queued", queued, kv_bytes / 1e9, "GB/s"), flush=True)
    # The same step as a GroupQueryAttention node (what onnxruntime-genai's models hold).
    gqa = [_gqa_decode_timing(c, dtype, args.repeats)] + rows[2:]
    print(_line(label + " GroupQueryAttention", gqa, kv_bytes / 1e9, "GB/s"), flush=True)
    return 0
