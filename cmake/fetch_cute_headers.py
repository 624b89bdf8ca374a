"""Find or fetch CuTe/CUTLASS headers for the CUDA kernels (the `nvidia-cutlass` PyPI wheel
carries them under cutlass_library/source/include).

Order: CUTLASS_INCLUDE_DIR (argument or environment); an installed `cutlass_library` package;
the wheel fetched with `pip download` into the cache and unpacked there (rebuilds are offline).
Prints the include directory (holding cute/ and cutlass/) on stdout.
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

WHEEL = "nvidia-cutlass==4.2.0.0"  # CuTe 4.x: the atoms and layouts kernels/cuda uses
INCLUDE_IN_WHEEL = "cutlass_library/source/include"


def log(msg: str) -> None:
    print(f"[cute-headers] {msg}", file=sys.stderr)


def usable(include_dir: Path) -> bool:
    return (include_dir / "cute" / "tensor.hpp").is_file() and (include_dir / "cutlass" / "cutlass.h").is_file()


def from_installed_package() -> Path | None:
    spec = importlib.util.find_spec("cutlass_library")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0])
    return root / "source" / "include"


def from_wheel(cache: Path) -> Path | None:
    include_dir = cache / INCLUDE_IN_WHEEL
    if usable(include_dir):
        return include_dir
    cache.mkdir(parents=True, exist_ok=True)
    log(f"downloading {WHEEL} (headers only are kept)")
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                           "-d", str(cache), WHEEL], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    wheels = sorted(glob.glob(str(cache / "nvidia_cutlass-*.whl")))
    if done.returncode != 0 or not wheels:
        log(f"pip download failed: {done.stderr.strip().splitlines()[-1:] or '?'}")
        return None
    with zipfile.ZipFile(wheels[-1]) as wheel:
        members = [m for m in wheel.namelist()
                   if m.startswith(INCLUDE_IN_WHEEL + "/cute/") or m.startswith(INCLUDE_IN_WHEEL + "/cutlass/")]
        wheel.extractall(cache, members)
    os.remove(wheels[-1])
    return include_dir if usable(include_dir) else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--include-dir", default=os.environ.get("CUTLASS_INCLUDE_DIR", ""))
    parser.add_argument("--cache", required=True)
    args = parser.parse_args()
    candidates = []
    if args.include_dir:
        candidates.append(("CUTLASS_INCLUDE_DIR", lambda: Path(args.include_dir)))
    candidates += [("the installed cutlass_library package", from_installed_package),
                   ("the nvidia-cutlass wheel", lambda: from_wheel(Path(args.cache)))]
    for what, find in candidates:
        include_dir = find()
        if include_dir is not None and usable(include_dir):
            log(f"using {what}: {include_dir}")
            print(include_dir)
            return 0
        log(f"not usable: {what}")
    log("no CuTe headers: set CUTLASS_INCLUDE_DIR to a folder holding cute/ and cutlass/")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
