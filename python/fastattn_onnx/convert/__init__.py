"""Rewrite the attention of exported ONNX models into com.fastattention::FastAttention.

    from fastattn_onnx.convert import convert
    result = convert("model.onnx")          # writes model.fa.onnx, verified in ONNX Runtime
    print(result.report.summary())

Everything the rewrite needs (head counts, head size, scale, what each mask means) comes from
the file itself: graph constants, and the model's own values on a few probe inputs.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
import time

import onnx_ir as ir
import onnx_ir.passes.common as ir_passes

from ..constants import OP_DOMAIN, OP_SINCE_VERSION
from . import analysis, inputs, microsoft_mha, onnx_attention, sdpa_decomposed
from .emit import contract_violation, emit, report_row
from .loading import ConvertError, check_paths, load_model, save_model, source_files
from .probe import ProbeError
from .report import ConvertReport, LeftAlone
from .rules import find_matches
from .verify import VerifyError, VerifyResult, fused_session, verify as verify_models

__all__ = ["convert", "convert_model", "ConvertResult", "ConvertError", "VerifyError",
           "default_output_path", "sample_inputs", "verify_models", "fused_session"]

# The fused op's models stay loadable by older runtimes (ORT 1.31 accepts up to 13).
MAX_IR_VERSION = 10

# Decomposed attention first, then the attention ops already in the graph: the order of the
# report's rows and of the fastattn_<i> node names.
RULE_PASSES = (sdpa_decomposed.RULES, {**onnx_attention.RULES, **microsoft_mha.RULES})


@dataclasses.dataclass
class ConvertResult:
    model: ir.Model
    report: ConvertReport
    output_path: str | None
    verify: VerifyResult | None

    @property
    def fused(self) -> int:
        return len(self.report.fused)

    @property
    def found(self) -> int:
        return self.report.found


def sample_inputs(model_path: str, batch: int = 1, seq: int = 128, padded: bool = False,
                  seed: int = 0) -> dict:
    """Inputs for running a model side by side: token ids within its vocabulary, an
    attention_mask (left/right padding in rows 1 and 2 if padded), consistent position ids."""
    plans = inputs.plan_inputs(ir.load(model_path))
    return inputs.make_inputs(plans, {"batch": batch, "seq": seq, "total": seq, "past": 0},
                              padded=padded, seed=seed)


def default_output_path(input_path: str) -> str:
    root, ext = os.path.splitext(input_path)
    return f"{root}.fa{ext or '.onnx'}"


def _progress(enabled: bool, message: str) -> None:
    if enabled:
        print(f"[convert] {message}", flush=True)


def convert_model(model: ir.Model, progress: bool = False) -> ConvertReport:
    """Rewrite `model` in place; returns what was found, fused and left alone.

    Everything is matched and probed on the original graph first, then replaced.
    """
    report = ConvertReport()
    graph = model.graph
    matches, skipped = [], []
    for rules in RULE_PASSES:
        pass_matches, pass_skipped = find_matches(graph, rules)
        matches += pass_matches
        skipped += pass_skipped
    report.found = len(matches) + len(skipped)
    report.left += [LeftAlone(name, reason) for name, reason in skipped]
    _progress(progress, f"{len(matches)} attention subgraph(s) matched; probing sizes and masks")
    try:
        rejected = analysis.analyse(model, matches)
    except ProbeError as error:
        raise ConvertError(f"cannot probe the original model: {error}") from None
    rejected_ids = {id(found) for found, _ in rejected}
    report.left += [LeftAlone(found.name, reason) for found, reason in rejected]
    nodes_before = sum(1 for _ in graph)
    for found in matches:
        if id(found) not in rejected_ids:
            fusion = found.fusion()
            broken = contract_violation(fusion)
            if broken:  # the op would refuse this node: keep the original
                report.left.append(LeftAlone(found.name, broken))
                continue
            node = emit(graph, fusion, prefix=f"fastattn_{len(report.fused)}")
            report.fused.append(report_row(fusion, node))
    if report.fused:
        ir_passes.RemoveUnusedNodesPass()(model)
        model.opset_imports.setdefault(OP_DOMAIN, OP_SINCE_VERSION)
        if model.ir_version is None or model.ir_version > MAX_IR_VERSION:
            model.ir_version = MAX_IR_VERSION
    report.removed_nodes = nodes_before - sum(1 for _ in graph)
    return report


def _verify_sizes(report: ConvertReport) -> dict | None:
    """Long enough that a fused sliding window is really exercised (and not a multiple of 16)."""
    window = max((f.window_size for f in report.fused), default=-1)
    if window <= 0:
        return None
    seq = window + 7
    return {"seq": seq + 1 if seq % 16 == 0 else seq}


def convert(model_or_path, output_path: str | None = None, verify: bool = True,
            report_path: str | None = None, progress: bool = False,
            verify_sizes: dict | None = None) -> ConvertResult:
    """Convert a model file (or an onnx.ModelProto / onnx_ir.Model) and write the result.

    With a path, the output defaults to `<name>.fa.onnx` beside it; the input is never
    overwritten. The output appears only once conversion (and verification, if on) succeeded.
    An onnx_ir.Model passed in is rewritten in place (result.model is that object).
    """
    started = time.perf_counter()
    input_path = model_or_path if isinstance(model_or_path, (str, os.PathLike)) else None
    if input_path is not None:
        input_path = os.fspath(input_path)
        output_path = output_path or default_output_path(input_path)
    # Before anything is read: the input is a regular file, each output is a regular file (or
    # absent) in a writable directory and no name of the input (symlinks, hard links resolved).
    check_paths(input_path, output_path, report_path)
    _progress(progress, f"loading {input_path or 'model'}")
    model = load_model(model_or_path)
    sources = source_files(input_path, model)  # the input and its external data: never written
    with tempfile.TemporaryDirectory() as scratch:
        original_path = input_path
        if original_path is None and verify:  # verification runs from files: keep the original
            original_path = os.path.join(scratch, "original.onnx")
            save_model(model, original_path)
        report = convert_model(model, progress=progress)  # in place (an onnx_ir.Model input too)
        report.input_path, report.output_path = input_path, output_path
        result = ConvertResult(model, report, output_path, None)
        if output_path is None and not verify and not report_path:
            return result
        target = output_path or os.path.join(scratch, "converted.onnx")
        _progress(progress, f"writing {target}")
        pending = save_model(model, target, atomic=True, commit=False, sources=sources)
        try:
            if verify and report.fused:
                _progress(progress, "verifying in ONNX Runtime")
                result.verify = verify_models(original_path, pending.path,
                                              verify_sizes or _verify_sizes(report))
                report.verify = {"summary": result.verify.summary(),
                                 "outputs": [dataclasses.asdict(c) for c in result.verify.outputs],
                                 "providers": result.verify.converted_providers}
                if not result.verify.ok:
                    raise VerifyError(result.verify)
            if report_path:  # written before the model is moved into place, or nothing is
                pending.add_json(report_path, report.to_dict(), sources)
            pending.commit()
        finally:
            pending.discard()
    _progress(progress, f"done in {time.perf_counter() - started:.1f} s")
    return result
