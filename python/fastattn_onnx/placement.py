"""Which execution provider ran each node: read from ONNX Runtime's profiling JSON."""
from __future__ import annotations

import json
import os
import re
import tempfile

import numpy as np

from .constants import EP_NAME, OP_DOMAIN, OP_TYPE


def _dummy_inputs(session) -> dict:
    """Random inputs for every graph input, symbolic dims set to 2."""
    import onnxruntime as ort  # noqa: F401

    types = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
             "tensor(int32)": np.int32, "tensor(bool)": np.bool_, "tensor(double)": np.float64}
    rng = np.random.default_rng(0)
    feeds = {}
    for i in session.get_inputs():
        shape = [d if isinstance(d, int) and d >= 0 else 2 for d in i.shape]
        dtype = types.get(i.type)
        if dtype is None:
            raise ValueError(f"node_placement: give inputs= for {i.name} of type {i.type}")
        if dtype == np.bool_:
            feeds[i.name] = np.ones(shape, dtype=bool)
        else:
            feeds[i.name] = rng.standard_normal(shape).astype(dtype) if dtype in (np.float32, np.float16, np.float64) \
                else np.ones(shape, dtype=dtype)
    return feeds


def node_placement(model, providers=(EP_NAME, "CPUExecutionProvider"), inputs: dict | None = None,
                   session_options=None) -> dict[str, str]:
    """Runs `model` (a path, bytes or ModelProto) once with profiling and returns {node_name: provider}.

    A node that a compiling EP took runs as a fused node named "<EP>_<hash>_<k>_..." in the profile;
    it is reported under its original name: the k-th node (graph order) that no kernel event names.
    Only top-level graph nodes are listed.
    """
    import onnx
    import onnxruntime as ort

    proto = model if hasattr(model, "SerializeToString") else onnx.load_model_from_string(model) \
        if isinstance(model, (bytes, bytearray)) else onnx.load(model, load_external_data=False)
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    so = session_options or ort.SessionOptions()
    so.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        so.profile_file_prefix = os.path.join(tmp, "placement")
        sess = ort.InferenceSession(model, sess_options=so, providers=list(providers))
        sess.run(None, inputs if inputs is not None else _dummy_inputs(sess))
        path = sess.end_profiling()
        with open(path) as f:
            events = json.load(f)
    placement: dict[str, str] = {}
    for ev in events:
        args = ev.get("args", {})
        if ev.get("cat") != "Node" or "provider" not in args:
            continue
        name = ev.get("name", "")
        for suffix in ("_kernel_time", "_fence_before", "_fence_after"):
            if name.endswith(suffix):
                name = name[: -len(suffix)]
        placement[name] = args["provider"]
    claimable = [n.name for n in proto.graph.node if (n.domain, n.op_type) in _EP_OP_TYPES]
    return _unfuse(placement, [n.name for n in proto.graph.node], claimable)


# What FastAttentionEP can take: only these nodes can hide behind its fused-node names.
_EP_OP_TYPES = {(OP_DOMAIN, OP_TYPE), ("", "Attention"), ("ai.onnx", "Attention"),
                ("com.microsoft", "GroupQueryAttention")}


def _unfuse(placement: dict[str, str], node_names: list[str], claimable: list[str]) -> dict[str, str]:
    fused = {}
    for name, provider in placement.items():
        if name in node_names:
            continue
        m = re.match(r"^(.*)_(\d+)_(\d+)_\d+$", name)  # <EP>_<EP>_<hash>_<k>_<n>
        if m:
            fused[(provider, int(m.group(3)))] = name
    # Nodes the profile does not name: the EP's claims, but also nodes ORT folded or fused away;
    # only op types the EP can claim are candidates (unnamed nodes cannot be told apart).
    missing = [n for n in claimable if n and n not in placement]
    out = {n: p for n, p in placement.items() if n in node_names}
    by_ep: dict[str, list] = {}
    for (provider, k), name in sorted(fused.items(), key=lambda kv: kv[0][1]):
        by_ep.setdefault(provider, []).append(name)
    # Fused nodes are numbered per EP in the order the EP claimed them (graph order).
    queue = iter(missing)
    for provider, names in by_ep.items():
        for _ in names:
            node = next(queue, None)
            if node is not None:
                out[node] = provider
    return out
