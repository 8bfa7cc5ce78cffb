"""The optimize pipeline: the stages a model goes through, in order, from the file read to the fused model verified."""
from __future__ import annotations

import gc
import time
from typing import NamedTuple

import onnx
import onnx_graphsurgeon as gs

from . import patterns, provenance
from .compat import input_warnings, pass_through_notes, prepare
from .engine import passes, shapes
from .engine.pattern import Fusion, Rule
from .engine.rewrite import compose
from .engine.state import RunState
from .errors import FusekitError
from .graphio import export
from .modelio import default_opset, read
from .report import Report
from .stages import Imported, canonicalize, import_model
from .stages.opset import choose_opset
from .targets import TARGETS


class Unpacked(NamedTuple):
    """The fused graph before packing and its records: the no-padding branch of the branch form."""

    graph: gs.Graph
    fused: list


def fusions_for(target: str, disable=()) -> list[Fusion]:
    unknown = set(disable) - set(patterns.BY_NAME)
    if unknown:
        raise FusekitError(f"unknown fusion(s) {', '.join(sorted(unknown))}; known: {', '.join(patterns.BY_NAME)}")
    return [f for f in patterns.ALL if target in f.targets and f.name not in disable]


def rules_for(target: str, disable=()) -> list[Rule]:
    """The canonicalization rules that run (``fusions_for`` has checked ``disable``)."""
    return [r for r in patterns.RULES if target in r.targets and r.name not in disable]


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
    alone (``fusekit.stages.pack``), or says in a near miss why that would not be exact; the
    model is written in the branch form (``fusekit.branches``): a batch without padding runs the
    graph as fused, unpacked.

    The stages, one call each: read the model; import it as a graph (its weights attached,
    never copied); choose the opset the fused forms need and convert the model to it;
    canonicalize; fuse; pack (``pack=True``); export the fused model with its provenance;
    verify it against the model as given.

    The opset is chosen before canonicalizing because a conversion replaces the graph, and
    the canonical form of the graph it replaces would be work thrown away. Yet the choice may
    have to look at the canonical form (tf2onnx's LayerNorm is one only once canonicalized):
    it canonicalizes the graph as read only where a fusion that needs a newer opset is not
    found as read (``fusekit.stages.opset``). Canonicalization runs once per graph, so the
    canonicalization stage keeps that work where no conversion followed, and canonicalizes
    the converted graph where one did: no graph is canonicalized twice.
    """
    if target not in TARGETS:
        raise FusekitError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    if in_place and verify and isinstance(model_or_path, onnx.ModelProto):
        raise FusekitError("in_place=True leaves no original to verify against: pass a path, or verify=False")
    start = time.perf_counter()
    original, report = _read(model_or_path, target, in_place)
    fusions, rules = fusions_for(target, disable), rules_for(target, disable)
    model = import_model(original, target)
    fusions = choose_opset(model, fusions, rules, report)
    canonicalize(model, rules)
    functions = _fuse(model, fusions, report)
    unpacked = _pack(model, report) if pack else None
    fused = _export(model, functions, report, in_place=in_place or original is not model_or_path, unpacked=unpacked)
    del unpacked
    del model
    gc.collect()  # the graph's node/tensor cycles hold the replaced weights until collected
    if verify:
        _verify(model_or_path, fused, report, trials=trials, seed=seed, shapes=shapes, rtol=rtol, atol=atol)
    report.seconds = time.perf_counter() - start
    return fused, report


def _read(model_or_path, target: str, in_place: bool) -> tuple[onnx.ModelProto, Report]:
    """The model in the form fusekit reads (``modelio.read``; a given ModelProto is brought to
    it on a copy unless ``in_place``), and the report, started with what reading it said."""
    if isinstance(model_or_path, onnx.ModelProto):  # read as a file is: see modelio.read
        opset = default_opset(model_or_path)
        original, notes = prepare(model_or_path, "the model", copy=not in_place)
    else:
        loaded = read(model_or_path)
        original, notes, opset = loaded.model, loaded.notes, loaded.opset
    report = Report(target, nodes_before=len(original.graph.node), opset_before=opset, notes=notes)
    report.warnings = input_warnings(original)
    return original, report


def _fuse(model: Imported, fusions: list[Fusion], report: Report) -> list[onnx.FunctionProto]:
    """Run ``fusions`` to a fixpoint on the canonical graph; returns the model-local functions
    the fused nodes call."""
    result = passes.run(model.graph, fusions, model.target, model.opset, canonical=model.canonical)
    model.canonical = None
    gc.collect()  # weights the checks loaded, held in the matches' cycles: gone before the export copies
    report.fused = [f for f in result.fused if not f.canonical]
    report.rewrites = [f for f in result.fused if f.canonical]
    report.misses = result.misses
    report.notes += result.notes
    return result.functions


def _pack(model: Imported, report: Report) -> Unpacked | None:
    """Pack ``model``'s graph (``fusekit.stages.pack``); returns the graph as it was, for the
    target's branch form (``fusekit.branches``), or None: not packed, or packed alone."""
    from .stages import pack as packing  # only with --pack
    graph = model.graph
    forms = packing.FORMS.get(model.target, packing.Forms())
    unpacked = Unpacked(graph.copy(), list(report.fused)) if forms.branch else None
    state = RunState(target=model.target, opset=model.opset, names={n.name for n in graph.nodes} | set(graph.tensors()))
    with shapes.deep_walks():
        result = packing.run(graph, state, patterns.BY_NAME["Attention"], patterns.BY_NAME["RotaryAttention"])
    report.misses += result.misses
    if result.misses:
        report.notes.append(f"not packed: {result.misses[0].reason}")
        return None
    report.fused = compose(report.fused + result.fused)
    report.packed = {"mask": result.mask, "outputs": result.outputs}
    if unpacked is not None:
        from .branches import BRANCH
        report.packed["branch"] = BRANCH
    derived = [name for name, kind in result.outputs.items() if kind == "derived"]
    report.notes.append(f"packed: the token-wise ops run on the valid tokens of '{result.mask}' only; padded positions "
                        "of " + ", ".join(n for n, k in result.outputs.items() if k == "tokens") + " are 0"
                        + (f"; {', '.join(derived)} read the unpacked hidden states, so a value read from a padded "
                           "position differs" if derived else ""))
    return unpacked


def _export(model: Imported, functions: list[onnx.FunctionProto], report: Report, in_place: bool,
            unpacked: Unpacked | None = None) -> onnx.ModelProto:
    """The fused model, its provenance in its metadata; ``in_place`` rebuilds the model as read.
    With ``unpacked``, the branch form: the records of both branches (a node in both is one record)."""
    records = report.fused + report.rewrites
    if unpacked is not None:
        names = {f.node for f in records}
        records = [f for f in unpacked.fused if f.node not in names] + records
    options = {key: value for f in records if (fusion := patterns.BY_NAME.get(f.fusion)) is not None
               for key, value in fusion.runtime_options.get(model.target, {}).items()}
    metadata = provenance.metadata(model.weights, records, model.target, report.packed, options)
    fused = export(model.graph, model.weights, metadata, in_place, functions,
                   unpacked=unpacked.graph if unpacked is not None else None,
                   mask=report.packed["mask"] if unpacked is not None else None)
    report.nodes_after, report.opset_after = len(fused.graph.node), default_opset(fused)
    if unpacked is not None:  # the branch form: the nodes of the graph that runs a padded batch
        from .branches import BRANCH, branch_node
        size = {a.name: len(a.g.node) for a in branch_node(fused).attribute}
        sizes = size["then_branch"], size["else_branch"]
        report.nodes_after = sizes[0]
        report.notes.append(f"packed as a branch: If '{BRANCH}' runs the packed graph ({sizes[0]} nodes) when "
                            f"'{report.packed['mask']}' has padding, and the unpacked one ({sizes[1]} nodes) when it "
                            "has none; both read the same weights")
    report.notes += pass_through_notes(fused, model.target)
    return fused


def _verify(model_or_path, fused: onnx.ModelProto, report: Report, **settings):
    from .verify import verify as verify_models  # ONNX Runtime: only when verifying
    t = time.perf_counter()
    # the model as given: verification covers what reading it changed
    report.verification = verify_models(model_or_path, fused, **settings)
    report.verify_seconds = time.perf_counter() - t


__all__ = ["optimize", "TARGETS"]
