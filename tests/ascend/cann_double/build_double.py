"""Builds the CANN test double (libcann_double.so) and backend_check (the Ascend backend over the
double, without onnxruntime) at test time, for the host with g++ or for aarch64 with
aarch64-linux-gnu-g++: never part of the package or the wheel. Objects shared by both (our CPU
kernel, which the double evaluates the operator with) are compiled once per target.

    python build_double.py OUT_DIR [aarch64]   # prints the two paths
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
KERNELS = os.path.join(ROOT, "kernels")
CPU_KERNEL = [os.path.join(KERNELS, "cpu", "cpu_attention.cc"), os.path.join(KERNELS, "cpu", "tile_kernel.cc"),
              os.path.join(KERNELS, "attention_params.cc")]
DOUBLE = [os.path.join(HERE, "cann_double.cc")]
BACKEND = [os.path.join(HERE, "backend_check.cc")] + [os.path.join(KERNELS, "ascend", f) for f in
                                                      ("cann_api.cc", "ascend_backend.cc", "fia_plan.cc")]


def compiler(target: str | None = None) -> str:
    """The C++ compiler for `target` (None: this machine), or raises RuntimeError saying which is missing."""
    name = "aarch64-linux-gnu-g++" if target == "aarch64" else (os.environ.get("CXX") or "g++")
    path = shutil.which(name)
    if not path:
        raise RuntimeError(f"no C++ compiler ({name}) to build the CANN test double")
    return path


def build(out_dir: str, target: str | None = None) -> tuple[str, str]:
    """(libcann_double.so, backend_check) for `target` ("aarch64" or None for this machine)."""
    cxx = compiler(target)
    arm = target == "aarch64" or (target is None and platform.machine() in ("aarch64", "arm64"))
    isa = "neon" if arm else "baseline"  # one ISA copy of the CPU tile kernel is enough here
    flags = ["-std=c++17", "-O2", "-fPIC", "-fvisibility=hidden", f"-I{KERNELS}", f"-I{HERE}",
             f"-DFASTATTN_ISA_NS=isa_{isa}", f"-DFASTATTN_HAVE_ISA_{isa.upper()}", "-fno-trapping-math",
             "-fno-math-errno"]
    objects = os.path.join(out_dir, "obj")
    os.makedirs(objects, exist_ok=True)

    def compile_one(src: str) -> str:
        obj = os.path.join(objects, os.path.basename(src) + ".o")
        res = subprocess.run([cxx, *flags, "-c", src, "-o", obj], capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"compiling {os.path.relpath(src, ROOT)} failed:\n" + res.stderr[-4000:])
        return obj

    with ThreadPoolExecutor(2) as pool:  # the machines running the tests may have 2 cores
        objs = dict(zip(CPU_KERNEL + DOUBLE + BACKEND, pool.map(compile_one, CPU_KERNEL + DOUBLE + BACKEND)))

    def link(sources, out, extra):
        res = subprocess.run([cxx, *[objs[s] for s in sources], "-o", out, *extra], capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"linking {os.path.basename(out)} failed:\n" + res.stderr[-4000:])
        return out

    double = link(DOUBLE + CPU_KERNEL, os.path.join(out_dir, "libcann_double.so"), ["-shared", "-lpthread"])
    check = link(BACKEND + CPU_KERNEL, os.path.join(out_dir, "backend_check"), ["-ldl", "-lpthread"])
    return double, check


if __name__ == "__main__":
    print("\n".join(build(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)))
