"""What several tools share: session options, timing, the machine's GEMM rate and description,
a process's own peak memory."""
from __future__ import annotations

import os
import platform
import sys
import time

import numpy as np


def session_options(threads: int):
    """Quiet SessionOptions with `threads` intra-op threads and one inter-op thread."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return so


def time_ms(fn, repeats: int) -> list[float]:
    """Wall time of each of `repeats` calls of fn, in milliseconds."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def sgemm_rate(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """The machine's float32 GEMM rate (GFLOP/s) through ORT's own MatMul at the same thread
    count: about the speed attention's two GEMMs can reach."""
    import onnx.helper as oh
    import onnxruntime as ort
    from onnx import TensorProto

    vi = [oh.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in "abc"]
    graph = oh.make_graph([oh.make_node("MatMul", ["a", "b"], ["c"])], "sgemm", vi[:2], vi[2:])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=9)
    session = ort.InferenceSession(model.SerializeToString(), session_options(threads),
                                   providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {x: rng.standard_normal((n, n), dtype=np.float32) for x in "ab"}
    session.run(None, feeds)
    best_ms = min(time_ms(lambda: session.run(None, feeds), repeats))
    return 2.0 * n**3 / (best_ms * 1e-3) / 1e9


def machine_line(threads: int) -> str:
    import onnxruntime as ort

    from .. import _kernels

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"machine: {cpu}, {os.cpu_count()} cores, threads={threads}, kernel ISA {_kernels.cpu_isa()}, "
            f"onnxruntime {ort.__version__}")


def peak_rss_bytes() -> int:
    """This process's own peak resident memory.

    Linux: VmHWM of /proc/self/status, the high-water mark of this process's own address space,
    which starts afresh at exec. Not ru_maxrss: Linux carries it over from the old address space
    at exec, so a child started by a big parent reports the parent's peak. Where /proc is absent,
    ru_maxrss all the same (bytes on macOS, KiB elsewhere); it may include the parent's peak.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
