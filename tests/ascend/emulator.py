"""A float64 NumPy emulator of CANN's aclnnFusedInferAttentionScore (V1) as DOCUMENTED.

It models the operator, not our contract: tests/ascend/test_plan_emulator.py feeds it the
arguments kernels/ascend/fia_plan.h plans and compares with tests/reference.py. Each rule cites
where it is documented:
  [doc]   hicann/ops-transformer attention/fused_infer_attention_score/docs/
          aclnnFusedInferAttentionScore_en.md (the V1 reference page), by section;
  [notes] /work/shared/notes/ascend-cann.md (CANN's mask golden `generate_cpu_mask` in the
          flash_attention_score pytest utils, torch_npu 2.13.0 `_op_plugin_docs.py`).
What the documents leave open raises Undocumented instead of guessing (so a plan that relies
on it fails); what they call undefined ("precision may be affected") comes out as NaN.
Nothing here ran against real CANN.
"""
from __future__ import annotations

import numpy as np

UNBOUNDED = 2147483647  # [doc] preTokens / nextTokens: "2147483647 is recommended" (no limit)
COMPRESSED = 2048       # [doc] sparseMode 2/3/4: "an optimized attenmask matrix (2048 x 2048)"


class OperatorError(ValueError):
    """The operator would reject these arguments (a documented restriction is broken)."""


class Undocumented(NotImplementedError):
    """The documents do not say what the operator computes here."""


def _split_layout(x, layout, heads, name):
    """[doc] inputLayout: BNSD is [B, N, S, D]; BSH is [B, S, H] with H = N * D."""
    if layout == "BNSD":
        if x.ndim != 4 or x.shape[1] != heads:
            raise OperatorError(f"{name}: BNSD needs [B, {heads}, S, D], got {x.shape}")
        return x
    if layout == "BSH":
        if x.ndim != 3 or x.shape[2] % heads:
            raise OperatorError(f"{name}: BSH needs [B, S, {heads} * D], got {x.shape}")
        b, s, h = x.shape
        return x.reshape(b, s, heads, h // heads).transpose(0, 2, 1, 3)
    raise OperatorError(f"inputLayout {layout!r} is not emulated (BNSD and BSH only)")


def _lengths(values, batch, full, name):
    """[doc] actualSeqLengths(Kv): nullptr = the S of the shape; 1 entry = every batch; >= B
    entries = the first B; other counts are not supported; each <= the shape's S."""
    if values is None or len(values) == 0:
        return [full] * batch
    values = [int(v) for v in values]
    if len(values) == 1:
        values = values * batch
    elif len(values) >= batch:
        values = values[:batch]
    else:
        raise OperatorError(f"{name} has {len(values)} entries for {batch} batches")
    for v in values:
        if v < 0 or v > full:
            raise OperatorError(f"{name} entry {v} is outside [0, {full}]")
    return values


def _mask_rows(mask, b, sq, skv, decode, name="attenMask"):
    """The [Q_S, KV_S] slice of a full mask for batch b, True = hidden.
    [doc] attenMask: Q_S > 1 takes (Q_S, KV_S), (B, Q_S, KV_S), (1, Q_S, KV_S), (B, 1, Q_S, KV_S),
    (1, 1, Q_S, KV_S); Q_S = 1 takes (B, KV_S), (B, 1, KV_S), (B, 1, 1, KV_S); the S axes may be
    rounded up (alignment). INT8/UINT8 values must be 0 or 1. [notes] 1/True = masked."""
    m = np.asarray(mask)
    if m.dtype != np.bool_ and not np.isin(m, (0, 1)).all():
        raise OperatorError(f"{name}: int8/uint8 masks hold only 0 and 1")
    if decode:
        if m.ndim == 2:
            rows = m[b][None, :]
        elif m.ndim == 3 and m.shape[1] == 1:
            rows = m[b]
        elif m.ndim == 4 and m.shape[1] == 1 and m.shape[2] == 1:
            rows = m[b, 0]
        else:
            raise OperatorError(f"{name}: shape {m.shape} is not a decode (Q_S = 1) mask shape")
        if rows.shape[-1] < skv:
            raise OperatorError(f"{name}: shape {m.shape} is smaller than KV_S = {skv}")
    else:
        if m.ndim == 2:
            rows = m
        elif m.ndim == 3:
            rows = m[b if m.shape[0] > 1 else 0]
        elif m.ndim == 4 and m.shape[1] == 1:
            rows = m[b if m.shape[0] > 1 else 0, 0]
        else:
            raise OperatorError(f"{name}: shape {m.shape} is not a documented mask shape")
        if rows.shape[0] < sq or rows.shape[1] < skv:
            raise OperatorError(f"{name}: shape {m.shape} is smaller than (Q_S, KV_S) = ({sq}, {skv})")
    return rows[:sq, :skv] != 0


def _check_compressed(mask):
    """[doc] sparseMode 2/3/4: attenMask of shape (S, S), (1, S, S) or (1, 1, S, S) with S = 2048,
    a lower triangular matrix (here: exactly triu(ones, 1) as hidden positions, [notes])."""
    m = np.asarray(mask)
    if m.shape not in ((COMPRESSED, COMPRESSED), (1, COMPRESSED, COMPRESSED), (1, 1, COMPRESSED, COMPRESSED)):
        raise OperatorError(f"sparse modes 2-4 need the 2048 x 2048 compressed mask, got {m.shape}")
    m = m.reshape(COMPRESSED, COMPRESSED) != 0
    if not np.array_equal(m, np.triu(np.ones((COMPRESSED, COMPRESSED), bool), 1)):
        raise OperatorError("the compressed mask must be triu(ones(2048, 2048), 1)")


def fused_infer_attention_score(query, key, value, *, pse_shift=None, atten_mask=None, actual_seq_lengths=None,
                                actual_seq_lengths_kv=None, kv_padding_size=None, num_heads=1, scale=1.0,
                                pre_tokens=UNBOUNDED, next_tokens=UNBOUNDED, input_layout="BSH",
                                num_key_value_heads=0, sparse_mode=0, inner_precise=0, dtype="float16"):
    """attentionOut in query's layout and shape, float64. Tensors are float64 arrays holding the
    values of `dtype`; kv_padding_size is an int (the device [1] tensor's value) or None."""
    # [doc] query/key/value: FLOAT16, BFLOAT16, INT8 (no FLOAT32); pseShift the query's type.
    if dtype not in ("float16", "bfloat16"):
        raise OperatorError(f"query dtype {dtype} is not supported (float16, bfloat16)")
    key, value = np.asarray(key, np.float64), np.asarray(value, np.float64)
    # [doc] Constraints: "The shapes of the tensors corresponding to key and value must be identical."
    if key.shape != value.shape:
        raise OperatorError(f"key {key.shape} and value {value.shape} must have the same shape")
    # [doc] numKeyValueHeads: 0 = as many as query; must divide numHeads, ratio <= 64.
    kvh = num_key_value_heads or num_heads
    if num_heads % kvh or num_heads // kvh > 64:
        raise OperatorError(f"numHeads {num_heads} / numKeyValueHeads {kvh}: must divide, ratio <= 64")
    q = _split_layout(np.asarray(query, np.float64), input_layout, num_heads, "query")
    k = _split_layout(key, input_layout, kvh, "key")
    v = _split_layout(value, input_layout, kvh, "value")
    b_, n, sq, d = q.shape
    skv = k.shape[2]
    if k.shape[0] != b_ or k.shape[3] != d:
        raise OperatorError("key batch / head size differ from query's")
    decode = sq == 1  # [doc] Function Description: Q_S = 1 runs IncreFlashAttention, else PromptFlashAttention
    # [doc] "When Q_S is greater than 1": B <= 65536, N <= 256, D <= 512, D 16-element aligned for
    # FLOAT16/BFLOAT16, BSH/BSND: N * D < 65535. "When Q_S is equal to 1": B <= 65536, N <= 256, D <= 512.
    if b_ > 65536 or n > 256 or d > 512:
        raise OperatorError(f"B {b_} <= 65536, N {n} <= 256, D {d} <= 512 broken")
    if not decode:
        if d % 16:
            raise OperatorError(f"D = {d} must be a multiple of 16 when Q_S > 1")
        if input_layout == "BSH" and (n * d >= 65535 or kvh * d >= 65535):
            raise OperatorError("BSH needs N * D < 65535")
        if sparse_mode not in (0, 1, 2, 3, 4):  # [doc] "sparseMode can only be set to 0, 1, 2, 3, or 4"
            raise OperatorError(f"sparseMode {sparse_mode} is not supported")
    if inner_precise not in (0, 1, 2, 3):  # [doc] innerPrecise: four modes 0-3
        raise OperatorError(f"innerPrecise {inner_precise}")
    if decode and inner_precise not in (0, 1):  # [notes] torch_npu 2.13.0 docs, inner_precise: "Q_S = 1: 0 and 1 only"
        raise OperatorError("at Q_S = 1 innerPrecise takes 0 or 1 only")
    # [doc] Null inputs: key/value empty (S2 = 0) -> attentionOut all zeros.
    if skv == 0:
        return np.zeros_like(np.asarray(query, np.float64))

    # [doc] pre/next "invalid when Q_S is 1"; sparseMode "invalid when Q_S is 1";
    # actualSeqLengths "invalid when Q_S is 1".
    if decode:
        sparse_mode, pre_tokens, next_tokens, actual_seq_lengths = 0, UNBOUNDED, UNBOUNDED, None
    q_len = _lengths(actual_seq_lengths, b_, sq, "actualSeqLengths")
    kv_len = _lengths(actual_seq_lengths_kv, b_, skv, "actualSeqLengthsKv")
    if actual_seq_lengths is not None and len(actual_seq_lengths) and any(x != sq for x in q_len):
        raise Undocumented("actualSeqLengths < Q_S: what rows past the length hold is not documented")
    # [doc] "Left padding for kv": start = KV_S - kvPaddingSize - actualSeqLengthsKv,
    # end = KV_S - kvPaddingSize; kvPaddingSize < 0 is taken as 0; it needs actualSeqLengthsKv,
    # otherwise the default is right padding (keys [0, L_b)).
    padded = kv_padding_size is not None and actual_seq_lengths_kv is not None and len(actual_seq_lengths_kv)
    pad = max(0, int(kv_padding_size)) if padded else 0
    if padded and (pse_shift is not None or (atten_mask is not None and (decode or sparse_mode in (0, 1)))):
        # [doc] decode: "ensure that the meaning of attenMask is correct" -- whether full-mask or
        # pse columns follow the shifted key start is not said (the compressed mask of sparse
        # modes 2-4 is position-free: its band is on the batch's actual keys).
        raise Undocumented("a full attenMask / pseShift together with kv left padding")

    if sparse_mode in (2, 3, 4):
        if atten_mask is None:
            raise OperatorError("sparse modes 2-4 need the compressed attenMask")
        _check_compressed(atten_mask)
    if sparse_mode == 1 and atten_mask is None:
        raise OperatorError("sparse mode 1 (allMask) needs a full attenMask")  # [doc] sparseMode table, row 1

    if pse_shift is not None:
        # [doc] pseShift: (B, N, Q_S, KV_S) or (1, N, Q_S, KV_S) (decode: Q_S = 1), the pse's S axes
        # may be larger than query's / key's.
        pse = np.asarray(pse_shift, np.float64)
        if pse.ndim != 4 or pse.shape[0] not in (1, b_) or pse.shape[1] != n or pse.shape[2] < sq or pse.shape[3] < skv:
            raise OperatorError(f"pseShift shape {pse.shape} is not (B or 1, {n}, {sq}, {skv})")

    group = n // kvh
    out = np.zeros((b_, n, sq, d))
    for b in range(b_):
        if padded:
            start, end = skv - pad - kv_len[b], skv - pad
            if start < 0 or end > skv:
                if decode:  # [doc] decode left padding: start or end below 0 -> "the returned data is all 0s"
                    continue
                raise OperatorError("kv left padding reads outside [0, KV_S)")  # [doc] "will not meet the expectation"
        else:
            start, end = 0, kv_len[b]
        L, S1 = end - start, q_len[b]
        i = np.arange(sq)[:, None]
        j = np.arange(L)[None, :]  # key index within the batch's actual keys
        hidden = np.zeros((sq, L), bool)
        # [notes] mask golden: 2 leftUpCausal j > i hidden; 3 rightDownCausal j > i + Skv - Sq hidden;
        # 4 band: visible iff -pre <= j - (i + Skv - Sq) <= next; 0 with a mask: the mask, and the
        # band -pre <= j - i <= next; Skv/Sq the batch's actual lengths.
        # [doc] sparseMode 0 without attenMask: no masking, pre/next ignored; modes 1/2/3 ignore pre/next.
        if sparse_mode == 2:
            hidden |= j > i
        elif sparse_mode == 3:
            hidden |= j > i + L - S1
        elif sparse_mode == 4:
            off = j - (i + L - S1)
            hidden |= (off < -pre_tokens) | (off > next_tokens)
        elif sparse_mode == 0 and atten_mask is not None and not padded:
            hidden |= (j - i < -pre_tokens) | (j - i > next_tokens)
        if sparse_mode in (0, 1) and atten_mask is not None:
            hidden |= _mask_rows(atten_mask, b, sq, skv, decode)[:, start:end]
        kb = k[b, :, start:end]
        vb = v[b, :, start:end]
        for h in range(n):
            # [notes] Bias order: softmax(scale * Q K^T + pse); GQA: query head h reads kv head h // group
            s = scale * q[b, h] @ kb[h // group].T
            if pse_shift is not None:
                s = s + pse[b if pse.shape[0] > 1 else 0, h, :sq, start:end]
            s = np.where(hidden, -np.inf, s)
            m = s.max(axis=1, keepdims=True)
            empty = ~np.isfinite(m[:, 0])
            with np.errstate(invalid="ignore"):
                p = np.exp(s - np.where(np.isfinite(m), m, 0.0))
                p = p / p.sum(axis=1, keepdims=True)
            o = p @ vb[h // group]
            # [doc] innerPrecise: 2/3 = invalid-row correction (rows masked entirely); also enabled
            # automatically where the operator sees invalid rows, e.g. sparseMode 3 with Sq > Skv.
            # Without it such rows are undefined ("precision may be affected"): NaN here.
            corrected = inner_precise in (2, 3) or (sparse_mode == 3 and S1 > L)
            o[empty] = 0.0 if corrected else np.nan
            out[b, h] = o
    # [doc] attentionOut: query's shape (D of value), query's layout.
    if input_layout == "BNSD":
        return out
    return out.transpose(0, 2, 1, 3).reshape(b_, sq, n * d)
