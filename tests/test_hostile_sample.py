"""CI entry of the hostile-input suite (tests/hostile, issue 14): a fixed, bounded sample of every
family (op via ONNX Runtime, attributes, ONNX Attention-23, the NumPy binding, thread-creation
failure, the converter CLI, near-miss graphs, mutated exports), each case in a worker subprocess
with a timeout. It must show no wrong result, no unclean error, no traceback, no crash, no hang.

Rerun one failing case alone, with its whole output:  cd tests && python -m hostile --case FAMILY:SEED
The long run (thousands of cases):                   cd tests && python -m hostile --long
HOSTILE_JOBS sets the worker processes (default 2); HOSTILE_JSON=path writes every result.
"""
from __future__ import annotations

import json
import os

from hostile import FAMILIES
from hostile.cases import BAD
from hostile.runner import CI_SEED, build_cases, describe, failures, run_cases, skipped_note, table


def test_hostile_ci_sample():
    cases = build_cases(list(FAMILIES), CI_SEED, long=False)
    results = run_cases(cases, jobs=int(os.environ.get("HOSTILE_JOBS", "2")))
    assert len(results) == len(cases), "every case must have an outcome"
    if os.environ.get("HOSTILE_JSON"):  # every result, for a CI artifact
        with open(os.environ["HOSTILE_JSON"], "w") as f:
            json.dump([r.to_json() for r in results], f, indent=1)
    report = table(results)
    print(report)
    note = skipped_note(results)
    if note:
        print("skipped:\n" + note)
    bad = failures(results)
    counts = {o: sum(r.outcome == o for r in results) for o in BAD}
    assert not bad, (f"hostile CI sample (seed {CI_SEED}): {counts}\n\n{report}\n\n"
                     + "\n\n".join(describe(r) for r in bad))


def test_runner_classifies_outcomes():
    """The runner itself: a segfault, an abort and an early exit are crashes, a sleeping case a
    hang, an exception escaping a family a harness error; the other cases of the batch still run."""
    from hostile.cases import CRASH, HANG, HARNESS, make_case

    cases = [make_case("selftest", seed) for seed in range(8)]
    got = {r.case.params["do"]: r.outcome for r in run_cases(cases, jobs=1)}
    assert got == {"pass": "pass", "clean": "clean error", "wrong": "wrong", "segfault": CRASH, "abort": CRASH,
                   "exit": CRASH, "hang": HANG, "raise": HARNESS}, got
