"""What a result must be: the float64 reference (tests/reference.py) extended with the documented
rules for non-finite values, comparisons with tolerances, and what counts as a clean error.

Documented behaviours this encodes (README, the op contract):
  - a key hidden from a query row (causal, window_size, key_padding_mask) never contributes to
    that row, even if its K/V hold NaN or inf;
  - NaN in, NaN out: a NaN in a query row, in a visible key, or in attn_bias at a visible key
    makes the row NaN; a NaN/inf in a visible value makes that column non-finite;
  - a row with no visible key outputs zeros;
  - an attn_bias of -inf hides the key by arithmetic (a row whose visible keys all have -inf
    bias gives zeros, as the reference does).
What the contract leaves open is not checked ("don't care"): rows seeing +-inf keys or +inf bias
(IEEE gives NaN or a limit), a NaN query row with no visible key (zeros vs NaN).
"""
from __future__ import annotations

import numpy as np

from reference import attention_reference, to_4d, visible_keys

# Per element: expected value within tolerance / must be NaN / must be non-finite / anything.
VALUE, NAN, NONFINITE, ANY = 0, 1, 2, 3

# Output rounding of the 16-bit types plus float32 accumulation.
BASE_TOL = {"float32": (2e-5, 1e-5), "float16": (1e-3, 1.5e-3), "bfloat16": (4e-3, 8e-3)}


def _f64(x):
    return None if x is None else np.asarray(x, np.float64)


def expected(inputs: dict, attrs: dict):
    with np.errstate(all="ignore"):
        return _expected(inputs, attrs)


def _expected(inputs: dict, attrs: dict):
    """(expected [B, H, S_q, Dv] float64, kinds [B, H, S_q, Dv] int8, score_max, value_max) for
    the FastAttention contract. inputs: query/key/value/attn_bias/key_padding_mask/past_key/
    past_value (float arrays already rounded to the run's dtype); attrs: the op's attributes."""
    q, k, v = (_f64(inputs[n]) for n in ("query", "key", "value"))
    bias = _f64(inputs.get("attn_bias"))
    kpm = inputs.get("key_padding_mask")
    pk, pv = _f64(inputs.get("past_key")), _f64(inputs.get("past_value"))
    rank = q.ndim
    heads = attrs.get("num_heads") if rank == 3 else q.shape[1]
    kv_heads = attrs.get("kv_num_heads") or (heads if rank == 3 else k.shape[1])
    causal = bool(attrs.get("causal", 0))
    window = attrs.get("window_size", -1)
    softcap = attrs.get("softcap", 0.0) or 0.0
    scale = attrs.get("scale")

    def clean(x, keep_neg_inf=False):
        if x is None:
            return None
        bad = np.isnan(x) | (np.isinf(x) & ~((x < 0) & keep_neg_inf))
        return np.where(bad, 0.0, x)

    q4_shape = to_4d(q, heads).shape
    s_total0 = (k.shape[1] if rank == 3 else k.shape[2]) + (0 if pk is None else pk.shape[2])
    dv0 = (v.shape[2] // kv_heads if kv_heads else 0) if rank == 3 else v.shape[3]
    if 0 in q4_shape[:3] or s_total0 == 0 or dv0 == 0 or q4_shape[3] == 0:
        shape = (q4_shape[0], q4_shape[1], q4_shape[2], dv0)
        # Head size 0: the default scale 1/sqrt(0) has no value; only the shape is checked.
        kinds = np.full(shape, ANY if q4_shape[3] == 0 and s_total0 else VALUE, np.int8)
        return np.zeros(shape), kinds, 0.0, 0.0
    out, _, _ = attention_reference(
        clean(q), clean(k), clean(v), num_heads=heads, kv_num_heads=kv_heads, scale=scale,
        causal=causal, window_size=window, softcap=softcap, attn_bias=clean(bias, keep_neg_inf=True),
        key_padding_mask=kpm, past_key=clean(pk), past_value=clean(pv))
    out4 = to_4d(out, heads).astype(np.float64)
    q4 = to_4d(q, heads)
    k4, v4 = to_4d(k, kv_heads), to_4d(v, kv_heads)
    if pk is not None:
        k4, v4 = np.concatenate([pk, k4], axis=2), np.concatenate([pv, v4], axis=2)
    b, h, s_q, _ = q4.shape
    s_total = k4.shape[2]
    group = h // kv_heads if kv_heads else 1
    vis = np.broadcast_to(visible_keys(s_q, s_total, causal, window), (b, h, s_q, s_total)).copy()
    if kpm is not None:
        vis &= (np.asarray(kpm) != 0)[:, None, None, :]
    kinds = np.zeros(out4.shape, np.int8)
    if out4.size == 0:
        return out4, kinds, 0.0, 0.0
    if s_total == 0:  # no key at all: every row has no visible key
        return np.zeros(out4.shape), kinds, 0.0, 0.0

    def rows_seeing(key_flags):  # key_flags [B, KVH, S_total] -> [B, H, S_q]
        flags = np.repeat(key_flags, group, axis=1)[:, :, None, :]
        return (vis & flags).any(-1)

    q_nan = np.isnan(q4).any(-1)
    q_inf = np.isinf(q4).any(-1) & ~q_nan
    k_nan = rows_seeing(np.isnan(k4).any(-1))
    k_inf = rows_seeing(np.isinf(k4).any(-1))
    nan_rows = q_nan | k_nan
    any_rows = q_inf | k_inf
    if bias is not None:
        bb = np.broadcast_to(bias, vis.shape)
        nan_rows |= (np.isnan(bb) & vis).any(-1)
        any_rows |= ((bb == np.inf) & vis).any(-1)
    v_bad = ~np.isfinite(v4)
    if v_bad.any():
        vb = np.repeat(v_bad, group, axis=1).astype(np.float64)  # [B, H, S_total, Dv]
        cols = np.einsum("bhij,bhjd->bhid", vis.astype(np.float64), vb) > 0
        kinds[cols] = NONFINITE
    kinds[any_rows] = ANY
    kinds[nan_rows] = NAN
    no_key = ~vis.any(-1)
    kinds[no_key] = VALUE  # zeros: nothing is read for such a row...
    kinds[no_key & q_nan] = ANY  # ...except that "NaN in, NaN out" may win there
    out4[kinds != VALUE] = 0.0
    # Tolerance scale: the largest visible score and value (clean copies).
    sc = 1.0 / np.sqrt(q4.shape[-1]) if scale is None else float(scale)
    qc, kc = clean(q4), np.repeat(clean(k4), group, axis=1)
    scores = np.abs(sc * np.einsum("bhid,bhjd->bhij", qc, kc))
    if softcap and softcap > 0:
        scores = np.minimum(scores, softcap)
    if bias is not None:
        cb = np.broadcast_to(clean(bias), vis.shape)
        scores = scores + np.abs(cb)
    score_max = float(np.max(np.where(vis, scores, 0.0))) if vis.any() else 0.0
    value_max = float(np.max(np.abs(clean(v4)))) if v4.size else 0.0
    return out4, kinds, score_max, value_max


def compare(got4: np.ndarray, want4: np.ndarray, kinds: np.ndarray, dtype: str, score_max: float,
            value_max: float, head_size: int) -> str | None:
    """None, or what differs (first offending element and counts)."""
    got4 = np.asarray(got4, np.float64)
    if got4.shape != want4.shape:
        return f"output shape {list(got4.shape)}, expected {list(want4.shape)}"
    base, rel = BASE_TOL[dtype]
    # Scores carry float32 rounding of about eps * sqrt(D) relative; the softmax passes an
    # absolute score error through to the output scaled by the values.
    score_term = 4e-7 * (1.0 + np.sqrt(max(head_size, 1)) / 4.0) * score_max * max(value_max, 1.0)
    # Huge scores make the softmax one-hot: rounding cannot move a result by more than a fraction
    # of the values (a near-tie flip aside, which random data makes vanishingly rare).
    score_term = min(score_term, 0.5 * max(value_max, 1.0))
    tol = base * max(value_max, 1.0) + rel * np.abs(want4) + score_term
    problems = []
    value = kinds == VALUE
    bad_value = value & ~(np.abs(got4 - want4) <= tol)  # NaN in got fails here too
    if bad_value.any():
        i = tuple(int(x) for x in np.argwhere(bad_value)[0])
        problems.append(f"{int(bad_value.sum())} value(s) off, e.g. at {list(i)} got {got4[i]!r} want "
                        f"{want4[i]!r} (tol {float(np.broadcast_to(tol, want4.shape)[i]):.3g}; worst "
                        f"|diff| {float(np.nanmax(np.where(value, np.abs(got4 - want4), 0))):.3g})")
    need_nan = (kinds == NAN) & ~np.isnan(got4)
    if need_nan.any():
        i = tuple(int(x) for x in np.argwhere(need_nan)[0])
        problems.append(f"{int(need_nan.sum())} element(s) should be NaN (NaN in, NaN out), e.g. at {list(i)} "
                        f"got {got4[i]!r}")
    need_nonfinite = (kinds == NONFINITE) & np.isfinite(got4)
    if need_nonfinite.any():
        i = tuple(int(x) for x in np.argwhere(need_nonfinite)[0])
        problems.append(f"{int(need_nonfinite.sum())} element(s) should be non-finite (a visible NaN/inf value), "
                        f"e.g. at {list(i)} got {got4[i]!r}")
    return "; ".join(problems) or None


def check_output(got, inputs: dict, attrs: dict, dtype: str, heads: int) -> str | None:
    want, kinds, smax, vmax = expected(inputs, attrs)
    got4 = to_4d(np.asarray(got, np.float64), heads) if np.ndim(got) == 3 else np.asarray(got, np.float64)
    return compare(got4, want, kinds, dtype, smax, vmax, int(np.shape(inputs["query"])[-1]) if np.ndim(
        inputs["query"]) == 4 else int(np.shape(inputs["query"])[-1]) // max(heads, 1))


def check_presents(got_k, got_v, inputs: dict, kv_heads: int) -> str | None:
    """present_key / present_value = concat(past, new) on the sequence axis, bit for bit (NaN too)."""
    for name, got, new, past in (("present_key", got_k, inputs["key"], inputs.get("past_key")),
                                 ("present_value", got_v, inputs["value"], inputs.get("past_value"))):
        want = to_4d(np.asarray(new, np.float32), kv_heads)
        if past is not None:
            want = np.concatenate([np.asarray(past, np.float32), want], axis=2)
        got = np.asarray(got, np.float32)
        if got.shape != want.shape:
            return f"{name} shape {list(got.shape)}, expected {list(want.shape)}"
        if not np.array_equal(got, want, equal_nan=True):
            i = tuple(int(x) for x in np.argwhere(~((got == want) | (np.isnan(got) & np.isnan(want))))[0])
            return f"{name} differs from concat(past, new) at {list(i)}: got {got[i]!r} want {want[i]!r}"
    return None


# ---- errors ----------------------------------------------------------------------------------

def first_line(text: str, limit: int = 300) -> str:
    text = str(text).strip()
    line = text.splitlines()[0] if text else ""
    return line[:limit]


def ort_error(error: BaseException, node: str, keywords=()) -> tuple[bool, str]:
    """An ONNX Runtime error is clean when it names the node and (any of) the rule's keywords."""
    text = str(error)
    compact = " ".join(text.split())
    named = node in compact
    has_rule = not keywords or any(k.lower() in compact.lower() for k in keywords)
    why = [] if named else [f"does not name the node {node!r}"]
    if not has_rule:
        why.append(f"names none of {list(keywords)}")
    return (named and has_rule), (f"{type(error).__name__}: {compact[:400]}" + (f" [{'; '.join(why)}]" if why else ""))


BINDING_ERRORS = (ValueError, TypeError, RuntimeError)


def binding_error(error: BaseException, keywords=()) -> tuple[bool, str]:
    """A binding error is clean when it is a ValueError/TypeError/RuntimeError whose message names
    (any of) the keywords (pybind's 'incompatible function arguments' is the rule for a keyword of
    the wrong type in the signature)."""
    text = " ".join(str(error).split())
    ok_type = isinstance(error, BINDING_ERRORS)
    has_rule = not keywords or any(k.lower() in text.lower() for k in keywords)
    why = []
    if not ok_type:
        why.append("not a ValueError/TypeError/RuntimeError")
    if not has_rule:
        why.append(f"names none of {list(keywords)}")
    return ok_type and has_rule, f"{type(error).__name__}: {text[:400]}" + (f" [{'; '.join(why)}]" if why else "")
