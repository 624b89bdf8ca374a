"""Loading with clear errors, and atomic saving (temp file + os.replace)."""
from __future__ import annotations

import os

import onnx
import onnx_ir as ir

# Models whose tensors exceed this go to an external data file beside the model.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


class ConvertError(RuntimeError):
    """A user-facing error: the message says what is wrong with the input."""


def _check_opsets(model: ir.Model, origin: str) -> None:
    newest = onnx.defs.onnx_opset_version()
    default = model.opset_imports.get("", model.opset_imports.get("ai.onnx"))
    if default is not None and default > newest:
        raise ConvertError(f"{origin}: opset {default} is newer than this onnx supports "
                           f"({newest}); upgrade onnx/onnxruntime or export with opset <= {newest}")
    if model.ir_version is not None and model.ir_version > onnx.IR_VERSION:
        raise ConvertError(f"{origin}: IR version {model.ir_version} is newer than this onnx "
                           f"supports ({onnx.IR_VERSION})")


def load_model(model_or_path) -> ir.Model:
    if isinstance(model_or_path, ir.Model):
        return model_or_path
    if isinstance(model_or_path, onnx.ModelProto):
        model = ir.serde.deserialize_model(model_or_path)
        _check_opsets(model, "model")
        return model
    path = os.fspath(model_or_path)
    if not os.path.isfile(path):
        raise ConvertError(f"{path}: no such file")
    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception as error:  # protobuf's DecodeError and friends
        raise ConvertError(f"{path}: not a readable ONNX model (truncated or not ONNX): "
                           f"{type(error).__name__}") from None
    if not proto.HasField("graph") or not proto.opset_import:
        raise ConvertError(f"{path}: not an ONNX model (no graph or no opset)")
    model = ir.serde.deserialize_model(proto)
    _check_opsets(model, path)
    # External tensors are read lazily from beside the file.
    base_dir = os.path.dirname(os.path.abspath(path))
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if isinstance(tensor, ir.ExternalTensor):
            value.const_value = tensor.__class__(
                tensor.location, tensor.offset, tensor.length, tensor.dtype, shape=tensor.shape,
                name=tensor.name, base_dir=base_dir)
    try:
        # By path: the checker then finds external data beside the model (and allows > 2 GB).
        onnx.checker.check_model(path, full_check=False)
    except onnx.checker.ValidationError as error:
        message = str(error).splitlines()[0]
        # ONNX Runtime runs ops onnx does not know (its contrib ops, some in the default domain).
        if "No Op registered" not in message:
            raise ConvertError(f"{path}: invalid ONNX model: {message}") from None
    return model


class PendingSave:
    """A written temp file that becomes the output on commit() and vanishes otherwise."""

    def __init__(self, path: str, final_path: str):
        self.path, self.final_path, self.done = path, final_path, False

    def commit(self) -> None:
        os.replace(self.path, self.final_path)
        self.done = True

    def discard(self) -> None:
        if not self.done and os.path.exists(self.path):
            os.remove(self.path)


def _tensor_bytes(model: ir.Model) -> int:
    return sum(v.const_value.nbytes for v in model.graph.initializers.values()
               if v.const_value is not None)


def save_model(model: ir.Model, path: str, atomic: bool = False, commit: bool = True):
    """Save (through a temp file and os.replace when atomic); big models get external data."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    target = os.path.join(directory, f".{os.path.basename(path)}.tmp{os.getpid()}") if atomic else path
    external = None
    if _tensor_bytes(model) > EXTERNAL_DATA_THRESHOLD:
        external = os.path.basename(path) + ".data"
    if external:
        ir.save(model, target, external_data=external)
    else:
        ir.save(model, target)
    pending = PendingSave(target, path)
    if atomic and commit:
        pending.commit()
    return pending if atomic else None
