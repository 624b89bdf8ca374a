"""onnxruntime-genai models (com.microsoft.GroupQueryAttention decoders from genai's model builder)
in genai's own generate loop, with FastAttentionEP named and without it.

Tiny random-weight models built offline by models/build_genai_model.py (Llama with packed and with
separate Q/K/V projections, Qwen2 with Q/K/V biases, Llama int4, Gemma-2 with softcap and sliding-
window layers). For each: greedy tokens identical, the prompt step's logits within 1e-4 relative,
a batch of two prompts of different lengths (right padding) as each prompt alone, and the GQA
nodes placed on FastAttentionEP (from an ORT profile of genai's session).

Needs onnxruntime-genai >= 0.18 (pip install 'fastattn-onnx[genai]'); the genai tests skip without
it. The genai_config.json edits (fastattn_onnx.genai.enable/disable) are tested either way.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastattn_onnx
from fastattn_onnx import genai as fa_genai
from fastattn_onnx.__main__ import main as cli_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "models"))

try:
    import onnxruntime_genai as og
except ImportError as _e:  # also an old genai without plugin-EP registration
    og, _WHY_NO_GENAI = None, f"onnxruntime-genai not importable ({_e}): pip install 'fastattn-onnx[genai]'"
else:
    _WHY_NO_GENAI = "" if hasattr(og, "register_execution_provider_library") else \
        f"onnxruntime-genai {og.__version__} cannot register plugin EPs (needs >= 0.18)"
needs_genai = pytest.mark.skipif(bool(_WHY_NO_GENAI), reason=_WHY_NO_GENAI or "n/a")

EP = fastattn_onnx.EP_NAME
NEW_TOKENS = 40
RTOL = 1e-4
# The builder's int4 CPU models quantize activations to int8 per block in every MatMulNBits
# (accuracy_level=4), so an attention output that differs in its last float bit can move a value
# across a rounding step there: ~2e-3 relative on the logits of a batch, measured. The tokens must
# still be identical; the logits are held to this looser bound.
RTOL_INT8_ACTIVATIONS = 1e-2
THREADS = 2
PROMPTS = ["The quick brown fox jumps over the lazy dog while the cat sat on the mat.", "Attention is all"]
# name -> (arch, precision, fuse_qkv, sizes)
MODELS = {
    "llama": ("llama", "fp32", True, dict(hidden=64, heads=4, kv_heads=2)),
    "llama_separate_qkv": ("llama", "fp32", False, dict(hidden=64, heads=4, kv_heads=2)),
    "qwen2": ("qwen2", "fp32", True, dict(hidden=128, heads=4, kv_heads=2)),
    "llama_int4": ("llama", "int4", True, dict(hidden=128, heads=4, kv_heads=1)),
    "gemma2": ("gemma2", "fp32", True, dict(hidden=64, heads=4, kv_heads=2, sliding_window=8)),
}


# ---- genai_config.json edits (no genai needed) ---------------------------------------------

def _write_config(folder, providers=None, extra_session_options=None) -> str:
    os.makedirs(folder, exist_ok=True)
    session_options = {"log_id": "onnxruntime-genai", "provider_options": providers or []}
    session_options.update(extra_session_options or {})
    config = {"model": {"type": "llama", "decoder": {"session_options": session_options, "filename": "model.onnx"}},
              "search": {"max_length": 64}}
    path = os.path.join(folder, "genai_config.json")
    with open(path, "w") as f:
        json.dump(config, f, indent=4)
    return path


def _providers_in(path):
    with open(path) as f:
        return json.load(f)["model"]["decoder"]["session_options"]["provider_options"]


def test_enable_puts_ep_first_keeps_original_and_is_idempotent(tmp_path):
    path = _write_config(tmp_path, providers=[{"cuda": {"enable_cuda_graph": "0"}}])
    with open(path, "rb") as f:
        original = f.read()
    mode = 0o640
    os.chmod(path, mode)
    assert fa_genai.enable(tmp_path) is True
    assert _providers_in(path) == [{EP: {}}, {"cuda": {"enable_cuda_graph": "0"}}]
    with open(path + ".orig", "rb") as f:
        assert f.read() == original
    assert os.stat(path).st_mode & 0o777 == mode
    assert fa_genai.enable(tmp_path) is False  # already so: not written again
    assert fa_genai.is_enabled(tmp_path)
    # New options replace ours; the .orig (the file as first found) is not overwritten.
    assert fa_genai.enable(tmp_path, provider_options={"device": "cpu"}) is True
    assert _providers_in(path)[0] == {EP: {"device": "cpu"}}
    with open(path + ".orig", "rb") as f:
        assert f.read() == original
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]  # no temporary file left
    # disable: the original back, byte for byte, and the .orig gone
    assert fa_genai.disable(tmp_path) is True
    with open(path, "rb") as f:
        assert f.read() == original
    assert not os.path.exists(path + ".orig")
    assert fa_genai.disable(tmp_path) is False


def test_enable_moves_an_existing_entry_first(tmp_path):
    path = _write_config(tmp_path, providers=[{"cuda": {}}, {EP: {"device": "gpu"}}])
    assert fa_genai.enable(tmp_path / "genai_config.json", keep_original=False) is True  # the file's path works too
    assert _providers_in(path) == [{EP: {"device": "gpu"}}, {"cuda": {}}]
    assert not os.path.exists(path + ".orig")


def test_disable_after_edits_keeps_them(tmp_path):
    path = _write_config(tmp_path)
    fa_genai.enable(tmp_path)
    with open(path) as f:
        config = json.load(f)
    config["search"]["max_length"] = 128  # the user's edit after enable
    with open(path, "w") as f:
        json.dump(config, f)
    assert fa_genai.disable(tmp_path) is True
    with open(path) as f:
        config = json.load(f)
    assert config["search"]["max_length"] == 128
    assert config["model"]["decoder"]["session_options"]["provider_options"] == []


def test_config_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="genai_config.json"):
        fa_genai.enable(tmp_path)
    (tmp_path / "genai_config.json").write_text('{"model": {}}')
    with pytest.raises(ValueError, match="model.decoder"):
        fa_genai.enable(tmp_path)
    (tmp_path / "genai_config.json").write_text('{"model": {"decoder": {"session_options": {"provider_options": {}}}}}')
    with pytest.raises(ValueError, match="provider_options"):
        fa_genai.enable(tmp_path)
    (tmp_path / "genai_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        fa_genai.enable(tmp_path)


def test_cli_enable_disable(tmp_path, capsys):
    path = _write_config(tmp_path)
    assert cli_main(["genai", "enable", str(tmp_path)]) == 0
    assert _providers_in(path) == [{EP: {}}]
    assert cli_main(["genai", "enable", str(tmp_path), "--option", "device=cpu"]) == 0
    assert _providers_in(path) == [{EP: {"device": "cpu"}}]
    assert cli_main(["genai", "status", str(tmp_path)]) == 0
    assert cli_main(["genai", "disable", str(tmp_path)]) == 0
    assert _providers_in(path) == []
    assert cli_main(["genai", "enable", str(tmp_path / "missing")]) == 2
    out = capsys.readouterr()
    assert "enabled" in out.out and "disabled" in out.out and "no genai_config.json" in out.err


def test_register_without_genai_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime_genai", None)  # import fails
    with pytest.raises(ImportError, match=r"fastattn-onnx\[genai\]"):
        fa_genai.register()


# ---- genai's generate loop -------------------------------------------------------------------

@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """name -> model folder, each built once on first use (in this process: no Python start-up)."""
    from build_genai_model import build_genai_model

    root = tmp_path_factory.mktemp("genai-models")
    cache: dict[str, str] = {}

    def get(name: str) -> str:
        if name not in cache:
            arch, precision, fuse_qkv, sizes = MODELS[name]
            cache[name] = build_genai_model(arch, str(root / name), precision, fuse_qkv=fuse_qkv, in_process=True,
                                            layers=2, max_positions=512, **sizes)
        return cache[name]

    return get


def _model(folder, enabled: bool, profile_prefix: str | None = None):
    cfg = fa_genai.config(folder, enabled=enabled, og=og)
    session_options = {"intra_op_num_threads": THREADS, "inter_op_num_threads": 1}
    if profile_prefix:
        session_options["enable_profiling"] = profile_prefix
    cfg.overlay(json.dumps({"model": {"decoder": {"session_options": session_options}}}))
    return og.Model(cfg)


def _prompts(model, texts):
    tokenizer = og.Tokenizer(model)
    return [list(tokenizer.encode(t)) for t in texts]


def _greedy(model, prompts: list[list[int]], new_tokens: int = NEW_TOKENS, pad: int = 1):
    """Greedy generation of a right-padded batch: (sequences as lists, the prompt step's logits [B, L, V])."""
    width = max(len(p) for p in prompts)
    ids = np.full((len(prompts), width), pad, dtype=np.int32)
    for row, p in enumerate(prompts):
        ids[row, :len(p)] = p
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=width + new_tokens, min_length=width + new_tokens,
                              batch_size=len(prompts))
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    logits = np.array(generator.get_output("logits"), dtype=np.float64)
    while not generator.is_done():
        generator.generate_next_token()
    return [[int(t) for t in generator.get_sequence(row)] for row in range(len(prompts))], logits


def _first_difference(a, b) -> str:
    i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"first difference at position {i}: {a[i:i + 5]} vs {b[i:i + 5]}"


def _check_close(ours, ref, what):
    rtol = RTOL_INT8_ACTIVATIONS if what.startswith("llama_int4") else RTOL
    scale = max(float(np.abs(ref).max()), 1e-30)
    err = float(np.abs(ours - ref).max())
    assert err <= rtol * scale, f"{what}: max|diff| {err:.3e} > {rtol} * max|ref| {scale:.3e}"


@needs_genai
@pytest.mark.parametrize("name", list(MODELS))
def test_greedy_tokens_and_prompt_logits_match(built, name):
    folder = built(name)
    reference, ours = _model(folder, enabled=False), _model(folder, enabled=True)
    prompt = _prompts(reference, PROMPTS[:1])
    ref_tokens, ref_logits = _greedy(reference, prompt)
    our_tokens, our_logits = _greedy(ours, prompt)
    assert len(our_tokens[0]) >= len(prompt[0]) + 32
    assert our_tokens == ref_tokens, f"{name}: greedy tokens differ, {_first_difference(our_tokens[0], ref_tokens[0])}"
    _check_close(our_logits, ref_logits, f"{name}: prompt logits")


@needs_genai
@pytest.mark.parametrize("name", list(MODELS))
def test_batch_of_two_right_padded(built, name):
    folder = built(name)
    reference, ours = _model(folder, enabled=False), _model(folder, enabled=True)
    prompts = _prompts(reference, PROMPTS)
    assert len(prompts[0]) > len(prompts[1])
    try:
        ref_tokens, ref_logits = _greedy(reference, prompts)
    except RuntimeError as e:  # the reference itself cannot: nothing to compare with
        if "too small for sequence_length" not in str(e):
            raise
        pytest.skip(f"{name}: ONNX Runtime's own CPU GroupQueryAttention refuses a right-padded batch on "
                    f"sliding_window_cache layers (onnxruntime {_ort_version()}): {str(e).strip()[-90:]}")
    our_tokens, our_logits = _greedy(ours, prompts)
    assert our_tokens == ref_tokens, f"{name}: batch tokens differ from the CPU EP's"
    for row, p in enumerate(prompts):  # padded positions' logits are nobody's business
        _check_close(our_logits[row, :len(p)], ref_logits[row, :len(p)], f"{name}: prompt logits of row {row}")
        alone, alone_logits = _greedy(ours, [p])
        padding = len(prompts[0]) - len(p)
        got = our_tokens[row][:len(p)] + our_tokens[row][len(p) + padding:]  # the pads stay in genai's sequence
        assert got == alone[0][:len(got)], f"{name}: row {row} in the batch is not the prompt alone: " \
                                           f"{_first_difference(got, alone[0])}"
        _check_close(our_logits[row, :len(p)], alone_logits[0], f"{name}: row {row} logits vs the prompt alone")


@needs_genai
@pytest.mark.parametrize("name", list(MODELS))
def test_batch_of_two_same_length(built, name):
    """Two different prompts of one length (no padding): what every model's reference runs."""
    folder = built(name)
    reference, ours = _model(folder, enabled=False), _model(folder, enabled=True)
    long_prompt, short_prompt = _prompts(reference, PROMPTS)
    prompts = [long_prompt, (short_prompt * len(long_prompt))[:len(long_prompt)]]
    ref_tokens, ref_logits = _greedy(reference, prompts)
    our_tokens, our_logits = _greedy(ours, prompts)
    assert our_tokens == ref_tokens, f"{name}: batch tokens differ from the CPU EP's"
    _check_close(our_logits, ref_logits, f"{name}: prompt logits of the batch")


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _gqa_node_names(folder) -> tuple[set[str], set[str]]:
    """(GroupQueryAttention nodes FastAttentionEP claims, those it declines): it declines a
    window-sized KV cache (sliding_window_cache=1, Gemma-2's windowed layers) for now."""
    import onnx

    graph = onnx.load(os.path.join(folder, "model.onnx"), load_external_data=False).graph
    claimed, declined = set(), set()
    for n in graph.node:
        if n.op_type != "GroupQueryAttention":
            continue
        window_cache = any(a.name == "sliding_window_cache" and onnx.helper.get_attribute_value(a) != 0
                           for a in n.attribute)
        (declined if window_cache else claimed).add(n.name)
    return claimed, declined


def placement_from_profile(path) -> dict[str, set[str]]:
    """provider -> names of the nodes it ran, from an ORT profile (fused nodes under their own names)."""
    with open(path) as f:
        events = json.load(f)
    out: dict[str, set[str]] = {}
    for ev in events:
        provider = ev.get("args", {}).get("provider")
        if ev.get("cat") != "Node" or not provider:
            continue
        name = ev.get("name", "")
        for suffix in ("_kernel_time", "_fence_before", "_fence_after"):
            name = name[: -len(suffix)] if name.endswith(suffix) else name
        out.setdefault(provider, set()).add(name)
    return out


@needs_genai
@pytest.mark.parametrize("name", list(MODELS))
def test_gqa_nodes_run_on_fastattention_ep(built, name, tmp_path):
    """Every GroupQueryAttention node of genai's decoder session runs on FastAttentionEP (prefill
    and decode), except those it declines (a window-sized KV cache), which run on the CPU EP."""
    folder = built(name)
    model = _model(folder, enabled=True, profile_prefix=str(tmp_path / "genai"))
    _greedy(model, _prompts(model, PROMPTS[:1]), new_tokens=4)
    del model  # ORT writes the profile when genai's session goes
    import gc

    gc.collect()
    profiles = glob.glob(str(tmp_path / "genai*.json"))
    assert len(profiles) == 1, f"expected one ORT profile from genai's decoder session, found {profiles}"
    placement = placement_from_profile(profiles[0])
    gqa, declined = _gqa_node_names(folder)
    assert gqa, "the builder wrote no GroupQueryAttention node FastAttentionEP can claim"
    elsewhere = {p: sorted(gqa & names) for p, names in placement.items() if p != EP and gqa & names}
    assert not elsewhere, f"{name}: GroupQueryAttention nodes ran outside {EP}: {elsewhere}"
    assert declined <= placement.get("CPUExecutionProvider", set()), \
        f"{name}: declined nodes {sorted(declined)} did not run on the CPU EP"
    assert placement.get(EP), f"{name}: {EP} ran no node (providers in the profile: {sorted(placement)})"


@needs_genai
def test_enabled_folder_runs_after_register(built, tmp_path):
    """The user's path: `python -m fastattn_onnx genai enable DIR`, register(), og.Model(DIR)."""
    folder = str(tmp_path / "llama")
    shutil.copytree(built("llama"), folder)
    assert cli_main(["genai", "enable", folder]) == 0
    assert fa_genai.register(og) == EP and fa_genai.register(og) == EP  # idempotent
    assert fa_genai.register() == EP
    model = og.Model(folder)
    prompt = _prompts(model, PROMPTS[:1])
    tokens, _ = _greedy(model, prompt, new_tokens=8)
    ref, _ = _greedy(_model(folder, enabled=False), prompt, new_tokens=8)
    assert tokens == ref


@needs_genai
def test_bench_genai_quick(built):
    folder = built("llama")
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(fastattn_onnx.__file__)))  # this one
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH")) if p))
    done = subprocess.run([sys.executable, "-m", "fastattn_onnx", "bench", "genai", folder, "--quick"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "prefill" in out and "decode" in out and "peak RSS" in out and "tokens identical" in out, out
    with open(os.path.join(folder, "genai_config.json")) as f:  # the user's folder is left alone
        assert EP not in f.read()
