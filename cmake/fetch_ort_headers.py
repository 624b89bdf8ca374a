"""Find or fetch ONNX Runtime's C API headers for the build (the PyPI wheel ships none).

Order: ORT_INCLUDE_DIR (argument or environment); headers installed on the system if new
enough; Debian's libonnxruntime-dev fetched with `apt-get download` from the mirror the
machine's own apt sources name, unpacked with `dpkg -x` into the cache; last, the official
release archive. Prints the include directory on stdout. The cache makes rebuilds offline.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

MIN_API_VERSION = 27          # the plugin-EP API we compile against (ONNX Runtime 1.27)
DEBIAN_SUITE = "experimental"  # where 1.27 lives today; sid has 1.23, too old
RELEASE_VERSION = "1.27.1"


def api_version(include_dir: Path) -> int:
    header = include_dir / "onnxruntime_c_api.h"
    if not header.is_file():
        return -1
    m = re.search(r"#define\s+ORT_API_VERSION\s+(\d+)", header.read_text(errors="replace"))
    return int(m.group(1)) if m else -1


def log(msg: str) -> None:
    print(f"[ort-headers] {msg}", file=sys.stderr)


def apt_mirrors() -> list[str]:
    """Debian archive URIs named by this machine's apt sources (one-line and deb822 forms)."""
    files = glob.glob("/etc/apt/sources.list") + sorted(glob.glob("/etc/apt/sources.list.d/*.list")) \
        + sorted(glob.glob("/etc/apt/sources.list.d/*.sources"))
    uris: list[str] = []
    for f in files:
        try:
            text = Path(f).read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("deb ") or line.startswith("deb\t"):
                parts = [p for p in re.sub(r"\[[^\]]*\]", "", line).split() if p]
                if len(parts) >= 2:
                    uris.append(parts[1])
            elif line.startswith("URIs:"):
                uris.extend(line.split(":", 1)[1].split())
    # The main archive, not the security one, carries the experimental suite.
    out = [u.rstrip("/") for u in uris if "debian" in u and "security" not in u]
    return list(dict.fromkeys(out))


def fetch_debian(cache: Path) -> Path | None:
    if not shutil.which("apt-get") or not shutil.which("dpkg"):
        return None
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    signed = f"[signed-by={keyring}] " if os.path.exists(keyring) else ""
    for mirror in apt_mirrors():
        work = Path(tempfile.mkdtemp(prefix="ort-apt-", dir=cache))
        try:
            for d in ("lists/partial", "cache/archives/partial", "parts"):
                (work / d).mkdir(parents=True)
            (work / "sources.list").write_text(f"deb {signed}{mirror} {DEBIAN_SUITE} main\n")
            opts = [f"-oDir::Etc::SourceList={work}/sources.list", f"-oDir::Etc::SourceParts={work}/parts",
                    f"-oDir::State::Lists={work}/lists", f"-oDir::Cache={work}/cache",
                    "-oAPT::Sandbox::User=root" if os.geteuid() == 0 else "-oDebug::NoDropPrivs=1", "-qq"]
            subprocess.run(["apt-get", *opts, "update"], check=True, cwd=work, capture_output=True, timeout=300)
            subprocess.run(["apt-get", *opts, "download", "libonnxruntime-dev"], check=True, cwd=work,
                           capture_output=True, timeout=300)
            debs = list(work.glob("libonnxruntime-dev_*.deb"))
            if not debs:
                continue
            root = cache / "debian-root"
            shutil.rmtree(root, ignore_errors=True)
            subprocess.run(["dpkg", "-x", str(debs[0]), str(root)], check=True, capture_output=True)
            inc = root / "usr/include/onnxruntime"
            if api_version(inc) >= MIN_API_VERSION:
                log(f"using {debs[0].name} from {mirror} ({DEBIAN_SUITE})")
                return inc
        except (subprocess.SubprocessError, OSError) as e:
            log(f"apt-get download from {mirror} failed: {e}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return None


def fetch_release(cache: Path) -> Path | None:
    url = (f"https://github.com/microsoft/onnxruntime/releases/download/v{RELEASE_VERSION}/"
           f"onnxruntime-linux-x64-{RELEASE_VERSION}.tgz")
    try:
        archive = cache / "release.tgz"
        with urllib.request.urlopen(url, timeout=60) as r, open(archive, "wb") as f:
            shutil.copyfileobj(r, f)
        root = cache / "release-root"
        shutil.rmtree(root, ignore_errors=True)
        with tarfile.open(archive) as t:
            members = [m for m in t.getmembers() if "/include/" in m.name and m.isreg()]
            t.extractall(root, members=members, filter="data")
        for h in root.rglob("onnxruntime_c_api.h"):
            if api_version(h.parent) >= MIN_API_VERSION:
                log(f"using the release archive {url}")
                return h.parent
    except Exception as e:  # network may be absent: report and fall through
        log(f"release archive not available: {e}")
    return None


def resolve(explicit: str | None, cache: Path) -> Path:
    if explicit:
        inc = Path(explicit)
        if api_version(inc) < 0:
            raise SystemExit(f"ORT_INCLUDE_DIR={inc} has no onnxruntime_c_api.h")
        return inc
    for cached in (cache / "debian-root/usr/include/onnxruntime",):
        if api_version(cached) >= MIN_API_VERSION:
            return cached
    for h in [Path("/usr/include/onnxruntime"), Path("/usr/local/include/onnxruntime")]:
        if api_version(h) >= MIN_API_VERSION:
            return h
        if api_version(h) >= 0:
            log(f"{h} has API version {api_version(h)} < {MIN_API_VERSION}; not used")
    cached_release = next((h.parent for h in (cache / "release-root").rglob("onnxruntime_c_api.h")), None) \
        if (cache / "release-root").exists() else None
    if cached_release and api_version(cached_release) >= MIN_API_VERSION:
        return cached_release
    cache.mkdir(parents=True, exist_ok=True)
    inc = fetch_debian(cache) or fetch_release(cache)
    if inc is None:
        raise SystemExit("Could not find ONNX Runtime >= 1.27 C API headers. Set ORT_INCLUDE_DIR to a folder "
                         "holding onnxruntime_c_api.h (API version >= 27).")
    return inc


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", required=True)
    ap.add_argument("--include-dir", default=os.environ.get("ORT_INCLUDE_DIR") or None)
    a = ap.parse_args()
    print(resolve(a.include_dir, Path(a.cache)))
