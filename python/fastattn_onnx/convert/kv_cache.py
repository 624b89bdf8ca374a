"""KV cache: K = Concat(past_key, new_key, axis=2) (and V likewise) becomes the fused op's
past_key/past_value inputs, and the op's present_key/present_value outputs take the place of the
Concat results (graph outputs keep their names).

Graph outputs move to the op's present outputs; any other reader keeps reading the Concat, which
then stays (one copy of the cache) rather than risk a cycle through the fused node.
"""
from __future__ import annotations

import onnx_ir as ir

from ._graph import attribute, producer_op


def _cache_concat(value: ir.Value) -> ir.Node | None:
    concat = producer_op(value, "Concat")
    if concat is None or len(concat.inputs) != 2 or attribute(concat, "axis") not in (2, -2):
        return None
    past = concat.inputs[0]
    # A cache is a graph input (or comes straight from one); a constant prefix is not a cache.
    if past is None or past.const_value is not None:
        return None
    return concat


def split_cache(found) -> None:
    """Moves found.key/value to (past, new) when both come from cache Concats."""
    if found.key_layout != "bhsd":
        return
    key_concat, value_concat = _cache_concat(found.key), _cache_concat(found.value)
    if key_concat is None or value_concat is None:
        return
    found.past_key, found.key = key_concat.inputs
    found.past_value, found.value = value_concat.inputs
    found.present_key, found.present_value = key_concat.outputs[0], value_concat.outputs[0]
