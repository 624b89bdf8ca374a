"""`python -m fastattn_onnx doctor`: what this installation can do on this machine."""
from __future__ import annotations

import argparse

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
    backends = dict(_kernels.backends())  # the dispatch's backend list: name -> what it selected
    lines.append("kernels: " + "; ".join(f"{kind.upper()} {'built' if kind in backends else 'not built'}"
                                         for kind in ("cpu", "cuda", "npu")))
    if "cuda" in backends:
        lines.append(f"CUDA kernels: {backends['cuda']}")
        if not any(dict(d.ep_metadata).get("fastattn.kernel") == "cuda" for d in devices):
            lines.append("  no CUDA device visible (no NVIDIA driver, no GPU, or CUDA_VISIBLE_DEVICES hides them): "
                         "FastAttentionEP runs on the CPU")
    return lines


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
    return f"{head} ep_metadata={md}"


def run(args: argparse.Namespace) -> int:
    for line in report():
        print(line)
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("doctor", help="show onnxruntime, the EP, its devices and the kernels built")
    p.set_defaults(run=run)
