"""What the converter found, fused and left alone (and why), as text and JSON."""
from __future__ import annotations

import dataclasses
import json


@dataclasses.dataclass
class FusedAttention:
    node: str
    source: str  # which pattern family
    num_heads: int
    kv_num_heads: int
    head_size: int
    causal: bool
    window_size: int
    key_padding_mask: str | None
    attn_bias: str | None
    kv_repeat_removed: str | None = None
    kv_cache: bool = False
    softcap: float = 0.0
    layout: str = "4d"  # "3d": Q/K/V/output as [B, S, heads*D], head split/merge removed
    compute_type: str | None = None  # the query's element type: what the op computes in


@dataclasses.dataclass
class LeftAlone:
    node: str
    reason: str


@dataclasses.dataclass
class ConvertReport:
    input_path: str | None = None
    output_path: str | None = None
    found: int = 0
    fused: list[FusedAttention] = dataclasses.field(default_factory=list)
    left: list[LeftAlone] = dataclasses.field(default_factory=list)
    removed_nodes: int = 0
    already_fused: int = 0  # FastAttention nodes the input had (a converted model again)
    # The lowest float precision of what the conversion changes (the fused nodes, the nodes they
    # replaced, everything computed from their outputs): verification's default tolerance.
    compute_type: str | None = None
    verify: dict | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def write_json(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2)

    def summary(self) -> str:
        lines = [f"attention subgraphs: {self.found} found, {len(self.fused)} fused, "
                 f"{len(self.left)} left alone; {self.removed_nodes} nodes removed"]
        for f in self.fused:
            mask = []
            if f.causal:
                mask.append("causal")
            if f.window_size > 0:
                mask.append(f"window {f.window_size}")
            if f.key_padding_mask:
                mask.append(f"key padding from {f.key_padding_mask}")
            if f.attn_bias:
                mask.append("additive bias")
            if f.softcap:
                mask.append(f"softcap {f.softcap:g}")
            kind = ", ".join(filter(None, (f.source, f.layout, f.compute_type)))
            lines.append(f"  fused {f.node} [{kind}]: {f.num_heads} heads, "
                         f"{f.kv_num_heads} kv heads, head size {f.head_size}; "
                         f"{', '.join(mask) or 'no mask'}"
                         + (f"; repeat_kv removed ({f.kv_repeat_removed})" if f.kv_repeat_removed else "")
                         + ("; KV cache as past/present" if f.kv_cache else ""))
        lines += [f"  left {item.node}: {item.reason}" for item in self.left]
        if self.verify is not None:
            lines.append(f"  {self.verify.get('summary', '')}")
        return "\n".join(lines)

    def nothing_fused(self) -> str:
        """Why no output was written: what was found and each reason it was left alone."""
        if not self.found:
            already = (f" (it already has {self.already_fused} FastAttention node(s))"
                       if self.already_fused else "")
            return f"nothing fused: no attention subgraph found{already}"
        lines = [f"nothing fused: {self.found} attention subgraph(s) found, 0 fused"]
        lines += [f"  left {item.node}: {item.reason}" for item in self.left]
        return "\n".join(lines)
