"""Applying fusions to a fixpoint, highest benefit first.

Within one sweep a fusion visits its anchors from the graph's outputs backwards, so
the largest form of a pattern (LayerNorm with its β) is seen before its smaller
forms (without β). Sweeps repeat until nothing fires; a fusion still firing after
``max_sweeps`` is a bug in that fusion, and the error names it.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import onnx_graphsurgeon as gs

from ..errors import FusekitError
from .matcher import Match, Miss, lowered, made_by, match_variant
from .pattern import Fusion, root_ops
from .rewrite import Fused, apply, compose


@dataclass
class PassResult:
    fused: list[Fused] = field(default_factory=list)
    misses: list[Miss] = field(default_factory=list)
    sweeps: int = 0
    functions: list = field(default_factory=list)  # model-local functions the fused nodes call
    notes: list[str] = field(default_factory=list)  # what rewrites asked the report to say


def _deeper(a: Miss | None, b: Miss) -> Miss:
    return b if a is None or (b.complete, b.matched) > (a.complete, a.matched) else a


def _reached(signature, miss: Miss) -> bool:
    """Whether a miss got as far as the fusion's signature: one of its entries, each an op
    type or several joined by "+" that must all have been reached."""
    ops = {*miss.ops, miss.at_op}
    return any(set(entry.split("+")) <= ops for entry in signature)


def _refused(m: Match, reason: str) -> Miss:
    size = len(m.nodes)
    return Miss(m.fusion.name, m.label, m.anchor.name, m.anchor.op, size, size, m.anchor.name, reason,
                [n.name for n in m.nodes], [n.op for n in m.nodes], m.anchor.op, complete=True)


def sweep(graph: gs.Graph, fusion: Fusion, target: str, opset: int, names: set[str],
          misses: dict[tuple[str, str], Miss], context: dict) -> list[Fused]:
    """One pass of ``fusion`` over the graph; fills ``misses`` with near-misses per anchor."""
    anchors = fusion.anchor_ops()
    gone: set[int] = set()
    fused: list[Fused] = []
    for node in reversed(list(graph.nodes)):
        if node.op not in anchors or id(node) in gone or made_by(context, fusion.name, node) or not node.outputs:
            continue
        closest = None
        for variant in fusion.variants:
            if node.op not in root_ops(variant.pattern):
                continue
            result = match_variant(graph, fusion, variant, node, context)
            if isinstance(result, Match) and fusion.min_opset.get(target, 0) > opset:
                # a candidate a later rewrite made, in a model whose opset was not raised for it
                result = _refused(result, f"its {target} form needs opset {fusion.min_opset[target]}; "
                                          f"the model has opset {opset}")
            if isinstance(result, Match):
                gone.update(id(n) for n in result.nodes)
                fused.append(apply(result, target, opset, names))
                misses.pop((fusion.name, node.name), None)
                break
            closest = _deeper(closest, result)
        else:
            # an inlined body is fusekit's output, not the model's: no near miss there
            if closest is not None and not lowered(context, node) and _reached(fusion.signature, closest):
                misses[(fusion.name, node.name)] = closest
    if gone:
        graph.nodes = [n for n in graph.nodes if id(n) not in gone]
    return fused


def run(graph: gs.Graph, fusions: list[Fusion], target: str, opset: int, max_sweeps: int = 8) -> PassResult:
    fusions = sorted(fusions, key=lambda f: -f.benefit)
    names = {n.name for n in graph.nodes} | set(graph.tensors())
    misses: dict[tuple[str, str], Miss] = {}
    context = {"target": target, "opset": opset}
    result = PassResult()
    for result.sweeps in range(1, max_sweeps + 1):
        fired = Counter()
        for fusion in fusions:
            new = sweep(graph, fusion, target, opset, names, misses, context)
            if new:
                fired[fusion.name] += len(new)
                result.fused += new
                graph.toposort()  # the next fusion visits producers before consumers, new nodes included
        graph.cleanup(remove_unused_graph_inputs=False).toposort()
        if not fired:
            break
    else:
        raise FusekitError(f"fusions still firing after {max_sweeps} sweeps: {', '.join(fired)}")
    result.fused = compose(result.fused)
    result.functions = list(context.get("functions", {}).values())
    result.notes = [text.format(count=n) for text, n in context.get("notes", {}).items()]
    result.misses = closest_misses(misses.values(), {n.name for n in graph.nodes})
    return result


def closest_misses(misses, alive: set[str]) -> list[Miss]:
    """One miss per candidate region: where attempts overlap, the one that matched most.

    Every Add of a LayerNorm chain anchors an attempt, and an erf GELU is also a
    failed tanh GELU; only the closest attempt says something useful.
    """
    kept, claimed = [], set()
    for m in sorted(misses, key=lambda m: (-m.matched, -m.complete, -m.matched / max(m.total, 1))):
        if m.anchor in alive and not claimed & set(m.nodes):
            kept.append(m)
            claimed |= set(m.nodes)
    return kept
