"""onnxruntime-genai: run models from genai's model builder (GroupQueryAttention decoders) with
FastAttentionEP in genai's own generate loop.

onnxruntime-genai loads ONNX Runtime's C library (libonnxruntime.so of the onnxruntime wheel), a
copy apart from the one inside the onnxruntime Python module, so `import fastattn_onnx` does not
register the EP there: `register()` does, once per process. The EP then runs where a model's
genai_config.json names it in model.decoder.session_options.provider_options (`enable()` writes
that, `disable()` takes it out), or where a program names it on an og.Config (`config()`,
`model()`); nodes it does not take run on ONNX Runtime's CPU EP.

    from fastattn_onnx import genai as fa_genai
    model = fa_genai.model("my-model")          # registers, FastAttentionEP first, dir untouched
    # or: fa_genai.enable("my-model") once, then fa_genai.register() before og.Model("my-model")

Needs onnxruntime-genai >= 0.18: pip install 'fastattn-onnx[genai]'.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import threading

from ._ort import get_library_path
from .constants import EP_NAME

CONFIG_NAME = "genai_config.json"
ORIGINAL_SUFFIX = ".orig"  # genai_config.json.orig: the file as enable() first found it

_lock = threading.Lock()
_registered: set[int] = set()  # id() of each onnxruntime_genai module we registered the EP with


def _import_genai():
    try:
        import onnxruntime_genai as og
    except ImportError as e:
        raise ImportError("fastattn_onnx.genai needs onnxruntime-genai >= 0.18: "
                          "pip install 'fastattn-onnx[genai]' (or pip install 'onnxruntime-genai>=0.18')") from e
    return og


def register(og=None) -> str:
    """Registers FastAttentionEP's library with onnxruntime-genai's ONNX Runtime, once per process
    (thread-safe; "already registered" from another caller is fine). Returns the EP name, the
    one to name in genai_config.json or og.Config.append_provider.

    `og` is the onnxruntime_genai module (imported here if None).
    """
    og = og if og is not None else _import_genai()
    with _lock:
        if id(og) in _registered:
            return EP_NAME
        fn = getattr(og, "register_execution_provider_library", None)
        if fn is None:
            raise RuntimeError(f"onnxruntime-genai {getattr(og, '__version__', '?')} cannot load plugin execution "
                               "providers (no register_execution_provider_library); "
                               "pip install -U 'onnxruntime-genai>=0.18'")
        try:
            fn(EP_NAME, get_library_path())
        except Exception as e:  # registered before by someone else in this process
            if "already registered" not in str(e).lower():
                raise
        _registered.add(id(og))
    return EP_NAME


# ---- genai_config.json ---------------------------------------------------------------------

def config_path(model_dir) -> str:
    """genai_config.json of a model folder (a path to the file itself is accepted too)."""
    path = os.fspath(model_dir)
    if os.path.isdir(path):
        path = os.path.join(path, CONFIG_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no {CONFIG_NAME} at {path}: give the folder onnxruntime-genai's model "
                                "builder wrote (python -m onnxruntime_genai.models.builder ... -o DIR)")
    return path


def _read(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        try:
            config = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict) \
            or not isinstance(config["model"].get("decoder"), dict):
        raise ValueError(f"{path}: no model.decoder section; is it an onnxruntime-genai config?")
    return config


def _provider_list(config: dict, path: str) -> list:
    """model.decoder.session_options.provider_options: a list of {name: {option: value}}."""
    session_options = config["model"]["decoder"].setdefault("session_options", {})
    if not isinstance(session_options, dict):
        raise ValueError(f"{path}: model.decoder.session_options is not an object")
    providers = session_options.setdefault("provider_options", [])
    if not isinstance(providers, list) or not all(isinstance(p, dict) and len(p) == 1 for p in providers):
        raise ValueError(f"{path}: model.decoder.session_options.provider_options is not a list of "
                         "{name: {options}} objects")
    return providers


def providers(model_dir) -> list[tuple[str, dict]]:
    """The decoder's providers as genai_config.json lists them, in order: [(name, options), ...]."""
    path = config_path(model_dir)
    return [next(iter(p.items())) for p in _provider_list(_read(path), path)]


def is_enabled(model_dir) -> bool:
    """Whether the model's genai_config.json names FastAttentionEP for the decoder."""
    return any(name == EP_NAME for name, _ in providers(model_dir))


def _with_ours(config: dict, path: str, provider_options: dict | None) -> dict:
    new = copy.deepcopy(config)
    plist = _provider_list(new, path)
    ours = [p[EP_NAME] for p in plist if EP_NAME in p]
    options = dict(provider_options) if provider_options is not None else (ours[0] if ours else {})
    plist[:] = [{EP_NAME: {k: str(v) for k, v in options.items()}}] + [p for p in plist if EP_NAME not in p]
    return new


def _without_ours(config: dict, path: str) -> dict:
    new = copy.deepcopy(config)
    plist = _provider_list(new, path)
    plist[:] = [p for p in plist if EP_NAME not in p]
    return new


def _atomic_write(path: str, text: str | bytes) -> None:
    """Writes a file whole or not at all: a temporary file in the same folder, then os.replace."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8") if isinstance(text, str) else text)
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(path):
            shutil.copymode(path, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _dump(config: dict) -> str:
    return json.dumps(config, indent=4) + "\n"  # as genai's model builder writes it


def enable(model_dir, *, keep_original: bool = True, provider_options: dict | None = None) -> bool:
    """Names FastAttentionEP first among the decoder's providers in genai_config.json (the others
    stay, after it). Returns True when the file changed, False when it already read so.

    The write is atomic (a temporary file in the folder, then os.replace). With keep_original, the
    file as first found is kept as genai_config.json.orig (an existing .orig is left as it is).
    `provider_options` ({key: value}) replaces FastAttentionEP's options; None keeps what the file
    has. Programs must still call register() before og.Model: genai knows the EP only then.
    """
    path = config_path(model_dir)
    config = _read(path)
    new = _with_ours(config, path, provider_options)
    if new == config:
        return False
    original = path + ORIGINAL_SUFFIX
    if keep_original and not os.path.exists(original):
        with open(path, "rb") as f:
            _atomic_write(original, f.read())
    _atomic_write(path, _dump(new))
    return True


def disable(model_dir) -> bool:
    """Takes FastAttentionEP out of the decoder's providers. Where genai_config.json.orig then
    reads the same, the original file comes back byte for byte (and the .orig goes); otherwise
    (the config was edited since enable) only our entry is removed and the .orig is left.
    Returns True when the file changed."""
    path = config_path(model_dir)
    config = _read(path)
    new = _without_ours(config, path)
    original = path + ORIGINAL_SUFFIX
    if os.path.isfile(original):
        try:
            same_as_original = _without_ours(_read(original), original) == new
        except ValueError:
            same_as_original = False
        if same_as_original:
            with open(original, "rb") as f:
                original_bytes = f.read()
            with open(path, "rb") as f:
                changed = f.read() != original_bytes
            if changed:
                _atomic_write(path, original_bytes)
            os.unlink(original)
            return changed
    if new == config:
        return False
    _atomic_write(path, _dump(new))
    return True


# ---- og.Config / og.Model without touching the folder ----------------------------------------

def config(model_dir, *, enabled: bool = True, provider_options: dict | None = None, og=None):
    """An og.Config of the model with FastAttentionEP first (enabled) or without it (not enabled),
    the config's other providers kept in their order; the folder is not written. Registers the
    EP first when enabled."""
    og = og if og is not None else _import_genai()
    listed = providers(model_dir)
    folder = os.path.dirname(config_path(model_dir))
    cfg = og.Config(folder)
    cfg.clear_providers()
    chain = [(name, opts) for name, opts in listed if name != EP_NAME]
    if enabled:
        register(og)
        ours = next((opts for name, opts in listed if name == EP_NAME), {})
        chain.insert(0, (EP_NAME, provider_options if provider_options is not None else ours))
    for name, opts in chain:
        cfg.append_provider(name)
        for key, value in (opts or {}).items():
            cfg.set_provider_option(name, key, str(value))
    return cfg


def model(model_dir, *, enabled: bool = True, provider_options: dict | None = None, og=None):
    """og.Model(config(model_dir, ...)): the model with FastAttentionEP first, folder untouched."""
    og = og if og is not None else _import_genai()
    return og.Model(config(model_dir, enabled=enabled, provider_options=provider_options, og=og))
