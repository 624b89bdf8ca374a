"""Fill in what structure alone cannot tell: head counts and sizes, and what each mask means.

Both come from running the original model on a few probe inputs (different batch and sequence
sizes, with and without padding): sizes that stay fixed across probes are the model's constants.
"""
from __future__ import annotations

import onnx_ir as ir

from . import inputs as model_inputs
import numpy as np

from . import layout
from . import masks as mask_rules
from ._graph import backward_slice, constant_array, value_inputs
from .probe import ProbeError, read_values
from .sdpa_decomposed import AttentionMatch, NoMatch

PROBE_SIZES = ({"batch": 3, "seq": 13}, {"batch": 2, "seq": 6})
# Sliding windows are invisible at short lengths: masks reading an integer constant in this
# range are probed again just past it.
WINDOW_PROBE_RANGE = (8, 16384)
_POSITION_ARITHMETIC = {"Add", "Sub", "Less", "LessOrEqual", "Greater", "GreaterOrEqual",
                        "Equal", "Max", "Min", "Clip"}


def _window_probe_lengths(bias: ir.Value) -> list[int]:
    nodes, _ = backward_slice([bias])
    lengths = set()
    for node in nodes:
        if node.op_type not in _POSITION_ARITHMETIC:
            continue  # e.g. Slice/Concat constants of rotary or reshapes
        for value in node.inputs:
            array = constant_array(value)
            if array is None or array.size != 1 or array.dtype.kind not in "iu":
                continue
            c = int(array.reshape(()))
            if WINDOW_PROBE_RANGE[0] <= abs(c) <= WINDOW_PROBE_RANGE[1]:
                lengths.add(abs(c) + 3)
    return sorted(lengths)[-2:]


def _sizes(found: AttentionMatch, probes: list[dict]) -> None:
    shapes = [(p[found.query.name].shape, p[found.key.name].shape, p[found.value.name].shape)
              for p in probes]
    q, k, v = shapes[0]
    if len(q) != 4 or len(k) != 4 or len(v) != 4:
        raise NoMatch(f"Q/K/V ranks {len(q)}/{len(k)}/{len(v)}, not 4D")
    kv_heads = k[2] if found.key_layout == "bshd" else k[1]
    head_size = k[3]
    if found.past_key is not None:
        past = probes[0][found.past_key.name].shape
        if len(past) != 4 or past[1] != kv_heads or past[3] != head_size:
            raise NoMatch(f"past key shape {past} does not continue the keys {k}")
    if any(s[0][1] != q[1] or s[0][3] != q[3] for s in shapes):
        raise NoMatch("query heads/head size change with the input size")
    if q[3] != head_size:
        raise NoMatch(f"query head size {q[3]} differs from key head size {head_size}")
    if v[1] != kv_heads:
        raise NoMatch(f"value has {v[1]} heads, key has {kv_heads}")
    if found.repeat_kind == "tile4d" and kv_heads != 1:
        # Tile orders heads h % Hk; the op groups h // (H/Hk): keep the repeated K/V.
        found.key, found.value = found.repeated_key, found.repeated_value
        found.repeat_kind, kv_heads = None, q[1]
    if q[1] % kv_heads:
        raise NoMatch(f"{q[1]} query heads do not group over {kv_heads} kv heads")
    found.num_heads, found.kv_num_heads, found.head_size = int(q[1]), int(kv_heads), int(q[3])
    found.value_head_size = int(v[3])


def analyse(model: ir.Model, matches: list[AttentionMatch]) -> list[tuple[AttentionMatch, str]]:
    """Fills sizes and mask meaning in place; returns the matches that cannot be fused, with why."""
    if not matches:
        return []
    plans = model_inputs.plan_inputs(model)
    feeds = [model_inputs.make_inputs(plans, sizes, padded=(k == 0))
             for k, sizes in enumerate(PROBE_SIZES)]
    wanted = []
    for found in matches:
        wanted += [found.query, found.key, found.value, *found.biases, *found.keep_masks]
        wanted += [v for v in (found.past_key, found.past_value) if v is not None]
        if found.layout_3d:
            wanted += [found.layout_3d[n] for n in ("query", "key", "value", "merged")]
    probes = read_values(model, wanted, feeds)
    mask_inputs = {p.name for p in plans if p.kind == "mask"}
    rejected = []
    for found in matches:
        try:
            _sizes(found, probes)
            layout.check_3d(found, {name: a.shape for name, a in probes[0].items()})
            _masks(model, plans, found, probes, feeds, mask_inputs)
        except NoMatch as reason:
            rejected.append((found, str(reason)))
    return rejected


def mask_samples(model, plans, mask: ir.Value, probes, feeds, padding_inputs):
    """The mask's values on every probe, plus longer probes where a window may hide."""
    arrays = [p[mask.name] for p in probes]
    paddings = [{name: f[name] for name in padding_inputs} for f in feeds]
    for length in _window_probe_lengths(mask):
        long_feeds = model_inputs.make_inputs(plans, {"batch": 1, "seq": length}, padded=False)
        try:
            arrays.append(read_values(model, [mask], [long_feeds])[0][mask.name])
        except ProbeError:  # the model cannot run that long: no window to find there
            continue
        paddings.append({name: long_feeds[name] for name in padding_inputs})
    return arrays, paddings


def _masks(model, plans, found: AttentionMatch, probes, feeds, mask_inputs) -> None:
    general = []
    meanings = []
    for bias in [*found.biases, *found.keep_masks]:
        keep = any(bias is k for k in found.keep_masks)
        _, reads = backward_slice([bias])
        padding_inputs = sorted(reads & mask_inputs)
        arrays, paddings = mask_samples(model, plans, bias, probes, feeds, padding_inputs)
        if keep:  # Where(keep, scores, -big) adds 0 where kept, blocks elsewhere
            arrays = [np.where(a, 0.0, -np.inf) for a in arrays]
        meaning = mask_rules.classify(arrays, paddings)
        if value_inputs(bias) - mask_inputs:
            # It reads the values of other inputs (position ids, segment ids...): what the
            # probes showed may not hold for other values, so it stays an additive bias.
            meaning = None
        if meaning is None:
            general.append(bias)
        else:
            meanings.append(meaning)
    if len(general) > 1:
        raise NoMatch("several general additive biases before the softmax")
    if len({(m.causal, m.window_size) for m in meanings if m.causal or m.window_size > 0}) > 1:
        raise NoMatch("masks with different causal/window structure")
    pads = {m.padding_input for m in meanings if m.padding_input}
    if len(pads) > 1:
        raise NoMatch("key padding from several inputs")
    found.causal = any(m.causal for m in meanings)
    found.window_size = max((m.window_size for m in meanings), default=-1)
    found.key_padding_mask = next(v for v in model.graph.inputs if v.name in pads) if pads else None
    found.attn_bias = general[0] if general else None
    found.attn_bias_is_keep_mask = bool(general) and any(general[0] is k for k in found.keep_masks)


def analyse_fused(model: ir.Model, matches: list) -> list[tuple[object, str]]:
    """Probe-based sizes and mask meaning for already-fused attention ops (fused_ops.py)."""
    from . import fused_ops

    if not matches:
        return []
    plans = model_inputs.plan_inputs(model)
    feeds = [model_inputs.make_inputs(plans, sizes, padded=(k == 0))
             for k, sizes in enumerate(PROBE_SIZES)]
    wanted = []
    for found in matches:
        wanted += [v for v in (found.query, found.key, found.value, found.mask,
                               found.key_padding_mask, found.past_key) if v is not None]
        wanted += list(found.kv_sources or ())
    probes = read_values(model, wanted, feeds)
    mask_inputs = {p.name for p in plans if p.kind == "mask"}
    rejected = []
    for found in matches:
        try:
            fused_ops.analyse(found, probes, feeds, mask_inputs, model, plans)
        except fused_ops.Unsupported as reason:
            rejected.append((found, str(reason)))
    return rejected
