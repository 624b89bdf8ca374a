"""The op's and the EP's names and the attribute defaults, spelled once for the Python side.

The C++ contract (core/op_contract.h) is the source of truth; tests/test_package.py checks these
against what the compiled library reports (fastattn_onnx._kernels.op_contract()).
"""
from __future__ import annotations

OP_DOMAIN = "com.fastattention"
OP_TYPE = "FastAttention"
OP_SINCE_VERSION = 1
EP_NAME = "FastAttentionEP"

# Attribute name -> default (None: no default; num_heads is required for 3D inputs,
# kv_num_heads defaults to num_heads, scale to 1/sqrt(head size)).
ATTRIBUTE_DEFAULTS: dict[str, int | float | None] = {
    "num_heads": None,
    "kv_num_heads": None,
    "scale": None,
    "causal": 0,
    "window_size": -1,
    "softcap": 0.0,
}
