"""The converter's writes cannot lose data (issue 14): aliases of the input are refused, only
regular files are ever replaced, I/O problems end in one-line errors with their own exit codes,
and nothing is half-written."""
from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fastattn_onnx.convert import ConvertError, convert, loading
from fastattn_onnx.tools import convert_cli

BAD_MODEL, INPUT_IO, OUTPUT_IO = 2, 4, 5


def _model(path, external_location=None):
    """A MatMul model (no attention: conversion is quick and verification is skipped)."""
    weight = numpy_helper.from_array(np.arange(32, dtype=np.float32).reshape(8, 4), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
                              [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if external_location:
        onnx.save(model, path, save_as_external_data=True, location=external_location,
                  size_threshold=0)
    else:
        onnx.save(model, path)
    return str(path)


@pytest.fixture()
def model_path(tmp_path):
    return _model(tmp_path / "m.onnx")


def _cli(*args, cwd=None, prefix=(), timeout=120):
    # A timeout: a FIFO opened for reading would block forever.
    return subprocess.run([*prefix, sys.executable, "-m", "fastattn_onnx.tools.convert_cli",
                           *map(str, args), "--quiet", "--allow-unchanged"], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


def _failed(done, code, *words):
    """Exit `code`, and one line on stderr (no traceback) that says what went wrong."""
    assert done.returncode == code, (done.returncode, done.stderr)
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in done.stderr, done.stderr


def _snapshot(directory):
    """Every name (hidden temp files too) and every regular file's bytes."""
    result = {}
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        result[name] = open(path, "rb").read() if stat.S_ISREG(os.lstat(path).st_mode) else None
    return result


# ---- 1. the output is the input under another name ------------------------------------------

@pytest.mark.parametrize("alias", ["symlinked_dir", "proc_cwd", "input_symlink", "output_symlink",
                                   "hard_link"])
def test_output_alias_of_the_input_is_refused(alias, model_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # /proc/self/cwd is tmp_path here and in the CLI run
    if alias == "symlinked_dir":
        os.symlink(tmp_path, tmp_path / "dir_link")
        model, output = model_path, tmp_path / "dir_link" / "m.onnx"
    elif alias == "proc_cwd":
        model, output = model_path, "/proc/self/cwd/m.onnx"
    elif alias == "input_symlink":  # the input is a link; -o names its target
        os.symlink("m.onnx", tmp_path / "link.onnx")
        model, output = tmp_path / "link.onnx", model_path
    elif alias == "output_symlink":
        os.symlink("m.onnx", tmp_path / "link.onnx")
        model, output = model_path, tmp_path / "link.onnx"
    else:
        os.link(model_path, tmp_path / "hard.onnx")
        model, output = model_path, tmp_path / "hard.onnx"
    before = _snapshot(tmp_path)
    _failed(_cli(model, "-o", output), OUTPUT_IO, "overwrite", "nothing written")
    assert _snapshot(tmp_path) == before  # input byte-identical, no temp files left
    with pytest.raises(ConvertError, match="overwrite"):
        convert(str(model), str(output))


def test_report_alias_of_the_input_or_output_is_refused(model_path, tmp_path):
    before = _snapshot(tmp_path)
    _failed(_cli(model_path, "--report", model_path), OUTPUT_IO, "overwrite")
    _failed(_cli(model_path, "-o", tmp_path / "o.onnx", "--report", tmp_path / "o.onnx"),
            OUTPUT_IO, "overwrite")
    assert _snapshot(tmp_path) == before


# ---- 2. only a regular file is ever replaced --------------------------------------------------

@pytest.mark.parametrize("kind", ["fifo", "directory", "dev_null"])
def test_output_that_is_not_a_regular_file_is_left_alone(kind, model_path, tmp_path):
    output = tmp_path / "out.onnx"
    if kind == "fifo":
        os.mkfifo(output)
    elif kind == "directory":
        output.mkdir()
    else:
        output = "/dev/null"  # as root, a replace would turn it into a regular file
    before = _snapshot(tmp_path)
    _failed(_cli(model_path, "-o", output), OUTPUT_IO, "refusing to replace")
    assert _snapshot(tmp_path) == before
    mode = os.lstat(output).st_mode
    assert {"fifo": stat.S_ISFIFO, "directory": stat.S_ISDIR, "dev_null": stat.S_ISCHR}[kind](mode)


def test_replacing_keeps_permissions_and_symlinks(model_path, tmp_path):
    """An existing output keeps its mode; a symlinked output stays a link to the new file."""
    (tmp_path / "out.onnx").write_bytes(b"old")
    os.chmod(tmp_path / "out.onnx", 0o640)
    assert _cli(model_path, "-o", tmp_path / "out.onnx").returncode == 0
    assert stat.S_IMODE(os.stat(tmp_path / "out.onnx").st_mode) == 0o640
    onnx.checker.check_model(onnx.load(tmp_path / "out.onnx"))
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "target.onnx").write_bytes(b"old")
    os.symlink("real/target.onnx", tmp_path / "link.onnx")
    assert _cli(model_path, "-o", tmp_path / "link.onnx").returncode == 0
    assert os.path.islink(tmp_path / "link.onnx")
    onnx.checker.check_model(onnx.load(tmp_path / "real" / "target.onnx"))
    assert sorted(os.listdir(tmp_path / "real")) == ["target.onnx"]  # no temp files left


# ---- 3. I/O problems: one line, their own exit code, nothing written -------------------------

@pytest.mark.parametrize("where", ["missing_dir", "file_as_dir", "trailing_slash", "report_dir"])
def test_output_directory_problems(where, model_path, tmp_path):
    (tmp_path / "plain").write_text("a file, not a directory\n")
    args = {"missing_dir": ["-o", tmp_path / "nowhere" / "o.onnx"],
            "file_as_dir": ["-o", tmp_path / "plain" / "o.onnx"],
            "trailing_slash": ["-o", str(tmp_path / "newdir") + os.sep],
            "report_dir": ["-o", tmp_path / "o.onnx", "--report", tmp_path / "nowhere" / "r.json"]}
    before = _snapshot(tmp_path)
    _failed(_cli(model_path, *args[where]), OUTPUT_IO, "nothing written")
    assert _snapshot(tmp_path) == before  # with a bad --report, no model either


def _without_dac_override():
    """Root that obeys file permissions (this suite runs as root), or skip."""
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
              "--inh-caps=-dac_override,-dac_read_search"]
    if shutil.which("setpriv") is None or subprocess.run([*prefix, "true"]).returncode != 0:
        pytest.skip("setpriv cannot drop capabilities here")
    return prefix


@pytest.mark.parametrize("which", ["output", "report"])
def test_unwritable_directory(which, model_path, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o555)
    args = ["-o", locked / "o.onnx"] if which == "output" else \
        ["-o", tmp_path / "o.onnx", "--report", locked / "r.json"]
    before = _snapshot(tmp_path)
    _failed(_cli(model_path, *args, prefix=_without_dac_override()), OUTPUT_IO,
            "permission denied", "nothing written")
    assert _snapshot(tmp_path) == before and os.listdir(locked) == []


def test_read_only_file_system(model_path, tmp_path):
    (tmp_path / "ro").mkdir()
    # A private mount namespace: a read-only tmpfs over tmp_path/ro, then the CLI.
    mount = f"mount -t tmpfs -o ro none {tmp_path / 'ro'} && exec \"$@\""
    prefix = ["unshare", "-m", "sh", "-c", mount, "sh"]
    if shutil.which("unshare") is None or subprocess.run(
            [*prefix, "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a read-only file system here")
    _failed(_cli(model_path, "-o", tmp_path / "ro" / "o.onnx", prefix=prefix), OUTPUT_IO,
            "read-only file system")


def test_write_failing_midway_leaves_the_old_output(model_path, tmp_path, monkeypatch, capsys):
    """Disk full while writing: the previous output and the directory are as they were."""
    def half_then_full(model, path, **kwargs):
        open(path, "wb").write(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    (tmp_path / "out.onnx").write_bytes(b"previous output")
    before = _snapshot(tmp_path)
    monkeypatch.setattr(loading.ir, "save", half_then_full)
    assert convert_cli.main([model_path, "-o", str(tmp_path / "out.onnx"), "--quiet",
                             "--allow-unchanged"]) == OUTPUT_IO
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err
    assert _snapshot(tmp_path) == before


def test_report_failing_after_conversion_writes_no_model(model_path, tmp_path, monkeypatch, capsys):
    """The report is written before the model is moved into place: if it fails, neither is."""
    (tmp_path / "reports").mkdir()
    real_mkdtemp = loading.tempfile.mkdtemp

    def mkdtemp(*args, **kwargs):
        if kwargs.get("dir") == str(tmp_path / "reports"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), kwargs["dir"])
        return real_mkdtemp(*args, **kwargs)

    monkeypatch.setattr(loading.tempfile, "mkdtemp", mkdtemp)
    before = _snapshot(tmp_path)
    assert convert_cli.main([model_path, "-o", str(tmp_path / "o.onnx"), "--report",
                             str(tmp_path / "reports" / "r.json"), "--quiet",
                             "--allow-unchanged"]) == OUTPUT_IO
    assert "report" in capsys.readouterr().err
    assert _snapshot(tmp_path) == before and os.listdir(tmp_path / "reports") == []


@pytest.mark.parametrize("kind", ["directory", "fifo", "dev_null", "missing", "no_permission"])
def test_input_that_cannot_be_read(kind, tmp_path):
    path, prefix = tmp_path / "in.onnx", ()
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)  # opening it for reading would block: it must never be opened
    elif kind == "dev_null":
        path = "/dev/null"
    elif kind == "no_permission":
        _model(path)
        os.chmod(path, 0)
        prefix = _without_dac_override()
    words = {"directory": "a directory", "fifo": "FIFO", "dev_null": "character device",
             "missing": "no such file", "no_permission": "Permission denied"}[kind]
    _failed(_cli(path, prefix=prefix, timeout=60), INPUT_IO, words)
    assert not os.path.exists(tmp_path / "in.fa.onnx")


# The CLI in a child that reports its peak memory at exit: VmHWM belongs to the new process
# (wait4's ru_maxrss would include this big pytest process, which the child was forked from).
_PEAK_MEMORY = """
import atexit, runpy, sys
atexit.register(lambda: print(*[l for l in open("/proc/self/status") if l.startswith("VmHWM")]))
sys.argv = ["convert", *sys.argv[1:]]
runpy.run_module("fastattn_onnx.tools.convert_cli", run_name="__main__")
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux's /proc")
@pytest.mark.parametrize("size", [3 << 30, 1 << 30])
def test_big_non_model_rejected_without_reading_it(size, tmp_path):
    """Over 2 GiB (protobuf's limit) by its size; under, by its first bytes. Sparse files: the
    child's peak memory shows whether the file was read whole."""
    path = tmp_path / "big.onnx"
    with open(path, "wb") as f:
        f.write(b"this is not a model\n")
        f.truncate(size)
    done = subprocess.run([sys.executable, "-c", _PEAK_MEMORY, str(path), "--quiet"],
                          capture_output=True, text=True, timeout=120)
    _failed(done, BAD_MODEL, "not")
    peak_kb = int(done.stdout.split()[-2])  # "VmHWM:  115228 kB"
    assert peak_kb * 1024 < size // 2, done.stdout


# ---- external data beside the output follows the same rules ----------------------------------

def test_external_data_never_overwrites_the_input_or_a_non_file(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "EXTERNAL_DATA_THRESHOLD", 0)  # every output gets <name>.data
    # The input's weights live in "b.onnx.data": -o b.onnx would write its data over them.
    source = _model(tmp_path / "a.onnx", external_location="b.onnx.data")
    before = _snapshot(tmp_path)
    with pytest.raises(loading.OutputFileError, match="input's external data"):
        convert(source, str(tmp_path / "b.onnx"), verify=False, allow_unchanged=True)
    os.mkfifo(tmp_path / "c.onnx.data")
    with pytest.raises(loading.OutputFileError, match="FIFO"):
        convert(source, str(tmp_path / "c.onnx"), verify=False, allow_unchanged=True)
    before["c.onnx.data"] = None
    assert _snapshot(tmp_path) == before
    convert(source, str(tmp_path / "d.onnx"), verify=False, allow_unchanged=True)
    assert sorted(set(os.listdir(tmp_path)) - set(before)) == ["d.onnx", "d.onnx.data"]
    onnx.checker.check_model(str(tmp_path / "d.onnx"))


def test_small_external_data_model_written_elsewhere_is_self_contained(tmp_path):
    source = _model(tmp_path / "a.onnx", external_location="a.onnx.data")
    (tmp_path / "out").mkdir()
    convert(source, str(tmp_path / "out" / "a.onnx"), verify=False, allow_unchanged=True)
    assert os.listdir(tmp_path / "out") == ["a.onnx"]
    weight = numpy_helper.to_array(onnx.load(tmp_path / "out" / "a.onnx").graph.initializer[0])
    np.testing.assert_array_equal(weight, np.arange(32, dtype=np.float32).reshape(8, 4))
