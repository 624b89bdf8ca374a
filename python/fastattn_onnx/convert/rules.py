"""What a rule family provides, and the walk that finds its matches.

A family (sdpa_decomposed, onnx_attention, microsoft_mha) maps the ops it starts from to a match
function: RULES = {(domain, op_type): match}. Each rule goes through three steps:

  match(node)         reads the structure around the node; raises NoMatch with the reason a
                      node is left alone;
  found.check(probes) decides what needs the model's values (sizes, what a mask means) from
                      the probe run analysis.py makes for all matches at once; raises NoMatch;
  found.fusion()      describes the FastAttention node that replaces it (emit.py builds it).
"""
from __future__ import annotations

from typing import Callable, Protocol

import onnx_ir as ir

from .emit import AttentionFusion


class NoMatch(Exception):
    """Why a node is not (or cannot become) a FastAttention."""


class Match(Protocol):
    name: str

    def probe_values(self) -> list[ir.Value]:
        """The values whose probed arrays check() reads."""

    def check(self, probes) -> None:
        """Fills in what needs probing (analysis.Probes); raises NoMatch."""

    def fusion(self) -> AttentionFusion:
        """The FastAttention node to put in its place."""


Rules = dict[tuple[str, str], Callable[[ir.Node], Match]]


def find_matches(graph: ir.Graph, rules: Rules) -> tuple[list[Match], list[tuple[str, str]]]:
    """The matches of `rules` in graph order, and (node name, reason) for each node left alone."""
    matches, skipped = [], []
    for node in graph:
        domain = "" if node.domain == "ai.onnx" else node.domain
        rule = rules.get((domain, node.op_type))
        if rule is None:
            continue
        try:
            matches.append(rule(node))
        except NoMatch as reason:
            skipped.append((node.name or node.op_type, str(reason)))
    return matches, skipped
