"""Hostile-input suite for fastattn-onnx (issue 14).

Seeded generators build small, JSON-describable cases for every way in: the op through ONNX
Runtime (custom op and FastAttentionEP), its attributes, ONNX Attention-23 on the EP, the NumPy
binding (strides, aliasing, threads, thread-creation failure through an LD_PRELOAD shim), and the
converter (paths and special files, near-miss attention graphs, mutated exports). The runner
executes cases in worker subprocesses with a timeout and counts each outcome as

    pass / clean error / wrong / unclean error / traceback / crash / hang   (and skip)

    cd tests && python -m hostile                 # the CI sample (fixed seed, a few minutes)
    cd tests && python -m hostile --long          # thousands of cases
    cd tests && python -m hostile --case op:17    # one case again, alone, with its output

Each family is one module (fam_*.py) with NAME, make_case(seed) -> params, run_case(params, ctx)
-> (outcome, detail), and optional prepare(ctx) / worker_env(ctx).
"""
from __future__ import annotations

# Family name -> module (tests/hostile/fam_<module>.py), in the order the table lists them.
FAMILIES = {
    "op": "fam_op",
    "attrs": "fam_attrs",
    "attention23": "fam_attention23",
    "binding": "fam_binding",
    "threads": "fam_threads",
    "convert_cli": "fam_convert_cli",
    "convert_graphs": "fam_convert_graphs",
    "convert_mutants": "fam_convert_mutants",
}
