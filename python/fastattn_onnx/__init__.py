"""fastattn_onnx: FastAttention kernels for ONNX Runtime.

`import fastattn_onnx` registers the plugin execution provider "FastAttentionEP" with
onnxruntime (once, thread-safe), so that
    onnxruntime.InferenceSession(path, providers=["FastAttentionEP", "CPUExecutionProvider"])
works right after the import, and adds the com.fastattention custom-op library to every
InferenceSession created afterwards, so that models using the op also load with any other
providers (the op then runs on the CPU EP), e.g. in sentence-transformers or optimum.
FASTATTN_NO_SESSION_HOOK=1 or set_session_hook(False) keeps it to sessions naming FastAttentionEP.
"""
from __future__ import annotations

import warnings

__version__ = "0.1.0"

from .constants import EP_NAME, OP_DOMAIN, OP_TYPE  # noqa: E402,F401  (public names of the op and the EP)
from ._ort import (  # noqa: E402
    check_onnxruntime,
    ep_session_options,
    get_ep_name,
    get_ep_names,
    get_library_path,
    install_named_provider_hook,
    install_session_hook,
    register_custom_ops,
    register_ep,
    session_hook_enabled,
    set_session_hook,
)

check_onnxruntime()  # a clear ImportError on onnxruntime < 1.27
# onnxruntime (imported by the check) is loaded before our extension: with the CUDA kernels in,
# the other order crashed onnxruntime's own import on the H200 (inside numpy.linalg's start-up).
from .device_tensors import attention  # noqa: E402  (the kernel on NumPy arrays and CUDA tensors)
from . import schema  # noqa: E402,F401  (ONNX schema of FastAttention, for onnx.checker / shape inference)
from .placement import node_placement  # noqa: E402

try:
    register_ep()
    if not install_session_hook():
        warnings.warn("fastattn_onnx: this onnxruntime has no InferenceSession._register_ep_custom_ops to chain "
                      "onto; sessions get the FastAttention op only through register_custom_ops(so) or "
                      "ep_session_options()", RuntimeWarning, stacklevel=2)
except Exception as _e:  # keep the kernels importable; `python -m fastattn_onnx doctor` shows why
    warnings.warn(f"fastattn_onnx: could not register {EP_NAME} with onnxruntime: {_e}", RuntimeWarning,
                  stacklevel=2)
