"""Applying fusions to a fixpoint, in the order their dependencies give.

A fusion that rewrites what another one builds says so (``Fusion.after``): BiasGelu
folds a bias into the Gelu that the Gelu fusion made. ``order`` sorts the fusions so
each runs after those it names, keeping list order where nothing is said. Within one sweep a fusion visits its anchors from the graph's outputs backwards, so
the largest form of a pattern (LayerNorm with its β) is seen before its smaller
forms (without β). Sweeps repeat until nothing fires; a fusion still firing after
``max_sweeps`` is a bug in that fusion, and the error names it. The canonicalization stage
(``canonicalize``) runs its rules through the same ``fixpoint`` first; ``run`` carries its
state, records and near misses on.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import onnx_graphsurgeon as gs

from ..errors import FusekitError
from . import shapes
from .graph import cleanup, toposort
from .matcher import Match, Miss, closest, match_variant
from .pattern import Fusion, root_ops
from .rewrite import Fused, apply, compose
from .state import IdentitySet, RunState


@dataclass
class PassResult:
    fused: list[Fused] = field(default_factory=list)
    misses: list[Miss] = field(default_factory=list)
    functions: list = field(default_factory=list)  # model-local functions the fused nodes call
    notes: list[str] = field(default_factory=list)  # what rewrites asked the report to say


def _reached(signature, miss: Miss) -> bool:
    """Whether a miss got as far as the fusion's signature: one of its entries, each an op
    type or several joined by "+" that must all have been reached."""
    ops = {*miss.ops, miss.at_op}
    return any(set(entry.split("+")) <= ops for entry in signature)


def _refused(m: Match, reason: str) -> Miss:
    size = len(m.nodes)
    return Miss(fusion=m.fusion.name, variant=m.label, anchor=m.anchor.name, anchor_op=m.anchor.op,
                matched=size, total=size, at=m.anchor.name, reason=reason, nodes=[n.name for n in m.nodes],
                ops=[n.op for n in m.nodes], at_op=m.anchor.op, complete=True)


def order(fusions: list[Fusion]) -> list[Fusion]:
    """``fusions`` sorted so each runs after the ones it names in ``after``; list order breaks ties.

    A name that is not among ``fusions`` (disabled, or not for this target) is no constraint.
    """
    present = {f.name for f in fusions}
    waiting = {f.name: {a for a in f.after if a in present} for f in fusions}
    ordered: list[Fusion] = []
    while len(ordered) < len(fusions):
        ready = next((f for f in fusions if f.name in waiting and not waiting[f.name]), None)
        if ready is None:
            raise ValueError(f"fusions wait on each other in a cycle: {', '.join(sorted(waiting))}")
        ordered.append(ready)
        del waiting[ready.name]
        for deps in waiting.values():
            deps.discard(ready.name)
    return ordered


def sweep(graph: gs.Graph, fusion: Fusion, state: RunState, misses: dict[tuple[str, str], Miss]) -> list[Fused]:
    """One pass of ``fusion`` over the graph; fills ``misses`` with near-misses per anchor."""
    anchors = fusion.anchor_ops()
    gone: IdentitySet[gs.Node] = IdentitySet()
    fused: list[Fused] = []
    for node in reversed(list(graph.nodes)):
        if node.op not in anchors or node in gone or state.made_by(fusion.name, node) or not node.outputs:
            continue
        nearest = None
        for variant in fusion.variants:
            if node.op not in root_ops(variant.pattern):
                continue
            result = match_variant(graph, fusion, variant, node, state)
            if isinstance(result, Match) and fusion.min_opset.get(state.target, 0) > state.opset:
                # a candidate a later rewrite made, in a model whose opset was not raised for it
                result = _refused(result, f"its {state.target} form needs opset {fusion.min_opset[state.target]}; "
                                          f"the model has opset {state.opset}")
            if isinstance(result, Match):
                gone.update(result.nodes)
                fused.append(apply(result))
                misses.pop((fusion.name, node.name), None)
                break
            nearest = closest(nearest, result)
        else:
            # an inlined body is fusekit's output, not the model's: no near miss there
            reported = fusion.near_miss or (lambda miss: _reached(fusion.signature, miss))
            if nearest is not None and node not in state.lowered and reported(nearest):
                misses[(fusion.name, node.name)] = nearest
    if len(gone):
        graph.nodes = [n for n in graph.nodes if n not in gone]
    return fused


def fixpoint(graph: gs.Graph, fusions: list[Fusion], state: RunState, misses: dict[tuple[str, str], Miss],
             max_sweeps: int = 8, before_sweep=None) -> list[Fused]:
    """Sweep ``fusions`` (in ``order``) until none fires; ``before_sweep(graph, state)`` may
    rewrite first in each sweep, keeping the node order, and returns its records (the shape
    facts canonicalization folds). A graph the fusions left as it was is not cleaned up here."""
    with shapes.deep_walks():
        return _fixpoint(graph, order(fusions), state, misses, max_sweeps, before_sweep)


def _fixpoint(graph, fusions, state, misses, max_sweeps, before_sweep) -> list[Fused]:
    made: list[Fused] = []
    for _ in range(max_sweeps):
        fired = Counter()
        folded = before_sweep(graph, state) if before_sweep is not None else []  # keeps the node order
        made += folded
        for fusion in fusions:
            new = sweep(graph, fusion, state, misses)
            if new:
                fired[fusion.name] += len(new)
                made += new
                toposort(graph)  # the next fusion visits producers before consumers, new nodes included
        if not fired:  # the fusions have seen what was folded in this sweep: nothing new to fold
            return made
        toposort(cleanup(graph))
    raise FusekitError(f"fusions still firing after {max_sweeps} sweeps: {', '.join(fired)}")


def new_state(graph: gs.Graph, target: str, opset: int) -> RunState:
    return RunState(target=target, opset=opset, names={n.name for n in graph.nodes} | set(graph.tensors()))


def run(graph: gs.Graph, fusions: list[Fusion], target: str, opset: int, max_sweeps: int = 8,
        canonical=None) -> PassResult:
    """Apply ``fusions`` to a fixpoint; ``canonical`` is what canonicalization did to this graph
    first (``canonicalize.Canonical``): its state and records carry on, so provenance composes."""
    state = canonical.state if canonical is not None else new_state(graph, target, opset)
    misses: dict[tuple[str, str], Miss] = dict(canonical.misses) if canonical is not None else {}
    result = PassResult()
    made = fixpoint(graph, fusions, state, misses, max_sweeps)
    toposort(cleanup(graph))  # what canonicalization left dead goes too
    result.fused = compose((canonical.records if canonical is not None else []) + made)
    alive = {n.name for n in graph.nodes}
    # a rule's node a fusion absorbed as a constant (a folded shape) is gone: nothing left to record
    result.fused = [f for f in result.fused if not f.canonical or not f.node or f.node in alive]
    result.functions = list(state.functions.values())
    result.notes = [text.format(count=n) for text, n in state.notes.items()]
    result.misses = closest_misses(misses.values(), alive)
    return result


def closest_misses(misses, alive: set[str]) -> list[Miss]:
    """One miss per candidate region: where attempts overlap, the one that matched most.

    Every Add of a LayerNorm chain anchors an attempt, and an erf GELU is also a
    failed tanh GELU; only the closest attempt says something useful.
    """
    kept, claimed = [], set()
    for m in sorted(misses, key=Miss.closeness, reverse=True):
        if m.anchor in alive and not claimed & set(m.nodes):
            kept.append(m)
            claimed |= set(m.nodes)
    return kept
