"""The optimize pipeline: load, raise the opset where a fused form needs it, fuse, verify."""
from __future__ import annotations

import gc
import time

import onnx
import onnx_graphsurgeon as gs
from onnx import version_converter

from . import patterns, provenance

from .compat import input_warnings, pass_through_notes, prepare
from .engine import canonicalize, passes, shapes
from .errors import FusekitError
from .engine.matcher import Match, match_variant
from .graphio import export, import_graph
from .modelio import default_opset, read, skeleton
from .engine.pattern import Fusion, Rule, root_ops
from .engine.rewrite import compose
from .engine.state import RunState
from .report import Report
from .stages import pack as packing
from .verify import verify as verify_models

TARGETS = ("ort", "onnx", "openvino")


def fusions_for(target: str, disable=()) -> list[Fusion]:
    unknown = set(disable) - set(patterns.BY_NAME)
    if unknown:
        raise FusekitError(f"unknown fusion(s) {', '.join(sorted(unknown))}; known: {', '.join(patterns.BY_NAME)}")
    return [f for f in patterns.ALL if target in f.targets and f.name not in disable]


def rules_for(target: str, disable=()) -> list[Rule]:
    """The canonicalization rules that run (``fusions_for`` has checked ``disable``)."""
    return [r for r in patterns.RULES if target in r.targets and r.name not in disable]


def _canonicalize(graph: gs.Graph, rules: list[Rule], target: str, opset: int) -> canonicalize.Canonical:
    return canonicalize.run(graph, rules, target, opset, fold=shapes.fold)


def _has_match(graph: gs.Graph, fusion: Fusion, target: str, opset: int) -> bool:
    anchors = fusion.anchor_ops()
    state = RunState(target=target, opset=opset)
    return any(isinstance(match_variant(graph, fusion, v, n, state), Match)
               for n in graph.nodes if n.op in anchors
               for v in fusion.variants if n.op in root_ops(v.pattern))


def _raise_opset(skel: onnx.ModelProto, graph: gs.Graph, weights: onnx.ModelProto, fusions: list[Fusion],
                 rules: list[Rule], target: str, report: Report):
    """Convert the model to the opset the fused forms need, or drop the fusions that need it.

    Works on the skeleton. A fusion that needs a newer opset is looked for in ``graph`` as
    read and, where it is not found there, in its canonical form (tf2onnx's LayerNorm is one
    only after canonicalization); the graph is canonicalized once more after a conversion.
    Returns the skeleton (converted or not), the canonical graph to fuse with what
    canonicalization did to it, and the fusions that may run on it.
    """
    current = default_opset(skel)
    canonical = None
    needing = {f.name: f.min_opset.get(target, 0) for f in fusions if f.min_opset.get(target, 0) > current}
    wanted = {name: v for name, v in needing.items() if _has_match(graph, patterns.BY_NAME[name], target, current)}
    if len(wanted) < len(needing):
        canonical = _canonicalize(graph, rules, target, current)
        wanted = {name: v for name, v in needing.items()
                  if _has_match(graph, patterns.BY_NAME[name], target, current)}
    if not wanted:
        return skel, graph, canonical or _canonicalize(graph, rules, target, current), fusions
    opset = max(wanted.values())
    try:
        converted = version_converter.convert_version(skel, opset)
        converted.ir_version = max(converted.ir_version, onnx.helper.find_min_ir_version_for(
            [onnx.helper.make_opsetid("", opset)]))
        onnx.checker.check_model(converted)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        report.notes.append(f"kept {', '.join(wanted)} unfused: their {target} form needs opset {opset}, "
                            f"and converting from opset {current} failed ({first})")
        return (skel, graph, canonical or _canonicalize(graph, rules, target, current),
                [f for f in fusions if f.name not in wanted])
    report.notes.append(f"raised the opset {current} → {opset} for the {target} form of {', '.join(wanted)}")
    if canonical is not None:
        del graph, canonical
        gc.collect()  # the first graph's node/tensor cycles hold what its matches loaded until collected
    graph = import_graph(converted, weights)  # the converted model's own canonical form
    return converted, graph, _canonicalize(graph, rules, target, opset), fusions


def _pack(graph: gs.Graph, target: str, opset: int, report: Report):
    state = RunState(target=target, opset=opset, names={n.name for n in graph.nodes} | set(graph.tensors()))
    result = packing.run(graph, state, patterns.BY_NAME["Attention"])
    report.misses += result.misses
    if result.misses:
        report.notes.append(f"not packed: {result.misses[0].reason}")
        return
    report.fused = compose(report.fused + result.fused)
    report.packed = {"mask": result.mask, "outputs": result.outputs}
    derived = [name for name, kind in result.outputs.items() if kind == "derived"]
    report.notes.append(f"packed: the token-wise ops run on the valid tokens of '{result.mask}' only; padded positions "
                        "of " + ", ".join(n for n, k in result.outputs.items() if k == "tokens") + " are 0"
                        + (f"; {', '.join(derived)} read the unpacked hidden states, so a value read from a padded "
                           "position differs" if derived else ""))


def optimize(model_or_path, target: str = "ort", verify: bool = True, disable=(), trials: int = 4,
             seed: int = 0, shapes=None, rtol=None, atol=None, in_place: bool = False,
             pack: bool = False) -> tuple[onnx.ModelProto, Report]:
    """Fuse ``model_or_path`` for ``target`` and, unless ``verify=False``, prove it equivalent.

    ``in_place=True`` turns a given ModelProto into the fused model instead of copying
    its weights (half the memory for large models); the original is then gone, so
    verification needs a path to the original.

    Returns the fused model and a :class:`Report`; ``report.verification.ok`` says
    whether it proved equivalent. Raises FusekitError on bad input.

    ``pack=True`` then runs the token-wise part of the model on the batch's valid tokens
    alone (``fusekit.stages.pack``), or says in a near miss why that would not be exact.
    """
    if target not in TARGETS:
        raise FusekitError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    start = time.perf_counter()
    if isinstance(model_or_path, onnx.ModelProto):  # read as a file is: see modelio.read
        opset = default_opset(model_or_path)
        original, notes = prepare(model_or_path, "the model", copy=not in_place)
    else:
        loaded = read(model_or_path)
        original, notes, opset = loaded.model, loaded.notes, loaded.opset
    report = Report(target, nodes_before=len(original.graph.node), opset_before=opset, notes=notes)
    report.warnings = input_warnings(original)
    fusions, rules = fusions_for(target, disable), rules_for(target, disable)
    skel = skeleton(original)
    graph = import_graph(skel, original)
    skel, graph, canonical, fusions = _raise_opset(skel, graph, original, fusions, rules, target, report)
    result = passes.run(graph, fusions, target, default_opset(skel), canonical=canonical)
    del canonical
    gc.collect()  # weights the checks loaded, held in the matches' cycles: gone before the export copies
    report.fused = [f for f in result.fused if not f.canonical]
    report.rewrites = [f for f in result.fused if f.canonical]
    report.misses = result.misses
    report.notes += result.notes
    if pack:
        _pack(graph, target, default_opset(skel), report)
    if in_place and verify and isinstance(model_or_path, onnx.ModelProto):
        raise FusekitError("in_place=True leaves no original to verify against: pass a path, or verify=False")
    metadata = provenance.metadata(original, report.fused + report.rewrites, target, report.packed)
    fused = export(graph, original, metadata, in_place or original is not model_or_path, result.functions)
    del graph, result
    gc.collect()  # the graph's node/tensor cycles hold the replaced weights until collected
    report.nodes_after, report.opset_after = len(fused.graph.node), default_opset(fused)
    report.notes += pass_through_notes(fused, target)
    if verify:
        t = time.perf_counter()
        # the model as given: verification covers what reading it changed
        report.verification = verify_models(model_or_path, fused, trials=trials, seed=seed, shapes=shapes,
                                            rtol=rtol, atol=atol)
        report.verify_seconds = time.perf_counter() - t
    report.seconds = time.perf_counter() - start
    return fused, report


__all__ = ["optimize", "TARGETS"]
