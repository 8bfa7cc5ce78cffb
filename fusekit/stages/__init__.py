"""The model as ``optimize``'s stages carry it, and the stages that read or rewrite it whole.

``fusekit.pipeline`` lists the stages in order. A fusion or a canonical rule rewrites one
match where the engine finds it; the stages here work on the model as a whole: ``opset``
chooses the opset the fused forms need and converts the model to it, ``pack`` runs the
token-wise ops on a batch's valid tokens alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import onnx
import onnx_graphsurgeon as gs

from ..engine import canonicalize as canonicalization, shapes
from ..engine.canonicalize import Canonical
from ..engine.pattern import Rule
from ..graphio import fill_shapes, import_graph
from ..modelio import default_opset, skeleton


@dataclass
class Imported:
    """A model as the stages work on it: its skeleton (the model without its weights: what the
    checker and the opset converter are handed) and its graph, with the weights of ``weights``
    attached."""

    skel: onnx.ModelProto
    graph: gs.Graph
    weights: onnx.ModelProto  # the model as read: the graph holds its weight protos, never copies
    target: str
    canonical: Canonical | None = None  # what canonicalization did to ``graph``, once it has run

    @property
    def opset(self) -> int:
        return default_opset(self.skel)


def import_model(model: onnx.ModelProto, target: str) -> Imported:
    """``model`` as the stages work on it: its skeleton, and its graph with the weights attached."""
    skel = skeleton(model)
    return Imported(skel, import_graph(skel, model), model, target)


def canonicalize(model: Imported, rules: list[Rule]):
    """Rewrite ``model``'s graph into its canonical form, once (``model.canonical`` says what
    that did): where the opset choice has canonicalized this graph already, to look at it,
    there is nothing left to do."""
    if model.canonical is None:
        model.canonical = canonicalization.run(model.graph, rules, model.target, model.opset, fold=shapes.fold)
        fill_shapes(model.graph)  # what a rule rewrote into standard ops, onnx's inference now reaches
