"""`python -m fastattn_onnx bench npu`: the paper's Ascend comparison on one NPU, for users with the
hardware (never run here: no NPU, no CANN on the machines this was written on).

Contenders, float16, causal, [B, N, S, D] (BNSD), one process on NPU 0:
  - ours: one FastAttention node through onnxruntime with FastAttentionEP's NPU device (CANN's
    aclnnFusedInferAttentionScore under our plan); inputs fed from the host, so the time includes
    the copies onnxruntime makes to and from the device (said on the line);
  - standard: attention decomposed into torch_npu ops (matmul, scale, masked_fill, softmax,
    matmul), the paper's "standard attention" baseline;
  - npu_fusion_attention: torch_npu's fused FlashAttention operator (sparse_mode 3, the compressed
    2048 x 2048 mask).
Medians of `repeats` calls after a warm-up, each followed by torch.npu.synchronize().
"""
from __future__ import annotations

import statistics
import sys
import time

CASES = ((1, 32, 1024, 128), (1, 32, 2048, 128), (1, 32, 4096, 128), (1, 32, 8192, 128))
QUICK = ((1, 8, 512, 64), (1, 8, 1024, 128))


def npu_unavailable() -> str:
    """'' when FastAttentionEP lists an NPU device, else why not (for the message)."""
    import onnxruntime as ort

    from .. import _kernels, _ort
    from ..constants import EP_NAME

    backends = dict(_kernels.backends())
    if "ascend" not in backends:
        return "this build of fastattn_onnx has no Ascend backend (Linux builds have it)"
    _ort.register_ep()
    if any(d.ep_name == EP_NAME and dict(d.ep_metadata).get("fastattn.kernel") == "npu" for d in ort.get_ep_devices()):
        return ""
    text = backends["ascend"]
    return text if text.startswith("CANN not found") else f"{text}; FastAttentionEP lists no NPU device"


def _median_ms(fn, repeats: int) -> float:
    import torch

    fn()
    torch.npu.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.npu.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _time_case(b, n, s, d, repeats) -> dict[str, float | str]:
    import numpy as np
    import onnxruntime as ort
    import torch
    import torch_npu  # noqa: F401  (registers the "npu" device with torch)

    from ..constants import EP_NAME
    from ..model_builders import build_model

    rows: dict[str, float | str] = {}
    q, k, v = (torch.randn(b, n, s, d, dtype=torch.float16, device="npu:0") for _ in range(3))
    scale = d ** -0.5
    model = build_model(layout="4d", batch=b, seq_q=s, seq_kv=s, num_heads=n, head_dim=d, dtype="float16", causal=1)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    npu = next(dv for dv in ort.get_ep_devices()
               if dv.ep_name == EP_NAME and dict(dv.ep_metadata).get("fastattn.kernel") == "npu")
    so.add_provider_for_devices([npu], {})
    sess = ort.InferenceSession(model.SerializeToString(), so)
    feeds = {"query": q.cpu().numpy(), "key": k.cpu().numpy(), "value": v.cpu().numpy()}
    try:
        rows["ours (ORT, host I/O)"] = _median_ms(lambda: sess.run(None, feeds), repeats)
    except Exception as e:  # noqa: BLE001  (reported on the line)
        rows["ours (ORT, host I/O)"] = f"failed: {str(e).splitlines()[0][:80]}"

    causal = torch.triu(torch.ones(s, s, dtype=torch.bool, device="npu:0"), diagonal=1)

    def standard():
        scores = torch.matmul(q, k.transpose(-1, -2)) * scale
        return torch.matmul(torch.softmax(scores.masked_fill(causal, float("-inf")), dim=-1), v)

    rows["standard"] = _median_ms(standard, repeats)
    compressed = torch.triu(torch.ones(2048, 2048, dtype=torch.bool, device="npu:0"), diagonal=1)

    def fused():
        return torch_npu.npu_fusion_attention(q, k, v, n, "BNSD", atten_mask=compressed, scale=scale, sparse_mode=3)[0]

    try:
        rows["npu_fusion_attention"] = _median_ms(fused, repeats)
    except RuntimeError as e:
        rows["npu_fusion_attention"] = f"failed: {str(e).splitlines()[0][:80]}"
    # The same numbers from every contender (ours read back through the host).
    want = standard().float().cpu().numpy()
    got = sess.run(None, feeds)[0].astype(np.float32)
    rows["max|ours - standard|"] = float(np.max(np.abs(got - want)))
    return rows


def run_npu(args) -> int:
    why = npu_unavailable()
    if why:
        print(f"bench npu: no Ascend device ({why})", file=sys.stderr)
        return 2
    try:
        import torch
        import torch_npu  # noqa: F401
    except ImportError as e:
        print(f"bench npu: torch_npu is needed for the anchors ({e}); pip install 'fastattn-onnx[ascend]'",
              file=sys.stderr)
        return 2
    print(f"npu: {torch.npu.get_device_name(0)}, torch {torch.__version__}, torch_npu {torch_npu.__version__}, "
          f"float16 causal, median of {args.repeats}")
    for b, n, s, d in (QUICK if args.quick else CASES):
        rows = _time_case(b, n, s, d, args.repeats)
        ours = rows.get("ours (ORT, host I/O)")
        parts = []
        for name, value in rows.items():
            if isinstance(value, str):
                parts.append(f"{name}: {value}")
            elif name.startswith("max|"):
                parts.append(f"{name} {value:.1e}")
            else:
                is_anchor = isinstance(ours, float) and name != "ours (ORT, host I/O)"
                ratio = f" (ours {value / ours:.2f}x)" if is_anchor else ""
                parts.append(f"{name} {value:8.3f} ms{ratio}")
        print(f"B={b} N={n} S={s} D={d}: " + " | ".join(parts), flush=True)
    return 0
