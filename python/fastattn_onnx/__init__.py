"""fastattn_onnx: FastAttention kernels for ONNX Runtime.

`import fastattn_onnx` registers the plugin execution provider "FastAttentionEP" with
onnxruntime (once, thread-safe), so that
    onnxruntime.InferenceSession(path, providers=["FastAttentionEP", "CPUExecutionProvider"])
works right after the import.
"""
from __future__ import annotations

__version__ = "0.1.0"

from ._kernels import attention  # noqa: E402  (the kernel on NumPy arrays)
from .constants import EP_NAME, OP_DOMAIN, OP_TYPE  # noqa: E402,F401  (public names of the op and the EP)
from ._ort import (  # noqa: E402
    check_onnxruntime,
    ep_session_options,
    get_ep_name,
    get_ep_names,
    get_library_path,
    install_named_provider_hook,
    register_custom_ops,
    register_ep,
)

check_onnxruntime()  # a clear ImportError on onnxruntime < 1.27
from . import schema  # noqa: E402,F401  (ONNX schema of FastAttention, for onnx.checker / shape inference)
from .placement import node_placement  # noqa: E402

try:
    register_ep()
    install_named_provider_hook()
except Exception as _e:  # keep the kernels importable; `python -m fastattn_onnx doctor` shows why
    import warnings

    warnings.warn(f"fastattn_onnx: could not register {EP_NAME} with onnxruntime: {_e}", RuntimeWarning,
                  stacklevel=2)
