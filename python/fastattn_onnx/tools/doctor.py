"""`python -m fastattn_onnx doctor`: what this installation can do on this machine."""
from __future__ import annotations

import argparse
import os
import platform
import struct

from ..constants import EP_NAME


def report() -> list[str]:
    lines = []
    try:
        import onnxruntime as ort
        lines.append(f"onnxruntime {ort.__version__}")
    except ImportError as e:
        return [f"onnxruntime: not importable ({e})"]
    from .. import _kernels, _ort

    try:
        _ort.check_onnxruntime()
        lines.append(f"library: {_ort.get_library_path()}")
        _ort.register_ep()
        lines.append(f"EP {EP_NAME}: registered")
    except Exception as e:  # report, don't raise: this is the diagnostic command
        lines.append(f"EP {EP_NAME}: NOT registered ({e})")
    devices = [d for d in ort.get_ep_devices() if d.ep_name == EP_NAME]
    if not devices:
        lines.append("  devices: none")
    for d in devices:
        lines.append("  " + _device_line(d))
    lines.append(f"CPU vector ISA: {_kernels.cpu_isa()} (compiled: {_kernels.cpu_compiled_isas()})")
    lines.append(f"CPU features ({platform.machine()}): {cpu_features() or 'unknown'}")
    lines.append(threads_line())
    backends = dict(_kernels.backends())  # the dispatch's backend list: name -> what it selected
    lines.append("kernels: " + "; ".join(f"{kind.upper()} {'built' if name in backends else 'not built'}"
                                         for kind, name in (("cpu", "cpu"), ("cuda", "cuda"), ("npu", "ascend"))))
    if "cuda" in backends:
        lines.append(f"CUDA kernels: {backends['cuda']}")
        if not any(dict(d.ep_metadata).get("fastattn.kernel") == "cuda" for d in devices):
            lines.append("  no CUDA device visible (no NVIDIA driver, no GPU, or CUDA_VISIBLE_DEVICES hides them): "
                         "FastAttentionEP runs on the CPU")
    if "ascend" in backends:
        # CANN is loaded at run time: "CANN <version> ...; N NPUs, SoC ..." or "CANN not found: <why>".
        lines.append(f"Ascend NPU: {backends['ascend']}")
    return lines


# Linux's arm64 HWCAP / HWCAP2 bit names (uapi asm/hwcap.h). The auxiliary vector is read first:
# it is what this process runs with (/proc/cpuinfo's "Features" is the same set on a board, but
# under qemu-user it is the host's file, or whatever the emulated root put there).
_HWCAP = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc "
          "dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg").split()
_HWCAP2 = ("dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm svef64mm "
           "svebf16 i8mm bf16 dgh rng bti mte").split()
_AT_HWCAP, _AT_HWCAP2 = 16, 26
# The x86 flags that decide which compiled copy of the kernel runs.
_X86_FLAGS = ("sse2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "amx_tile")


def cpu_features() -> str:
    """The CPU features that matter to the kernel: aarch64 all of them, x86 the vector ones."""
    info = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return _aarch64_hwcaps() or info.get("Features", "")
    if machine in ("x86_64", "amd64"):
        flags = set(info.get("flags", "").split())
        return " ".join(f for f in _X86_FLAGS if f in flags)
    return info.get("Features") or info.get("flags", "")


def _aarch64_hwcaps() -> str:
    try:
        with open("/proc/self/auxv", "rb") as f:
            raw = f.read()
    except OSError:
        return ""
    auxv = dict(struct.iter_unpack("<QQ", raw[: len(raw) // 16 * 16]))
    names = [n for i, n in enumerate(_HWCAP) if auxv.get(_AT_HWCAP, 0) >> i & 1]
    names += [n for i, n in enumerate(_HWCAP2) if auxv.get(_AT_HWCAP2, 0) >> i & 1]
    return " ".join(names) + " (HWCAP)" if names else ""


def usable_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def suggested_threads() -> tuple[int, str]:
    """Worker threads for the kernel on this machine, and why.

    On big.LITTLE / DynamIQ boxes (different cpu_capacity values) the big cores alone: a
    fork-join wave waits for its slowest thread, so little cores slow it down. Else every CPU this
    process may run on (its affinity, which containers and taskset narrow)."""
    cpus = usable_cpus()
    caps = {}
    for c in cpus:
        try:
            with open(f"/sys/devices/system/cpu/cpu{c}/cpu_capacity", encoding="ascii") as f:
                caps[c] = int(f.read().strip())
        except (OSError, ValueError):
            pass
    if len(caps) == len(cpus) and len(set(caps.values())) > 1:
        top = max(caps.values())
        big = sum(1 for v in caps.values() if v == top)
        return big, f"{big} big cores of {len(cpus)} (cpu_capacity {top}; the others {sorted(set(caps.values()))[:-1]})"
    return len(cpus), f"{len(cpus)} usable CPUs of {os.cpu_count()}"


def threads_line() -> str:
    n, why = suggested_threads()
    return (f"threads: suggested {n} ({why}): SessionOptions.intra_op_num_threads (FastAttentionEP runs on "
            f"the session's intra-op pool), num_threads of fastattn_onnx.attention (0: every CPU this process may run on)")


def _device_line(d) -> str:
    """One OrtEpDevice of the EP: its kind first, a GPU's name, compute capability and PCI bus."""
    hw = d.device
    md = dict(d.ep_metadata)
    head = f"device: {hw.type.name} vendor={hw.vendor!r} vendor_id={hw.vendor_id:#x} device_id={hw.device_id:#x}"
    if md.get("fastattn.kernel") == "cuda":
        origin = {"onnxruntime": "ONNX Runtime's hardware device", "created": "hardware device made by the EP"}
        head = (f"device: GPU cuda:{md.get('fastattn.ordinal')} {md.get('fastattn.cuda.name', '?')} "
                f"compute capability {md.get('fastattn.cuda.compute_capability', '?')} "
                f"PCI {md.get('fastattn.cuda.pci_bus_id', '?')} "
                f"({origin.get(md.get('fastattn.hardware_device', ''), 'hardware device of unknown origin')}, "
                f"vendor_id={hw.vendor_id:#x} device_id={hw.device_id:#x})")
    if md.get("fastattn.kernel") == "npu":
        head = (f"device: NPU npu:{md.get('fastattn.ordinal')} {md.get('fastattn.npu.soc_name') or 'SoC unknown'} "
                f"CANN {md.get('fastattn.npu.cann_version') or 'version unknown'} "
                f"(vendor_id={hw.vendor_id:#x} device_id={hw.device_id:#x})")
    return f"{head} ep_metadata={md}"


def run(args: argparse.Namespace) -> int:
    for line in report():
        print(line)
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("doctor", help="show onnxruntime, the EP, its devices and the kernels built")
    p.set_defaults(run=run)
