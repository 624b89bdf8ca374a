"""Hand-built decomposed attention graphs (onnx.helper, random weights) for forms the exporters
above do not produce: a Trilu causal mask with -inf, Gemma-2 style softcapping, fp32 softmax
between casts, the scale folded into Q and K as two Muls by d^-1/4.

    python models/build_decomposed.py -o softcap.onnx
"""
from __future__ import annotations

import argparse

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HEADS, HEAD_SIZE = 4, 16
HIDDEN = HEADS * HEAD_SIZE


def build_decomposed_model(softcap: float = 30.0, split_scale: bool = True,
                           mask_from_positions: bool = False,
                           where_masking: bool = False) -> onnx.ModelProto:
    """mask_from_positions: the causal mask compares position_ids values (packed-sequence
    style) instead of coming from Trilu; it looks causal only for positions 0..S-1.
    where_masking: older GPT-2/BERT style, Where(causal, scores, dtype-min) for the causal part
    and (1 - attention_mask) * -10000 added for padding."""
    rng = np.random.default_rng(0)

    def const(name, array):
        return numpy_helper.from_array(np.asarray(array), name)

    inits = [const(n, (rng.standard_normal((HIDDEN, HIDDEN)) * 0.3).astype(np.float32))
             for n in ("wq", "wk", "wv")]
    inits += [const("split_shape", np.array([0, 0, HEADS, HEAD_SIZE], np.int64)),
              const("merge_shape", np.array([0, 0, HIDDEN], np.int64)),
              const("quarter_scale", np.array(HEAD_SIZE ** -0.25, np.float32)),
              const("scale", np.array(HEAD_SIZE ** -0.5, np.float32)),
              const("cap", np.array(softcap, np.float32)),
              const("zero", np.array(0.0, np.float32)),
              const("minus_inf", np.array(-np.inf, np.float32)),
              const("last2", np.array([-2, -1], np.int64))]
    n = helper.make_node
    nodes = []
    for name in ("q", "k", "v"):
        nodes += [n("MatMul", ["x", f"w{name}"], [f"{name}_3d"]),
                  n("Reshape", [f"{name}_3d", "split_shape"], [f"{name}_bshd"]),
                  n("Transpose", [f"{name}_bshd"], [f"{name}_bhsd"], perm=[0, 2, 1, 3])]
    if split_scale:  # scale folded into Q and K: two Muls by d^-1/4
        nodes += [n("Mul", ["q_bhsd", "quarter_scale"], ["q_scaled"]),
                  n("Mul", ["k_bhsd", "quarter_scale"], ["k_scaled"]),
                  n("Transpose", ["k_scaled"], ["k_t"], perm=[0, 1, 3, 2]),
                  n("MatMul", ["q_scaled", "k_t"], ["scores"])]
    else:
        nodes += [n("Transpose", ["k_bhsd"], ["k_t"], perm=[0, 1, 3, 2]),
                  n("MatMul", ["q_bhsd", "k_t"], ["raw_scores"]),
                  n("Mul", ["raw_scores", "scale"], ["scores"])]
    nodes += [n("Div", ["scores", "cap"], ["scores_over_cap"]),
              n("Tanh", ["scores_over_cap"], ["scores_tanh"]),
              n("Mul", ["scores_tanh", "cap"], ["capped"])]
    if mask_from_positions:
        inits += [const("axes_1_2", np.array([1, 2], np.int64)),
                  const("axes_1_3", np.array([1, 3], np.int64))]
        nodes += [n("Unsqueeze", ["position_ids", "axes_1_2"], ["key_pos"]),  # [B, 1, 1, S]
                  n("Unsqueeze", ["position_ids", "axes_1_3"], ["query_pos"]),  # [B, 1, S, 1]
                  n("LessOrEqual", ["key_pos", "query_pos"], ["lower_bool"])]
    else:  # causal mask: lower triangle of ones [S, S] from Trilu
        nodes += [n("Shape", ["scores"], ["scores_shape"]),
                  n("Gather", ["scores_shape", "last2"], ["square"]),
                  n("ConstantOfShape", ["square"], ["ones"],
                    value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])),
                  n("Trilu", ["ones"], ["lower"], upper=0),
                  n("Cast", ["lower"], ["lower_bool"], to=TensorProto.BOOL)]
    if where_masking:
        inits += [const("float_min", np.array(np.finfo(np.float32).min, np.float32)),
                  const("one_f", np.array(1.0, np.float32)),
                  const("minus_10000", np.array(-10000.0, np.float32)),
                  const("axes_1_2", np.array([1, 2], np.int64))]
        nodes += [n("Where", ["lower_bool", "capped", "float_min"], ["causal_scores"]),
                  n("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
                  n("Sub", ["one_f", "mask_f"], ["padding"]),
                  n("Mul", ["padding", "minus_10000"], ["padding_bias"]),
                  n("Unsqueeze", ["padding_bias", "axes_1_2"], ["padding_b11s"]),
                  n("Add", ["causal_scores", "padding_b11s"], ["masked"])]
    else:
        nodes += [n("Where", ["lower_bool", "zero", "minus_inf"], ["mask"]),
                  n("Add", ["capped", "mask"], ["masked"])]
    nodes += [n("Cast", ["masked"], ["masked_f32"], to=TensorProto.FLOAT),
              n("Softmax", ["masked_f32"], ["probs_f32"], axis=-1),
              n("Cast", ["probs_f32"], ["probs"], to=TensorProto.FLOAT),
              n("MatMul", ["probs", "v_bhsd"], ["context"]),
              n("Transpose", ["context"], ["context_bshd"], perm=[0, 2, 1, 3]),
              n("Reshape", ["context_bshd", "merge_shape"], ["y"])]
    graph = helper.make_graph(
        nodes, "decomposed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", HIDDEN])]
        + ([helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"])]
           if mask_from_positions else [])
        + ([helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])]
           if where_masking else []),
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", HIDDEN])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--softcap", type=float, default=30.0)
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args(argv)
    onnx.save(build_decomposed_model(args.softcap), args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
