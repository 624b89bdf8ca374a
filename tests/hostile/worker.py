"""Worker process: runs a batch of cases, one after another, reporting on a private channel.

    python -m hostile.worker JOB.json

JOB.json: {"ctx": {...}, "cases": [{"family", "seed", "params"}, ...]}. The results channel is
the original stdout; the product's own output goes to stderr (which the runner keeps for the
output tail). Per case: {"start": i} when it begins, then {"done": i, "outcome", "detail",
"seconds"}. A case that kills the process or never finishes is seen by the runner as a started
case with no "done".
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0]) as f:
        job = json.load(f)
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # the product's stdout (and print) goes with stderr
    sys.stdout = sys.stderr
    tests_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)
    from hostile.cases import HARNESS, Case, family_module

    ctx = job.get("ctx", {})
    for i, raw in enumerate(job["cases"]):
        case = Case.from_json(raw)
        channel.write(json.dumps({"start": i}) + "\n")
        print(f"=== hostile case {case.key}", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        try:
            module = family_module(case.family)
            outcome, detail = module.run_case(case.params, ctx)
        except BaseException as error:  # noqa: BLE001 - a bug of the harness, never a product outcome
            if isinstance(error, KeyboardInterrupt):
                raise
            outcome, detail = HARNESS, "".join(traceback.format_exception(error))[-3000:]
        sys.stderr.flush()
        channel.write(json.dumps({"done": i, "outcome": outcome, "detail": detail,
                                  "seconds": time.monotonic() - t0}) + "\n")
    channel.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
