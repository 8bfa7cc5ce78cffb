"""Matching one pattern variant at one anchor node, recording why it failed.

The matcher starts at the anchor's output and walks producers, trying alternatives
and both input orders of commutative ops by backtracking. Every dead end is noted
with how many nodes had matched; the deepest one becomes the :class:`Miss` that
``explain`` shows. A complete match must also keep its inner values to itself: none
may be a graph output or feed a node outside the match.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import onnx_graphsurgeon as gs

from .graph import ATTRIBUTE_INPUTS, attr, const_value, describe_origin, is_graph_output, producer
from .pattern import Const, Fusion, Op, Or, Pattern, Var, Variant, variables
from .state import IdentitySet, RunState


@dataclass(kw_only=True)
class Miss:
    """Why one fusion variant did not fuse at one anchor."""

    fusion: str
    variant: str
    anchor: str
    anchor_op: str
    matched: int  # how many graph nodes the variant had matched when it stopped
    total: int  # how many it has
    at: str | None  # the graph node where it stopped
    reason: str
    nodes: list[str] = field(default_factory=list)  # the graph nodes it did match
    ops: list[str] = field(default_factory=list)  # and their op types
    at_op: str | None = None  # the op of the node where it stopped, when that node was the op expected
    complete: bool = False  # the whole shape matched; a check or an outside use refused it

    def closeness(self) -> tuple:
        """How close this miss came to fusing; the closest of competing misses is the one shown.

        A refusal after the whole shape matched beats any structural dead end, then more
        nodes matched, then a larger share of the pattern.
        """
        return self.complete, self.matched, self.matched / max(self.total, 1)

    @property
    def progress(self) -> str:
        """How far the match got, "matched M/T nodes, "; nothing for a whole-graph pass (``--pack``),
        which has no pattern whose nodes could be counted."""
        return f"matched {self.matched}/{self.total} nodes, " if self.total else ""

    def __str__(self):
        where = f" at '{self.at}'" if self.at else ""
        return f"{self.fusion}/{self.variant} at '{self.anchor}': {self.progress}stopped{where}: {self.reason}"


def closest(a: Miss | None, b: Miss | None) -> Miss | None:
    """The closer of two misses (the first on a tie)."""
    if a is None or (b is not None and b.closeness() > a.closeness()):
        return b
    return a


@dataclass
class Match:
    """A complete, accepted match: what check and rewrite read."""

    fusion: Fusion
    variant: Variant
    anchor: gs.Node
    values: dict[str, gs.Tensor]
    consts: dict[str, np.ndarray]
    labels: dict[str, str]  # tag -> the label of the alternative it took
    pieces: frozenset[str]  # the tags of the optional pieces present
    nodes: list[gs.Node]
    named: dict[str, gs.Node]
    graph: gs.Graph
    state: RunState  # shared by every match of one run: target, opset, caches
    proven: Any = None  # what check returned on accepting it (its facts, or None); apply hands it to rewrite

    def __getitem__(self, name: str) -> gs.Tensor:
        return self.values[name]

    def const(self, name: str) -> np.ndarray:
        return self.consts[name]

    def node(self, name: str) -> gs.Node:
        return self.named[name]

    def has(self, tag: str) -> bool:
        """Whether the optional piece ``tag`` (see ``maybe``) is present; a tag no variant of the
        fusion gives an optional piece is an error."""
        if not any(tag in v.optional for v in self.fusion.variants):
            raise LookupError(f"{self.fusion.name} has no optional piece tagged '{tag}'")
        return tag in self.pieces

    def took(self, label: str, tag: str | None = None) -> bool:
        """Whether the match took the alternative labelled ``label`` (of ``tag``, where several
        tags share the label). A label no variant of the fusion has is an error, so a check never
        asks for an alternative that was renamed or reordered away."""
        owner = self.variant.choice(label, tag) if label else None
        if owner is None and not (label and any(v.choice(label, tag) for v in self.fusion.variants)):
            under = f" under the tag '{tag}'" if tag else ""
            raise LookupError(f"{self.fusion.name} has no alternative labelled '{label}'{under}")
        return owner is not None and self.labels.get(owner) == label

    @property
    def label(self) -> str:
        """The variant and the labels of the alternatives it took, e.g. ``pytorch[reciprocal]``."""
        shown = [v for _, v in sorted(self.labels.items()) if v]
        return self.variant.name + (f"[{','.join(shown)}]" if shown else "")


@dataclass(frozen=True)
class _Bindings:
    """What one search has bound so far, down one path of its backtracking; extending it makes a new one."""

    values: dict = field(default_factory=dict)
    consts: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)  # tag -> index of the alternative taken
    labels: dict = field(default_factory=dict)  # tag -> its label
    nodes: dict = field(default_factory=dict)  # pattern Op (hashed by identity) -> graph node
    named: dict = field(default_factory=dict)

    def extend(self, **changes) -> "_Bindings":
        merged = {k: {**getattr(self, k), **v} for k, v in changes.items()}
        return _Bindings(**{**self.__dict__, **merged})

    def graph_nodes(self) -> list[gs.Node]:
        """The graph nodes matched so far, each once (one graph node may match several pattern Ops)."""
        return list(IdentitySet(self.nodes.values()))


class _Search:
    """One backtracking search for one variant at one anchor, remembering its best dead end."""

    def __init__(self, graph: gs.Graph):
        self.graph = graph
        self.best: tuple[_Bindings, gs.Node | None, str, bool] | None = None
        self.best_key = (-1, -1, -1)

    def fail(self, s: _Bindings, node: gs.Node | None, reason: str, reached: bool = True, complete: bool = False):
        """Note a dead end at ``node``; the closest is kept, by the first two terms of
        ``Miss.closeness`` (complete, then nodes matched), then by whether ``node`` was the op
        expected (an attribute it failed says more than an optional Cast it lacks); the first
        dead end on a tie.

        ``reached`` is False when node is not even the op expected; ``complete`` marks a
        refusal after the whole shape matched (a check, an outside use), which is closer
        than any structural dead end.
        """
        key = (int(complete), len(s.graph_nodes()), int(reached))
        if key > self.best_key:
            self.best, self.best_key = (s, node, reason, reached), key

    def match(self, p: Pattern, t: gs.Tensor, s: _Bindings) -> Iterator[_Bindings]:
        if isinstance(p, Op):
            yield from self._op(p, t, s)
        elif isinstance(p, Var):
            yield from self._var(p, t, s)
        elif isinstance(p, Const):
            yield from self._const(p, t, s)
        elif isinstance(p, Or):
            for index, alternative in enumerate(p.alternatives):
                if not p.tag:
                    yield from self.match(alternative, t, s)
                elif s.tags.get(p.tag, index) == index:  # a tag used twice takes the same branch everywhere
                    yield from self.match(alternative, t, s.extend(tags={p.tag: index}, labels={p.tag: p.labels[index]}))
        else:
            raise TypeError(f"not a pattern: {p!r}")

    def _var(self, p: Var, t: gs.Tensor, s: _Bindings):
        bound = s.values.get(p.name)
        if bound is None:
            yield s.extend(values={p.name: t})
        elif bound is t:
            yield s
        else:
            self.fail(s, producer(t), f"{p.label or p.name} must be one value, but is both '{bound.name}' and '{t.name}'")

    def _const(self, p: Const, t: gs.Tensor, s: _Bindings):
        value = const_value(t)
        if value is None:
            self.fail(s, producer(t), f"{p.describe()} is not a constant: it is {describe_origin(t)}")
        elif not p.accepts(value):
            shown = np.array2string(value.ravel()[:4], precision=6) if value.size else "empty"
            stored = p.stored(value.dtype)
            held = f", or {value.dtype}'s nearest {stored[0]:.8g}" if stored.size == 1 else \
                f", or {value.dtype}'s {' or '.join(f'{v:.8g}' for v in stored)}" if stored.size else ""
            self.fail(s, producer(t), f"{p.describe()} is {shown}, expected {p.value:.8g} (rtol {p.rtol:g}{held})")
        elif p.name is None:
            yield s
        elif p.name in s.values and s.values[p.name] is not t and not np.array_equal(s.consts[p.name], value):
            self.fail(s, producer(t), f"{p.describe()} takes two different values")
        else:
            yield s.extend(values={p.name: t}, consts={p.name: value})

    def _op(self, p: Op, t: gs.Tensor, s: _Bindings):
        node = producer(t)
        if node is None or node.op != p.op_type or (node.domain or "") != p.domain:
            found = describe_origin(t) if node is None else f"{node.op} '{node.name}'"
            self.fail(s, node, f"expected {p.op_type}, found {found}", reached=False)
            return
        earlier = s.nodes.get(p)
        if earlier is not None:
            if earlier is node:
                yield s
            else:
                self.fail(s, node, f"{p.op_type} should be one node but is '{earlier.name}' and '{node.name}'")
            return
        if node.outputs[0] is not t:
            self.fail(s, node, f"uses a secondary output of {node.op} '{node.name}'")
            return
        reason = self._attrs_reason(p, node)
        if reason:
            self.fail(s, node, reason)
            return
        s = s.extend(nodes={p: node}, named={p.bind: node} if p.bind else {})
        inputs = list(node.inputs[: len(p.inputs)])
        orders = [inputs]
        if p.commutative and inputs[0] is not inputs[1]:
            orders.append(inputs[::-1])
        for order in orders:
            yield from self._all(p.inputs, order, s)

    def _attrs_reason(self, p: Op, node: gs.Node) -> str | None:
        attribute_slots = {i for (o, _), i in ATTRIBUTE_INPUTS.items() if o == node.op}
        extra = [i for i in range(len(p.inputs), len(node.inputs))
                 if node.inputs[i].name and i not in attribute_slots]
        if len(node.inputs) < len(p.inputs) or extra:
            return f"{node.op} '{node.name}' has {len(node.inputs)} inputs, expected {len(p.inputs)}"
        for name, want in p.attrs.items():
            try:
                have = attr(node, name)
            except LookupError as e:
                return str(e)
            if callable(want):
                reason = want(have, node)
                if reason:
                    return f"{node.op} '{node.name}': {reason}"
            elif have != want:
                return f"{node.op} '{node.name}' has {name}={have}, expected {want}"
        return None

    def _all(self, patterns, tensors, s: _Bindings):
        if not patterns:
            yield s
            return
        for s2 in self.match(patterns[0], tensors[0], s):
            yield from self._all(patterns[1:], tensors[1:], s2)


def _feeds_only(graph: gs.Graph, node: gs.Node, inside: IdentitySet, kept: IdentitySet, budget: list[int]) -> bool:
    """Whether everything ``node`` computes ends up only inside the match, so it dies with it.

    Exporters read shapes off inner values (``Shape(ctx)`` to build a reshape target
    inside the same attention); such side chains are not outside uses. A chain that
    reaches a value the replacement keeps reading (``kept``) survives, so it is one.
    """
    budget[0] -= 1
    if budget[0] < 0:
        return False
    for out in node.outputs:
        if is_graph_output(graph, out) or out in kept:
            return False
        for user in out.outputs:
            if user not in inside and not _feeds_only(graph, user, inside, kept, budget):
                return False
    return True


def _escape(graph: gs.Graph, nodes: list[gs.Node], anchor: gs.Node, exported=(), kept=()) -> tuple[gs.Node, str] | None:
    """An inner value of the match that something outside it still needs, if any.

    ``exported`` are bound nodes whose outputs may be used outside (``Fusion.exports``);
    ``kept`` are the bound values the replacement will still read.
    """
    inside, kept, free = IdentitySet(nodes), IdentitySet(kept), IdentitySet([anchor, *exported])
    for node in nodes:
        if node in free:
            continue
        for out in node.outputs:
            if is_graph_output(graph, out):
                return node, f"'{out.name}' (from {node.op}) is also a graph output"
            for user in out.outputs:
                if user not in inside and not _feeds_only(graph, user, inside, kept, [32]):
                    return node, f"'{out.name}' (from {node.op}) is also used by {user.op} '{user.name}' outside the match"
    return None


def match_variant(graph: gs.Graph, fusion: Fusion, variant: Variant, anchor: gs.Node,
                  state: RunState | None = None) -> Match | Miss:
    """Match one variant of ``fusion`` at ``anchor``: the first accepted :class:`Match`, else the closest :class:`Miss`.

    Each structural match the search yields (``_Search``) then goes through three
    decisions in turn: a match made of the fusion's own output is skipped (neither a
    candidate nor a miss); one whose inner values escape the match is refused
    (``_escape``); and ``fusion.check`` has the last word: a reason refuses, anything else
    is what it proved, kept as ``Match.proven`` for the rewrite. Every refusal is a dead end
    of the search, so the closest of them becomes the miss.
    """
    state = RunState(target="", opset=0) if state is None else state
    search = _Search(graph)
    for s in search.match(variant.pattern, anchor.outputs[0], _Bindings()):
        nodes = _replaced(fusion, variant, s)
        if any(state.made_by(fusion.name, n) for n in nodes):
            continue  # its own output: not a candidate, not a miss
        refusal = _escape_of(graph, fusion, variant, anchor, s, nodes)
        if refusal is None:
            pieces = frozenset(t for t in variant.optional if s.tags.get(t) == 0)
            m = Match(fusion, variant, anchor, dict(s.values), dict(s.consts), dict(s.labels), pieces, nodes,
                      dict(s.named), graph, state)
            proven = fusion.check(m) if fusion.check else None
            if not isinstance(proven, str):
                m.proven = proven
                return m
            refusal = anchor, proven
        search.fail(s, *refusal, complete=True)
    return _miss(fusion, variant, anchor, search)


def _replaced(fusion: Fusion, variant: Variant, s: _Bindings) -> list[gs.Node]:
    """The matched graph nodes the rewrite replaces: all but those it reads through (``Fusion.reads``,
    ``Variant.reads``)."""
    through = IdentitySet(s.named[n] for n in (*fusion.reads, *variant.reads) if n in s.named)
    return [n for n in s.graph_nodes() if n not in through]


def _escape_of(graph: gs.Graph, fusion: Fusion, variant: Variant, anchor: gs.Node, s: _Bindings,
               nodes: list[gs.Node]) -> tuple[gs.Node, str] | None:
    """Where the match's inner values are needed outside it, if anywhere; bound values the
    replacement reads (all but ``shape_only`` ones) stay alive for their other users."""
    shape_only = {name for name, v in variables(variant.pattern).items() if v.shape_only}
    read = [t for name, t in s.values.items() if name not in shape_only]
    return _escape(graph, nodes, anchor, [s.named[n] for n in fusion.exports if n in s.named], read)


def _miss(fusion: Fusion, variant: Variant, anchor: gs.Node, search: _Search) -> Miss:
    """The search's closest dead end as a :class:`Miss`."""
    bindings, at, reason, reached = search.best or (_Bindings(), anchor, "no alternative applies", False)
    nodes = bindings.graph_nodes()
    return Miss(fusion=fusion.name, variant=variant.name, anchor=anchor.name, anchor_op=anchor.op,
                matched=len(nodes), total=variant.pattern.size(bindings.tags),
                at=at.name if at is not None else None, reason=reason,
                nodes=[n.name for n in nodes], ops=[n.op for n in nodes],
                at_op=at.op if at is not None and reached else None, complete=search.best_key[0] == 1)
