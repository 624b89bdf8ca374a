"""fastattn_onnx: FastAttention kernels for ONNX Runtime.

`import fastattn_onnx` registers the plugin execution provider "FastAttentionEP" with
onnxruntime (once, thread-safe), so that
    onnxruntime.InferenceSession(path, providers=["FastAttentionEP", "CPUExecutionProvider"])
works right after the import.
"""
from __future__ import annotations

__version__ = "0.1.0"
EP_NAME = "FastAttentionEP"
OP_DOMAIN = "com.fastattention"
OP_TYPE = "FastAttention"

from ._kernels import attention  # noqa: E402  (the kernel on NumPy arrays)
