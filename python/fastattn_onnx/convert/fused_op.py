"""An attention op already in the graph (ONNX Attention, com.microsoft MultiHeadAttention and
Attention): the check and replace steps the op families share. Their match steps
(onnx_attention.py, microsoft_mha.py, microsoft_attention.py) read the op's inputs and attributes
into a FusedOpMatch (or a subclass that adds plain ONNX nodes before the fused op).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from ._graph import output_read
from .analysis import Probes
from .emit import AttentionFusion, contract_violation
from .gqa_repeat import unrepeated
from .layout import merged_source
from .rules import NoMatch


@dataclasses.dataclass
class FusedOpMatch:
    node: ir.Node
    query: ir.Value
    key: ir.Value
    value: ir.Value
    num_heads: int | None
    kv_num_heads: int | None
    scale: float | None
    softcap: float = 0.0
    head_size: int = 0
    causal: bool = False
    window_size: int = -1
    mask: ir.Value | None = None  # additive, or bool (True = attend); classified by check()
    attn_bias: ir.Value | None = None
    key_padding_mask: ir.Value | None = None
    past_key: ir.Value | None = None
    past_value: ir.Value | None = None
    # The op hides padded keys by adding a finite value (com.microsoft's mask_filter_value,
    # -10000 by default): hard masks only while no general bias is added. (Their causal is -inf
    # in ORT's CPU kernels; it is held to the same rule, to be safe.)
    finite_masking: bool = False
    # 3D K/V that were expanded from fewer kv heads: the [B, Hk, S, D] sources (gqa_repeat.py),
    # found with the match; check() keeps them only where the probed sizes agree.
    kv_sources: tuple[ir.Value, ir.Value] | None = dataclasses.field(init=False)

    def __post_init__(self):
        self.kv_sources = _unrepeated_kv(self)

    @property
    def name(self) -> str:
        return self.node.name or self.node.op_type

    def probe_values(self) -> list[ir.Value]:
        values = [self.query, self.key, self.value, self.mask, self.key_padding_mask, self.past_key]
        return [v for v in values if v is not None] + list(self.kv_sources or ())

    def check(self, probes: Probes) -> None:
        """Sizes from the probes; the mask classified like a decomposed one."""
        check_sizes(self, probes)
        if self.mask is not None:
            check_mask(self, probes)

    def has_key_padding(self) -> bool:
        """Whether padded keys are hidden besides the op's mask input."""
        return self.key_padding_mask is not None

    def adapter_nodes(self) -> list[ir.Node]:
        """Plain ONNX nodes the op's inputs need before the fused op (none here); a subclass
        makes them and points query/key/value/key_padding_mask at their outputs."""
        return []

    def fusion(self) -> AttentionFusion:
        # Adapter nodes go in only for a fusion the op's contract takes (convert_model emits it
        # next); they keep the query's type, so the op's own inputs decide.
        if contract_violation(self._fusion()) is None:
            adapters = self.adapter_nodes()
            if adapters:
                self.node.graph.insert_before(self.node, adapters)
        return self._fusion()

    def _fusion(self) -> AttentionFusion:
        read = [i for i in range(3) if output_read(self.node, i)]
        bias = self.attn_bias
        return AttentionFusion(
            source=f"{self.node.domain or 'ai.onnx'}::{self.node.op_type}", anchor=self.node,
            replaces=list(self.node.outputs[:max(read, default=0) + 1]),
            query=self.query, key=self.kv_sources[0] if self.kv_sources else self.key,
            value=self.kv_sources[1] if self.kv_sources else self.value,
            kv_merge_heads=self.kv_sources is not None, num_heads=self.num_heads,
            kv_num_heads=self.kv_num_heads, head_size=self.head_size, scale=self.scale,
            causal=self.causal, window_size=self.window_size, softcap=self.softcap,
            attn_bias=bias,
            keep_mask_like=self.query if bias is not None and bias.dtype == ir.DataType.BOOL else None,
            key_padding_mask=self.key_padding_mask, past_key=self.past_key,
            past_value=self.past_value, layout="as-is")  # the op's own Q/K/V layout


def _unrepeated_kv(found: FusedOpMatch) -> tuple[ir.Value, ir.Value] | None:
    """The [B, Hk, S, D] sources of 3D K and V expanded from kv heads (repeat_kv before the op)."""
    if found.past_key is not None:
        return None
    sources = []
    for value in (found.key, found.value):
        inner = merged_source(value)
        source, kind = unrepeated(inner) if inner is not None else (None, None)
        if kind not in ("expand", "tile5d"):
            return None
        sources.append(source)
    return sources[0], sources[1]


def check_sizes(found: FusedOpMatch, probes: Probes) -> None:
    q, k = probes.shape(found.query), probes.shape(found.key)
    if len(q) != len(k):
        raise NoMatch(f"query rank {len(q)} differs from key rank {len(k)}")
    if len(q) == 4:
        found.num_heads, found.kv_num_heads = int(q[1]), int(k[1])
    elif not found.num_heads:
        raise NoMatch("3D inputs without a head count")
    found.kv_num_heads = found.kv_num_heads or found.num_heads
    if len(q) == 3 and found.kv_sources is not None:
        source_shape = probes.shape(found.kv_sources[0])
        if len(source_shape) == 4 and found.num_heads % source_shape[1] == 0:
            found.kv_num_heads = int(source_shape[1])
        else:
            found.kv_sources = None
    else:
        found.kv_sources = None
    found.head_size = int(q[3]) if len(q) == 4 else int(q[2]) // int(found.num_heads)


def key_totals(found: FusedOpMatch, probes: Probes) -> list[int]:
    """S_total (past + new keys) on each probe."""
    rank = len(probes.shape(found.query))
    s_total = [s[-2 if rank == 4 else 1] for s in probes.shapes(found.key)]
    if found.past_key is not None:
        s_total = [t + s[2] for t, s in zip(s_total, probes.shapes(found.past_key))]
    return s_total


def check_mask(found: FusedOpMatch, probes: Probes) -> None:
    """Causal/window and key padding taken from the mask where it means exactly that; else it
    stays the op's attn_bias."""
    if any(s[-1] != t for s, t in zip(probes.shapes(found.mask), key_totals(found, probes))):
        raise NoMatch("attn_mask shorter than the keys (padded by the op) is not mapped")
    mask_type, query_type = probes.dtype(found.mask), probes.dtype(found.query)
    if mask_type != np.bool_ and mask_type != query_type:  # as run, whatever the graph declares
        raise NoMatch(f"attn_mask of type {mask_type} beside a {query_type} query is not mapped")
    meaning = probes.mask_meaning(found.mask)
    if meaning is None and found.finite_masking and (found.causal or found.has_key_padding()):
        # A general bias can lower visible keys as far as the op's finite masking lowers the
        # masked ones (sdpa_decomposed._check_masks): the fused op's hard masks would differ.
        raise NoMatch("causal/key_padding_mask with a finite mask_filter_value beside a general "
                      "attention_bias is not mapped")
    if meaning is not None and meaning.padding_input and found.has_key_padding():
        meaning = None  # padding already given another way: keep this mask as a bias
    if meaning is None:
        found.attn_bias = found.mask
        return
    found.causal = found.causal or meaning.causal
    found.window_size = meaning.window_size
    if meaning.padding_input:
        found.key_padding_mask = probes.graph_input(meaning.padding_input)
    found.mask = None
