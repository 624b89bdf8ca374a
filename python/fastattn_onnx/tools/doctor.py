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
        hw = d.device
        lines.append(f"  device: {hw.type.name} vendor={hw.vendor!r} vendor_id={hw.vendor_id:#x} "
                     f"device_id={hw.device_id:#x} ep_metadata={dict(d.ep_metadata)}")
    lines.append(f"CPU vector ISA: {_kernels.cpu_isa()} (compiled: {_kernels.cpu_compiled_isas()})")
    built = [name for name, _ in _kernels.backends()]  # the dispatch's backend list
    lines.append("kernels: " + "; ".join(f"{kind.upper()} {'built' if kind in built else 'not built'}"
                                         for kind in ("cpu", "cuda", "npu")))
    return lines


def run(args: argparse.Namespace) -> int:
    for line in report():
        print(line)
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("doctor", help="show onnxruntime, the EP, its devices and the kernels built")
    p.set_defaults(run=run)
