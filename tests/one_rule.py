"""One rule, one graph: apply a single canonicalization rule or fusion to a small graph.

    result = apply("NoOpCast", model)
    assert result.made == {"Cast": -1}            # what the rule added (+) and removed (−), by op
    assert result.rewrote == 1 and not result.misses
    result.assert_equivalent()                    # both models in ONNX Runtime, on meaningful inputs

    miss = apply("NoOpCast", near_miss_model).miss("NoOpCast")
    assert "is a graph output" in miss.reason     # the near miss it records, and why

Nothing else runs: no other rule, no other fusion, no opset conversion, no pipeline. A fusion
whose form needs a newer opset than the graph's is refused up front (build the graph at that
opset), so a test can never pass because the rule silently did nothing. ``fold=True`` folds the
static shape facts first, as canonicalization does before every sweep, for the rules that read a
folded shape (a head size computed by ``Shape``).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import onnx
import onnx_graphsurgeon as gs

import fusekit
from fusekit import patterns
from fusekit.engine import canonicalize, passes, shapes
from fusekit.engine.graph import default_names
from fusekit.engine.matcher import Miss
from fusekit.engine.pattern import Rule
from fusekit.engine.rewrite import Fused
from fusekit.modelio import default_opset


@dataclass
class Applied:
    """What one rule did to one graph."""

    name: str
    original: onnx.ModelProto
    model: onnx.ModelProto  # the graph after the rule, as a model
    records: list[Fused]  # what the rule built and what each replaced (``ShapeFact`` folds included)
    misses: list[Miss]  # the closest near miss per candidate region

    @property
    def rewrote(self) -> int:
        """How often the rule itself fired (shape facts it needed folded do not count)."""
        return sum(1 for r in self.records if self.name in (r.rules if r.canonical else r.steps))

    @property
    def made(self) -> Counter:
        """The change in op counts: positive for the ops it added, negative for those it removed."""
        before = Counter(n.op_type for n in self.original.graph.node)
        after = Counter(n.op_type for n in self.model.graph.node)
        after.subtract(before)
        return Counter({op: k for op, k in after.items() if k})

    def ops(self) -> set[str]:
        return {n.op_type for n in self.model.graph.node}

    def miss(self, name: str | None = None) -> Miss:
        """The one near miss recorded by ``name`` (this rule by default)."""
        found = [m for m in self.misses if m.fusion == (name or self.name)]
        assert len(found) == 1, f"expected one near miss of {name or self.name}, got {found}"
        return found[0]

    def assert_equivalent(self, **tolerance):
        """Both models on the same meaningful random inputs (``fusekit.verify``); ``atol=0, rtol=0``
        asks for bit-for-bit equality."""
        result = fusekit.verify(self.original, self.model, **tolerance)
        assert result.ok, result.summary()
        return result


def apply(name: str, model: onnx.ModelProto, target: str = "ort", fold: bool = False) -> Applied:
    """Apply the rule or fusion ``name`` alone to ``model`` (left unchanged) for ``target``."""
    rule = patterns.BY_NAME[name]
    opset = default_opset(model)
    needs = rule.min_opset.get(target, 0)
    assert opset >= needs, f"{name}'s {target} form needs opset {needs}: build the graph at opset {needs}, not {opset}"
    assert target in rule.targets, f"{name} does not run for target {target}"
    graph = gs.import_onnx(shapes.infer(model))
    for node, node_name in zip(graph.nodes, default_names([n.op for n in graph.nodes], [n.name for n in graph.nodes])):
        node.name = node_name
    is_rule = isinstance(rule, Rule)
    canonical = canonicalize.run(graph, [rule] if is_rule else [], target, opset, fold=shapes.fold if fold else None)
    result = passes.run(graph, [] if is_rule else [rule], target, opset, canonical=canonical)
    rewritten = gs.export_onnx(graph)
    rewritten.ir_version = model.ir_version
    rewritten.functions.extend(result.functions)
    onnx.checker.check_model(rewritten)
    return Applied(name, model, rewritten, result.fused, result.misses)
