"""`python -m fastattn_onnx bench gpu`: our CUDA kernel through the binding on torch tensors, next
to PyTorch SDPA's flash (FlashAttention-2), efficient (the xformers family: the paper's Volta
baseline) and cuDNN backends, on the issue's cases, in one process on one GPU.

Each contender is timed with CUDA events over `repeats` calls after a warm-up, the median kept;
inputs are fresh unit-variance tensors, rotated among several sets so that repeated calls do not
measure the L2 cache. TFLOP/s count 4*B*H*S_q*S_kv*D FLOPs, halved for causal; decode reports the
bytes of K and V read per second. Ratios are ours / theirs in throughput (> 1: we are faster).
"""
from __future__ import annotations

import dataclasses
import statistics

# (B, H, S, D, causal): the prefill cases.
PREFILL = ((8, 32, 1024, 128, True), (2, 32, 4096, 128, True), (1, 32, 16384, 128, True),
           (8, 32, 1024, 64, False), (2, 16, 8192, 64, True), (1, 32, 65536, 128, True))
QUICK = ((2, 8, 512, 64, True), (1, 8, 1000, 128, False))
# Decode: B=16, H=32 over 8 KV heads, one new token over a past of 8192, D=128.
DECODE = dict(batch=16, heads=32, kv_heads=8, past=8192, head_dim=128)
SDPA_BACKENDS = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION")
NAMES = {"FLASH_ATTENTION": "flash (FA2)", "EFFICIENT_ATTENTION": "efficient", "CUDNN_ATTENTION": "cuDNN"}


@dataclasses.dataclass
class Timing:
    name: str
    ms: float | None  # None: the contender refused the case
    why: str = ""


def _median_ms(fn, inputs, repeats: int) -> float:
    import torch

    for x in inputs[:2]:
        fn(*x)
    times = []
    for i in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(*inputs[i % len(inputs)])
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _input_sets(batch, heads, kv_heads, s_q, s_kv, d, dtype, sets: int):
    import torch

    def one():
        q = torch.randn(batch, heads, s_q, d, dtype=dtype, device="cuda")
        k = torch.randn(batch, kv_heads, s_kv, d, dtype=dtype, device="cuda")
        v = torch.randn(batch, kv_heads, s_kv, d, dtype=dtype, device="cuda")
        return q, k, v
    return [one() for _ in range(sets)]


def time_case(batch, heads, kv_heads, s_q, s_kv, d, causal, dtype, repeats) -> list[Timing]:
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from ..device_tensors import attention

    # Enough sets to exceed the L2 cache (50 MiB on an H200) where one set would fit in it.
    one_set = 3 * batch * heads * max(s_q, s_kv) * d * 2
    inputs = _input_sets(batch, heads, kv_heads, s_q, s_kv, d, dtype, 1 if one_set > 2**28 else 4)
    rows = []
    try:
        ms = _median_ms(lambda q, k, v: attention(q, k, v, num_heads=heads, kv_num_heads=kv_heads,
                                                  causal=int(causal)), inputs, repeats)
        rows.append(Timing("ours (binding)", ms))
    except (ValueError, RuntimeError) as error:
        rows.append(Timing("ours (binding)", None, str(error).splitlines()[0][:80]))
    for backend in SDPA_BACKENDS:
        def sdpa(q, k, v):
            with sdpa_kernel(getattr(SDPBackend, backend)):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal,
                                                      enable_gqa=kv_heads != heads)
        try:
            rows.append(Timing(NAMES[backend], _median_ms(sdpa, inputs, repeats)))
        except RuntimeError as error:
            rows.append(Timing(NAMES[backend], None, str(error).splitlines()[0][:60]))
    del inputs
    torch.cuda.empty_cache()
    return rows


def _line(label: str, rows: list[Timing], work: float, unit: str) -> str:
    ours = rows[0]
    parts = []
    for r in rows:
        if r.ms is None:
            parts.append(f"{r.name}: refused ({r.why})")
            continue
        rate = work / (r.ms * 1e-3)
        text = f"{r.name} {r.ms:8.3f} ms {rate:7.1f} {unit}"
        if r is not ours and ours.ms is not None:
            text += f" (ours {r.ms / ours.ms:.2f}x)"
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
        rows = time_case(batch, heads, heads, seq, seq, d, causal, dtype, args.repeats)
        label = f"B={batch} H={heads} S={seq} D={d} {'causal' if causal else 'full'}"
        print(_line(label, rows, flops / 1e12, "TFLOP/s"), flush=True)
    c = DECODE
    rows = time_case(c["batch"], c["heads"], c["kv_heads"], 1, c["past"], c["head_dim"], False, dtype,
                     args.repeats)
    kv_bytes = 2 * c["batch"] * c["kv_heads"] * c["past"] * c["head_dim"] * torch.finfo(dtype).bits // 8
    label = (f"decode B={c['batch']} H={c['heads']} KV={c['kv_heads']} S_q=1 past={c['past']} "
             f"D={c['head_dim']}")
    print(_line(label, rows, kv_bytes / 1e9, "GB/s"), flush=True)
    return 0
