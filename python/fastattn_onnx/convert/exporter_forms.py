"""Exporter-specific spellings of attention pieces, matched with onnxscript's pattern rewriter.

PyTorch's SDPA decomposition (both exporters) writes a few pieces differently from eager
attention: a NaN guard on the probabilities, and (dynamo) K^T through 3D reshapes. The patterns
here only recognise them; what they mean is proven from the probes (sdpa_decomposed.check) and
by verification, as for every other match.
"""
from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter import pattern

from ._graph import ints_attr, scalar


class _Form(pattern.PatternBase):
    """Match-only use of a pattern: the bindings of a match rooted at `node`, or None."""

    def bindings(self, node: ir.Node) -> dict | None:
        graph = node.graph
        if graph is None:
            return None
        # Nodes inside the pattern must have no reader outside it: the fused op replaces them.
        found = self.match(None, graph, node, check_nodes_are_removable=True)
        return dict(found.bindings) if found else None


class NanGuard(_Form):
    """Where(IsNaN(P), 0, P): zeroes rows where every key was -inf (SDPA with a bool mask)."""

    def pattern(self, op, probs, zero):
        return op.Where(op.IsNaN(probs), zero, probs)

    def check(self, context, probs, zero, **_):
        result = pattern.MatchResult()
        # A Constant node's output too (onnxscript's constant patterns read initializers only).
        if scalar(zero) != 0.0:
            return result.fail("the NaN guard's fill is not 0")
        return result


class ReshapedKeyTranspose(_Form):
    """Reshape(Transpose(Reshape(K, [B*H, S, D]), perm=[0, 2, 1]), [B, H, D, S]): dynamo's K^T.

    This is Transpose(K, [0, 1, 3, 2]) exactly when the two shapes are what the names say; the
    shapes are dynamic (built from Shape(K)), so the match's check compares them on the probes.
    """

    def pattern(self, op, key, shape_3d, shape_4d):
        flat = op.Reshape(key, shape_3d, _allow_other_attributes=True, _outputs=["flat"])
        swapped = op.Transpose(flat, _allow_other_attributes=True, _outputs=["swapped"])
        return op.Reshape(swapped, shape_4d, _allow_other_attributes=True)

    def check(self, context, key, flat, swapped, **_):
        result = pattern.MatchResult()
        if ints_attr(swapped.producer(), "perm") != (0, 2, 1):
            return result.fail("the 3D transpose does not swap the last two axes")
        return result


NAN_GUARD = NanGuard()
RESHAPED_KEY_TRANSPOSE = ReshapedKeyTranspose()


def nan_guard(probs: ir.Value) -> ir.Node | None:
    """The Where guarding `probs` (its only readers being that guard), or None."""
    readers = [use.node for use in probs.uses()]
    if len(readers) != 2 or probs.is_graph_output():
        return None
    for where in readers:
        if where.op_type == "Where" and where.domain == "":
            found = NAN_GUARD.bindings(where)
            if found is not None and found["probs"] is probs:
                return where
    return None


def reshaped_key_transpose(key_t: ir.Value) -> tuple[ir.Value, ir.Value] | None:
    """(K, its [B*H, S, D] reshape) if `key_t` is dynamo's reshaped K^T, else None."""
    node = key_t.producer()
    if node is None or node.op_type != "Reshape" or node.domain != "":
        return None
    found = RESHAPED_KEY_TRANSPOSE.bindings(node)
    if found is None:
        return None
    return found["key"], found["flat"]
