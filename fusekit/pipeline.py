"""The optimize pipeline: load, raise the opset where a fused form needs it, fuse, verify."""
from __future__ import annotations

import json
import time

import onnx
import onnx_graphsurgeon as gs
from onnx import version_converter

import patterns

from . import passes
from .errors import FusekitError
from .matcher import Match, match_variant
from .modelio import check, default_opset, load
from .pattern import Fusion, _root_ops
from .report import Report
from .verify import verify as verify_models

TARGETS = ("ort", "onnx", "openvino")
PROVENANCE_KEY = "fusekit.provenance"


def fusions_for(target: str, disable=()) -> list[Fusion]:
    unknown = set(disable) - set(patterns.BY_NAME)
    if unknown:
        raise FusekitError(f"unknown fusion(s) {', '.join(sorted(unknown))}; known: {', '.join(patterns.BY_NAME)}")
    return [f for f in patterns.ALL if target in f.targets and f.name not in disable]


def _import(model: onnx.ModelProto) -> gs.Graph:
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape facts only sharpen checks; a fusion that needs one refuses without it
        pass
    graph = gs.import_onnx(model)
    names = {n.name for n in graph.nodes}
    for i, node in enumerate(graph.nodes):  # misses and provenance need a name for every node
        if not node.name:
            node.name = next(f"{node.op}_{j}" for j in range(i, i + len(names) + 2) if f"{node.op}_{j}" not in names)
            names.add(node.name)
    return graph


def _has_match(graph: gs.Graph, fusion: Fusion) -> bool:
    anchors = fusion.anchor_ops()
    return any(isinstance(match_variant(graph, fusion, v, n), Match)
               for n in graph.nodes if n.op in anchors
               for v in fusion.variants if n.op in _root_ops(v.pattern))


def _raise_opset(model: onnx.ModelProto, graph: gs.Graph, fusions: list[Fusion], target: str, report: Report):
    """Convert the model to the opset the fused forms need, or drop the fusions that need it."""
    current = default_opset(model)
    wanted = {f.name: f.min_opset.get(target, 0) for f in fusions if f.min_opset.get(target, 0) > current}
    wanted = {name: v for name, v in wanted.items() if _has_match(graph, patterns.BY_NAME[name])}
    if not wanted:
        return model, graph, fusions
    opset = max(wanted.values())
    try:
        converted = version_converter.convert_version(model, opset)
        converted.ir_version = max(converted.ir_version, onnx.helper.find_min_ir_version_for(
            [onnx.helper.make_opsetid("", opset)]))
        onnx.checker.check_model(converted)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        report.notes.append(f"kept {', '.join(wanted)} unfused: their {target} form needs opset {opset}, "
                            f"and converting from opset {current} failed ({first})")
        return model, graph, [f for f in fusions if f.name not in wanted]
    report.notes.append(f"raised the opset {current} → {opset} for the {target} form of {', '.join(wanted)}")
    return converted, _import(converted), fusions


def _export(graph: gs.Graph, original: onnx.ModelProto, report: Report, target: str) -> onnx.ModelProto:
    model = gs.export_onnx(graph)
    model.ir_version = max(model.ir_version, original.ir_version)
    for field_name in ("producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(model, field_name, getattr(original, field_name))
    props = {p.key: p.value for p in original.metadata_props if p.key != PROVENANCE_KEY}
    known = json.loads(next((p.value for p in original.metadata_props if p.key == PROVENANCE_KEY), "{}"))
    known.update({f.node: f.to_dict() for f in report.fused})
    props.update({PROVENANCE_KEY: json.dumps(known), "fusekit.target": target})
    onnx.helper.set_model_props(model, props)
    return model


def optimize(model_or_path, target: str = "ort", verify: bool = True, disable=(), trials: int = 4,
             seed: int = 0, shapes=None, rtol=None, atol=None) -> tuple[onnx.ModelProto, Report]:
    """Fuse ``model_or_path`` for ``target`` and, unless ``verify=False``, prove it equivalent.

    Returns the fused model and a :class:`Report`. Raises FusekitError on bad input,
    and when verification finds a difference (the report is attached as ``.report``).
    """
    if target not in TARGETS:
        raise FusekitError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    start = time.perf_counter()
    original = model_or_path if isinstance(model_or_path, onnx.ModelProto) else load(model_or_path)
    report = Report(target, nodes_before=len(original.graph.node), opset_before=default_opset(original))
    fusions = fusions_for(target, disable)
    graph = _import(original)
    model, graph, fusions = _raise_opset(original, graph, fusions, target, report)
    result = passes.run(graph, fusions, target, default_opset(model))
    report.fused, report.misses = result.fused, result.misses
    fused = _export(graph, model, report, target)
    try:
        check(fused, "the fused model")
    except FusekitError as e:
        raise FusekitError(f"internal error, please report: {e}") from None
    report.nodes_after, report.opset_after = len(fused.graph.node), default_opset(fused)
    if verify:
        t = time.perf_counter()
        reference = model_or_path if not isinstance(model_or_path, onnx.ModelProto) else original
        report.verification = verify_models(reference, fused, trials=trials, seed=seed, shapes=shapes,
                                            rtol=rtol, atol=atol)
        report.verify_seconds = time.perf_counter() - t
    report.seconds = time.perf_counter() - start
    return fused, report


__all__ = ["optimize", "TARGETS"]
