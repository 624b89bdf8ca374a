"""`python -m fastattn_onnx convert` on hostile paths: special files as input or output (FIFOs,
sockets, devices, directories, symlink loops), aliases of the input (same path, symlink, hard
link, ./../ spelling, its external data), missing or non-directory parents, unwritable places,
names too long, junk and truncated files, two converters racing for one output.

Documented: the converter never modifies its input, never writes over anything but a regular
file, writes nothing on failure, and reports I/O problems as a one-line `error: ...` with exit
code 4 (input) or 5 (output), bad models with 2; never a Traceback, never a hang."""
from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time

from .cases import CLEAN, CRASH, HANG, PASS, SKIP, TRACEBACK, UNCLEAN, WRONG

NAME = "convert_cli"
CASE_TIMEOUT = 150
BATCH = 6
CASE_COST = 8.0
CLI_TIMEOUT = 90

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

# kind -> expected exit codes ({0}: must convert; "either": 0 or a clean error)
KINDS = {
    "in_missing": {4}, "in_directory": {4}, "in_fifo": {4}, "in_socket": {4}, "in_dev_zero_link": {4},
    "in_chardev": {4}, "in_symlink_loop": {4}, "in_dangling_symlink": {4}, "in_parent_is_file": {4},
    "in_long_name": {4}, "in_unreadable": {4}, "in_empty": {2}, "in_junk": {2}, "in_truncated": {2},
    "in_huge_field": {2}, "in_tensor_proto": {2}, "in_opset_too_new": {2},
    "in_symlink_to_model": {0}, "in_odd_name": {0}, "in_no_attention": {0}, "in_already_converted": {0},
    "out_same_as_input": {5}, "out_symlink_to_input": {5}, "out_hardlink_to_input": {5},
    "out_dotdot_alias_of_input": {5}, "out_is_directory": {5}, "out_trailing_slash": {5}, "out_fifo": {5},
    "out_symlink_to_fifo": {5}, "out_socket": {5}, "out_chardev": {5}, "out_missing_dir": {5},
    "out_parent_is_file": {5}, "out_long_name": {5}, "out_unwritable_dir": {5}, "out_proc_file": {5},
    "out_default_is_directory": {5}, "out_is_input_external_data": {5},
    "out_existing_regular": {0}, "out_symlink_to_regular": {0}, "out_readonly_file": "either",
    "report_is_input": {5}, "report_same_as_output": {5}, "report_fifo": {5}, "report_directory": {5},
    "report_missing_dir": {5}, "report_chardev": {5}, "tmpdir_unusable": "either", "race_same_output": {0},
}
KIND_NAMES = sorted(KINDS)
CI_CASES = len(KIND_NAMES)
LONG_CASES = 20 * len(KIND_NAMES)


def make_case(seed: int) -> dict:
    r = random.Random(seed)
    return {"kind": KIND_NAMES[seed % len(KIND_NAMES)], "verify": r.random() < 0.25, "quiet": r.random() < 0.5,
            "model": r.choice(["decomposed", "decomposed", "decomposed_where", "mlp"]),
            "allow_unchanged": r.random() < 0.5}


def _model(kind: str):
    sys.path.insert(0, os.path.join(ROOT, "models"))
    import build_decomposed  # noqa: E402

    if kind == "mlp":
        import numpy as np
        from onnx import TensorProto, helper, numpy_helper

        rng = np.random.default_rng(0)
        w = numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "w")
        graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mlp",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], [w])
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        return m
    return build_decomposed.build_decomposed_model(where_masking=kind == "decomposed_where")


def _state(path: str):
    """What a path is, to compare before and after (never opens a FIFO or device)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return ("absent",)
    except OSError as e:
        return ("error", e.errno)
    if stat.S_ISLNK(st.st_mode):
        return ("link", os.readlink(path))
    if stat.S_ISREG(st.st_mode):
        with open(path, "rb") as f:
            return ("file", hashlib.sha256(f.read()).hexdigest(), stat.S_IMODE(st.st_mode), st.st_ino)
    return ("special", stat.S_IFMT(st.st_mode), st.st_ino, st.st_rdev)


def _listing(directory: str) -> set:
    out = set()
    for base, dirs, files in os.walk(directory):
        for n in dirs + files:
            out.add(os.path.relpath(os.path.join(base, n), directory))
    return out


def _mknod(path: str, major: int, minor: int) -> bool:
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(major, minor))
        return True
    except (OSError, AttributeError):
        return False


def _setup(kind: str, d: str, model):
    """(argv after 'convert', paths that must stay as they are, output path that must exist on
    success, extra env) -- or a string: why the case cannot be set up here."""
    import onnx

    model_path = os.path.join(d, "model.onnx")
    onnx.save(model, model_path)
    watch = [model_path]
    out = os.path.join(d, "out.onnx")
    argv = [model_path, "-o", out]
    env = {}
    if kind == "in_missing":
        argv = [os.path.join(d, "nope.onnx"), "-o", out]
    elif kind == "in_directory":
        os.mkdir(os.path.join(d, "dir.onnx"))
        argv = [os.path.join(d, "dir.onnx"), "-o", out]
    elif kind == "in_fifo":
        os.mkfifo(os.path.join(d, "fifo.onnx"))
        argv = [os.path.join(d, "fifo.onnx"), "-o", out]
        watch.append(argv[0])
    elif kind == "in_socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(os.path.join(d, "sock.onnx"))
        s.close()
        argv = [os.path.join(d, "sock.onnx"), "-o", out]
    elif kind == "in_dev_zero_link":
        os.symlink("/dev/zero", os.path.join(d, "zero.onnx"))
        argv = [os.path.join(d, "zero.onnx"), "-o", out]
    elif kind == "in_chardev":
        if not _mknod(os.path.join(d, "null.onnx"), 1, 3):
            return "cannot create a device node here (mknod)"
        argv = [os.path.join(d, "null.onnx"), "-o", out]
        watch.append(argv[0])
    elif kind == "in_symlink_loop":
        os.symlink("loop_b.onnx", os.path.join(d, "loop_a.onnx"))
        os.symlink("loop_a.onnx", os.path.join(d, "loop_b.onnx"))
        argv = [os.path.join(d, "loop_a.onnx"), "-o", out]
    elif kind == "in_dangling_symlink":
        os.symlink("missing.onnx", os.path.join(d, "dangling.onnx"))
        argv = [os.path.join(d, "dangling.onnx"), "-o", out]
    elif kind == "in_parent_is_file":
        argv = [os.path.join(model_path, "inner.onnx"), "-o", out]
    elif kind == "in_long_name":
        argv = [os.path.join(d, "m" * 300 + ".onnx"), "-o", out]
    elif kind == "in_unreadable":
        if IS_ROOT:
            return "running as root: permissions do not stop reads"
        os.chmod(model_path, 0)
    elif kind in ("in_empty", "in_junk", "in_truncated", "in_huge_field", "in_tensor_proto", "in_opset_too_new"):
        bad = os.path.join(d, f"{kind}.onnx")
        data = open(model_path, "rb").read()
        content = {"in_empty": b"", "in_junk": b"this is not a model\n" * 50, "in_truncated": data[: len(data) // 2],
                   "in_huge_field": b"\x3a\xff\xff\xff\xff\x07" + b"\x00" * 32}.get(kind)
        if kind == "in_tensor_proto":
            import numpy as np
            from onnx import numpy_helper

            content = numpy_helper.from_array(np.ones((4, 4), np.float32), "t").SerializeToString()
        if kind == "in_opset_too_new":
            m = onnx.load(model_path)
            m.opset_import[0].version = onnx.defs.onnx_opset_version() + 5
            content = m.SerializeToString()
        with open(bad, "wb") as f:
            f.write(content)
        argv = [bad, "-o", out]
        watch.append(bad)
    elif kind == "in_symlink_to_model":
        link = os.path.join(d, "link.onnx")
        os.symlink("model.onnx", link)
        argv = [link, "-o", out]
        watch.append(link)
    elif kind == "in_odd_name":
        odd = os.path.join(d, "my model\u00e9 -o x\n.onnx")
        shutil.copy(model_path, odd)
        argv = [odd, "-o", out]
        watch.append(odd)
    elif kind == "in_no_attention":
        onnx.save(_model("mlp"), model_path)
    elif kind == "in_already_converted":
        from fastattn_onnx.convert import convert

        first = os.path.join(d, "first.fa.onnx")
        convert(model_path, first, verify=False)
        argv = [first, "-o", out]
        watch.append(first)
    elif kind == "out_same_as_input":
        argv = [model_path, "-o", model_path]
    elif kind == "out_symlink_to_input":
        os.symlink("model.onnx", os.path.join(d, "alias.onnx"))
        argv = [model_path, "-o", os.path.join(d, "alias.onnx")]
        watch.append(argv[2])
    elif kind == "out_hardlink_to_input":
        os.link(model_path, os.path.join(d, "hard.onnx"))
        argv = [model_path, "-o", os.path.join(d, "hard.onnx")]
        watch.append(argv[2])
    elif kind == "out_dotdot_alias_of_input":
        os.mkdir(os.path.join(d, "sub"))
        argv = [model_path, "-o", os.path.join(d, "sub", "..", ".", "model.onnx")]
    elif kind == "out_is_directory":
        os.mkdir(os.path.join(d, "outdir"))
        argv = [model_path, "-o", os.path.join(d, "outdir")]
        watch.append(argv[2])
    elif kind == "out_trailing_slash":
        argv = [model_path, "-o", os.path.join(d, "newdir") + "/"]
    elif kind in ("out_fifo", "out_symlink_to_fifo", "report_fifo"):
        fifo = os.path.join(d, "out.fifo")
        os.mkfifo(fifo)
        watch.append(fifo)
        if kind == "out_symlink_to_fifo":
            os.symlink("out.fifo", os.path.join(d, "fifo_link.onnx"))
            argv = [model_path, "-o", os.path.join(d, "fifo_link.onnx")]
            watch.append(argv[2])
        elif kind == "out_fifo":
            argv = [model_path, "-o", fifo]
        else:
            argv = [model_path, "-o", out, "--report", fifo]
    elif kind == "out_socket":
        sock = os.path.join(d, "out.sock")
        s = socket.socket(socket.AF_UNIX)
        s.bind(sock)
        s.close()
        argv = [model_path, "-o", sock]
        watch.append(sock)
    elif kind in ("out_chardev", "report_chardev"):
        dev = os.path.join(d, "full.dev")
        if not _mknod(dev, 1, 7):  # a private /dev/full
            return "cannot create a device node here (mknod)"
        watch.append(dev)
        argv = [model_path, "-o", dev] if kind == "out_chardev" else [model_path, "-o", out, "--report", dev]
    elif kind == "out_missing_dir":
        argv = [model_path, "-o", os.path.join(d, "no", "such", "dir", "out.onnx")]
    elif kind == "out_parent_is_file":
        argv = [model_path, "-o", os.path.join(model_path, "out.onnx")]
    elif kind == "out_long_name":
        argv = [model_path, "-o", os.path.join(d, "o" * 300 + ".onnx")]
    elif kind == "out_unwritable_dir":
        if IS_ROOT:
            return "running as root: permissions do not stop writes"
        os.mkdir(os.path.join(d, "ro"))
        os.chmod(os.path.join(d, "ro"), 0o555)
        argv = [model_path, "-o", os.path.join(d, "ro", "out.onnx")]
    elif kind == "out_proc_file":
        argv = [model_path, "-o", "/proc/self/comm"]
    elif kind == "out_default_is_directory":
        os.mkdir(os.path.join(d, "model.fa.onnx"))
        argv = [model_path]
        watch.append(os.path.join(d, "model.fa.onnx"))
    elif kind == "out_is_input_external_data":
        m = onnx.load(model_path)
        onnx.save(m, model_path, save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin",
                  size_threshold=0)
        argv = [model_path, "-o", os.path.join(d, "weights.bin")]
        watch.append(os.path.join(d, "weights.bin"))
    elif kind == "out_existing_regular":
        with open(out, "wb") as f:
            f.write(b"old content")
        os.chmod(out, 0o640)
    elif kind == "out_symlink_to_regular":
        os.mkdir(os.path.join(d, "elsewhere"))
        target = os.path.join(d, "elsewhere", "real.onnx")
        with open(target, "wb") as f:
            f.write(b"old")
        os.symlink(os.path.join("elsewhere", "real.onnx"), out)
    elif kind == "out_readonly_file":
        with open(out, "wb") as f:
            f.write(b"old")
        os.chmod(out, 0o444)
    elif kind == "report_is_input":
        argv = [model_path, "-o", out, "--report", model_path]
    elif kind == "report_same_as_output":
        argv = [model_path, "-o", out, "--report", out]
    elif kind == "report_directory":
        os.mkdir(os.path.join(d, "rep"))
        argv = [model_path, "-o", out, "--report", os.path.join(d, "rep")]
    elif kind == "report_missing_dir":
        argv = [model_path, "-o", out, "--report", os.path.join(d, "nodir", "r.json")]
    elif kind == "tmpdir_unusable":
        fifo = os.path.join(d, "tmp.fifo")
        os.mkfifo(fifo)
        env["TMPDIR"] = fifo
        watch.append(fifo)
    elif kind == "race_same_output":
        pass
    return argv, watch, out, env


def _env(extra):
    env = dict(os.environ)
    here = os.path.dirname(os.path.abspath(__file__))
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p) and os.path.abspath(p) != here)
    env.pop("PYTHONFAULTHANDLER", None)  # a Traceback in stderr must be an uncaught exception
    env.update(extra)
    return env


def _spawn(argv, d, env):
    return subprocess.Popen([sys.executable, "-m", "fastattn_onnx", "convert", *argv], cwd=d, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            errors="replace", start_new_session=True)


def _wait(proc):
    try:
        out, err = proc.communicate(timeout=CLI_TIMEOUT)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return None, out, err


def run_case(p: dict, ctx: dict):
    kind = p["kind"]
    d = os.path.join(ctx["workdir"], f"cli-{kind}-{os.getpid()}-{time.monotonic_ns()}")
    os.makedirs(d)
    try:
        return _run(p, kind, d)
    finally:
        for base, dirs, _files in os.walk(d):
            for n in dirs:
                try:
                    os.chmod(os.path.join(base, n), 0o755)
                except OSError:
                    pass
        shutil.rmtree(d, ignore_errors=True)


def _run(p, kind, d):
    model = p["model"] if kind != "in_no_attention" else "mlp"
    setup = _setup(kind, d, _model(model))
    if isinstance(setup, str):
        return SKIP, setup
    argv, watch, out, extra_env = setup
    if not p["verify"]:
        argv = argv + ["--no-verify"]
    if p["quiet"]:
        argv = argv + ["--quiet"]
    if p.get("allow_unchanged"):
        argv = argv + ["--allow-unchanged"]
    expected = KINDS[kind]
    # Nothing to fuse: exit 6 writing nothing, unless --allow-unchanged (then as a conversion).
    nothing_fused = (model == "mlp" or kind == "in_already_converted") and \
        not p.get("allow_unchanged")
    if nothing_fused and expected == {0}:
        expected = {6}
    before = {w: _state(w) for w in watch}
    listing = _listing(d)
    env = _env(extra_env)
    if kind == "race_same_output":
        procs = [_spawn(argv, d, env) for _ in range(2)]
        runs = [_wait(pr) for pr in procs]
    else:
        runs = [_wait(_spawn(argv, d, env))]
    for rc, stdout, stderr in runs:
        if rc is None:
            return HANG, f"no exit after {CLI_TIMEOUT} s; argv {argv!r}; stderr: {stderr[-300:]!r}"
        if rc < 0:
            return CRASH, f"killed by signal {-rc}; stderr tail: {stderr[-600:]!r}"
        if "Traceback" in stderr or "Traceback" in stdout:
            return TRACEBACK, f"exit {rc}; {stderr[-1500:]}"
    changed = [f"{w}: {before[w]} -> {_state(w)}" for w in watch if _state(w) != before[w]]
    if changed:
        return WRONG, "modified what it must not touch: " + "; ".join(changed)
    rc, stdout, stderr = runs[0]
    if kind == "race_same_output":
        codes = sorted(r[0] for r in runs)
        if nothing_fused:
            if codes != [6, 6]:
                return WRONG, f"two converters of a model with nothing to fuse: exit codes {codes}"
            return PASS, ""
        if codes[0] != 0 or any(c not in (0, 5) for c in codes):
            return WRONG, f"two converters to one output: exit codes {codes}; stderr {runs[0][2][-300:]!r}"
        rc = 0
    new = _listing(d) - listing
    if rc != 0:
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        clean = bool(lines) and lines[0].startswith("error: ")
        if rc in (4, 5) and len(lines) != 1:
            clean = False
        if rc not in (2, 3, 4, 5, 6):
            clean = False
        leftovers = sorted(new)
        text = f"exit {rc}: {stderr.strip()[:400]!r}"
        if leftovers:
            return WRONG, f"failed but left files behind ({leftovers[:5]}); {text}"
        if expected == {0}:
            return WRONG, f"a valid conversion failed: {text}"
        if expected == {6} and rc == 6:
            return PASS, ""
        if expected != "either" and rc not in expected:
            return (UNCLEAN if clean else UNCLEAN), f"expected exit {sorted(expected)}, got {text}"
        return (CLEAN if clean else UNCLEAN), text
    # success
    if expected != "either" and 0 not in expected:
        return WRONG, f"expected an error (exit {sorted(expected)}), it converted; new files {sorted(new)[:5]}; " \
                      f"stdout {stdout[-300:]!r}"
    target = out if "-o" in argv else os.path.join(d, "model.fa.onnx")
    real = os.path.realpath(target)
    if not os.path.isfile(real):
        return WRONG, f"exit 0 but no output file at {target}"
    if kind == "out_symlink_to_regular" and not os.path.islink(out):
        return WRONG, "the output symlink was replaced by a file (documented: symlinks stay in place)"
    if kind == "out_existing_regular" and stat.S_IMODE(os.stat(out).st_mode) != 0o640:
        return WRONG, f"the replaced output lost its permissions: {oct(stat.S_IMODE(os.stat(out).st_mode))}"
    stray = [n for n in new if os.path.basename(n).startswith(".")]
    if stray:
        return WRONG, f"temporary files left behind: {stray[:5]}"
    import onnx

    try:
        onnx.load(real)
    except Exception as e:  # noqa: BLE001
        return WRONG, f"the written model does not load: {e}"
    return PASS, ""
