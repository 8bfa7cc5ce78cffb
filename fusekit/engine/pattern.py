"""The pattern language: fusions written as the math they fuse.

A pattern is a small expression tree. Everything the language has:

    Var("x", label=…)                  any value; the same name binds the same value everywhere
    Var("shape", shape_only=True)      … one the replacement never reads (a reshape target): a
                                       side chain computing it from inner values dies with the match
    Const("eps", label="ε")            a constant (initializer or Constant node), bound by value
    Const(value=0.5, rtol=…, atol=…)   … that must equal this value, or its nearest float16 in a
                                       float16 constant; ``op.Mul(x, 0.5)`` is short for it
    op.Sqrt(v)                         a node of that op type whose inputs match ``v``, in order
    op.ReduceMean(v, axes=[-1])        attribute checks: a literal, or a predicate
    op.Add(…, axis=lambda value, node: None or "reason")
                                       … returning None when satisfied, else the reason; attributes
                                       later opsets moved to inputs (``axes``) read the same, and
                                       absent ones read as the defaults ``graph.ATTRIBUTE_DEFAULTS`` lists
    op.Gelu(v, _domain="com.microsoft")  the node's domain (default: the ONNX domain)
    op.MatMul(a, b, _bind="matmul")    names the node, for ``match.node("matmul")``
    either(a, b, tag="t", labels=…)    the first alternative that matches; ``tag`` records which,
                                       a tag used twice takes the same branch everywhere (and must
                                       offer the same labels), and labels name the variant in
                                       reports; ``match.took("label")`` tells whether the match took
                                       that alternative
    maybe(wrap, x, tag, present, absent)
                                       ``wrap(x)`` or just ``x``; ``match.has(tag)`` tells which

Ops in ``COMMUTATIVE`` (Add, Mul, Max, Min, Sum, And, Or, Equal, with two inputs and the ONNX
domain) match their inputs in either order. The same pattern object used twice must match
the same graph node (a shared sub-expression); two separate objects may match two nodes
that compute the same thing (an exporter that emitted ``x - mean`` twice).

Checks ask which alternative matched by its label, never by its place in the ``either``:
``took`` of a label no variant of the fusion has is an error, and a label that several tags of
one variant share (Q, K and V each have a ``bias_after_split``) is asked with its tag,
``match.took("bias_after_split", tag="q_bias")``. Reordering the alternatives, or adding one,
cannot change what a check reads. An optional piece (``maybe``) is asked by its tag,
``match.has("remask")``: there is nothing else to ask about it, and ``has`` of a tag that is
no optional piece is an error too.

A :class:`Variant` is one pattern with the exporters that emit it; a :class:`Fusion`
collects the variants of one fusion with the ``check`` and ``rewrite`` that decide and
build it, the fusions it runs ``after``, and the nodes it ``exports`` or ``reads`` through.
``check(match)`` returns what it proved, a small frozen dataclass declared beside it (None
when it has nothing to hand on), or the reason it refuses, a string; ``rewrite(match, facts,
emit)`` receives what ``check`` returned.

A :class:`Rule` is a Fusion that canonicalizes (``engine.canonicalize``): it rewrites one
spelling into the form the fusions read and builds no fused op. Neither touches a graph.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

COMMUTATIVE = frozenset({"Add", "Mul", "Max", "Min", "Sum", "And", "Or", "Equal"})

# Matching constants of GELU and friends: tight enough to tell 0.5 from 0.505.
DEFAULT_RTOL = 1e-4


class Pattern:
    """A node of a pattern expression."""

    def size(self, tags: Mapping[str, int] | None = None) -> int:
        """How many graph nodes a full match has, for the alternatives chosen in ``tags``
        (the first alternative elsewhere); sub-expressions written twice count once."""
        keys: set = set()
        _count(self, tags or {}, keys, {})
        return len(keys)


def _count(p: Pattern, tags, keys: set, memo: dict):
    """Collect the structural keys of the Op nodes ``p`` would match."""
    if p in memo:  # patterns hash by identity (eq=False)
        return memo[p]
    if isinstance(p, Op):
        key = (p.op_type, p.domain) + tuple(_count(i, tags, keys, memo) for i in p.inputs)
        keys.add(key)
    elif isinstance(p, Or):
        chosen = tags.get(p.tag, 0)
        key = _count(p.alternatives[chosen], tags, keys, memo)
    elif isinstance(p, Var):
        key = ("var", p.name)
    else:
        key = ("const", p.name, p.value)
    memo[p] = key
    return key


@dataclass(eq=False)
class Var(Pattern):
    """Any value. ``shape_only`` marks an operand the replacement never reads (a reshape
    target): a side chain computing it from inner values dies with the match."""

    name: str
    label: str | None = None  # how reasons name it ("the input x")
    shape_only: bool = False

    def __repr__(self):
        return self.name


@dataclass(eq=False)
class Const(Pattern):
    """A constant value: an initializer or the output of a Constant node.

    With ``value`` it must equal that value (every element, within rtol/atol), or, in a
    type less precise than float32 (float16), be that value as the type holds it.
    ``label`` is how a rejection names it, e.g. "ε".
    """

    name: str | None = None
    value: float | None = None
    rtol: float = DEFAULT_RTOL
    atol: float = 0.0
    label: str | None = None

    def describe(self) -> str:
        if self.label or self.name:
            return self.label or self.name
        return f"the constant {self.value:g}"

    def accepts(self, array: np.ndarray) -> bool:
        if self.value is None:
            return True
        if array.size == 0 or not np.issubdtype(array.dtype, np.number):
            return False
        if np.allclose(array.astype(np.float64), self.value, rtol=self.rtol, atol=self.atol):
            return True
        stored = self.stored(array.dtype)
        return bool(stored.size) and bool(np.all(np.isin(array, stored)))

    def stored(self, dtype) -> np.ndarray:
        """The value as a constant of ``dtype`` holds it: its nearest ``dtype`` value, rounded
        directly or through float32 (fp16's √2 is 1.4140625, 1.07e-4 off). Empty for a type
        at least as precise as float32, where the tolerance alone decides."""
        dtype = np.dtype(dtype)
        if not np.issubdtype(dtype, np.floating) or np.finfo(dtype).eps <= np.finfo(np.float32).eps:
            return np.array([], dtype)
        return np.unique(np.array([self.value, np.float32(self.value)]).astype(dtype))

    def __repr__(self):
        return self.describe()


@dataclass(eq=False)
class Op(Pattern):
    """A graph node of ``op_type``. ``attrs`` values are literals or predicates.

    A predicate takes ``(value, node)`` and returns ``None`` when satisfied or a
    reason string when not. ``bind`` names the node so check/rewrite can read it.
    """

    op_type: str
    inputs: tuple[Pattern, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    domain: str = ""
    bind: str | None = None

    @property
    def commutative(self) -> bool:
        return self.op_type in COMMUTATIVE and len(self.inputs) == 2 and not self.domain

    def __repr__(self):
        return f"{self.op_type}({', '.join(map(repr, self.inputs))})"


@dataclass(eq=False)
class Or(Pattern):
    """Alternatives tried in order; ``tag`` records which one matched (its index and label)."""

    alternatives: tuple[Pattern, ...]
    labels: tuple[str, ...]
    tag: str | None = None
    optional: bool = False  # made by ``maybe``: a piece, then its absence; asked by ``has``, not by label

    def __repr__(self):
        return " | ".join(map(repr, self.alternatives))


def variables(p: Pattern, found: dict | None = None, seen: set | None = None) -> dict[str, Var]:
    """Every Var in a pattern, by name (shared sub-expressions visited once: a pattern is a DAG)."""
    found = {} if found is None else found
    seen = set() if seen is None else seen
    if p in seen:
        return found
    seen.add(p)
    if isinstance(p, Var):
        found[p.name] = p
    for child in getattr(p, "inputs", ()) or getattr(p, "alternatives", ()):
        variables(child, found, seen)
    return found


def either(*alternatives: Pattern, tag: str | None = None, labels: tuple[str, ...] | None = None) -> Or:
    labels = labels or ("",) * len(alternatives)
    return Or(tuple(alternatives), tuple(labels), tag)


def maybe(wrap: Callable[[Pattern], Pattern], inner: Pattern, tag: str, present: str = "", absent: str = "") -> Or:
    """``wrap(inner)`` or just ``inner``; ``match.has(tag)`` tells which. The labels
    (empty: not shown) name the variant in reports, e.g. ``absent="no_beta"``."""
    return Or((wrap(inner), inner), (present, absent), tag, optional=True)


class _OpBuilder:
    """``op.Add(a, b)`` makes an :class:`Op`; keyword arguments are attribute checks.

    ``_domain`` and ``_bind`` are reserved keywords for the node's domain and binding name.
    """

    def __getattr__(self, op_type: str) -> Callable[..., Op]:
        def make(*inputs: Pattern, _domain: str = "", _bind: str | None = None, **attrs) -> Op:
            inputs = tuple(Const(value=float(i)) if isinstance(i, (int, float)) else i for i in inputs)
            return Op(op_type, inputs, attrs, _domain, _bind)

        make.__name__ = op_type
        return make


op = _OpBuilder()


def choices(p: Pattern, found: dict | None = None, seen: set | None = None) -> dict[str, Or]:
    """Every tagged alternative in a pattern, by tag. A tag used twice takes the same branch
    everywhere, so both uses must offer the same labels, and both be ``maybe`` or ``either``."""
    found = {} if found is None else found
    seen = set() if seen is None else seen
    if p in seen:
        return found
    seen.add(p)
    if isinstance(p, Or) and p.tag:
        first = found.setdefault(p.tag, p)
        if (first.labels, first.optional) != (p.labels, p.optional):
            raise ValueError(f"the tag '{p.tag}' is used by two different choices: {first.labels} and {p.labels}")
    for child in getattr(p, "inputs", ()) or getattr(p, "alternatives", ()):
        choices(child, found, seen)
    return found


@dataclass
class Variant:
    """One graph shape a fusion recognises, and the exporters that emit it."""

    name: str
    pattern: Pattern
    exporters: str = ""
    # Bound nodes this variant alone reads through (``Fusion.reads``): DeBERTa's Q and K
    # projections, which its disentangled bias reads as well
    reads: tuple[str, ...] = ()
    choices: dict[str, Or] = field(init=False, repr=False)  # its tagged alternatives, by tag (checked consistent)

    def __post_init__(self):
        self.choices = choices(self.pattern)

    @property
    def optional(self) -> set[str]:
        """The tags of its optional pieces (``maybe``)."""
        return {tag for tag, o in self.choices.items() if o.optional}

    def choice(self, label: str, tag: str | None = None) -> str | None:
        """The tag whose alternative ``label`` is (among ``tag``'s, where given); None where none is.
        A label several tags share, asked without its tag, is an error: it would ask for any of them."""
        tags = [t for t, o in self.choices.items() if not o.optional and label in o.labels and tag in (None, t)]
        if len(tags) > 1:
            raise LookupError(f"the variant '{self.name}' has an alternative labelled '{label}' under the tags "
                              f"{', '.join(tags)}: ask with one of them")
        return tags[0] if tags else None


@dataclass
class Fusion:
    """One fusion: its variants, the check that decides and the rewrite that builds.

    ``check(match)`` returns what it proved (a frozen dataclass of its own, or None when it
    has nothing to hand on) to accept, or a reason string to refuse.
    ``rewrite(match, facts, emit)`` receives what ``check`` returned (None without a check),
    builds the replacement with ``emit`` and returns the value that replaces the anchor's
    output (or a list of ``(old_value, new_value)`` pairs).
    ``targets`` lists the targets the fusion applies to; ``min_opset`` the default-domain
    opset each target's emitted form needs.
    """

    name: str
    variants: list[Variant]
    rewrite: Callable
    check: Callable | None = None
    # Fusions whose output this one matches or whose rewrite it needs done first (BiasGelu
    # after Gelu); the passes run it after them (``passes.order``).
    after: tuple[str, ...] = ()
    targets: tuple[str, ...] = ("ort", "onnx", "openvino")
    min_opset: Mapping[str, int] = field(default_factory=dict)
    # A refused candidate is reported as a near miss once its match reached one of these
    # ops (LayerNorm's ReduceMean): every Add in a model is not a LayerNorm candidate.
    # "MatMul+DequantizeLinear" asks for both.
    signature: frozenset[str] = frozenset()
    # Compile options the target's runtime should use for the form this fusion emits, by target
    # (OpenVINO's DYNAMIC_QUANTIZATION_GROUP_SIZE for DynamicQuantizedLinear): written into the fused
    # model's metadata (``provenance.runtime_options``); fusekit's OpenVINO backend and IR export apply them.
    runtime_options: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # Which refused candidates are near misses, when reaching the signature does not say it
    # (a Cast that changes the type is no candidate for removing a no-op Cast).
    near_miss: Callable[..., bool] | None = None
    # Bound nodes whose outputs may still be used outside the match; the rewrite must
    # then replace them too (SkipLayerNormalization hands on the residual sum).
    exports: tuple[str, ...] = ()
    # Bound nodes the replacement reads *through* (a DequantizeLinear shared by the Q, K
    # and V projections): matched for their inputs, left in place for their other users.
    reads: tuple[str, ...] = ()

    def anchor_ops(self) -> set[str]:
        return {t for v in self.variants for t in root_ops(v.pattern)}


@dataclass
class Rule(Fusion):
    """A canonicalization rule: exporter noise rewritten into the one form the fusions read.

    Written, checked and rewritten like a fusion, and recorded like one, but it builds
    no fused op: it runs before every fusion (``engine.canonicalize``), and only where
    the rewrite is exact. A rewrite may return a value already in the graph: the anchor
    is then bypassed, its users reading that value instead (a Cast that changes nothing).
    """


def root_ops(p: Pattern) -> set[str]:
    if isinstance(p, Op):
        return {p.op_type}
    if isinstance(p, Or):
        return set().union(*(root_ops(a) for a in p.alternatives))
    return set()
