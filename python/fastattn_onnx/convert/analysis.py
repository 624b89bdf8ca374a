"""The check step's evidence: what structure alone cannot tell (head counts and sizes, what each
mask means) comes from running the original model on a few probe inputs (different batch and
sequence sizes, with and without padding): sizes that stay fixed across probes are the model's
constants. One probe run serves the checks of every match, whatever its rule family.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from . import inputs as model_inputs
from . import masks as mask_rules
from ._graph import backward_slice, constant_array, value_inputs
from .probe import ProbeError, read_values
from .rules import Match, NoMatch

PROBE_SIZES = ({"batch": 3, "seq": 13}, {"batch": 2, "seq": 6}, {"batch": 1, "seq": 3})
# Probe 0 has left and right padding, probe 1 none; probe 2 (batch 1) pads a middle token: a
# mask read as key padding must block exactly the padded keys in every one of these patterns.
PROBE_PADDING = ("mixed", "none", "holes")
# Sliding windows are invisible at short lengths: masks reading an integer constant in this
# range are probed again just past it.
WINDOW_PROBE_RANGE = (8, 16384)
_POSITION_ARITHMETIC = {"Add", "Sub", "Less", "LessOrEqual", "Greater", "GreaterOrEqual",
                        "Equal", "Max", "Min", "Clip"}


@dataclasses.dataclass
class Probes:
    """The original model's values on the probe inputs (PROBE_SIZES, PROBE_PADDING)."""

    model: ir.Model
    plans: list[model_inputs.InputPlan]
    feeds: list[dict[str, np.ndarray]]
    arrays: list[dict[str, np.ndarray]]  # per probe: value name -> array
    mask_inputs: set[str]  # graph inputs that are [B, S] attention masks

    def shape(self, value: ir.Value) -> tuple[int, ...]:
        """The value's shape on probe 0."""
        return self.arrays[0][value.name].shape

    def dtype(self, value: ir.Value) -> np.dtype:
        return self.arrays[0][value.name].dtype

    def shapes(self, value: ir.Value) -> list[tuple[int, ...]]:
        return [probe[value.name].shape for probe in self.arrays]

    def graph_input(self, name: str) -> ir.Value:
        return next(v for v in self.model.graph.inputs if v.name == name)

    def mask_meaning(self, mask: ir.Value) -> mask_rules.MaskMeaning | None:
        """What an additive mask (or a bool keep-mask) means, or None: a general additive bias."""
        if value_inputs(mask) - self.mask_inputs:
            # It reads the values of other inputs (position ids, segment ids...): what the
            # probes showed may not hold for other values, so it stays an additive bias.
            return None
        _, reads = backward_slice([mask])
        arrays, paddings = self._mask_samples(mask, sorted(reads & self.mask_inputs))
        additive = [np.where(a, 0.0, -np.inf) if a.dtype == np.bool_ else a for a in arrays]
        return mask_rules.classify(additive, paddings)

    def _mask_samples(self, mask: ir.Value, padding_inputs: list[str]):
        """The mask's values on every probe, plus longer probes where a window may hide."""
        arrays = [probe[mask.name] for probe in self.arrays]
        paddings = [{name: f[name] for name in padding_inputs} for f in self.feeds]
        for length in _window_probe_lengths(mask):
            long_feeds = model_inputs.make_inputs(self.plans, {"batch": 1, "seq": length},
                                                  padded=False)
            try:
                arrays.append(read_values(self.model, [mask], [long_feeds])[0][mask.name])
            except ProbeError:  # the model cannot run that long: no window to find there
                continue
            paddings.append({name: long_feeds[name] for name in padding_inputs})
        return arrays, paddings


def _window_probe_lengths(mask: ir.Value) -> list[int]:
    nodes, _ = backward_slice([mask])
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


def analyse(model: ir.Model, matches: list[Match]) -> list[tuple[Match, str]]:
    """Runs every match's check on one probe run (filling it in place); returns the matches
    that cannot be fused, with why. Raises ProbeError if the model cannot be run."""
    if not matches:
        return []
    plans = model_inputs.plan_inputs(model)
    feeds = [model_inputs.make_inputs(plans, sizes, padded=pattern)
             for sizes, pattern in zip(PROBE_SIZES, PROBE_PADDING)]
    wanted = [value for found in matches for value in found.probe_values()]
    probes = Probes(model, plans, feeds, read_values(model, wanted, feeds),
                    {p.name for p in plans if p.kind == "mask"})
    rejected = []
    for found in matches:
        try:
            found.check(probes)
        except NoMatch as reason:
            rejected.append((found, str(reason)))
    return rejected
