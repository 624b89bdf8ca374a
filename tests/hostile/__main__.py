"""python -m hostile [--long] [--seed N] [--families a,b] [--count N] [--jobs N] [--json out.json]
                  [--case FAMILY:SEED | --case JSON]

Runs the hostile-input suite (see hostile/__init__.py) and prints the outcome table (family x
outcome counts) as markdown, then every case whose outcome is wrong / unclean error / traceback /
crash / hang, with its parameters, output tail and the command that reruns it. Exit status 1 when
there is any such case.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

if __package__ in (None, ""):  # python tests/hostile/__main__.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "hostile"  # noqa: A001

from hostile import FAMILIES  # noqa: E402
from hostile.cases import Case, make_case  # noqa: E402
from hostile.runner import CI_SEED, build_cases, describe, failures, run_cases, skipped_note, table  # noqa: E402


def parse_case(text: str) -> Case:
    text = text.strip()
    if text.startswith("{"):
        d = json.loads(text)
        return Case(d["family"], int(d.get("seed", 0)), d["params"]) if "params" in d else \
            make_case(d["family"], int(d["seed"]))
    family, seed = text.rsplit(":", 1)
    return make_case(family, int(seed))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hostile", description=__doc__.splitlines()[0])
    parser.add_argument("--long", action="store_true", help="thousands of cases (LONG_CASES per family)")
    parser.add_argument("--seed", type=int, default=CI_SEED, help=f"base seed (default {CI_SEED}: the CI sample)")
    parser.add_argument("--families", help=f"comma-separated subset of: {', '.join(FAMILIES)}")
    parser.add_argument("--count", type=int, help="cases per family (overrides CI/long counts)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes at once (default 2)")
    parser.add_argument("--timeout-scale", type=float, default=1.0, help="multiply every case timeout")
    parser.add_argument("--json", metavar="OUT", help="write every result as JSON")
    parser.add_argument("--case", action="append", help="rerun one case alone: FAMILY:SEED or a JSON case")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    def progress(msg):
        if not args.quiet:
            print(f"[hostile {time.monotonic() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    t0 = time.monotonic()
    if args.case:
        cases = [parse_case(c) for c in args.case]
        results = run_cases(cases, jobs=1, progress=progress, timeout_scale=args.timeout_scale)
        for r in results:
            print(describe(r, tail_lines=200) if r.outcome != "pass" or r.detail else f"[pass] {r.case.key}")
        bad = failures(results)
        return 1 if bad else 0
    families = [f.strip() for f in args.families.split(",")] if args.families else list(FAMILIES)
    cases = build_cases(families, args.seed, args.long, args.count)
    progress(f"{len(cases)} cases, {args.jobs} worker(s)")
    results = run_cases(cases, jobs=args.jobs, progress=progress, timeout_scale=args.timeout_scale, long=args.long)
    print(table(results))
    print(f"\n{len(results)} cases, seed {args.seed}{', long' if args.long else ''}, "
          f"{time.monotonic() - t0:.0f} s")
    note = skipped_note(results)
    if note:
        print("skipped:\n" + note)
    bad = failures(results)
    for r in bad:
        print()
        print(describe(r))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([r.to_json() for r in results], f, indent=1)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
