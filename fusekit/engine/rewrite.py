"""Replacing a match with the nodes its fusion builds, and recording where they came from.

The replacement takes over the anchor's output tensor (same name, same consumers,
same graph-output status), so nothing outside the match is rewired. The matched
nodes are then disconnected; the matcher has already proved nothing else uses them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from .graph import disconnect
from .matcher import Match
from .pattern import Rule
from .state import IdentitySet, RunState

MS = "com.microsoft"


@dataclass
class Fused:
    """Provenance of one fused node: which fusion made it from which nodes."""

    fusion: str
    variant: str
    node: str
    op: str
    replaced: list[tuple[str, str]]  # (name, op type) of each original node
    constants: dict[str, object] = field(default_factory=dict)
    steps: list[str] = field(default_factory=list)  # fusions applied in turn, e.g. Gelu then BiasGelu
    # canonicalization rules that rewrote part of the region first (GlobalAveragePool as a mean)
    rules: list[str] = field(default_factory=list)

    def __post_init__(self):
        if not self.steps and not self.rules:
            self.steps = [self.fusion]

    @property
    def canonical(self) -> bool:
        """Whether a rule, not a fusion, made the node: a canonical form, no fused op."""
        return not self.steps

    def to_dict(self) -> dict:
        return {"fusion": self.fusion, "variant": self.variant, "node": self.node, "op": self.op, "steps": self.steps,
                "rules": self.rules, "replaced": [{"name": n, "op": o} for n, o in self.replaced],
                "constants": self.constants}


def compose(events: list[Fused]) -> list[Fused]:
    """One record per surviving fused node, tracing fusions of fused nodes (and of the nodes
    canonicalization rules made) back to the originals. A bypass (no node) is its own record."""
    alive: dict[str, Fused] = {}
    bypassed: list[Fused] = []
    for f in events:
        earlier = [alive.pop(name) for name, _ in f.replaced if name in alive]
        if earlier:
            inner = {e.node for e in earlier}
            f = Fused(f.fusion, f.variant, f.node, f.op,
                      [r for e in earlier for r in e.replaced] + [r for r in f.replaced if r[0] not in inner],
                      {k: v for e in earlier for k, v in e.constants.items()} | f.constants,
                      [s for e in earlier for s in e.steps] + f.steps, [r for e in earlier for r in e.rules] + f.rules)
        if f.node:
            alive[f.node] = f
        else:
            bypassed.append(f)
    return list(alive.values()) + bypassed


class Emitter:
    """Builds replacement nodes: ``emit.LayerNormalization(x, g, b, epsilon=e)``.

    ``_domain`` sets the node's domain; the node's output is returned. ``target``
    and ``opset`` tell a rewrite which form to build. What outlives one rewrite
    (names, shared constants, functions, notes, inlined nodes) goes into the run's
    :class:`RunState`; ``made`` is what this rewrite built.
    """

    def __init__(self, graph: gs.Graph, state: RunState, prefix: str, replacing=()):
        self.graph, self.state, self.prefix = graph, state, prefix
        self.made: IdentitySet[gs.Node] = IdentitySet()  # the nodes this rewrite built
        self.replacing = IdentitySet(replacing)  # the matched nodes, about to go

    @property
    def target(self) -> str:
        return self.state.target

    @property
    def opset(self) -> int:
        return self.state.opset

    def unique_name(self, base: str) -> str:
        """``base``, or ``base_1``, ``base_2`` …: the first name nothing in the run has yet, taken from now on."""
        taken = self.state.names
        name, i = base, 1
        while name in taken:
            name, i = f"{base}_{i}", i + 1
        taken.add(name)
        return name

    def const(self, name: str, value: np.ndarray) -> gs.Constant:
        return gs.Constant(self.unique_name(f"{self.prefix}/{name}"), np.ascontiguousarray(value))

    def small(self, value) -> gs.Constant:
        """A small constant (axes, a fill value), one per value for the whole run, so that
        ``shared`` nodes reading it are recognised as the same."""
        value = np.ascontiguousarray(value)
        key = (value.dtype.str, value.shape, value.tobytes())
        constants = self.state.constants
        if key not in constants:
            constants[key] = gs.Constant(self.unique_name("fusekit/const"), value)
        return constants[key]

    def shared(self, op_type: str, *inputs: gs.Tensor, _domain: str = "", **attrs) -> gs.Variable:
        """Like ``emit.<op_type>(...)``, but reuses a node already computing exactly that
        (several fused layers need the same Cast of the mask)."""
        for node in inputs[0].outputs if inputs else []:
            if node.op == op_type and (node.domain or "") == _domain and node.attrs == attrs \
                    and node not in self.replacing \
                    and len(node.inputs) == len(inputs) and all(a is b for a, b in zip(node.inputs, inputs)):
                return node.outputs[0]
        return getattr(self, op_type)(*inputs, _domain=_domain, **attrs)

    def note(self, text: str, count: int = 1):
        """Something the report should say about this fusion (counted over the run)."""
        self.state.notes[text] = self.state.notes.get(text, 0) + count

    def call(self, function: onnx.FunctionProto, *inputs: gs.Tensor, **attrs) -> gs.Variable:
        """A node calling the model-local ``function``, which goes into the model with it."""
        self.state.functions[(function.domain, function.name)] = function
        return getattr(self, function.name)(*inputs, _domain=function.domain, **attrs)

    def lowered(self):
        """Mark what this rewrite emitted so far as a lowered form (fusekit's output, as an inlined
        body is): later fusions may still take it, but a miss there is no near miss of the model's."""
        self.state.lowered.update(self.made)

    def inline(self, function: onnx.FunctionProto, *inputs: gs.Tensor | None) -> gs.Variable:
        """The body of ``function`` emitted in place, its formal inputs bound to ``inputs``."""
        values = dict(zip(function.input, inputs))
        before = IdentitySet(self.made)
        for node in function.node:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type == "Constant":
                values[node.output[0]] = self.small(numpy_helper.to_array(attrs["value"]))
                continue
            args = [values[i] if i else None for i in node.input]
            out = getattr(self, node.op_type)(*args, _domain=node.domain, **attrs)
            out.dtype = _result_type(node.op_type, args)  # later fusions check types
            values[node.output[0]] = out
        self.state.lowered.update(n for n in self.made if n not in before)
        return values[function.output[0]]

    def __getattr__(self, op_type: str):
        if op_type.startswith("_"):
            raise AttributeError(op_type)

        def make(*inputs: gs.Tensor | None, _domain: str = "", _outputs=(0,), **attrs):
            """One output by default; ``_outputs=(0, 3)`` returns outputs 0 and 3 (1 and 2 omitted)."""
            name = self.unique_name(f"{self.prefix}/{op_type}")
            outs = [gs.Variable(self.unique_name(f"{name}_output_{i}")) if i in _outputs else gs.Variable.empty()
                    for i in range(max(_outputs) + 1)]
            ins = [gs.Variable.empty() if t is None else t for t in inputs]  # None: an omitted optional input
            node = gs.Node(op_type, name, attrs, ins, outs, domain=_domain or None)
            self.graph.nodes.append(node)
            self.made.add(node)
            picked = [outs[i] for i in _outputs]
            return picked[0] if len(picked) == 1 else picked

        return make


def _result_type(op_type: str, inputs: list):
    """The element type of an inlined node's output: a quantizer's zero point's, a
    dequantizer's scale's, else its first input's (the bodies fusekit inlines)."""
    source = {"QuantizeLinear": 2, "DequantizeLinear": 1}.get(op_type, 0)
    tensor = inputs[source] if len(inputs) > source else None
    return None if tensor is None else tensor.dtype


def take_over(old: gs.Tensor, new: gs.Tensor):
    """Make ``new``'s producer write ``old`` instead, keeping old's name and users, and new's: a node
    the rewrite emitted may read the value it hands on (a LayerNormalization of the sum it also returns)."""
    _bypass(new, old)
    node = new.inputs[0]
    index = next(i for i, t in enumerate(node.outputs) if t is new)
    old.inputs.clear()
    node.outputs[index] = old


def _summarize(value: np.ndarray):
    value = np.asarray(value)
    if value.size == 1:
        return value.item()
    return f"{value.dtype}{list(value.shape)}"


def _bypass(old: gs.Tensor, new: gs.Tensor):
    """Make every user of ``old`` read ``new``, a value already in the graph."""
    for user in list(old.outputs):
        for i, t in enumerate(user.inputs):
            if t is old:
                user.inputs[i] = new


def apply(match: Match) -> Fused:
    emit = Emitter(match.graph, match.state, match.anchor.name or match.fusion.name, match.nodes)
    replaced = [(n.name, n.op) for n in match.nodes]
    result = match.fusion.rewrite(match, match.proven, emit)
    # what a fusion built is never its own candidate again (a lowered form that reads as the pattern)
    match.state.record(match.fusion.name, emit.made)
    replacements = result if isinstance(result, list) else [(match.anchor.outputs[0], result)]
    is_rule = isinstance(match.fusion, Rule)
    for old, new in replacements:
        if not new.inputs or new.inputs[0] not in emit.made:  # a value already there: a bypass
            _bypass(old, new)
    for node in match.nodes:  # disconnect first, so the take-over sees no stale users
        disconnect(node)
    for old, new in replacements:
        if new.inputs and new.inputs[0] in emit.made:
            take_over(old, new)
    for node in match.nodes:
        node.outputs.clear()
    first = replacements[0][0]
    fused_node = first.inputs[0] if first.inputs else None
    return Fused(match.fusion.name, match.label, fused_node.name if fused_node else "",
                 fused_node.op if fused_node else "", replaced, {k: _summarize(v) for k, v in match.consts.items()},
                 rules=[match.fusion.name] if is_rule else [])
