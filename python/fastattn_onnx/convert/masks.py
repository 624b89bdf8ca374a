"""Recognise what an additive mask means by what it computes, not by how it is built.

Exporters build the S x S mask in many ways (Trilu, Range comparisons, Where with dtype-min or
-inf, a constant triangle sliced to size, GatherND of the [B, S] attention_mask ...). Rather than
match each construction, the mask is evaluated on probe inputs and compared with the structures
the fused op expresses without a tensor: causal, sliding window, key padding from a [B, S] input.
Anything else stays an additive attn_bias.

A mask that blocks with a finite value (-10000, dtype-min) only lowers the blocked keys; it equals
a hard mask only while nothing else added to the scores can lower the visible keys as far.
`MaskMeaning.hard` says whether every blocked value is -inf (a hard mask whatever else is added);
the rules decide from the other terms (sdpa_decomposed._check_masks).
"""
from __future__ import annotations

import dataclasses

import numpy as np

# An additive value at or below this removes the key: exp(-1e4 + s) is 0 in float16/32.
BLOCKED = -1.0e4


@dataclasses.dataclass
class MaskMeaning:
    causal: bool
    window_size: int  # -1: none
    padding_input: str | None  # graph input giving key_padding_mask
    hard: bool = True  # every blocked value is -inf (else finite: see the module docstring)


def visible_keys(s_q: int, s_total: int, causal: bool, window_size: int) -> np.ndarray:
    """[S_q, S_total] bool: which keys each query row sees under causal/window structure."""
    i = np.arange(s_q)[:, None] + (s_total - s_q)
    j = np.arange(s_total)[None, :]
    vis = np.ones((s_q, s_total), dtype=bool)
    if causal:
        vis &= j <= i
    if window_size > 0:
        vis &= (i - j) < window_size
        if not causal:
            vis &= (j - i) < window_size
    return vis


def _as_visibility(mask: np.ndarray) -> np.ndarray | None:
    """[B', S_q, S_kv] bool if `mask` only ever adds 0 or a blocking value, identically per head."""
    if mask.ndim > 4 or mask.ndim < 2:
        return None
    mask = mask.reshape((1,) * (4 - mask.ndim) + mask.shape)
    visible = mask == 0
    if not np.all(visible | (mask <= BLOCKED)):
        return None
    if not np.array_equal(visible.all(axis=1), visible.any(axis=1)):
        return None  # differs per head: not something causal/window/padding expresses
    return visible[:, 0]


def _structure_candidates(visible: np.ndarray) -> list[tuple[bool, int]]:
    """(causal, window) guesses from one probe's visibility, best first."""
    _, s_q, s_kv = visible.shape
    if s_q == 1:
        # One query row, broadcast over every query ([B, 1, 1, S] padding masks of encoders):
        # each query sees the same keys, which no causal or window structure gives. (With one
        # real query, a decode step, causal and not causal are the same.)
        return [(False, -1)]
    offset = s_kv - s_q
    i = np.arange(s_q)[:, None] + offset
    j = np.arange(s_kv)[None, :]
    any_visible = visible.any(axis=0)
    causal = not np.any(any_visible & (j > i))
    distance = np.abs(i - j)
    seen = distance[any_visible]
    widest = int(seen.max()) + 1 if seen.size else 1
    guesses = [(causal, -1)]
    if widest < max(s_q, s_kv):
        guesses.append((causal, widest))
    return guesses


def _matches(visible: np.ndarray, causal: bool, window: int, padding: np.ndarray | None) -> bool:
    batch, s_q, s_kv = visible.shape
    expected = np.broadcast_to(visible_keys(s_q, s_kv, causal, window), visible.shape)
    if padding is not None:
        if padding.shape[-1] != s_kv:
            return False
        expected = expected & (padding != 0)[:, None, :]
        visible = np.broadcast_to(visible, expected.shape)
    # A row with no visible key belongs to a padding position: its output is undefined in the
    # original (uniform over blocked keys) and zeros in the fused op; it is not compared.
    rows = expected.any(axis=-1)
    return bool(np.array_equal(visible[rows], expected[rows]))


def classify(masks: list[np.ndarray], paddings: list[dict[str, np.ndarray]]) -> MaskMeaning | None:
    """The structure all probes agree on, or None if the mask is a general additive bias.

    masks[k] is the mask computed for probe k; paddings[k] maps each candidate padding input
    the mask reads to its probe value ([B, S_kv]).
    """
    visibilities = [_as_visibility(np.asarray(m)) for m in masks]
    if any(v is None for v in visibilities):
        return None
    unpadded = [v for v, p in zip(visibilities, paddings)
                if all(np.all(x != 0) for x in p.values())] or visibilities
    # The longest probe is the one that can show a sliding window.
    guesses = _structure_candidates(max(unpadded, key=lambda v: v.shape[-1]))
    inputs = list(paddings[0]) + [None] if paddings else [None]
    # Values are 0 or blocking here (_as_visibility): hard if every blocking one is -inf.
    hard = all(np.all(np.isneginf(m[m != 0])) for m in map(np.asarray, masks))
    for causal, window in guesses:
        for name in inputs:
            if all(_matches(v, causal, window, p.get(name) if name else None)
                   for v, p in zip(visibilities, paddings)):
                return MaskMeaning(causal, window, name, hard)
    return None
