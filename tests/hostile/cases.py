"""Cases, outcomes and results (plain data: JSON in and out of the worker processes)."""
from __future__ import annotations

import dataclasses
import importlib
import json

PASS, CLEAN, WRONG, UNCLEAN, TRACEBACK, CRASH, HANG, SKIP, HARNESS = (
    "pass", "clean error", "wrong", "unclean error", "traceback", "crash", "hang", "skip", "harness error")
# Columns of the outcome table, in order.
OUTCOMES = (PASS, CLEAN, WRONG, UNCLEAN, TRACEBACK, CRASH, HANG, SKIP, HARNESS)
# Outcomes the CI sample must not have. "unclean error": an error whose message does not say
# what is wrong (no node / attribute / rule named, or an exception type the API does not raise);
# "traceback": a Python traceback from the converter CLI or an unexpected exception type escaping
# a product API; "harness error": a bug of this suite (never hidden as a product outcome).
BAD = (WRONG, UNCLEAN, TRACEBACK, CRASH, HANG, HARNESS)


@dataclasses.dataclass
class Case:
    family: str
    seed: int
    params: dict

    @property
    def key(self) -> str:
        return f"{self.family}:{self.seed}"

    def to_json(self) -> dict:
        return {"family": self.family, "seed": self.seed, "params": self.params}

    @staticmethod
    def from_json(d: dict) -> "Case":
        return Case(d["family"], int(d["seed"]), d["params"])


@dataclasses.dataclass
class Result:
    case: Case
    outcome: str
    detail: str = ""
    tail: str = ""
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {**self.case.to_json(), "outcome": self.outcome, "detail": self.detail,
                "tail": self.tail, "seconds": round(self.seconds, 3)}


def family_module(name: str):
    from . import FAMILIES

    module = FAMILIES.get(name, "fam_selftest" if name == "selftest" else None)
    if module is None:
        raise KeyError(f"unknown family {name!r}; choose from {', '.join(FAMILIES)}")
    return importlib.import_module(f"{__package__}.{module}")


def make_case(family: str, seed: int) -> Case:
    """A case is its family and seed: the parameters are regenerated from the seed."""
    return Case(family, seed, family_module(family).make_case(seed))


def case_seed(base_seed: int, index: int) -> int:
    return base_seed * 1_000_000 + index


def params_text(params: dict) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"))
