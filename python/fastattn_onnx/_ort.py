"""Finding and registering the ONNX Runtime library (custom ops + plugin EP "FastAttentionEP")."""
from __future__ import annotations

import os
import threading

from .constants import EP_NAME

LIBRARY_NAME = "libfastattn_onnx_ep.so"
MIN_ORT_VERSION = (1, 27)  # the plugin-EP C API (ORT_API_VERSION 27) the library is built against

# A session config entry naming what brought the com.fastattention domain to a SessionOptions
# ("custom_ops_library" or "ep_factory"): ONNX Runtime refuses a domain added twice, and has no
# getter for the domains or EPs a SessionOptions already holds.
_OP_DOMAIN_MARK = "fastattn_onnx.op_domain"
# Set to 1 to keep the library off sessions that do not name FastAttentionEP (read at each session).
SESSION_HOOK_OPT_OUT_ENV = "FASTATTN_NO_SESSION_HOOK"
_lock = threading.Lock()  # registering the EP, installing the hooks
_options_lock = threading.Lock()  # checking and marking one SessionOptions
_registered = False
_session_hook_enabled = True


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

    Idempotent per SessionOptions, and a no-op on options that already have the op's domain (from
    ep_session_options(), whose EP factory brings it): ONNX Runtime refuses a domain added twice.
    """
    check_onnxruntime()
    with _options_lock:
        if _config_entry(session_options, _OP_DOMAIN_MARK) is not None:
            return
        _register_library(session_options, get_library_path())
        session_options.add_session_config_entry(_OP_DOMAIN_MARK, "custom_ops_library")


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
    (see install_session_hook). Raises ValueError on options that already have the op library.
    """
    ort = check_onnxruntime()
    register_ep()
    so = session_options if session_options is not None else ort.SessionOptions()
    devices = [d for d in ort.get_ep_devices() if d.ep_name == EP_NAME]
    with _options_lock:
        if _config_entry(so, _OP_DOMAIN_MARK) == "custom_ops_library":
            raise ValueError("ep_session_options: these SessionOptions already have the com.fastattention op "
                             "library, and the EP brings the domain again, which ONNX Runtime refuses; "
                             "pass SessionOptions without register_custom_ops()")
        so.add_provider_for_devices([_pick_device(devices, provider_options or {})], provider_options or {})
        # the session hook and register_custom_ops then leave the domain to the EP factory
        so.add_session_config_entry(_OP_DOMAIN_MARK, "ep_factory")
    return so


def _pick_device(devices, provider_options: dict):
    """The EP device the provider options name: device=cpu the CPU one, device_id=N the GPU of that
    CUDA ordinal, else the first listed (the EP lists accelerators first)."""
    def kernel(d):
        return d.ep_metadata.get("fastattn.kernel", "")
    listed = ", ".join(f"{kernel(d) or '?'}:{d.ep_metadata.get('fastattn.ordinal', '?')}" for d in devices)
    if not devices:
        raise RuntimeError(f"{EP_NAME} lists no device in this process")
    if str(provider_options.get("device", "")).lower() == "cpu":
        chosen = [d for d in devices if kernel(d) == "cpu"]
    elif "device_id" in provider_options:
        want = str(provider_options["device_id"])
        chosen = [d for d in devices if kernel(d) not in ("", "cpu") and d.ep_metadata.get("fastattn.ordinal") == want]
    else:
        chosen = devices
    if not chosen:
        raise ValueError(f"ep_session_options: no {EP_NAME} device matches the provider options "
                         f"{provider_options} (devices here: {listed})")
    return chosen[0]


def _names_fastattention_ep(providers) -> bool:
    return any((p[0] if isinstance(p, tuple) else p) == EP_NAME for p in providers or ())


def set_session_hook(enabled: bool) -> None:
    """Turns on (the default) or off adding the op library to sessions that do not name FastAttentionEP.

    Off, or with FASTATTN_NO_SESSION_HOOK=1 in the environment, such sessions are left as ONNX
    Runtime makes them; naming FastAttentionEP in providers= still brings the op.
    """
    global _session_hook_enabled
    _session_hook_enabled = bool(enabled)


def session_hook_enabled() -> bool:
    """Whether sessions that do not name FastAttentionEP get the op library (set_session_hook, env)."""
    return _session_hook_enabled and os.environ.get(SESSION_HOOK_OPT_OUT_ENV, "") in ("", "0")


def install_session_hook() -> bool:
    """Makes every onnxruntime.InferenceSession able to run com.fastattention::FastAttention.

    ONNX Runtime's Python InferenceSession loads the model before it appends providers named in
    `providers=`, so neither the CPU EP nor a named FastAttentionEP knows the op at load. ORT's own
    hook for this case (`_register_ep_custom_ops`, which registers TensorRT's plugin ops when that
    provider is named) gets the SessionOptions just before the load; we chain onto it and add our
    custom-op library there: always when FastAttentionEP is named, and for any other providers
    (none given included) unless the session hook is off (set_session_hook, FASTATTN_NO_SESSION_HOOK).
    The op then runs on the CPU EP wherever FastAttentionEP does not take it. Models without the op
    are unaffected: an unused domain changes nothing in their graphs.

    A SessionOptions the caller passed gets the library and a config entry marking it (ORT cannot
    copy SessionOptions); it is registered once per SessionOptions, never on options that select
    the EP by device (ep_session_options), and `so.register_custom_ops_library(get_library_path())`
    by the caller counts as registered. Returns False when this onnxruntime has no such hook (then
    use ep_session_options() or register_custom_ops()).
    """
    ort = check_onnxruntime()
    with _lock:
        _route_our_library_through_register_custom_ops(ort.SessionOptions)
        return _chain_onto_register_ep_custom_ops(ort.InferenceSession)


install_named_provider_hook = install_session_hook  # its name before it covered every session


def _chain_onto_register_ep_custom_ops(session_class) -> bool:
    original = getattr(session_class, "_register_ep_custom_ops", None)
    if original is None:
        return False
    if getattr(original, "_fastattn_onnx_hook", False):
        return True

    def _register_ep_custom_ops(self, session_options, providers, provider_options, available_providers):
        original(self, session_options, providers, provider_options, available_providers)
        if _names_fastattention_ep(providers) or session_hook_enabled():
            register_custom_ops(session_options)

    _register_ep_custom_ops._fastattn_onnx_hook = True
    session_class._register_ep_custom_ops = _register_ep_custom_ops
    return True


def _route_our_library_through_register_custom_ops(options_class) -> None:
    """A caller's own so.register_custom_ops_library(<our library>) goes through register_custom_ops,
    so that the session hook sees it and does not add the domain a second time."""
    original = options_class.register_custom_ops_library
    if getattr(original, "_fastattn_onnx_hook", False):
        return

    def register_custom_ops_library(self, library_path):
        if _is_our_library(library_path):
            register_custom_ops(self)
        else:
            original(self, library_path)

    register_custom_ops_library._fastattn_onnx_hook = True
    register_custom_ops_library.__wrapped__ = original
    register_custom_ops_library.__doc__ = original.__doc__
    options_class.register_custom_ops_library = register_custom_ops_library


def _register_library(session_options, library_path: str) -> None:
    """ONNX Runtime's own register_custom_ops_library, under the wrapper above if it is installed."""
    method = type(session_options).register_custom_ops_library
    getattr(method, "__wrapped__", method)(session_options, library_path)


def _is_our_library(library_path) -> bool:
    try:
        return os.path.samefile(os.fspath(library_path), get_library_path())
    except (OSError, TypeError):  # no such file, or not a path: ORT's own method says what is wrong
        return False


def _config_entry(session_options, key: str) -> str | None:
    try:
        return session_options.get_session_config_entry(key)
    except Exception:  # ORT raises when the key was never set
        return None


def is_registered() -> bool:
    return _registered
