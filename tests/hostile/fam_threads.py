"""Thread creation failing under the binding's worker pool (an LD_PRELOAD shim, compiled here at
run time with the system C compiler, makes pthread_create return EAGAIN after N more calls).

Documented: a call whose worker threads cannot be created raises RuntimeError and the process
lives on; the next call (threads available again) works. Each case runs in a fresh process
(BATCH = 1), so the pool of each thread count is built inside the case. The family is skipped
when no C compiler is found."""
from __future__ import annotations

import ctypes
import os
import random
import shutil
import subprocess
import threading

import numpy as np

from . import check
from .cases import CLEAN, HANG, PASS, SKIP, UNCLEAN, WRONG

NAME = "threads"
CI_CASES = 12
LONG_CASES = 300
BATCH = 1
CASE_TIMEOUT = 60
CASE_COST = 3.0

SHIM_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>

typedef int (*create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
static atomic_long budget = -1;   /* < 0: unlimited; else this many more creations succeed */
static atomic_long failures = 0;

void hostile_fail_after(long n) { atomic_store(&budget, n); }
long hostile_failures(void) { return atomic_load(&failures); }

int pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*f)(void *), void *arg) {
  static create_fn real;
  if (!real) real = (create_fn)dlsym(RTLD_NEXT, "pthread_create");
  for (;;) {
    long b = atomic_load(&budget);
    if (b < 0) break;
    if (b == 0) { atomic_fetch_add(&failures, 1); return EAGAIN; }
    if (atomic_compare_exchange_weak(&budget, &b, b - 1)) break;
  }
  return real(t, a, f, arg);
}
"""


def prepare(ctx: dict) -> None:
    cc = shutil.which("gcc") or shutil.which("cc") or shutil.which("clang")
    if not cc:
        ctx["threads_shim"] = None
        ctx["threads_skip"] = "no C compiler (gcc/cc/clang) to build the pthread_create shim"
        return
    src = os.path.join(ctx["workdir"], "pthread_shim.c")
    lib = os.path.join(ctx["workdir"], "pthread_shim.so")
    with open(src, "w") as f:
        f.write(SHIM_C)
    done = subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", lib, src, "-ldl"], capture_output=True, text=True)
    if done.returncode != 0:
        ctx["threads_shim"] = None
        ctx["threads_skip"] = f"the pthread_create shim did not compile: {done.stderr.strip()[:200]}"
        return
    ctx["threads_shim"] = lib


def worker_env(ctx: dict) -> dict:
    lib = ctx.get("threads_shim")
    return {"LD_PRELOAD": lib} if lib else {}


def make_case(seed: int) -> dict:
    r = random.Random(seed)
    kind = ["pool", "pool", "busy_pool", "pool_after_success", "huge_num_threads"][seed % 5] \
        if r.random() < 0.6 else r.choice(["pool", "busy_pool", "pool_after_success", "huge_num_threads"])
    threads = r.choice([2, 3, 4, 8, 16])
    return {"kind": kind, "threads": threads, "fail_after": r.randrange(0, threads + 1),
            "heads": r.choice([4, 8, 16]), "seq": r.choice([64, 300, 1024])}


def _problem(heads, seq, seed=0):
    from reference import attention_reference

    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((1, heads, seq, 32)).astype(np.float32) for _ in range(3))
    return q, k, v, attention_reference(q, k, v, causal=True)[0]


def run_case(p: dict, ctx: dict):
    if not ctx.get("threads_shim"):
        return SKIP, ctx.get("threads_skip", "no shim")
    if not os.environ.get("LD_PRELOAD", "").endswith("pthread_shim.so"):
        return SKIP, "the worker was started without the shim"
    import fastattn_onnx

    shim = ctypes.CDLL(ctx["threads_shim"])
    shim.hostile_fail_after.argtypes = [ctypes.c_long]
    shim.hostile_failures.restype = ctypes.c_long
    q, k, v, want = _problem(p["heads"], p["seq"])
    t, n = p["threads"], p["fail_after"]

    def call(threads):
        got = fastattn_onnx.attention(q, k, v, causal=True, num_threads=threads)
        err = float(np.max(np.abs(got - want)))
        return None if err <= 2e-5 else f"wrong result with num_threads={threads}: max|diff| {err:.3g}"

    if p["kind"] == "huge_num_threads":
        # asks for far more threads than may exist; creation stops at the shim's limit
        shim.hostile_fail_after(max(n, 1) * 8)
        try:
            call(2**31 - 1)
        except Exception as e:  # noqa: BLE001
            shim.hostile_fail_after(-1)
            clean, text = check.binding_error(e, ["thread"])
            if not isinstance(e, RuntimeError):
                return UNCLEAN, f"expected RuntimeError: {text}"
            again = call(2)
            return (WRONG, f"after the failure: {again}") if again else ((CLEAN if clean else UNCLEAN), text)
        shim.hostile_fail_after(-1)
        return WRONG, "num_threads=2**31-1 with thread creation failing: no error"

    if p["kind"] == "pool_after_success":
        first = call(t)  # the pool for t exists now: no thread is created again
        if first:
            return WRONG, first
        shim.hostile_fail_after(0)
        again = call(t)
        shim.hostile_fail_after(-1)
        return (WRONG, again) if again else (PASS, "")

    if p["kind"] == "busy_pool":
        # two Python threads ask for t threads at once: one holds the process's pool, the other
        # gets a pool of its own, whose threads cannot be created. Each call either works or
        # raises RuntimeError; afterwards a call works again.
        first = call(t)  # builds the shared pool while threads can still be created
        if first:
            return WRONG, first
        results = {}
        go = threading.Event()

        def caller(name):
            go.wait()
            try:
                results[name] = call(t)
            except Exception as e:  # noqa: BLE001
                results[name] = e

        callers = [threading.Thread(target=caller, args=(name,)) for name in ("a", "b")]
        for c in callers:  # Python's own threads first: the shim counts every pthread_create
            c.start()
        shim.hostile_fail_after(n)
        go.set()
        for c in callers:
            c.join(timeout=60)
        shim.hostile_fail_after(-1)
        if any(c.is_alive() for c in callers):
            return HANG, "a calling thread did not finish in 60 s"
        errors = []
        for name in ("a", "b"):
            got = results.get(name)
            if isinstance(got, str):
                return WRONG, got
            if isinstance(got, Exception):
                if not isinstance(got, RuntimeError):
                    return UNCLEAN, f"expected RuntimeError: {check.binding_error(got)[1]}"
                errors.append(got)
        again = call(t)
        if again:
            return WRONG, f"after the failure: {again}"
        if not errors:
            return PASS, "no contention, or enough threads"
        clean, text = check.binding_error(errors[0], ["thread"])
        return (CLEAN if clean else UNCLEAN), text

    # "pool": the first call with t threads builds the pool; creation fails after n threads
    shim.hostile_fail_after(n)
    try:
        first = call(t)
    except Exception as e:  # noqa: BLE001
        shim.hostile_fail_after(-1)
        if not isinstance(e, RuntimeError):
            return UNCLEAN, f"expected RuntimeError: {check.binding_error(e)[1]}"
        clean, text = check.binding_error(e, ["thread"])
        again = call(t) or call(1)
        if again:
            return WRONG, f"after the failed call: {again}"
        return (CLEAN if clean else UNCLEAN), text
    shim.hostile_fail_after(-1)
    if first:
        return WRONG, first
    if n < t - 1 and shim.hostile_failures() > 0:
        return WRONG, f"{shim.hostile_failures()} thread creation(s) failed, yet the call returned no error"
    return PASS, ""
