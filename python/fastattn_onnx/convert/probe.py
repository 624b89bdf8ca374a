"""Run the original model in ONNX Runtime and read intermediate values (shapes, masks)."""
from __future__ import annotations

import os
import tempfile

import numpy as np
import onnx_ir as ir

# Above this size the probe copy goes through a temp file with external data.
_IN_MEMORY_LIMIT = 1_500_000_000


def _session(model: ir.Model, tmpdir: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    # Intermediate values are read exactly as the graph defines them.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    tensors = [v.const_value for v in model.graph.initializers.values() if v.const_value is not None]
    size = sum(t.nbytes for t in tensors)
    external = any(isinstance(t, ir.ExternalTensor) for t in tensors)
    # From bytes, ORT would look for external data relative to the working directory.
    if size < _IN_MEMORY_LIMIT and not external:
        data = ir.to_proto(model).SerializeToString()
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    path = os.path.join(tmpdir, "probe.onnx")
    ir.save(model, path, external_data="probe.onnx.data")
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def read_values(model: ir.Model, values: list[ir.Value],
                feeds_list: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """For each feed dict, the arrays of `values` (by name) computed by the original model."""
    graph = model.graph
    added = []
    for i, value in enumerate(values):
        if value.name is None:
            value.name = f"fastattn_probe_{i}"
        if not value.is_graph_output() and value not in added:
            added.append(value)
    graph.outputs.extend(added)
    try:
        with tempfile.TemporaryDirectory() as tmpdir:
            session = _session(model, tmpdir)
    except Exception as error:
        raise ProbeError(f"the model does not load in ONNX Runtime: {_first_line(error)}") from None
    finally:
        for _ in added:
            graph.outputs.pop()
    names = list(dict.fromkeys(v.name for v in values))
    results = []
    for feeds in feeds_list:
        needed = {i.name for i in session.get_inputs()}
        try:
            arrays = session.run(names, {k: v for k, v in feeds.items() if k in needed})
        except Exception as error:
            shapes = {k: v.shape for k, v in feeds.items() if k in needed}
            raise ProbeError(f"the model does not run in ONNX Runtime on inputs {shapes}: "
                             f"{_first_line(error)}") from None
        results.append(dict(zip(names, arrays)))
    return results


class ProbeError(RuntimeError):
    """The original model cannot be run to learn its sizes and masks."""


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:400] if text else type(error).__name__
