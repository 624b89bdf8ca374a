"""Find or fetch CuTe/CUTLASS headers for the CUDA kernels (the `nvidia-cutlass` PyPI wheel
carries them under cutlass_library/source/include).

Order: CUTLASS_INCLUDE_DIR (argument or environment); an installed `cutlass_library` package;
the wheel fetched into the cache with `pip download` (or, where pip is not reachable, as inside
pip's isolated build environment, from the index's simple page with its sha256 checked) and unpacked there
(rebuilds are offline).
Prints the include directory (holding cute/ and cutlass/) on stdout.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
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


def _pip_download(cache: Path) -> bool:
    """pip, as the machine configures it (index, proxy, certificates); inside pip's isolated build
    environment `python -m pip` is often missing, so a pip on PATH is tried too."""
    commands = [[sys.executable, "-m", "pip"]] + [[p] for p in filter(None, map(shutil.which, ("pip3", "pip")))]
    for command in commands:
        done = subprocess.run([*command, "download", "--no-deps", "--only-binary=:all:", "-d", str(cache), WHEEL],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode == 0:
            return True
        log(f"{' '.join(command)} download failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return False


def _index_download(cache: Path) -> bool:
    """The wheel from the package index's simple page (PIP_INDEX_URL, else PyPI), checked against
    the sha256 the page publishes with it."""
    name, version = WHEEL.split("==")
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    wanted = f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    try:
        with urllib.request.urlopen(f"{index}/{name}/", timeout=60) as r:
            page = r.read().decode("utf-8", "replace")
        match = re.search(r'href="([^"]*/' + re.escape(wanted) + r')#sha256=([0-9a-f]{64})"', page)
        if match is None:
            log(f"{wanted} is not on {index}/{name}/")
            return False
        url = urllib.parse.urljoin(f"{index}/{name}/", match.group(1))
        with urllib.request.urlopen(url, timeout=300) as r:
            data = r.read()
    except (OSError, ValueError) as error:
        log(f"index download failed: {error}")
        return False
    if hashlib.sha256(data).hexdigest() != match.group(2):
        log("index download failed: sha256 mismatch")
        return False
    (cache / wanted).write_bytes(data)
    return True


def from_wheel(cache: Path) -> Path | None:
    include_dir = cache / INCLUDE_IN_WHEEL
    if usable(include_dir):
        return include_dir
    cache.mkdir(parents=True, exist_ok=True)
    log(f"downloading {WHEEL} (headers only are kept)")
    if not (_pip_download(cache) or _index_download(cache)):
        return None
    wheels = sorted(glob.glob(str(cache / "nvidia_cutlass-*.whl")))
    if not wheels:
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
