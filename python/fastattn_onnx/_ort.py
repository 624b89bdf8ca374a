"""Finding and registering the ONNX Runtime library (custom ops + plugin EP "FastAttentionEP")."""
from __future__ import annotations

import os
import threading

from .constants import EP_NAME

LIBRARY_NAME = "libfastattn_onnx_ep.so"
MIN_ORT_VERSION = (1, 27)  # the plugin-EP C API (ORT_API_VERSION 27) the library is built against

_CUSTOM_OPS_MARK = "fastattn_onnx.custom_ops_registered"  # a session config entry: set once per SessionOptions
_lock = threading.Lock()
_registered = False


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for p in text.split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def check_onnxruntime():
    """Returns the onnxruntime module, or raises ImportError saying which version is needed."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ImportError("fastattn_onnx needs onnxruntime >= 1.27: pip install 'onnxruntime>=1.27'") from e
    if _version_tuple(ort.__version__) < MIN_ORT_VERSION:
        raise ImportError(f"fastattn_onnx needs onnxruntime >= 1.27 (plugin-EP API 27); found {ort.__version__}. "
                          "Upgrade: pip install -U onnxruntime")
    return ort


def get_library_path() -> str:
    """Absolute path of libfastattn_onnx_ep.so (the custom-op library and the plugin EP)."""
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [os.path.join(here, LIBRARY_NAME)]
    try:  # editable installs keep compiled files beside the _kernels extension, not the sources
        from . import _kernels
        candidates.append(os.path.join(os.path.dirname(os.path.abspath(_kernels.__file__)), LIBRARY_NAME))
    except ImportError:
        pass
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"{LIBRARY_NAME} not found (looked in: {', '.join(candidates)}); reinstall fastattn-onnx")


def get_ep_name() -> str:
    return EP_NAME


def get_ep_names() -> list[str]:
    """All EP names the library's factories create (one today)."""
    return [EP_NAME]


def register_custom_ops(session_options) -> None:
    """Adds the com.fastattention::FastAttention custom op (runs on the CPU EP) to session_options.

    Idempotent per SessionOptions (ONNX Runtime refuses a domain registered twice).
    """
    check_onnxruntime()
    if _has_config_entry(session_options, _CUSTOM_OPS_MARK):
        return
    session_options.register_custom_ops_library(get_library_path())
    session_options.add_session_config_entry(_CUSTOM_OPS_MARK, "1")


def register_ep() -> bool:
    """Registers the plugin EP with onnxruntime once per process (thread-safe).

    Returns True when it is registered. After this,
    InferenceSession(model, providers=["FastAttentionEP", "CPUExecutionProvider"]) uses it.
    """
    global _registered
    with _lock:
        if _registered:
            return True
        ort = check_onnxruntime()
        try:
            ort.register_execution_provider_library(EP_NAME, get_library_path())
        except Exception as e:  # another caller in this process may have registered it already
            if "already registered" not in str(e).lower():
                raise
        _registered = True
        return True


def ep_session_options(session_options=None, provider_options: dict | None = None):
    """SessionOptions that run on FastAttentionEP (CPU EP as fallback) and know com.fastattention.

    Selecting the EP by device (add_provider_for_devices) brings the op domain the EP carries, and
    lets a caller pass provider options. Naming the EP in InferenceSession(providers=[...]) works too
    (see install_named_provider_hook).
    """
    ort = check_onnxruntime()
    register_ep()
    so = session_options if session_options is not None else ort.SessionOptions()
    devices = [d for d in ort.get_ep_devices() if d.ep_name == EP_NAME]
    so.add_provider_for_devices(devices[:1], provider_options or {})  # accelerators are listed first
    return so


def _names_fastattention_ep(providers) -> bool:
    return any((p[0] if isinstance(p, tuple) else p) == EP_NAME for p in providers or ())


def install_named_provider_hook() -> bool:
    """Makes InferenceSession(model, providers=["FastAttentionEP", ...]) know com.fastattention.

    ONNX Runtime's Python InferenceSession loads the model before it appends providers named in
    `providers=`, so the op domain carried by the EP factory is not registered in time. ORT's own
    hook for exactly this case (`_register_ep_custom_ops`, which registers TensorRT's plugin ops
    when that provider is named) runs just before the load; we chain onto it and add our custom-op
    library to the session options when FastAttentionEP is named. Returns False when this
    onnxruntime has no such hook (then use ep_session_options() or register_custom_ops()).
    """
    ort = check_onnxruntime()
    cls = ort.InferenceSession
    original = getattr(cls, "_register_ep_custom_ops", None)
    if original is None:
        return False
    if getattr(original, "_fastattn_onnx_hook", False):
        return True

    def _register_ep_custom_ops(self, session_options, providers, provider_options, available_providers):
        original(self, session_options, providers, provider_options, available_providers)
        if _names_fastattention_ep(providers):
            register_custom_ops(session_options)

    _register_ep_custom_ops._fastattn_onnx_hook = True
    cls._register_ep_custom_ops = _register_ep_custom_ops
    return True


def _has_config_entry(session_options, key: str) -> bool:
    try:
        session_options.get_session_config_entry(key)
        return True
    except Exception:  # ORT raises when the key was never set
        return False


def is_registered() -> bool:
    return _registered
