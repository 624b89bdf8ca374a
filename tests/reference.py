"""Float64 reference of com.fastattention::FastAttention, written straight from the contract.

Works on the logical 4D layout; to_4d / from_4d convert the 3D [B, S, H*D] layout.
"""
from __future__ import annotations

import numpy as np


def to_4d(x: np.ndarray, heads: int) -> np.ndarray:
    """[B, S, H*D] -> [B, H, S, D]; 4D input is returned as is."""
    if x.ndim == 4:
        return x
    b, s, hd = x.shape
    return x.reshape(b, s, heads, hd // heads).transpose(0, 2, 1, 3)


def from_4d(x: np.ndarray, rank: int) -> np.ndarray:
    if rank == 4:
        return x
    b, h, s, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, s, h * d)


def visible_keys(s_q: int, s_total: int, causal: bool, window_size: int, rows=None) -> np.ndarray:
    """[S_q, S_total] bool: the structural (causal/window) part of the tiling-mask; with `rows`
    (query row indices), only those rows: [len(rows), S_total]."""
    rows = np.arange(s_q) if rows is None else np.asarray(rows)
    i = rows[:, None] + (s_total - s_q)
    j = np.arange(s_total)[None, :]
    vis = np.ones((len(rows), s_total), dtype=bool)
    if causal:
        vis &= j <= i
    if window_size is not None and window_size > 0:
        vis &= (i - j) < window_size
        if not causal:
            vis &= (j - i) < window_size
    return vis


def attention_reference(q, k, v, *, num_heads=None, kv_num_heads=None, scale=None, causal=False,
                        window_size=-1, softcap=0.0, attn_bias=None, key_padding_mask=None,
                        past_key=None, past_value=None):
    """Returns (output, present_key, present_value) in float64; output has q's rank."""
    rank = q.ndim
    if rank == 3:
        assert num_heads, "num_heads is required for 3D inputs"
    q4 = to_4d(np.asarray(q, np.float64), num_heads or q.shape[1])
    n = q4.shape[1]
    kvh = kv_num_heads or (n if rank == 3 else k.shape[1])
    k4 = to_4d(np.asarray(k, np.float64), kvh)
    v4 = to_4d(np.asarray(v, np.float64), kvh)
    if past_key is not None:
        k4 = np.concatenate([np.asarray(past_key, np.float64), k4], axis=2)
        v4 = np.concatenate([np.asarray(past_value, np.float64), v4], axis=2)
    b, _, s_q, d = q4.shape
    s_total = k4.shape[2]
    group = n // kvh
    kq = np.repeat(k4, group, axis=1)
    vq = np.repeat(v4, group, axis=1)
    scale = 1.0 / np.sqrt(d) if scale is None else float(scale)
    scores = scale * np.einsum("bhid,bhjd->bhij", q4, kq)
    if softcap and softcap > 0:
        scores = softcap * np.tanh(scores / softcap)
    if attn_bias is not None:
        scores = scores + np.asarray(attn_bias, np.float64)
    vis = np.broadcast_to(visible_keys(s_q, s_total, causal, window_size), scores.shape)
    if key_padding_mask is not None:
        vis = vis & (np.asarray(key_padding_mask) != 0)[:, None, None, :]
    scores = np.where(vis, scores, -np.inf)
    row_max = scores.max(axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    p = np.where(vis, np.exp(scores - row_max), 0.0)
    denom = p.sum(axis=-1, keepdims=True)
    p = np.divide(p, denom, out=np.zeros_like(p), where=denom > 0)  # no visible key -> zeros
    out = np.einsum("bhij,bhjd->bhid", p, vq)
    return from_4d(out, rank), k4, v4
