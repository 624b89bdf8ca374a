"""present_key / present_value = concat(past, new) on torch CUDA tensors, both ways the CUDA
backend writes them: by the decode kernel itself, from the K/V tiles it holds in shared memory
(S_q <= 16 on sm_80 and newer, with no window_left, key_padding_mask or per-batch lengths), and by
the copy kernel (prefill, the other decode calls, and everything with FASTATTN_CUDA_PRESENT_COPY=1).
Presents must be bit-exact, the output within the usual tolerance, every output poisoned with NaN
first (run_decode_case). GQA (packed at S_q = 1) and MQA (at S_q = 1: 32 packed rows, two query
tiles); split-KV over pasts that end in a partial key tile; causal, none, causal+window and left
padding (the last two: the copy kernel either way).
"""
from __future__ import annotations

import itertools
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
torch = pytest.importorskip("torch")
from cuda_helpers import CUDA_MARKS  # noqa: E402
from test_cuda_decode import BASE, case_id, run_decode_case  # noqa: E402

pytestmark = CUDA_MARKS

DECODE = [dict(BASE, seq_q=sq, past=past, heads=heads, dtype=dt, rank=rank, structure=structure, padding=padding)
          for dt, (sq, past), heads, (rank, structure, padding) in itertools.product(
              ["float16", "bfloat16"], [(1, 777), (4, 4095), (16, 1000)], [(32, 8), (32, 1)],
              [(4, "causal", "none"), (3, "none", "none"), (4, "causal+window", "none"), (3, "causal", "left")])]
# Prefill: several key tiles and a partial last one (always the copy kernel).
PREFILL = [dict(BASE, seq_q=300, past=77, heads=(8, 2), dtype=dt, head_dim=d, rank=rank)
           for dt, d, rank in [("float16", 128, 4), ("bfloat16", 64, 3)]]


@pytest.mark.parametrize("path", ["kernel", "copy"])
@pytest.mark.parametrize("case", DECODE + PREFILL, ids=case_id)
def test_presents(case, path, monkeypatch):
    monkeypatch.setenv("FASTATTN_CUDA_PRESENT_COPY", "1" if path == "copy" else "0")
    run_decode_case(case)
