"""Loading with clear errors, and saving that cannot lose data.

Every destination (the model, its external data, the report) is resolved through links and
checked before anything is converted: it must be absent or a regular file, in a writable
directory, and never the input (or its external data) under another name. Files are written
into a private temp directory beside their destination, fsynced, and moved into place with
os.replace only once everything (verification and the report included) succeeded.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import stat
import tempfile

import onnx
import onnx_ir as ir

# Models whose tensors exceed this go to an external data file beside the model.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000
# Protobuf cannot parse a message this big: such a .onnx file cannot be a loadable model
# (big models keep their weights in external data, so their .onnx file stays small).
MAX_MODEL_FILE_BYTES = 2**31 - 1
# A ModelProto has a handful of top-level fields (a few hundred with many functions).
MAX_TOP_LEVEL_FIELDS = 100_000
# ModelProto's field numbers and wire types (0 varint, 2 length-delimited), from onnx.proto.
_MODEL_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}
_GRAPH, _OPSET_IMPORT = 7, 8


class ConvertError(RuntimeError):
    """A user-facing error: the message says what is wrong with the input."""


class InputFileError(ConvertError):
    """The input file cannot be read: missing, not a regular file, no permission, I/O error."""


class OutputFileError(ConvertError):
    """An output (model, external data, report) cannot be written where asked."""

    partial = False  # True only if some files were already moved into place (see commit)


def _why(error: OSError) -> str:
    return error.strerror or type(error).__name__


def _kind(mode: int) -> str:
    return {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO (named pipe)",
            stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
            stat.S_IFSOCK: "a socket", stat.S_IFLNK: "a symbolic link"}.get(
        stat.S_IFMT(mode), "not a regular file")


def _check_opsets(model: ir.Model, origin: str) -> None:
    newest = onnx.defs.onnx_opset_version()
    default = model.opset_imports.get("", model.opset_imports.get("ai.onnx"))
    if default is not None and default > newest:
        raise ConvertError(f"{origin}: opset {default} is newer than this onnx supports "
                           f"({newest}); upgrade onnx/onnxruntime or export with opset <= {newest}")
    if model.ir_version is not None and model.ir_version > onnx.IR_VERSION:
        raise ConvertError(f"{origin}: IR version {model.ir_version} is newer than this onnx "
                           f"supports ({onnx.IR_VERSION})")


def check_input_file(path: str) -> None:
    """The input must be a regular file: stat only, so a FIFO or device is never opened."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise InputFileError(f"{path}: no such file") from None
    except NotADirectoryError:
        raise InputFileError(f"{path}: no such file (a parent is not a directory)") from None
    except OSError as error:
        raise InputFileError(f"{path}: cannot read: {_why(error)}") from None
    if not stat.S_ISREG(mode):
        raise InputFileError(f"{path}: is {_kind(mode)}, not an ONNX model file")


def _read_varint(f) -> int | None:
    value = 0
    for shift in range(0, 70, 7):
        byte = f.read(1)
        if not byte:
            return None
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
    return None


def _not_a_model(f, size: int) -> str | None:
    """Why the file cannot be a ModelProto, or None. Walks the top-level fields reading only
    their keys and lengths (contents are seeked over), so junk is rejected without reading it."""
    seen, count = set(), 0
    while f.tell() < size:
        count += 1
        key = _read_varint(f)
        field, wire = (key >> 3, key & 7) if key is not None else (0, -1)
        if count > MAX_TOP_LEVEL_FIELDS or field == 0 or wire not in (0, 1, 2, 5) \
                or _MODEL_FIELDS.get(field, wire) != wire:
            return "not a readable ONNX model (truncated or not ONNX)"
        if wire == 0:
            ok = _read_varint(f) is not None
        else:
            length = {1: 8, 5: 4}.get(wire) or _read_varint(f)
            ok = length is not None and f.seek(length, os.SEEK_CUR) <= size
        if not ok:
            return "not a readable ONNX model (truncated or not ONNX)"
        seen.add(field)
    if _GRAPH not in seen or _OPSET_IMPORT not in seen:
        return "not an ONNX model (no graph or no opset)"
    return None


def _read_model_file(path: str) -> bytes:
    try:
        # O_NONBLOCK: should the path have become a FIFO since it was checked, do not block.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        raise InputFileError(f"{path}: cannot read: {_why(error)}") from None
    with os.fdopen(fd, "rb") as f:
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise InputFileError(f"{path}: is {_kind(info.st_mode)}, not an ONNX model file")
            if info.st_size > MAX_MODEL_FILE_BYTES:
                raise ConvertError(f"{path}: not an ONNX model file: {info.st_size} bytes is more "
                                   f"than protobuf can parse (2 GiB; big models keep their "
                                   f"weights in external data)")
            why = _not_a_model(f, info.st_size)
            if why:
                raise ConvertError(f"{path}: {why}")
            f.seek(0)
            return f.read()
        except OSError as error:
            raise InputFileError(f"{path}: cannot read: {_why(error)}") from None


def load_model(model_or_path) -> ir.Model:
    if isinstance(model_or_path, ir.Model):
        return model_or_path
    if isinstance(model_or_path, onnx.ModelProto):
        model = ir.serde.deserialize_model(model_or_path)
        _check_opsets(model, "model")
        return model
    path = os.fspath(model_or_path)
    check_input_file(path)
    data = _read_model_file(path)
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as error:  # protobuf's DecodeError and friends
        raise ConvertError(f"{path}: not a readable ONNX model (truncated or not ONNX): "
                           f"{type(error).__name__}") from None
    del data
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
    except (onnx.checker.ValidationError, UnicodeDecodeError) as error:  # flipped bytes in names
        message = str(error).splitlines()[0]
        # ONNX Runtime runs ops onnx does not know (its contrib ops, some in the default domain).
        if "No Op registered" not in message:
            raise ConvertError(f"{path}: invalid ONNX model: {message}") from None
    return model


# ---- destinations ------------------------------------------------------------------------

def source_files(input_path: str | None, model: ir.Model | None = None) -> list[tuple[str, str]]:
    """(what, path) of every file the input consists of: no output may be any of them."""
    sources = [("the input file", input_path)] if input_path else []
    if model is not None:
        for graph in model.graphs():
            for value in graph.initializers.values():
                if isinstance(value.const_value, ir.ExternalTensor):
                    sources.append(("the input's external data", value.const_value.path))
    return sources


@dataclasses.dataclass
class Destination:
    given: str  # as asked (for messages)
    real: str  # where it really goes: through symlinks, which stay in place
    what: str  # "converted model", "external data", "report"
    existing: os.stat_result | None  # the regular file it replaces, if any
    sources: list  # (what, path) it must not be


def _same(real: str, existing: os.stat_result | None, other: str) -> bool:
    if os.path.realpath(other) == real:
        return True
    try:  # hard links, bind mounts, case-insensitive file systems
        other_stat = os.stat(other)
    except OSError:
        return False
    return existing is not None and (existing.st_dev, existing.st_ino) == \
        (other_stat.st_dev, other_stat.st_ino)


def check_destination(path: str, what: str, sources=()) -> Destination:
    """Where `path` really is; refuses a missing or unwritable directory, anything there but a
    regular file, and any name of a source file. Reads and creates nothing."""
    path = os.fspath(path)
    if path.endswith(os.sep) or (os.altsep and path.endswith(os.altsep)):
        raise OutputFileError(f"{path}: names a directory; give the {what} a file name")
    real = os.path.realpath(path)
    directory = os.path.dirname(real)
    try:
        dir_mode = os.stat(directory).st_mode
    except FileNotFoundError:
        raise OutputFileError(f"{path}: cannot write the {what}: directory {directory} "
                              f"does not exist") from None
    except OSError as error:
        raise OutputFileError(f"{path}: cannot write the {what}: {directory}: "
                              f"{_why(error)}") from None
    if not stat.S_ISDIR(dir_mode):
        raise OutputFileError(f"{path}: cannot write the {what}: {directory} is not a directory")
    try:
        existing = os.lstat(real)
    except FileNotFoundError:
        existing = None
    except OSError as error:
        raise OutputFileError(f"{path}: cannot write the {what}: {_why(error)}") from None
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        raise OutputFileError(f"{path}: is {_kind(existing.st_mode)}; refusing to replace it "
                              f"with the {what}")
    for source_what, source in sources:
        if _same(real, existing, source):
            raise OutputFileError(f"{path}: the {what} path is {source_what} ({source}); "
                                  f"refusing to overwrite it")
    if not os.access(directory, os.W_OK | os.X_OK):
        readonly = hasattr(os, "statvfs") and os.statvfs(directory).f_flag & os.ST_RDONLY
        raise OutputFileError(f"{path}: cannot write the {what} in {directory}: "
                              f"{'read-only file system' if readonly else 'permission denied'}")
    return Destination(path, real, what, existing, list(sources))


def check_paths(input_path: str | None, output_path: str | None,
                report_path: str | None) -> None:
    """Before anything is read or converted: the input is a regular file and every output
    can be written without touching anything but a regular file that is not the input."""
    if input_path is not None:
        check_input_file(input_path)
    sources = source_files(input_path)
    if output_path is not None:
        check_destination(output_path, "converted model", sources)
        sources.append(("the converted model's path", output_path))
    if report_path is not None:
        check_destination(report_path, "report", sources)


def _fsync(path: str, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        if directory:  # not every system can open (and sync) a directory
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def _keep_permissions(existing: os.stat_result, temp: str) -> None:
    os.chmod(temp, stat.S_IMODE(existing.st_mode))
    if hasattr(os, "chown"):
        try:  # only root (or a group member) may; otherwise the file becomes ours
            os.chown(temp, existing.st_uid, existing.st_gid)
        except OSError:
            pass


class PendingSave:
    """Files written into temp directories beside their destinations. commit() moves them into
    place (the report first, the model last); until then no destination is touched, and
    discard() removes every temp file."""

    def __init__(self):
        self.files: list[tuple[str, Destination]] = []
        self.temp_dirs: list[str] = []
        self.path = self.final_path = None  # the model's temp file (verified from there)
        self.done = False

    def temp_path(self, dest: Destination) -> str:
        try:
            temp_dir = tempfile.mkdtemp(dir=os.path.dirname(dest.real),
                                        prefix=f".{os.path.basename(dest.real)}.")
        except OSError as error:
            raise OutputFileError(f"{dest.given}: cannot write the {dest.what}: "
                                  f"{_why(error)}") from None
        self.temp_dirs.append(temp_dir)
        return os.path.join(temp_dir, os.path.basename(dest.real))

    def destinations(self) -> list[tuple[str, str]]:
        return [(f"the {d.what}'s path", d.real) for _, d in self.files]

    def add_text(self, path: str, text: str, what: str = "report", sources=()) -> None:
        """Written now; moved into place before everything added earlier."""
        dest = check_destination(path, what, [*sources, *self.destinations()])
        temp = self.temp_path(dest)
        try:
            with open(temp, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as error:
            raise OutputFileError(f"{path}: cannot write the {what}: {_why(error)}") from None
        self.files.insert(0, (temp, dest))

    def add_json(self, path: str, data, sources=()) -> None:
        self.add_text(path, json.dumps(data, indent=2), "report", sources)

    def commit(self) -> None:
        moved = 0
        try:
            for temp, dest in self.files:
                # Checked again: the destination may have changed while converting.
                again = check_destination(dest.given, dest.what, dest.sources)
                if again.real != dest.real:
                    raise OutputFileError(f"{dest.given}: changed while converting; not written")
                _fsync(temp)
                if again.existing is not None:
                    _keep_permissions(again.existing, temp)
            for temp, dest in self.files:
                os.replace(temp, dest.real)
                moved += 1
            for directory in {os.path.dirname(d.real) for _, d in self.files}:
                _fsync(directory, directory=True)
        except OSError as error:
            partly = "" if not moved else \
                f" ({', '.join(d.given for _, d in self.files[:moved])} already moved into place)"
            failure = OutputFileError(f"{dest.given}: cannot write the {dest.what}: "
                                      f"{_why(error)}{partly}")
            failure.partial = moved > 0
            raise failure from None
        self.done = True
        self.discard()

    def discard(self) -> None:
        for temp_dir in self.temp_dirs:  # only directories mkdtemp made for this save
            shutil.rmtree(temp_dir, ignore_errors=True)
        self.temp_dirs = []


def _tensor_bytes(model: ir.Model) -> int:
    return sum(v.const_value.nbytes for v in model.graph.initializers.values()
               if v.const_value is not None)


def _write_model(model: ir.Model, path: str, external: str | None) -> None:
    if external:
        ir.save(model, path, external_data=external)
        return
    if any(isinstance(v.const_value, ir.ExternalTensor)
           for g in model.graphs() for v in g.initializers.values()):
        # Saved as is, they would name data files relative to a directory this file is not in.
        ir.external_data.load_to_model(model)
    ir.save(model, path)


def save_model(model: ir.Model, path: str, atomic: bool = False, commit: bool = True,
               sources=()):
    """Save (atomic: through a PendingSave); big models get <name>.data beside the model.

    atomic: nothing at `path` (or its .data) changes until commit, and never unless it is
    a regular file that is none of `sources` ((what, path) pairs, see source_files)."""
    big = _tensor_bytes(model) > EXTERNAL_DATA_THRESHOLD
    if not atomic:
        _write_model(model, path, os.path.basename(path) + ".data" if big else None)
        return None
    pending = PendingSave()
    try:
        model_dest = check_destination(path, "converted model", sources)
        name = os.path.basename(model_dest.real)  # the model's real name; its data is beside it
        data_dest = None
        if big:
            data_path = os.path.join(os.path.dirname(model_dest.real), name + ".data")
            data_dest = check_destination(data_path, "external data", [
                *sources, ("the converted model's path", model_dest.real)])
        pending.path, pending.final_path = pending.temp_path(model_dest), path
        try:
            _write_model(model, pending.path, name + ".data" if big else None)
        except OSError as error:
            if error.filename and not str(error.filename).startswith(pending.temp_dirs[0]):
                raise InputFileError(f"{error.filename}: cannot read: {_why(error)}") from None
            raise OutputFileError(f"{path}: cannot write the converted model: "
                                  f"{_why(error)}") from None
        if data_dest is not None:
            pending.files.append((os.path.join(os.path.dirname(pending.path), name + ".data"),
                                  data_dest))
        pending.files.append((pending.path, model_dest))
        if commit:
            pending.commit()
    except BaseException:
        pending.discard()
        raise
    return pending
