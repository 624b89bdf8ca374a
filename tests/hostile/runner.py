"""Runs cases in worker subprocesses with a timeout and classifies what the process did.

Cases run in batches (one worker process per batch, family by family); when a worker dies or a
case overruns its timeout, that case is recorded (crash / hang), confirmed alone in a fresh
process when other cases ran before it in the same process, and the rest of the batch goes on in
a new worker. Families that need a clean process per case (BATCH = 1) get one.
"""
from __future__ import annotations

import collections
import concurrent.futures
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time

from .cases import BAD, CRASH, HANG, HARNESS, OUTCOMES, PASS, SKIP, Case, Result, case_seed, family_module, \
    make_case, params_text

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CI_SEED = 14  # the CI sample's fixed seed (issue 14)
TAIL_CHARS = 4000


def worker_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    # The worker imports exactly what this process imports (an installed package or a checkout).
    here = os.path.dirname(os.path.abspath(__file__))
    paths = [TESTS_DIR] + [p for p in sys.path if p and os.path.isdir(p) and os.path.abspath(p) != here]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    env["PYTHONFAULTHANDLER"] = "1"  # a crash prints the Python stack into the tail
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra or {})
    return env


class Batch:
    def __init__(self, family: str, cases: list[Case]):
        self.family = family
        self.cases = cases


def _tail(path: str, key: str | None) -> str:
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    if key:
        marker = f"=== hostile case {key}"
        at = text.rfind(marker)
        if at >= 0:
            text = text[at + len(marker):]
    return text[-TAIL_CHARS:].strip()


def _run_process(cases: list[Case], ctx: dict, env: dict, timeout: float, workdir: str):
    """Runs cases in one worker. Returns (results by index, index of the case that was running
    when the worker died or hung (or None), 'crash'/'hang'/None, detail, tail)."""
    fd, job_path = tempfile.mkstemp(prefix="job-", suffix=".json", dir=workdir)
    with os.fdopen(fd, "w") as f:
        json.dump({"ctx": ctx, "cases": [c.to_json() for c in cases]}, f)
    err_fd, err_path = tempfile.mkstemp(prefix="stderr-", suffix=".txt", dir=workdir)
    proc = subprocess.Popen([sys.executable, "-m", "hostile.worker", job_path], cwd=TESTS_DIR, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err_fd,
                            start_new_session=True)
    os.close(err_fd)
    lines: queue.Queue = queue.Queue()

    def read():
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    results: dict[int, dict] = {}
    current, started = None, time.monotonic()
    failure = None
    while True:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            line = ""
        if line is None:
            break
        if line:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "start" in msg:
                current, started = msg["start"], time.monotonic()
            elif "done" in msg:
                results[msg["done"]] = msg
                current = None
        if current is not None and time.monotonic() - started > timeout:
            failure = HANG
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            break
    try:
        rc = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        rc = proc.wait()
    detail = ""
    if failure is None and current is None and len(results) < len(cases):
        current = len(results)  # died between cases (at import or exit)
    if failure is None and current is not None:
        failure = CRASH
        if rc < 0:
            try:
                detail = f"killed by signal {signal.Signals(-rc).name}"
            except ValueError:
                detail = f"killed by signal {-rc}"
        else:
            detail = f"worker exited with status {rc} in the middle of the case"
    elif failure == HANG:
        detail = f"no result after {timeout:.0f} s (killed)"
    tail = _tail(err_path, cases[current].key if current is not None else None) if failure else ""
    if failure is None:
        for path in (job_path, err_path):
            os.unlink(path)
    else:
        os.unlink(job_path)
    return results, current, failure, detail, tail


def run_batch(batch: Batch, ctx: dict, workdir: str, timeout_scale: float = 1.0) -> list[Result]:
    module = family_module(batch.family)
    env = worker_env(module.worker_env(ctx) if hasattr(module, "worker_env") else None)
    timeout = getattr(module, "CASE_TIMEOUT", 60) * timeout_scale
    results: list[Result] = []
    pending = list(batch.cases)
    while pending:
        got, current, failure, detail, tail = _run_process(pending, ctx, env, timeout, workdir)
        for i, msg in sorted(got.items()):
            results.append(Result(pending[i], msg["outcome"], msg.get("detail", ""), "", msg.get("seconds", 0.0)))
        if failure is None:
            break
        case = pending[current]
        before = [c.key for c in pending[:current]]
        if before:  # confirm alone: was it this case, or what ran before it in the process?
            alone, _, failure_alone, detail_alone, tail_alone = _run_process([case], ctx, env, timeout, workdir)
            if failure_alone:
                detail, tail = f"{detail} (alone too: {detail_alone})", tail_alone
            else:
                outcome_alone = alone[0]["outcome"] if alone else "?"
                detail = (f"{detail}, after {len(before)} other case(s) in the same process "
                          f"({', '.join(before[-5:])}{' ...' if len(before) > 5 else ''}); alone it gave "
                          f"'{outcome_alone}'")
        results.append(Result(case, failure, detail, tail, timeout if failure == HANG else 0.0))
        pending = pending[current + 1:]
    return results


def build_cases(families: list[str], seed: int, long: bool, count: int | None = None) -> list[Case]:
    cases = []
    for family in families:
        module = family_module(family)
        n = count if count is not None else (module.LONG_CASES if long else module.CI_CASES)
        cases += [make_case(family, case_seed(seed, i)) for i in range(n)]
    return cases


def make_batches(cases: list[Case]) -> list[Batch]:
    by_family = collections.defaultdict(list)
    for c in cases:
        by_family[c.family].append(c)
    batches = []
    for family, items in by_family.items():
        size = max(1, getattr(family_module(family), "BATCH", 20))
        batches += [Batch(family, items[i:i + size]) for i in range(0, len(items), size)]
    # Slow batches first, so the pool's last minutes are not one long batch.
    batches.sort(key=lambda b: -getattr(family_module(b.family), "CASE_COST", 1.0) * len(b.cases))
    return batches


def prepare(families: list[str], workdir: str, progress=None, long: bool = False) -> dict:
    ctx = {"workdir": workdir, "long": long}
    for family in families:
        module = family_module(family)
        if hasattr(module, "prepare"):
            t0 = time.monotonic()
            module.prepare(ctx)
            if progress:
                progress(f"prepared {family} in {time.monotonic() - t0:.1f} s")
    return ctx


def run_cases(cases: list[Case], jobs: int = 2, progress=None, timeout_scale: float = 1.0,
              workdir: str | None = None, long: bool = False) -> list[Result]:
    own = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="fastattn-hostile-")
    families = list(dict.fromkeys(c.family for c in cases))
    ctx = prepare(families, workdir, progress, long)
    batches = make_batches(cases)
    results: list[Result] = []
    done = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(run_batch, b, ctx, workdir, timeout_scale) for b in batches]
        for future in concurrent.futures.as_completed(futures):
            part = future.result()
            results += part
            done += len(part)
            if progress:
                bad = [r for r in part if r.outcome in BAD]
                progress(f"{done}/{len(cases)} cases" + (f" ({len(bad)} bad in {part[0].case.family})" if bad else ""))
    order = {c.key: i for i, c in enumerate(cases)}
    results.sort(key=lambda r: order.get(r.case.key, 0))
    if own:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return results


# ---- reports -----------------------------------------------------------------------------------

def table(results: list[Result]) -> str:
    """Markdown: family x outcome counts (columns with no count in any family are left out,
    except the ones the CI sample must keep at zero)."""
    counts = collections.defaultdict(collections.Counter)
    seconds = collections.Counter()
    for r in results:
        counts[r.case.family][r.outcome] += 1
        seconds[r.case.family] += r.seconds
    shown = [o for o in OUTCOMES if o in BAD or o == PASS or any(counts[f][o] for f in counts)]
    shown = [o for o in shown if o != HARNESS or any(counts[f][o] for f in counts)]
    lines = ["| family | cases | " + " | ".join(shown) + " |", "|---|---:|" + "---:|" * len(shown)]
    total = collections.Counter()
    for family in counts:
        c = counts[family]
        total.update(c)
        lines.append(f"| {family} | {sum(c.values())} | " + " | ".join(str(c[o]) for o in shown) + " |")
    lines.append(f"| **all** | {sum(total.values())} | " + " | ".join(str(total[o]) for o in shown) + " |")
    return "\n".join(lines)


def failures(results: list[Result]) -> list[Result]:
    return [r for r in results if r.outcome in BAD]


def describe(r: Result, tail_lines: int = 25) -> str:
    text = [f"[{r.outcome}] {r.case.key}  (rerun: cd tests && python -m hostile --case {r.case.key})",
            f"  params: {params_text(r.case.params)}"]
    if r.detail:
        text.append("  detail: " + r.detail.strip().replace("\n", "\n          "))
    if r.tail:
        lines = r.tail.splitlines()[-tail_lines:]
        text.append("  output tail:\n" + "\n".join("    | " + ln for ln in lines))
    return "\n".join(text)


def skipped_note(results: list[Result]) -> str:
    reasons = collections.Counter(f"{r.case.family}: {r.detail}" for r in results if r.outcome == SKIP)
    return "\n".join(f"  skip x{n}: {why}" for why, n in reasons.most_common())
