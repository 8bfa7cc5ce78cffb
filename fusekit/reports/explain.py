"""`fusekit explain MODEL`: every place a fusion could apply, whether it fused, and why not.

fusekit fuses the model in memory (nothing is written, nothing verified) and lists
each candidate: every fused node, and for every region a fusion recognised but
refused, the closest miss — the variant, how far it matched, the node where it
stopped and the reason. Candidates are grouped by encoder layer (see
``fusekit.reports.layers``), so a fusion that fired in 11 of 12 layers reads as
``Attention: 11 of 12 layers fused; layer 7: …``.

A region that looks like a fusion's but where no variant even starts — a mean that
centres its input (a LayerNorm chain), a Softmax (attention), an Erf or Tanh (GELU) left
in the fused graph with no near miss around it — is listed as ``considered``: "considered,
no variant starts here", so that no candidate is silently missing.

What canonicalization rewrote first is counted per rule (``canonical``) and named on the
fused candidate that took it (``rules``); a rule's near miss (``fusion`` is the rule's
name) is listed with the others. A node fused by an earlier fusekit run (its provenance is in the model) is listed
as ``earlier``. A composed node counts for each fusion in its steps: a BiasGelu
made from a Gelu counts as a Gelu and as a BiasGelu.

JSON (``--json``), schema ``fusekit.explain/1``::

    {"schema": "fusekit.explain/1", "model": str, "target": str,
     "layers": {"count": int, "method": "names" | "positions" | "none"},
     "filter": {"fusion": str | null, "layer": int | null},
     "fusions": [{"fusion": str, "fused": int, "missed": int, "layers_fused": [int],
                  "layers_missed": [int], "layers_without_candidate": [int],
                  "outside": {"fused": int, "missed": int}, "summary": str}],
     "candidates": [{"fusion": str, "status": "fused" | "missed" | "considered" | "earlier", "layer": int | null,
                     "node": str, "op": str, "variant": str, "steps": [str], "rules": [str],
                     "replaced": [{"name": str, "op": str}], "constants": {name: value},
                     "matched": int | null, "total": int | null, "at": str | null, "at_op": str | null,
                     "reason": str | null, "complete": bool, "nodes": [{"name": str, "op": str}]}],
     "canonical": {rule: int}, "notes": [str]}

For a fused candidate ``node``/``op`` are the fused node; ``replaced`` the original
nodes it stands for. For a missed one they are the anchor the match started from,
``nodes`` the nodes it matched, ``at`` the node where it stopped and ``complete``
whether the whole shape matched before a check refused it. A layer is "fused" for
a fusion when it has a fused candidate and no miss of that fusion.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import onnx

from ..branches import view
from .. import patterns, provenance
from ..stages import pack
from ..engine.matcher import Miss
from ..errors import FusekitError
from ..report import Report
from .dataflow import Dataflow, load_to_read
from .layers import Layers, assign

SCHEMA = "fusekit.explain/1"
FUSIONS = [*patterns.BY_NAME, pack.FUSION]  # the fusions in report order; packing comes last


@dataclass
class Candidate:
    fusion: str
    status: str  # "fused", "missed" or "earlier"
    node: str
    op: str
    layer: int | None
    variant: str
    steps: list[str] = field(default_factory=list)
    replaced: list[tuple[str, str]] = field(default_factory=list)
    constants: dict = field(default_factory=dict)
    miss: Miss | None = None
    rules: list[str] = field(default_factory=list)  # canonicalization rules that rewrote part of it first

    def counts_for(self, fusion: str) -> bool:
        return fusion == self.fusion or fusion in self.steps

    def describe(self) -> str:
        if self.status == "considered":
            return f"considered, no variant starts here: {self.op} '{self.node}' ({self.variant})"
        if self.miss is None:
            made = "→".join(self.steps) if len(self.steps) > 1 else self.fusion
            first = ", ".join(f"{r} {n}" if n > 1 else r for r, n in Counter(self.rules).items())
            first = f" (canonicalized first: {first})" if first else ""
            return f"{made}/{self.variant}: {self.op} '{self.node}' replaced {len(self.replaced)} nodes{first}"
        m = self.miss
        where = f"stopped at '{m.at}'" if m.at else "stopped"
        if not m.total:  # a whole-graph pass (--pack): no pattern nodes to count
            return f"{where} ({m.variant}): {m.reason}"
        return f"matched {m.matched}/{m.total} nodes ({m.variant}), {where}: {m.reason}"

    def to_dict(self) -> dict:
        m = self.miss
        return {"fusion": self.fusion, "status": self.status, "layer": self.layer, "node": self.node, "op": self.op,
                "variant": self.variant, "steps": self.steps, "rules": self.rules,
                "replaced": [{"name": n, "op": o} for n, o in self.replaced], "constants": self.constants,
                "matched": m and m.matched, "total": m and m.total, "at": m and m.at, "at_op": m and m.at_op,
                "reason": m.reason if m else ("considered, no variant starts here" if self.status == "considered" else None),
                "complete": bool(m and m.complete),
                "nodes": [{"name": n, "op": o} for n, o in zip(m.nodes, m.ops)] if m else []}


@dataclass
class Explanation:
    model: str
    target: str
    layers: Layers
    candidates: list[Candidate]
    original: Dataflow  # the input graph, where replaced nodes are drawn from
    fused: Dataflow  # the fused graph, where fused nodes and near misses live
    fusion: str | None = None
    layer: int | None = None
    notes: list[str] = field(default_factory=list)
    canonical: Counter = field(default_factory=Counter)  # canonicalization rewrites, per rule

    def shown(self) -> list[Candidate]:
        """The candidates the filters select."""
        return [c for c in self.candidates if (self.fusion is None or c.counts_for(self.fusion))
                and (self.layer is None or c.layer == self.layer)]

    def fusions(self) -> list[str]:
        seen = {f for c in self.candidates for f in [c.fusion, *c.steps]}
        names = [name for name in FUSIONS if name in seen]
        return [n for n in names if self.fusion in (None, n)]

    def per_fusion(self, fusion: str) -> dict:
        fused = [c for c in self.candidates if c.status in ("fused", "earlier") and c.counts_for(fusion)]
        missed = [c for c in self.candidates if c.status in ("missed", "considered") and c.fusion == fusion]
        layers = range(self.layers.count)
        with_fused = {c.layer for c in fused}
        with_miss = {c.layer for c in missed}
        inside = (with_fused | with_miss) - {None}
        entry = {
            "fusion": fusion, "fused": len(fused), "missed": len(missed),
            "layers_fused": [k for k in layers if k in with_fused and k not in with_miss],
            "layers_missed": sorted(with_miss - {None}),
            "layers_without_candidate": [k for k in layers if inside and k not in with_fused | with_miss],
            "outside": {"fused": sum(c.layer is None for c in fused), "missed": sum(c.layer is None for c in missed)},
        }
        entry["summary"] = self._line(entry, missed, bool(inside))
        return entry

    def _line(self, entry: dict, missed: list[Candidate], inside: bool) -> str:
        parts = []
        if inside:
            parts.append(f"{len(entry['layers_fused'])} of {self.layers.count} layers fused")
            by_layer = defaultdict(list)  # grouped once: a scan per layer grows with the square of the depth
            for c in missed:
                by_layer[c.layer].append(c)
            for k in entry["layers_missed"]:
                parts += [f"layer {k}: {c.describe()}" for c in by_layer[k]]
            parts += [f"layer {k}: no candidate" for k in entry["layers_without_candidate"]]
        outside = entry["outside"]
        if outside["fused"] or outside["missed"]:
            where = "outside the layers" if self.layers.count else "in the model"
            missed_too = f", {outside['missed']} missed" if outside["missed"] else ""
            parts.append(f"{where} {outside['fused']} fused{missed_too}")
            parts += [c.describe() for c in missed if c.layer is None]
        return f"{entry['fusion']}: " + "; ".join(parts)

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "model": self.model, "target": self.target,
                "layers": {"count": self.layers.count, "method": self.layers.method},
                "filter": {"fusion": self.fusion, "layer": self.layer},
                "fusions": [self.per_fusion(f) for f in self.fusions()],
                "candidates": [c.to_dict() for c in self.shown()],
                "canonical": dict(self.canonical), "notes": self.notes}

    def summary(self) -> str:
        counts = Counter(f for c in self.candidates if c.status in ("fused", "earlier") for f in (c.steps or [c.fusion]))
        misses = sum(c.status == "missed" for c in self.candidates)
        fused = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "nothing"
        lines = [f"{self.model}: {self.layers.describe()}; target {self.target}",
                 f"fused: {fused}; near misses: {misses}"]
        if self.canonical:
            lines.append("canonicalized: " + ", ".join(f"{k} {v}" for k, v in sorted(self.canonical.items())))
        lines += [self.per_fusion(f)["summary"] for f in self.fusions()]
        if self.layers.count and self.fusions():
            lines += ["per layer (✓ fused, ✗ near miss):"] + self._table()
        shown = self.shown()
        listed = shown if (self.fusion or self.layer is not None) else [c for c in shown if c.status in ("missed", "considered")]
        if listed:
            lines.append("candidates:" if (self.fusion or self.layer is not None) else "near misses:")
            for c in listed:
                where = "outside" if c.layer is None else f"layer {c.layer}"
                lines.append(f"  {where:<8} {c.status:<7} {c.fusion}: {c.describe()}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def _table(self) -> list[str]:
        fusions = self.fusions()
        rows = [["layer", *fusions]]
        keys = [k for k in range(self.layers.count) if self.layer in (None, k)]
        if self.layer is None:
            keys.append(None)
        by_layer = defaultdict(list)
        for c in self.candidates:
            by_layer[c.layer].append(c)
        for k in keys:
            cells = []
            here = by_layer[k]
            for f in fusions:
                mark = "✓" * sum(c.status in ("fused", "earlier") and c.counts_for(f) for c in here) \
                    + "✗" * sum(c.status in ("missed", "considered") and c.fusion == f for c in here)
                cells.append(mark or "·")
            rows.append(["outside" if k is None else str(k), *cells])
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def explain(model_or_path, target: str = "ort", fusion: str | None = None, layer: int | None = None,
            pack: bool = False, *, optimize: Callable[..., tuple[onnx.ModelProto, Report]]) -> Explanation:
    """Fuse in memory with ``optimize`` (the pipeline's, which ``fusekit.explain`` passes in: a
    report never imports the pipeline) and explain every candidate; raises FusekitError on bad
    input or filters."""
    if fusion is not None and fusion not in FUSIONS:
        raise FusekitError(f"unknown fusion {fusion!r}; known: {', '.join(FUSIONS)}")
    original, notes = load_to_read(model_or_path)
    fused, report = optimize(original, target=target, verify=False, pack=pack)
    fused = view(fused, copy=False)  # the branch form: its packed branch, which holds every fused node
    report.notes[:0] = notes
    flow = Dataflow(fused.graph)
    layers = assign(flow)
    if layer is not None and not 0 <= layer < layers.count:
        raise FusekitError(f"no layer {layer}: the model has {layers.describe()}")
    where = layers.by_name()
    position = {flow.names[i]: k for k, i in enumerate(flow.order)}
    candidates = _earlier(original, flow, where)
    candidates += [Candidate(f.fusion, "fused", f.node, f.op, where.get(f.node), f.variant, f.steps, f.replaced,
                             f.constants, rules=f.rules) for f in report.fused]
    candidates += [Candidate(m.fusion, "missed", m.anchor, m.anchor_op, where.get(m.anchor), m.variant, miss=m)
                   for m in report.misses]
    candidates += _considered(flow, report.misses, target, where)
    candidates.sort(key=lambda c: position.get(c.node, len(position)))  # in graph order
    label = "<model>" if isinstance(model_or_path, onnx.ModelProto) else str(Path(model_or_path))
    return Explanation(label, target, layers, candidates, Dataflow(original.graph), flow, fusion, layer,
                       list(report.notes), report.canonical)


# What marks a region as a fusion's, whatever the exporter wrapped around it
SIGNS = {"LayerNorm": "a mean centring its input", "Attention": "a Softmax feeding a MatMul",
         "Gelu": "1 + erf", "FastGelu": "1 + tanh"}


def _signs(flow: Dataflow, i: int) -> list[str]:
    """The fusions node ``i`` of the fused graph looks like a piece of."""
    node, users = flow.nodes[i], [flow.nodes[u] for u in flow.users(i)]
    if node.op_type in ("ReduceMean", "GlobalAveragePool"):
        # x − mean(x): the centring of a LayerNorm (PyTorch's Sub, TF's SquaredDifference)
        return ["LayerNorm"] if any(u.op_type == "Sub" and node.input[0] in u.input for u in users) else []
    if node.op_type == "Softmax":
        return ["Attention"] if _feeds_product(flow, i) else []
    if node.op_type in ("Erf", "Tanh"):
        # a constant added to it: the 1 + erf / 1 + tanh of a GELU, not a pooler's Tanh
        plus_constant = any(u.op_type == "Add" and any(flow.is_constant(v) for v in u.input) for u in users)
        return [{"Erf": "Gelu", "Tanh": "FastGelu"}[node.op_type]] if plus_constant else []
    return []


def _feeds_product(flow: Dataflow, start: int, hops: int = 5) -> bool:
    """Whether node ``start`` reaches a MatMul or Einsum within ``hops`` nodes (the
    probabilities times V, through tf2onnx's Unsqueeze/Transpose/Reshape too)."""
    frontier = {start}
    for _ in range(hops):
        frontier = {u for i in frontier for u in flow.users(i)}
        if any(flow.nodes[i].op_type in ("MatMul", "Einsum") for i in frontier):
            return True
    return False


def _considered(flow: Dataflow, misses, target: str, where: dict) -> list[Candidate]:
    """The nodes left in the fused graph that look like a fusion's, where no near miss of it reached."""
    reached = {(m.fusion, n) for m in misses for n in [*m.nodes, m.at, m.anchor] if n}
    found = []
    for i in flow.order:
        name = flow.names[i]
        for fusion in _signs(flow, i):
            if target in patterns.BY_NAME[fusion].targets and (fusion, name) not in reached:
                found.append(Candidate(fusion, "considered", name, flow.nodes[i].op_type, where.get(name),
                                       SIGNS[fusion]))
    return found


def _earlier(original: onnx.ModelProto, flow: Dataflow, where: dict) -> list[Candidate]:
    """Nodes an earlier fusekit run fused, from the provenance the input carries."""
    return [Candidate(r["fusion"], "earlier", name, r["op"], where.get(name), r["variant"], r.get("steps", []),
                      [(e["name"], e["op"]) for e in r["replaced"]], r.get("constants", {}))
            for name, r in provenance.records(original).items() if name in flow.index]


__all__ = ["SCHEMA", "Candidate", "Explanation", "explain"]
