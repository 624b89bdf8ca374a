"""Masks that only look like the structures the fused op expresses (issue 14, findings 4 and 11).

The graphs are decomposed attention built with onnx.helper: x [B, S, 64] -> Q, K, V (4 heads of
16) -> Softmax(scale * Q K^T + terms) V, with an int64 attention_mask [B, S].
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from fastattn_onnx.convert import convert, fused_session, sdpa_decomposed, verify_models
from fastattn_onnx.convert import verify as verify_module

HEADS, HEAD_SIZE = 4, 16
HIDDEN = HEADS * HEAD_SIZE


def build(pad: str = "minus_10000", hostile: bool = True, opset: int = 17,
          softmax_axis: int | None = -1) -> onnx.ModelProto:
    """scores + pad + [Where(scores > 0, 0, -10000) if hostile], the pad term [B, 1, 1, S]:
    pad "minus_10000": (1 - mask) * -10000 (BERT's extended mask), "minus_inf":
    Where(mask, 0, -inf).
    softmax_axis None leaves the attribute out (opset < 13: axis 1)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((HIDDEN, HIDDEN)) * 0.3)
                                     .astype(np.float32), f"w{n}") for n in "qkv"]
    for name, value in (("split", np.array([0, 0, HEADS, HEAD_SIZE], np.int64)),
                        ("merge", np.array([0, 0, HIDDEN], np.int64)),
                        ("scale", np.float32(HEAD_SIZE ** -0.5)), ("one", np.float32(1)),
                        ("zero", np.float32(0)), ("minus_10000", np.float32(-10000)),
                        ("minus_inf", np.float32(-np.inf)), ("axes", np.array([1, 2], np.int64))):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
    n = helper.make_node
    nodes = []
    for name in "qkv":
        nodes += [n("MatMul", ["x", f"w{name}"], [f"{name}3"]),
                  n("Reshape", [f"{name}3", "split"], [f"{name}_bshd"]),
                  n("Transpose", [f"{name}_bshd"], [name], perm=[0, 2, 1, 3])]
    nodes += [n("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]), n("MatMul", ["q", "kt"], ["qk"]),
              n("Mul", ["qk", "scale"], ["scores"])]
    if pad == "minus_10000":
        nodes += [n("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
                  n("Sub", ["one", "mask_f"], ["inverted"]),
                  n("Mul", ["inverted", "minus_10000"], ["pad_bs"])]
    else:
        nodes += [n("Cast", ["attention_mask"], ["mask_b"], to=TensorProto.BOOL),
                  n("Where", ["mask_b", "zero", "minus_inf"], ["pad_bs"])]
    # Unsqueeze takes its axes as an attribute before opset 13.
    nodes.append(n("Unsqueeze", ["pad_bs"], ["pad"], axes=[1, 2]) if opset < 13
                 else n("Unsqueeze", ["pad_bs", "axes"], ["pad"]))
    nodes.append(n("Add", ["scores", "pad"], ["padded"]))
    last = "padded"
    if hostile:  # lowers every non-positive score by the same 10000 as the padding
        nodes += [n("Greater", ["scores", "zero"], ["positive"]),
                  n("Where", ["positive", "zero", "minus_10000"], ["hostile"]),
                  n("Add", ["padded", "hostile"], ["masked"])]
        last = "masked"
    axis = {} if softmax_axis is None else {"axis": softmax_axis}
    nodes += [n("Softmax", [last], ["probs"], **axis), n("MatMul", ["probs", "v"], ["context"]),
              n("Transpose", ["context"], ["context_bshd"], perm=[0, 2, 1, 3]),
              n("Reshape", ["context_bshd", "merge"], ["y"])]
    graph = helper.make_graph(
        nodes, "hostile",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", HIDDEN]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", HIDDEN])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _save(model, tmp_path, name) -> str:
    path = str(tmp_path / f"{name}.onnx")
    onnx.save(model, path)
    return path


def _run(path: str, feeds: dict) -> np.ndarray:
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(["y"], feeds)[0]


def _one_padded_token_input(original: str, hard: str) -> tuple[dict, float, float]:
    """Batch 1, length 2, key 1 padded: an x where the original and the same graph with a hard
    (-inf) padding term differ at the real token. Returns (feeds, difference, output scale)."""
    mask = np.array([[1, 0]], np.int64)
    for seed in range(100):
        x = np.random.default_rng(seed).standard_normal((1, 2, HIDDEN)).astype(np.float32)
        feeds = {"x": x, "attention_mask": mask}
        want, hard_out = _run(original, feeds)[:, 0], _run(hard, feeds)[:, 0]
        scale = float(np.abs(want).max())
        difference = float(np.abs(want - hard_out).max())
        if difference > 0.1 * scale:
            return feeds, difference, scale
    raise AssertionError("no input where a hard padding mask changes the output")


def test_finite_padding_beside_a_general_bias_stays_additive(tmp_path):
    """Finding 4: scores + (1 - mask) * -10000 + Where(scores > 0, 0, -10000). The padded key is
    lowered by the same 10000 as every non-positive real key, so it competes with them: turning
    the padding term into a hard key_padding_mask changes the output. It stays an additive term
    (summed with the Where bias) and the converted model equals the original."""
    original = _save(build("minus_10000"), tmp_path, "minus_10000")
    hard = _save(build("minus_inf"), tmp_path, "minus_inf")  # what a hard padding mask computes
    feeds, difference, scale = _one_padded_token_input(original, hard)

    result = convert(original, str(tmp_path / "converted.onnx"), verify=True)
    assert result.fused == 1, result.report.summary()
    fused = result.report.fused[0]
    assert fused.key_padding_mask is None and fused.attn_bias is not None and not fused.causal
    assert result.verify.ok, result.verify.summary()
    converted = fused_session(result.output_path).run(["y"], feeds)[0][:, 0]
    want = _run(original, feeds)[:, 0]
    assert np.abs(converted - want).max() <= 1e-4 * scale, (difference, scale)


def test_minus_inf_padding_beside_a_general_bias_stays_a_hard_mask(tmp_path):
    """-inf removes the key whatever else is added: key padding stays a hard mask there."""
    result = convert(_save(build("minus_inf"), tmp_path, "inf"), verify=True)
    assert result.fused == 1, result.report.summary()
    fused = result.report.fused[0]
    assert fused.key_padding_mask == "attention_mask" and fused.attn_bias is not None
    assert result.verify.ok, result.verify.summary()


def test_verification_samples_catch_a_hard_mask_of_a_finite_term(tmp_path):
    """Finding 4b: the conversion that made the padding a hard mask (as the -inf graph's
    conversion does) passes the main sample (batch 3, length 13, left and right padding) and
    fails on batch 1, length 2 with one padded token, which verification now also runs."""
    original = _save(build("minus_10000"), tmp_path, "minus_10000")
    wrong = convert(_save(build("minus_inf"), tmp_path, "inf"), verify=False,
                    output_path=str(tmp_path / "wrong.onnx")).output_path
    result = verify_models(original, wrong)
    assert not result.ok and "verify FAILED" in result.summary()
    failed = {(s["sizes"]["batch"], s["sizes"]["seq"], s["padding"])
              for s in result.samples if not s["ok"]}
    assert result.samples[0]["ok"] and (1, 2, "right") in failed, result.summary()


def test_verification_samples_cover_sizes_and_padding():
    """Finding 4b: lengths 1, 2 and one past 16 that is not a multiple of it, batch 1, left,
    right and scattered padding; the main sample first, past a sliding window if asked."""
    plan = verify_module.samples()
    assert plan[0] == ({}, "mixed")
    sizes = [s for s, _ in plan[1:]]
    assert {s["seq"] for s in sizes} >= {1, 2} and {s["batch"] for s in sizes} >= {1, 2}
    assert {p for _, p in plan} == {"mixed", "none", "left", "right", "holes"}
    longest = max(s["seq"] for s in sizes)
    assert longest > 16 and longest % 16
    longest = max(s["seq"] for s, _ in verify_module.samples({"seq": 47})[1:])
    assert longest > 47 and longest % 16


def test_extended_padding_mask_b11s_is_key_padding_not_causal(tmp_path):
    """Finding 11: the [B, 1, 1, S] BERT extended mask is one row broadcast over every query:
    key padding, not causal."""
    result = convert(_save(build("minus_10000", hostile=False), tmp_path, "bert"), verify=True)
    assert result.fused == 1, result.report.summary()
    fused = result.report.fused[0]
    assert not fused.causal and fused.window_size == -1
    assert fused.key_padding_mask == "attention_mask" and fused.attn_bias is None
    assert result.verify.ok, result.verify.summary()


@pytest.mark.parametrize("axis,matched", [(None, False), (1, False), (-1, True), (3, True)])
def test_opset11_softmax_axis(axis, matched):
    """Finding 11: before opset 13 Softmax flattens at `axis` (default 1) and normalises over
    everything after it: only the last axis is attention over keys."""
    import onnx_ir as ir

    model = ir.serde.deserialize_model(build("minus_10000", hostile=False, opset=11,
                                             softmax_axis=axis))
    matches, skipped = sdpa_decomposed.find(model.graph)
    assert len(matches) == int(matched) and len(skipped) == int(not matched)
    if not matched:
        assert f"softmax over axis {axis or 1}" in skipped[0][1]


def test_mha_finite_key_padding_beside_a_general_bias_left_alone(tmp_path):
    """Finding 4 for com.microsoft.MultiHeadAttention: its key_padding_mask adds
    mask_filter_value (-10000 by default), which a general attention_bias can match: left alone."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((HIDDEN, HIDDEN)) * 0.3)
                                     .astype(np.float32), f"w{n}") for n in "qkv"]
    nodes = [helper.make_node("MatMul", ["x", f"w{n}"], [n]) for n in "qkv"]
    nodes.append(helper.make_node("MultiHeadAttention", ["q", "k", "v", "", "attention_mask",
                                                         "position_bias"], ["y"],
                                  domain="com.microsoft", num_heads=HEADS))
    graph = helper.make_graph(
        nodes, "mha",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", HIDDEN]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT32, ["batch", "seq"]),
         helper.make_tensor_value_info("position_bias", TensorProto.FLOAT,
                                       [1, HEADS, "seq", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", HIDDEN])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    result = convert(_save(model, tmp_path, "mha"), verify=True)
    assert result.found == 1 and result.fused == 0, result.report.summary()
    assert "finite mask_filter_value" in result.report.left[0].reason
