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
from collections.abc import Iterator

import onnx_ir as ir
import onnx_ir.passes.common as ir_passes

from ..constants import OP_DOMAIN, OP_SINCE_VERSION, OP_TYPE
from . import analysis, inputs, microsoft_attention, microsoft_mha, onnx_attention, sdpa_decomposed
from .emit import contract_violation, emit, report_row
from .loading import ConvertError, check_paths, load_model, save_model, source_files
from .probe import ProbeError
from .report import ConvertReport, LeftAlone
from .rules import find_matches
from .verify import VerifyError, VerifyResult, choose_tolerance, fused_session, lowest_precision
from .verify import verify as verify_models

__all__ = ["convert", "convert_model", "ConvertResult", "ConvertError", "VerifyError",
           "default_output_path", "sample_inputs", "verify_models", "fused_session"]

# The fused op's models stay loadable by older runtimes (ORT 1.31 accepts up to 13).
MAX_IR_VERSION = 10

# Decomposed attention first, then the attention ops already in the graph: the order of the
# report's rows and of the fastattn_<i> node names.
RULE_PASSES = (sdpa_decomposed.RULES, {**onnx_attention.RULES, **microsoft_mha.RULES,
                                        **microsoft_attention.RULES})


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


def _float_type(value: ir.Value | None) -> str | None:
    """numpy's name of the value's float element type ("float16"), or None."""
    dtype = value.dtype if value is not None else None
    return dtype.numpy().name if dtype is not None and dtype.is_floating_point() else None


def _op_type(node: ir.Node) -> str | None:
    """The fused node's element type: its query's (key, value and output share it, by the op's
    contract; whichever the exporter typed)."""
    return next(filter(None, map(_float_type, [*node.inputs[:3], node.outputs[0]])), None)


def _computed_from(values: list[ir.Value]) -> Iterator[ir.Value]:
    """Every value computed from these (within the graph they are in)."""
    seen, pending = {id(v) for v in values}, list(values)
    while pending:
        for use in pending.pop().uses():
            for output in use.node.outputs:
                if id(output) not in seen:
                    seen.add(id(output))
                    pending.append(output)
                    yield output


def _compute_type(fused_nodes: list[ir.Node], replaced_nodes: list[ir.Node]) -> str | None:
    """The lowest float precision of what the conversion changed: the fused nodes, the
    values of the nodes they replaced, and everything computed from the fused outputs. The rest
    of the graph computes the same in both models."""
    changed = [v for node in replaced_nodes for v in node.outputs]
    changed += _computed_from([v for node in fused_nodes for v in node.outputs])
    types = [*map(_op_type, fused_nodes), *map(_float_type, changed)]
    return lowest_precision(filter(None, types))


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
    report.already_fused = sum(1 for n in graph if (n.domain, n.op_type) == (OP_DOMAIN, OP_TYPE))
    report.left += [LeftAlone(name, reason) for name, reason in skipped]
    _progress(progress, f"{len(matches)} attention subgraph(s) matched; probing sizes and masks")
    try:
        rejected = analysis.analyse(model, matches)
    except ProbeError as error:
        raise ConvertError(f"cannot probe the original model: {error}") from None
    rejected_ids = {id(found) for found, _ in rejected}
    report.left += [LeftAlone(found.name, reason) for found, reason in rejected]
    nodes_before, fused_nodes = list(graph), []
    for found in matches:
        if id(found) not in rejected_ids:
            fusion = found.fusion()
            broken = contract_violation(fusion)
            if broken:  # the op would refuse this node: keep the original
                report.left.append(LeftAlone(found.name, broken))
                continue
            node = emit(graph, fusion, prefix=f"fastattn_{len(report.fused)}")
            report.fused.append(report_row(fusion, node))
            report.fused[-1].compute_type = _op_type(node)
            fused_nodes.append(node)
    if report.fused:
        ir_passes.RemoveUnusedNodesPass()(model)
        model.opset_imports.setdefault(OP_DOMAIN, OP_SINCE_VERSION)
        if model.ir_version is None or model.ir_version > MAX_IR_VERSION:
            model.ir_version = MAX_IR_VERSION
    alive = {id(node) for node in graph}
    replaced = [node for node in nodes_before if id(node) not in alive]
    report.removed_nodes = len(nodes_before) - len(alive)
    report.compute_type = _compute_type(fused_nodes, replaced)
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
            verify_sizes: dict | None = None, tolerance: float | None = None,
            allow_unchanged: bool = False) -> ConvertResult:
    """Convert a model file (or an onnx.ModelProto / onnx_ir.Model) and write the result.

    With a path, the output defaults to `<name>.fa.onnx` beside it; the input is never
    overwritten. The output appears only once conversion (and verification, if on) succeeded.
    An onnx_ir.Model passed in is rewritten in place (result.model is that object).

    Nothing fused: nothing is written (neither model nor report) and the result says so
    (result.fused == 0, result.output_path None; report.nothing_fused() gives the reasons);
    allow_unchanged=True writes the unchanged copy anyway. Not an exception: finding nothing to
    fuse is an answer about the model, and callers read it from the report.
    tolerance: verification's relative tolerance for float outputs; by default the one of the
    precision the fused attention computes in (see verify.py).
    """
    started = time.perf_counter()
    choose_tolerance(None, tolerance)  # a bad value fails before anything is read
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
        report.input_path = input_path
        if not report.fused and not allow_unchanged:  # a copy of the input helps nobody
            _progress(progress, f"{report.nothing_fused().splitlines()[0]}; nothing written")
            return ConvertResult(model, report, None, None)
        report.output_path = output_path
        result = ConvertResult(model, report, output_path, None)
        if output_path is None and not verify and not report_path:
            return result
        target = output_path or os.path.join(scratch, "converted.onnx")
        _progress(progress, f"writing {target}")
        pending = save_model(model, target, atomic=True, commit=False, sources=sources)
        try:
            if verify and report.fused:
                _progress(progress, "verifying in ONNX Runtime")
                result.verify = verify_models(
                    original_path, pending.path, verify_sizes or _verify_sizes(report),
                    tolerance=choose_tolerance(report.compute_type, tolerance))
                report.verify = {"summary": result.verify.summary(),
                                 "tolerance": result.verify.tolerance,
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
