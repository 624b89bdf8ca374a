"""The runner's own check (not in the CI sample's families): cases that pass, fail cleanly,
segfault, abort, exit, hang or raise, so the classification itself is tested
(tests/test_hostile_sample.py::test_runner_classifies_outcomes)."""
from __future__ import annotations

import ctypes
import os
import signal
import time

from .cases import CLEAN, PASS, WRONG

NAME = "selftest"
CI_CASES = 0
LONG_CASES = 0
BATCH = 10
CASE_TIMEOUT = 4

ACTIONS = ["pass", "clean", "wrong", "segfault", "abort", "exit", "hang", "raise"]


def make_case(seed: int) -> dict:
    return {"do": ACTIONS[seed % len(ACTIONS)]}


def run_case(p: dict, ctx: dict):
    do = p["do"]
    if do == "segfault":
        ctypes.string_at(0)
    if do == "abort":
        os.kill(os.getpid(), signal.SIGABRT)
    if do == "exit":
        os._exit(3)
    if do == "hang":
        time.sleep(3600)
    if do == "raise":
        raise KeyError("a bug of the harness")
    return {"pass": PASS, "clean": CLEAN, "wrong": WRONG}[do], do
