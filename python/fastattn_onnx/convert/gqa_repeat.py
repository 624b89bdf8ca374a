"""repeat_kv: K/V expanded from kv_num_heads to num_heads before attention; the fused op
does the head grouping itself, so the repeat is dropped.

Only the interleaved order is removable: x[:, :, None].expand(B, Hk, n, S, D).reshape(B, Hk*n, S, D)
makes head h read kv head h // n, exactly the op's grouping. A 4D Tile(x, [1, n, 1, 1]) makes head
h read kv head h % Hk instead, which matches only when Hk == 1.
"""
from __future__ import annotations

import onnx_ir as ir

from ._graph import axes_of, constant_array, producer_op


def unrepeated(value: ir.Value) -> tuple[ir.Value, str | None]:
    """(the kv tensor before a removable head repeat, kind of repeat or None if none)."""
    reshape = producer_op(value, "Reshape")
    if reshape is not None:
        grow = producer_op(reshape.inputs[0], "Expand", "Tile")
        if grow is None:
            return value, None
        if grow.op_type == "Tile":
            reps = constant_array(grow.inputs[1])
            if reps is None or len(reps) != 5 or any(int(r) != 1 for i, r in enumerate(reps) if i != 2):
                return value, None
        unsqueeze = producer_op(grow.inputs[0], "Unsqueeze")
        if unsqueeze is None or axes_of(unsqueeze) not in ((2,), (-3,)):
            return value, None
        return unsqueeze.inputs[0], "expand" if grow.op_type == "Expand" else "tile5d"
    tile = producer_op(value, "Tile")
    if tile is not None:
        reps = constant_array(tile.inputs[1])
        reps = [int(r) for r in reps] if reps is not None else []
        if len(reps) == 4 and reps[0] == reps[2] == reps[3] == 1:  # repeats on the head axis
            return tile.inputs[0], "tile4d"  # valid only when the source has one kv head
    return value, None
