"""Choosing the opset: the form a fusion writes for a target may need a newer opset than the model's.

ONNX's LayerNormalization is opset 17 and its Attention opset 23, so a model exported at opset
14 gets them on ``--target onnx`` only once converted. The model is converted (onnx's version
converter, on its skeleton) to the newest opset that a fusion it holds needs; a fusion it does
not hold raises nothing. Where the conversion fails, those fusions are kept unfused, with a note.

Each fusion that needs a newer opset is looked for in the graph as read; where one is not
found there, the graph is canonicalized and all are looked for in its canonical form (tf2onnx's
LayerNorm is one only once canonicalized). The choice comes before the canonicalization stage
because a conversion replaces the graph: the converted model is imported afresh and
canonicalized then. So a graph is canonicalized here only where it must be looked at in
canonical form, and that work is kept (``stages.canonicalize``) where the opset stays as it is.
"""
from __future__ import annotations

import gc

import onnx
import onnx_graphsurgeon as gs
from onnx import version_converter

from ..engine.matcher import Match, match_variant
from ..engine.pattern import Fusion, Rule, root_ops
from ..engine.state import RunState
from ..graphio import import_graph
from ..report import Report
from . import Imported, canonicalize


def choose_opset(model: Imported, fusions: list[Fusion], rules: list[Rule], report: Report) -> list[Fusion]:
    """Convert ``model`` to the opset the fused forms it holds need; returns the fusions that may
    run on it: all of them, or, where the conversion failed, all but those."""
    target, current = model.target, model.opset
    needing = [f for f in fusions if f.min_opset.get(target, 0) > current]
    wanted = [f for f in needing if _has_match(model.graph, f, target, current)]
    if len(wanted) < len(needing):
        canonicalize(model, rules)
        wanted = [f for f in needing if _has_match(model.graph, f, target, current)]
    if not wanted:
        return fusions
    opset = max(f.min_opset[target] for f in wanted)
    names = ", ".join(f.name for f in wanted)
    try:
        converted = version_converter.convert_version(model.skel, opset)
        converted.ir_version = max(converted.ir_version, onnx.helper.find_min_ir_version_for(
            [onnx.helper.make_opsetid("", opset)]))
        onnx.checker.check_model(converted)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        report.notes.append(f"kept {names} unfused: their {target} form needs opset {opset}, "
                            f"and converting from opset {current} failed ({first})")
        unfused = {f.name for f in wanted}
        return [f for f in fusions if f.name not in unfused]
    report.notes.append(f"raised the opset {current} → {opset} for the {target} form of {names}")
    if model.canonical is not None:
        model.graph = model.canonical = None
        gc.collect()  # the first graph's node/tensor cycles hold what its matches loaded until collected
    model.skel, model.graph = converted, import_graph(converted, model.weights)
    return fusions


def _has_match(graph: gs.Graph, fusion: Fusion, target: str, opset: int) -> bool:
    anchors = fusion.anchor_ops()
    state = RunState(target=target, opset=opset)
    return any(isinstance(match_variant(graph, fusion, v, n, state), Match)
               for n in graph.nodes if n.op in anchors
               for v in fusion.variants if n.op in root_ops(v.pattern))
