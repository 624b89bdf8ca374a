"""Random inputs that respect what each graph input means (ids, masks, positions, floats)."""
from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

# Dynamic dims get sizes that are not multiples of 16, so tiling edge cases are exercised.
DEFAULT_DIMS = {"batch": 3, "seq": 13, "past": 5, "total": 18}
FALLBACK_DIM = 11


@dataclasses.dataclass
class InputPlan:
    """How to fill one graph input."""

    name: str
    kind: str  # "ids", "mask", "positions", "token_types", "float", "int", "bool"
    dtype: np.dtype
    dims: list  # ints or symbolic names
    vocab: int = 0


def _kind(value: ir.Value) -> str:
    name = value.name.lower()
    dtype = value.dtype
    if dtype is not None and dtype.is_floating_point():
        return "float"
    if dtype == ir.DataType.BOOL:
        return "mask" if "mask" in name else "bool"
    if "mask" in name:
        return "mask"
    if "position" in name:
        return "positions"
    if "token_type" in name or "segment" in name:
        return "token_types"
    if "ids" in name or _embedding_rows(value):
        return "ids"
    return "int"


def _embedding_rows(value: ir.Value) -> int:
    """Rows of the embedding table gathered by `value` (0 if it indexes none)."""
    for use in value.uses():
        node = use.node
        if node.op_type == "Gather" and use.idx == 1 and node.inputs[0] is not None:
            table = node.inputs[0]
            if table.shape is not None and isinstance(table.shape[0], int):
                return int(table.shape[0])
    return 0


# Dim-name words, most specific first ("past_seq" is a past length, not the sequence).
_DIM_WORDS = ("past", "total", "batch", "seq")


def _known_dim(name) -> bool:
    return isinstance(name, int) or any(word in name.lower() for word in _DIM_WORDS)


def plan_inputs(model: ir.Model) -> list[InputPlan]:
    plans = []
    initializer_names = set(model.graph.initializers)
    for value in model.graph.inputs:
        if value.name in initializer_names:
            continue
        dims = []
        for i, dim in enumerate(value.shape or []):
            if isinstance(dim, int):
                dims.append(dim)
            else:
                dims.append(dim.value if dim.value else f"?{value.name}:{i}")
        kind = _kind(value)
        dtype = value.dtype.numpy() if value.dtype is not None else np.dtype(np.float32)
        plans.append(InputPlan(value.name, kind, dtype, dims, _embedding_rows(value) or 100))
    # A [B, S] mask whose length has an opaque name (dynamo's "s53") covers past + new tokens.
    has_past = any(not isinstance(d, int) and "past" in d.lower() for p in plans for d in p.dims)
    for plan in plans:
        if plan.kind == "mask" and len(plan.dims) == 2:
            if not _known_dim(plan.dims[0]):
                plan.dims[0] = "batch"
            if not _known_dim(plan.dims[1]):
                plan.dims[1] = "total" if has_past else "seq"
    return plans


def _dim_size(dim, sizes: dict) -> int:
    if isinstance(dim, int):
        return dim
    key = dim.lower()
    if key in sizes:
        return sizes[key]
    for word in _DIM_WORDS:
        if word in key and word in sizes:
            return sizes[word]
    return FALLBACK_DIM


# Padding patterns of a [B, S] attention mask (no row is ever fully padded):
#   mixed: row 0 full, left padding in row 1, right padding in row 2 (S >= 4);
#   left / right: row b padded by min(b + 1, S - 1) tokens on that side;
#   holes: scattered padded tokens (every third, shifted per row): not a prefix or suffix.
PADDING_PATTERNS = ("none", "mixed", "left", "right", "holes")


def padding_mask(batch: int, seq: int, dtype, rng: np.random.Generator | None = None,
                 pattern: str = "mixed") -> np.ndarray:
    """A [batch, seq] mask (1 = real token) in one of PADDING_PATTERNS."""
    if pattern not in PADDING_PATTERNS:
        raise ValueError(f"unknown padding pattern {pattern!r}")
    mask = np.ones((batch, seq), dtype=np.int64)
    for b in range(batch):
        if pattern == "mixed" and seq >= 4 and b in (1, 2):
            pad = max(1, seq // 4)
            mask[b, slice(None, pad) if b == 1 else slice(seq - pad, None)] = 0
        elif pattern in ("left", "right") and seq >= 2:
            pad = min(b + 1, seq - 1)
            mask[b, slice(None, pad) if pattern == "left" else slice(seq - pad, None)] = 0
        elif pattern == "holes" and seq >= 2:
            mask[b, (np.arange(seq) + b) % 3 == 1] = 0
            mask[b, b % seq] = 1  # never a fully padded row
    return mask.astype(dtype)


def make_inputs(plans: list[InputPlan], sizes: dict | None = None, padded: bool | str = True,
                seed: int = 0) -> dict[str, np.ndarray]:
    """padded: True ("mixed"), False ("none") or one of PADDING_PATTERNS for [B, S] masks."""
    pattern = {True: "mixed", False: "none"}.get(padded, padded)
    given = sizes or {}
    sizes = {**DEFAULT_DIMS, **given}
    if "total" not in given:
        sizes["total"] = sizes["past"] + sizes["seq"]
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    masks = []
    for plan in plans:
        shape = [_dim_size(d, sizes) for d in plan.dims]
        if plan.kind == "ids":
            feeds[plan.name] = rng.integers(0, plan.vocab, size=shape).astype(plan.dtype)
        elif plan.kind == "mask" and len(shape) == 2:
            mask = padding_mask(*shape, plan.dtype, rng, pattern)
            feeds[plan.name] = mask
            masks.append(mask)
        elif plan.kind in ("mask", "bool"):
            feeds[plan.name] = np.ones(shape, plan.dtype)
        elif plan.kind == "token_types":
            feeds[plan.name] = np.zeros(shape, plan.dtype)
        elif plan.kind == "float":
            feeds[plan.name] = rng.standard_normal(shape).astype(plan.dtype)
        else:
            feeds[plan.name] = rng.integers(0, 2, size=shape).astype(plan.dtype)
    for plan in plans:  # positions follow the mask: left padding shifts them
        if plan.kind == "positions":
            shape = [_dim_size(d, sizes) for d in plan.dims]
            if masks and masks[0].shape[-1] >= shape[-1]:
                mask = masks[0][..., -shape[-1]:].astype(np.int64)
                positions = np.maximum(np.cumsum(mask, axis=-1) - 1, 0)
                positions = np.broadcast_to(positions, shape)
            else:
                positions = np.broadcast_to(np.arange(shape[-1]), shape)
            feeds[plan.name] = np.ascontiguousarray(positions).astype(plan.dtype)
    return feeds


def row_validity(plans: list[InputPlan], feeds: dict[str, np.ndarray]) -> np.ndarray | None:
    """[B, S] bool: which token positions are real (not padding), from the first 2D mask input."""
    for plan in plans:
        if plan.kind == "mask" and feeds[plan.name].ndim == 2:
            return feeds[plan.name] != 0
    return None
