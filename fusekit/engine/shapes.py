"""Static shape facts: what the weights and reshape targets fix, read once and folded to constants,
and what a shape vector holds where only the run time fixes it.

``infer`` gives every value the shape the model fixes. onnx's shape inference with
data propagation (it follows ``Shape → Gather → Concat → Reshape``) does it for most
exports in milliseconds; where it leaves a value without a rank (tf2onnx's einsum
decompositions at opset 13), ONNX Runtime's symbolic shape inference fills the gaps.
Only ranks and static dimensions are taken from the latter: it merges unknown
dimensions it meets in one broadcast (``auto_merge``), which assumes what
SkipLayerNorm must prove, so its symbols are never read as "the same dimension".

``fold`` replaces each value computed from a ``Shape`` that the static dimensions fix
by the constant it is: a head size read by ``Shape(Q)[-1]``, a hidden size divided by
the head count, Optimum's attention scale ``Shape(Q) → Slice[-1:] → Cast → Sqrt →
Div(1, ·) → Cast → Sqrt``. Each fold is exact: integer arithmetic, and float32 Sqrt,
Div, Mul, Add, Sub, which numpy rounds as IEEE 754 requires, as every runtime does.
Chains of constants that no ``Shape`` starts are left as written (an ε computed by a
Cast stays a near miss: see the README's decisions).

``entries`` reads a shape vector (a Reshape target) in symbolic terms, entry by entry: an
int (a static size, or -1 and 0 as written), a ``DimOf`` (dimension k of tensor t, read at
run time), or a ``Product`` or ``Maximum`` of such. Entries compare by value, so a check
builds the vector it expects from ``dim``, ``product`` and ``maximum`` and compares once::

    entries(target) == [product(dim(x, 0), dim(x, 1)), -1, dim(x, 4)]    # [b0·b1, -1, k]

Folding and reading share one table of evaluators, one small function per op (``_EVALUATORS``).

``spans_batch_and_sequence`` says which values provably have the
model's (batch, sequence) as their first two dimensions, following Reshape targets read so;
``dimension`` reads one dimension of a value in terms of the model inputs' dimensions, for the
Reshape targets that name (batch, sequence) only through others (heads folded into the batch).
"""
from __future__ import annotations

import contextlib
import sys
from typing import Callable, NamedTuple

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .graph import attr, const_value, is_graph_output, producer, rank
from .rewrite import Fused
from .state import IdentityMap, RunState

RULE = "ShapeFact"


# The facts are read by recursive walks from a value back through its producers, and a walk
# may cross every layer of the residual stream: DeBERTa-v3 at 12 layers goes past Python's
# default depth of 1000 (it needs fewer than 5000: 20000 leaves room for deeper models while
# staying far within the interpreter's C stack).
WALK_DEPTH = 20_000


@contextlib.contextmanager
def deep_walks():
    """Allow the facts' walks the depth of the whole graph while the block runs."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, WALK_DEPTH))
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


def infer(skel: onnx.ModelProto) -> onnx.ModelProto:
    """``skel`` with the shapes the model fixes: onnx's inference, gaps filled by ONNX Runtime's."""
    try:
        inferred = onnx.shape_inference.infer_shapes(skel, data_prop=True)
    except Exception:  # shape facts only sharpen checks; a fusion that needs one refuses without it
        return skel
    known = {v.name for v in inferred.graph.value_info if v.type.tensor_type.HasField("shape")}
    known |= {v.name for v in [*inferred.graph.input, *inferred.graph.output] if v.type.tensor_type.HasField("shape")}
    if all(o in known for n in inferred.graph.node for o in n.output if o):
        return inferred
    symbolic = _symbolic(skel)
    if symbolic is None:
        return inferred
    have = {v.name: v for v in inferred.graph.value_info}
    for v in symbolic.graph.value_info:
        if v.name in known or not v.type.tensor_type.HasField("shape"):
            continue
        for d in v.type.tensor_type.shape.dim:  # a rank and static sizes; its symbols are not facts
            if d.HasField("dim_param"):
                d.Clear()
        if v.name in have:
            have[v.name].CopyFrom(v)
        else:
            inferred.graph.value_info.append(v)
    return inferred


def _symbolic(skel: onnx.ModelProto) -> onnx.ModelProto | None:
    """ONNX Runtime's symbolic shape inference, or None where it gives up. Its loop is run
    here rather than through ``infer_shapes``, which writes a file into the working folder
    when it gives up."""
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
        inference = SymbolicShapeInference(2**31 - 1, True, False, 0)
        inference._preprocess(skel)
        while inference.run_:
            inference._infer_impl()
        inference._update_output_from_vi()
        return inference.out_mp_
    except Exception:
        return None


# ---------------------------------------------------------------------------------- shape entries

class DimOf:
    """A shape entry read at run time: dimension ``index`` of ``tensor`` (the same tensor, not
    one of the same name, makes two equal)."""

    def __init__(self, tensor: gs.Tensor, index: int):
        self.tensor, self.index = tensor, index

    def __eq__(self, other):
        return isinstance(other, DimOf) and other.tensor is self.tensor and other.index == self.index

    def __hash__(self):
        return hash((DimOf, self.index))

    def __repr__(self):
        return f"dim{self.index}({self.tensor.name})"


class Product:
    """Entries multiplied at run time (a ReduceProd or Mul of a shape): ``coefficient`` times the
    run-time ``factors``, in any order. ``product`` builds one."""

    def __init__(self, coefficient: int, factors: tuple):
        self.coefficient, self.factors = coefficient, factors

    def __eq__(self, other):
        return isinstance(other, Product) and other.coefficient == self.coefficient \
            and _same_terms(self.factors, other.factors)

    def __hash__(self):
        return hash((Product, self.coefficient, len(self.factors)))

    def __repr__(self):
        return "·".join(repr(f) for f in ([self.coefficient] if self.coefficient != 1 else []) + list(self.factors))


class Maximum:
    """The largest of entries at run time (a Max of shapes: tf2onnx's broadcast batch), in any
    order, each once. ``maximum`` builds one."""

    def __init__(self, terms: tuple):
        self.terms = terms

    def __eq__(self, other):
        return isinstance(other, Maximum) and _same_terms(self.terms, other.terms)

    def __hash__(self):
        return hash((Maximum, len(self.terms)))

    def __repr__(self):
        return f"max({', '.join(map(repr, self.terms))})"


_SYMBOLS = (DimOf, Product, Maximum)


def _same_terms(a: tuple, b: tuple) -> bool:
    """Whether ``a`` and ``b`` hold the same entries as often, in any order."""
    rest = list(b)
    for term in a:
        if term not in rest:
            return False
        rest.remove(term)
    return not rest


def dim(tensor: gs.Tensor, axis: int) -> int | DimOf:
    """Dimension ``axis`` (≥ 0) of ``tensor`` as a shape vector holds it: the static size where
    the graph fixes one, else the dimension read at run time."""
    size = tensor.shape[axis] if tensor.shape is not None and axis < len(tensor.shape) else None
    return int(size) if isinstance(size, (int, np.integer)) and size >= 0 else DimOf(tensor, axis)


def product(*terms) -> int | DimOf | Product | Maximum:
    """The product of shape entries: an int where all are known, else a ``Product`` (or the one
    run-time entry itself)."""
    coefficient, factors = 1, []
    for term in terms:
        if isinstance(term, Product):
            coefficient, factors = coefficient * term.coefficient, factors + list(term.factors)
        elif isinstance(term, _SYMBOLS):
            factors.append(term)
        else:
            coefficient *= int(term)
    if not factors or coefficient == 0:
        return coefficient
    return factors[0] if coefficient == 1 and len(factors) == 1 else Product(coefficient, tuple(factors))


def maximum(*terms) -> int | DimOf | Product | Maximum:
    """The largest of shape entries: an int where all are known, else a ``Maximum`` (or the one
    entry all of them are)."""
    known, symbols = [], []
    for term in terms:
        for t in term.terms if isinstance(term, Maximum) else [term]:
            if not isinstance(t, _SYMBOLS):
                known.append(int(t))
            elif t not in symbols:
                symbols.append(t)
    largest = symbols + ([max(known)] if known else [])
    return largest[0] if len(largest) == 1 else Maximum(tuple(largest))


def entries(tensor: gs.Tensor) -> list | None:
    """What a shape vector (a Reshape target) holds, entry by entry: an int, a ``DimOf``, or a
    ``Product`` or ``Maximum`` of entries computed at run time; None when it is built some other
    way. Reads through the Casts, Gathers, Slices, Concats, products and Max exporters build it with."""
    fact = _fact_of(tensor, IdentityMap(), 0)
    if fact is None or fact.array.ndim != 1 or fact.dtype not in _INTEGER:
        return None
    return [e if isinstance(e, _SYMBOLS) else int(e) for e in fact.array]


# ------------------------------------------------------------------------------------- evaluation

_INTEGER = (np.int32, np.int64)


class _Fact:
    """What a value is known to hold: an array whose entries are numbers, or symbolic entries
    (``DimOf``, ``Product``, ``Maximum``) where only the run time fixes them (a 1-D shape
    vector, or a scalar read from one)."""

    def __init__(self, array: np.ndarray, dtype: np.dtype):
        self.array, self.dtype = array, np.dtype(dtype)

    @property
    def full(self) -> bool:
        return not any(isinstance(e, _SYMBOLS) for e in self.array.ravel())

    def value(self) -> np.ndarray:
        return np.asarray(self.array.astype(self.dtype))


def _shape_of(tensor: gs.Tensor) -> _Fact | None:
    if tensor.shape is None:
        return None
    return _Fact(_objects([dim(tensor, i) for i in range(len(tensor.shape))]), np.int64)


def _objects(entries: list) -> np.ndarray:
    """A 1-D object array of ``entries`` (numpy would look inside a symbolic entry otherwise)."""
    array = np.empty(len(entries), dtype=object)
    array[:] = entries
    return array


def _ints(fact: _Fact | None) -> list[int] | None:
    if fact is None or not fact.full or fact.dtype not in _INTEGER:
        return None
    return [int(v) for v in np.atleast_1d(fact.value())]


def _numbers(args: list[_Fact | None], count: int) -> list[np.ndarray] | None:
    """The values of ``count`` facts that hold numbers throughout, all of one dtype."""
    if len(args) != count or any(x is None or not x.full for x in args):
        return None
    values = [x.value() for x in args]
    return None if any(v.dtype != values[0].dtype for v in values) else values


def _result(result, dtype: np.dtype) -> _Fact:
    return _Fact(np.asarray(result, dtype=dtype), dtype)


def _entrywise(combine: Callable, args: list[_Fact | None]) -> _Fact | None:
    """``combine`` applied entry by entry (broadcasting) to two integer facts of one dtype,
    where some entries are known only at run time."""
    if len(args) != 2 or any(x is None for x in args) or args[0].dtype != args[1].dtype \
            or args[0].dtype not in _INTEGER:
        return None
    left, right = np.broadcast_arrays(args[0].array, args[1].array)
    combined = _objects([combine(a, b) for a, b in zip(left.ravel(), right.ravel())])
    return _Fact(combined.reshape(left.shape), args[0].dtype)


# One evaluator per op: the fact ``node`` computes from its inputs' facts ``args`` (the first is
# never None, a Shape's aside), or None where it cannot say exactly.

def _shape(node: gs.Node, args: list[_Fact | None]) -> _Fact | None:
    fact = _shape_of(node.inputs[0])
    if fact is None:
        return None
    start, end = node.attrs.get("start", 0), node.attrs.get("end")
    return _Fact(fact.array[slice(start, end)], np.int64)


def _identity(node: gs.Node, args: list[_Fact | None]) -> _Fact | None:
    return args[0]


def _cast(node: gs.Node, args: list[_Fact | None]) -> _Fact | None:
    a, to = args[0], onnx.helper.tensor_dtype_to_np_dtype(node.attrs["to"])
    if a.dtype in _INTEGER and to in _INTEGER:
        return _Fact(a.array, to)  # shape sizes fit in either
    if not a.full or (a.dtype.kind == "f" and to.kind != "f"):
        return None  # float → int rounds as the runtime chooses
    return _Fact(a.value().astype(to), to)


def _gather(node: gs.Node, args: list[_Fact | None]) -> _Fact | None:
    a, index = args[0], _ints(args[1])
    if index is None or (node.attrs.get("axis", 0) != 0) or a.array.ndim != 1:
        return None
    picked = [a.array[i] for i in index]
    return _Fact(_objects(picked).reshape(np.shape(args[1].value())), a.dtype)


def _unsqueeze_or_squeeze(node: gs.Node, args: list[_Fact | None]) -> _Fact | None:
    """A scalar made a 1-vector, or back."""
    a = args[0]
    axes = node.attrs.get("axes") or (_ints(args[1]) if len(args) > 1 else [0])
    if a.array.ndim > 1 or (node.op == "Squeeze" and a.array.size != 1) or list(axes or []) not in ([0], [-1]):
        return None
    return _Fact(a.array.reshape(1 if node.op == "Unsqueeze" else ()), a.dtype)


def _concat(node: gs.Node, args: list[_Fact | None]) -> _Fact | None:
    if any(x is None or x.array.ndim != 1 or x.dtype != args[0].dtype for x in args):
        return None
    return _Fact(np.concatenate([x.array for x in args]), args[0].dtype)


def _slice(node: gs.Node, args: list[_Fact | None]) -> _Fact | None:
    a, bounds = args[0], [_ints(x) for x in args[1:]]
    if a.array.ndim != 1 or any(b is None for b in bounds) or any(len(b) != 1 for b in bounds):
        return None
    start, end = bounds[0][0], bounds[1][0]
    axes, steps = (bounds[2] if len(bounds) > 2 else [0]), (bounds[3] if len(bounds) > 3 else [1])
    if axes[0] not in (0, -1) or steps[0] != 1:  # shape slices step by 1; others are left computed
        return None
    return _Fact(a.array[start:end:steps[0]], a.dtype)


def _reduce_prod(node: gs.Node, args: list[_Fact | None]) -> _Fact | None:
    """Over all axes, kept: the product of a shape vector's entries (tf2onnx's flattened batch).
    With no axes, ``noop_with_empty_axes`` (opset 18) makes it an identity instead."""
    a = args[0]
    if len(args) != 1 or a.dtype.kind not in "iu" or a.array.ndim != 1 or node.attrs.get("keepdims", 1) != 1 \
            or "axes" in node.attrs or node.attrs.get("noop_with_empty_axes", 0):
        return None
    if a.full:
        return _Fact(np.prod(a.value(), keepdims=True), a.dtype)
    return _Fact(_objects([product(*a.array)]), a.dtype)


def _arithmetic(function: Callable) -> Callable:
    """The evaluator of a two-input op that numpy computes as ONNX does."""
    def evaluate(node: gs.Node, args: list[_Fact | None]) -> _Fact | None:
        values = _numbers(args, 2)
        return None if values is None else _result(function(*values), values[0].dtype)
    return evaluate


def _mul(node: gs.Node, args: list[_Fact | None]) -> _Fact | None:
    values = _numbers(args, 2)
    return _entrywise(product, args) if values is None else _result(np.multiply(*values), values[0].dtype)


def _max(node: gs.Node, args: list[_Fact | None]) -> _Fact | None:
    values = _numbers(args, 2)
    if values is None:
        return _entrywise(maximum, args)
    return _result(np.maximum(*values), values[0].dtype) if values[0].dtype.kind in "iu" else None


def _div(node: gs.Node, args: list[_Fact | None]) -> _Fact | None:
    values = _numbers(args, 2)
    if values is None:
        return None
    if values[0].dtype.kind in "iu":
        if (values[0] < 0).any() or (values[1] <= 0).any():
            return None  # ONNX truncates where numpy floors
        return _result(values[0] // values[1], values[0].dtype)
    return _result(np.divide(*values), values[0].dtype)


def _float(function: Callable) -> Callable:
    """The evaluator of a one-input float op that numpy rounds as IEEE 754 requires."""
    def evaluate(node: gs.Node, args: list[_Fact | None]) -> _Fact | None:
        values = _numbers(args, 1)
        return None if values is None or values[0].dtype.kind != "f" else _result(function(values[0]), values[0].dtype)
    return evaluate


_EVALUATORS: dict[str, Callable[[gs.Node, list[_Fact | None]], _Fact | None]] = {
    "Shape": _shape,
    "Identity": _identity,
    "Cast": _cast,
    "Gather": _gather,
    "Unsqueeze": _unsqueeze_or_squeeze,
    "Squeeze": _unsqueeze_or_squeeze,
    "Concat": _concat,
    "Slice": _slice,
    "ReduceProd": _reduce_prod,
    "Add": _arithmetic(np.add),
    "Sub": _arithmetic(np.subtract),
    "Mul": _mul,
    "Div": _div,
    "Max": _max,
    "Sqrt": _float(np.sqrt),
    "Reciprocal": _float(np.reciprocal),
}
# A Max of shapes is read, not folded: it is the broadcast batch of tf2onnx's flattened
# einsums, which MatMulAsFlattenedBatch reads as written, static or not, and removes.
_FOLDED = _EVALUATORS.keys() - {"Max"}


def _evaluate(node: gs.Node, args: list[_Fact | None]) -> _Fact | None:
    """The fact ``node`` computes from its inputs' facts, or None where it cannot say exactly."""
    evaluator = _EVALUATORS.get(node.op)
    if evaluator is None or (node.op != "Shape" and (not args or args[0] is None)):
        return None  # a Shape reads its input's static shape, every other op its input's value
    return evaluator(node, args)


def _fact_of(tensor: gs.Tensor, memo: IdentityMap, depth: int) -> _Fact | None:
    if tensor in memo:
        return memo[tensor]
    vector = tensor.shape is None or len(tensor.shape) <= 1  # shape values are vectors and scalars
    value = const_value(tensor) if vector else None
    node = producer(tensor)
    if value is not None:
        fact = _Fact(value, value.dtype)
    elif node is None or node.op not in _EVALUATORS or node.domain or depth > 32 or not vector:
        fact = None
    else:
        args = [] if node.op == "Shape" else [_fact_of(t, memo, depth + 1) if t.name else None for t in node.inputs]
        try:
            fact = _evaluate(node, args)
        except (ValueError, IndexError, TypeError):
            fact = None
    memo[tensor] = fact
    return fact


# ---------------------------------------------------------------------------------------- folding

def fold(graph: gs.Graph, state: RunState) -> list[Fused]:
    """Replace every value a ``Shape`` starts and the static dimensions fix by its constant.

    Only the last such value of each chain becomes a Constant node, under the value's own name
    (the rest dies with the chain); each is recorded with the nodes it replaced, a
    ``ShapeFact`` rule's rewrite.
    """
    _fix_read_sizes(graph)
    facts: IdentityMap[gs.Tensor, _Fact] = IdentityMap()
    chain: IdentityMap[gs.Tensor, list[gs.Node]] = IdentityMap()  # the nodes each known value comes from
    for node in graph.nodes:
        if node.op not in _FOLDED or node.domain or len(node.outputs) != 1:
            continue
        if node.op != "Shape" and not any(t in facts for t in node.inputs):
            continue  # no Shape starts it: constants stay as the exporter wrote them
        args = []
        for t in node.inputs:
            value = const_value(t) if t not in facts else None
            args.append(facts[t] if t in facts else None if value is None else _Fact(value, value.dtype))
        if any(x is None for x in args[1:]) and node.op != "Shape":
            continue
        try:
            fact = _evaluate(node, args)
        except (ValueError, IndexError, TypeError):
            fact = None
        if fact is None:
            continue
        facts[node.outputs[0]] = fact
        chain[node.outputs[0]] = [node] + [n for t in node.inputs if t in chain for n in chain[t]]
    records, claimed, before = [], set(), IdentityMap()
    for tensor in list(facts):
        if not facts[tensor].full or is_graph_output(graph, tensor):
            continue
        if all(all(o in facts and facts[o].full for o in u.outputs) for u in tensor.outputs):
            continue  # read only inside the chain: the chain's last value is folded instead
        old = producer(tensor)
        constant, record = _constant(state, tensor, facts[tensor].value(), [n for n in chain[tensor] if n.name not in claimed])
        before[old] = constant
        records.append(record)
        claimed.update(name for name, _ in record.replaced)
    if records:  # each Constant goes where the node it replaces was, so the order stays topological
        graph.nodes = [m for n in graph.nodes for m in ([before[n], n] if n in before else [n])]
    return records


def _fix_read_sizes(graph: gs.Graph):
    """Give each value a ``Shape`` reads the static sizes ``dimension`` proves where onnx's
    inference left a symbol: it does not cancel them ([B, S, 32] reshaped to [B, S, 4, -1] comes
    out [B, S, 4, unk]), and after an opset conversion it may not follow the target at all."""
    leading, memo = _leading(graph, None) or Leading((None, None), ()), IdentityMap()
    named = {d for t in graph.inputs for d in (t.shape or []) if isinstance(d, str)}  # sizes only the run fixes

    def size(t, axis):
        try:
            found = dimension(t, axis, leading, memo)
        except RecursionError:  # a path too deep to follow proves nothing
            return None
        return found if isinstance(found, int) else None
    for node in graph.nodes:
        t = node.inputs[0] if node.op == "Shape" and not node.domain and node.inputs else None
        if t is None or isinstance(t, gs.Constant) or t.shape is None:
            continue
        sizes = [d if isinstance(d, (int, np.integer)) and d >= 0 or d in named else size(t, i)
                 for i, d in enumerate(t.shape)]
        t.shape = [d if s is None or s is d else s for s, d in zip(sizes, t.shape)]


def _constant(state: RunState, tensor: gs.Tensor, value: np.ndarray, replaced: list[gs.Node]) -> tuple[gs.Node, Fused]:
    """A Constant node holding ``value`` that writes ``tensor`` in place of the node that computed it
    (same name, same readers); the old node keeps a dangling output and dies with its chain."""
    old = producer(tensor)
    old.outputs[0] = gs.Variable(_unique(state, f"{tensor.name}/computed"))
    name = _unique(state, f"{old.name}/folded")
    node = gs.Node("Constant", name, {"value": gs.Constant(_unique(state, f"{name}/value"), value)}, [], [tensor])
    tensor.dtype, tensor.shape = value.dtype, list(value.shape)
    return node, Fused(RULE, "static", name, "Constant", [(n.name, n.op) for n in replaced],
                       {"value": value.item() if value.size == 1 else f"{value.dtype}{list(value.shape)}"}, rules=[RULE])


def _unique(state: RunState, base: str) -> str:
    name, i = base, 1
    while name in state.names:
        name, i = f"{base}_{i}", i + 1
    state.names.add(name)
    return name


# ----------------------------------------------------------------------------- batch and sequence

# Ops whose output keeps the leading dimensions of their first input.
_KEEPS_LEADING = {"Cast", "Erf", "Tanh", "Sigmoid", "Relu", "Sqrt", "Reciprocal", "Neg", "Identity", "Gelu",
                  "FastGelu", "BiasGelu", "QuickGelu", "LayerNormalization", "SkipLayerNormalization",
                  "Attention", "MultiHeadAttention", "RotaryEmbedding", "MatMul", "Softmax", "Dropout", "Not",
                  "CumSum", "EmbedLayerNormalization", "QuantizeLinear", "DequantizeLinear", "MatMulIntegerToFloat",
                  "DynamicQuantizeMatMul", "QuantizedLinear", "QuantizedLinearGelu", "QuantizedLinearToFloat",
                  "QuantizedLinearGeluToFloat"}
_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Equal", "Greater", "Less", "And", "Or", "Where"}


def spans_batch_and_sequence(graph: gs.Graph, tensor: gs.Tensor, memo: IdentityMap | None = None,
                             ids: gs.Tensor | None = None) -> bool:
    """Whether ``tensor``'s first two dimensions provably are the model's (batch, sequence):
    those every 2-D-or-more model input shares, or those of the model input ``ids`` (tf2onnx
    names each input's dimensions apart, so only values computed from one input agree).

    Shape inference loses these dimensions through Slice and broadcasting, so this
    follows the value back to a 2-D model input through ops that keep leading
    dimensions. A value that may broadcast over batch or sequence (the [1, S, H]
    position term of an embedding sum) is not proven. ``memo`` holds the answers for one ``ids``.
    """
    memo = IdentityMap() if memo is None else memo
    if tensor in memo:
        return memo[tensor]
    memo[tensor] = False  # cycles cannot prove anything

    def spans(t):
        return spans_batch_and_sequence(graph, t, memo, ids)

    node = producer(tensor)
    if node is None:
        result = tensor is ids or _is_sequence_input(graph, tensor)
    elif node.op in _ELEMENTWISE:
        result = _broadcast_keeps_leading(graph, node, spans, ids)
    elif node.op in _KEEPS_LEADING:
        weight = node.inputs[1] if node.op in ("MatMul", "MatMulIntegerToFloat", "DynamicQuantizeMatMul") else None
        # x·W keeps x's leading axes only where they are batch axes: a 2-D x [B, S] contracts S
        result = (weight is None or (rank_through(weight) == 2 and (rank_through(node.inputs[0]) or 0) >= 3)) and spans(node.inputs[0])
    elif node.op == "Gather" and attr(node, "axis") in (0, None) and _is_table(node.inputs[0]):
        result = spans(node.inputs[1])
    elif node.op == "GatherElements":  # the output has the indices' shape
        result = spans(node.inputs[1])
    elif node.op == "DynamicQuantizeLinear":  # the integers have the input's shape (its scale and zero point are scalars)
        result = tensor is node.outputs[0] and spans(node.inputs[0])
    elif node.op in ("Split", "Slice"):  # every output keeps the dimensions of the axes it does not cut
        result = _cuts_only_inner_axes(node) and spans(node.inputs[0])
    elif node.op == "Reshape" or (node.op == "Expand" and _is_ones_constant(node.inputs[0])):
        # a target [dim0(t), dim1(t), …]; an Expand of a constant of size 1 takes the target's
        # shape, unless the constant has more axes than the target
        target = entries(node.inputs[1])
        fewer = node.op == "Expand" and target is not None and len(target) < rank(node.inputs[0])
        result = target is not None and len(target) >= 2 and not fewer and all(
            isinstance(e, DimOf) and e.index == i and spans(e.tensor) for i, e in enumerate(target[:2]))
        if not result and node.op == "Reshape" and target is not None and len(target) >= 2:
            # a target that names the dimensions another way: heads unfolded from the batch
            # ([B·N, S, h] → [B, N, S, h] → [B, S, N, h] → [B, S, N·h], DeBERTa's attention output)
            leading, sizes = _leading(graph, ids), IdentityMap()
            result = leading is not None and all(
                isinstance(e, DimOf) and dimension(e.tensor, e.index, leading, sizes) == leading.dims[i]
                for i, e in enumerate(target[:2]))
    else:
        result = False
    memo[tensor] = result
    return result


def _broadcast_keeps_leading(graph: gs.Graph, node: gs.Node, spans, ids: gs.Tensor | None) -> bool:
    """An elementwise result keeps a spanning input's (batch, sequence) only where that input
    has the result's full rank and no other input can stretch those axes: with a batch (or a
    sequence) of 1, another input's larger dimension there would broadcast it. Each other input
    is 1 there, too short to reach, or provably the same dimension."""
    ranks = [rank_through(t) for t in node.inputs]
    if any(r is None for r in ranks):
        return False
    full = max(ranks)
    spanning = [t for t, r in zip(node.inputs, ranks) if r == full and const_value(t) is None and spans(t)]
    if not spanning:
        return False
    leading, sizes = None, IdentityMap()
    for t, r in zip(node.inputs, ranks):
        if any(t is s for s in spanning):
            continue
        for axis in (0, 1):
            k = axis - (full - r)
            if k < 0 or (t.shape is not None and t.shape[k] == 1):
                continue
            leading = leading or _leading(graph, ids)
            if leading is None or not _at_most(t, k, leading.dims[axis], leading, sizes):
                return False
    return True


def _at_most(tensor: gs.Tensor, axis: int, target, leading: Leading, sizes: IdentityMap, depth: int = 0) -> bool:
    """Dimension ``axis`` of ``tensor`` is 1 or ``target``, or is cut from 0 to ``target`` (a
    position table sliced to the sequence): no larger than ``target`` then, so wherever the graph
    runs at all (a size between 1 and ``target`` would not broadcast) it cannot stretch it."""
    if dimension(tensor, axis, leading, sizes) in (1, target):
        return True
    node = producer(tensor)
    if node is None or node.domain or depth > 16 or tensor is not node.outputs[0]:
        return False

    def at_most(t, k):
        return _at_most(t, k, target, leading, sizes, depth + 1)
    if node.op in _SAME_SHAPE:
        return at_most(node.inputs[0], axis)
    if node.op == "Gather" and not node.attrs.get("axis", 0) and rank(node.inputs[1]) is not None:
        indices = rank(node.inputs[1])
        return at_most(node.inputs[1], axis) if axis < indices else at_most(node.inputs[0], axis - indices + 1)
    if node.op == "Slice" and len(node.inputs) >= 3:
        starts, ends = entries(node.inputs[1]), entries(node.inputs[2])
        axes = entries(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3].name else \
            list(range(len(starts or [])))
        steps = entries(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4].name else [1] * len(axes or [])
        r = rank(tensor)
        if None in (starts, ends, axes, steps, r) or not all(isinstance(a, int) for a in axes):
            return False
        axes = [a + r if a < 0 else a for a in axes]
        if axis not in axes:
            return at_most(node.inputs[0], axis)
        i = axes.index(axis)
        return starts[i] == 0 and steps[i] == 1 and _resolve(ends[i], lambda t, k: dimension(t, k, leading, sizes)) == target
    return False


def _is_table(tensor: gs.Tensor) -> bool:
    """A constant, or a constant stored quantized and dequantized (an embedding table in an all-ops QDQ model)."""
    node = producer(tensor)
    if node is not None and node.op == "DequantizeLinear":
        tensor = node.inputs[0]
    return const_value(tensor) is not None


def rank_through(tensor: gs.Tensor) -> int | None:
    """The rank, read back through a (De)QuantizeLinear or a MatMul by a matrix where a fusion
    emitted them without shapes (an inlined INT8 block: DQ(x_q) · DQ(W_q))."""
    for _ in range(8):
        node = producer(tensor)
        if rank(tensor) is not None or node is None:
            break
        if node.op == "MatMul" and (rank_through(node.inputs[1]) != 2 or not _dequantized(node.inputs[0])):
            break
        if node.op not in ("QuantizeLinear", "DequantizeLinear", "MatMul"):
            break
        tensor = node.inputs[0]
    return rank(tensor)


def _dequantized(tensor: gs.Tensor) -> bool:
    node = producer(tensor)
    return node is not None and node.op == "DequantizeLinear"


class Leading(NamedTuple):
    """The model's (batch, sequence) as ``dimension`` names them (``dims``: those of the first of
    ``inputs``), and the model inputs whose first two dimensions they are."""
    dims: tuple[DimOf, DimOf]
    inputs: tuple[gs.Tensor, ...]


def model_leading(graph: gs.Graph) -> Leading | None:
    """The model's (batch, sequence), shared by every model input that has them."""
    return _leading(graph, None)


def _leading(graph: gs.Graph, ids: gs.Tensor | None) -> Leading | None:
    """``ids`` alone (tf2onnx names each input's dimensions apart), or every model input that
    shares them with every other (see ``_is_sequence_input``)."""
    inputs = (ids,) if ids is not None else tuple(t for t in graph.inputs if _is_sequence_input(graph, t))
    return Leading((DimOf(inputs[0], 0), DimOf(inputs[0], 1)), inputs) if inputs else None


# Ops whose output has the shape of their first input, and ops that broadcast all their inputs.
_SAME_SHAPE = {"Cast", "Not", "Neg", "Abs", "Sign", "Log", "Exp", "Ceil", "Floor", "Erf", "Tanh", "Sigmoid", "Relu",
               "Sqrt", "Reciprocal", "Identity", "Softmax", "Clip", "Dropout", "LayerNormalization",
               "Gelu", "FastGelu", "BiasGelu", "QuickGelu", "SkipLayerNormalization",  # and the fused ones
               "QuantizeLinear", "DequantizeLinear"}
_BROADCASTS = _ELEMENTWISE | {"LessOrEqual", "GreaterOrEqual", "Xor", "Mod"}


def dimension(tensor: gs.Tensor, axis: int, leading: Leading, memo: IdentityMap):
    """Dimension ``axis`` (≥ 0) of ``tensor`` as an entry of the model inputs' dimensions: an int
    the graph fixes, a ``DimOf`` of a model input (the model's batch and sequence read as the
    ``leading`` pair), or a ``Product`` of such; None where the graph does not fix it exactly.

    Followed back through the ops an attention block reshapes with: Reshape (an inferred -1 is
    the input's size divided by the other entries, an exact division of products), Transpose,
    MatMul, broadcasting elementwise ops, Expand, Gather and GatherElements, Unsqueeze and
    Squeeze, a Slice (of an axis it cuts only from 0 to its end), and a Range from 0 by 1. A
    broadcast proves a dimension only where every input's is known and all that are not 1 agree.
    ``memo`` holds the answers per tensor, by axis.
    """
    size = tensor.shape[axis] if tensor.shape is not None and axis < len(tensor.shape) else None
    if isinstance(size, (int, np.integer)) and size >= 0:
        return int(size)
    if isinstance(size, str) and leading.inputs:
        # onnx's inference carries an input's named dimension only where it provably is that one
        names = [d if isinstance(d, str) else None for d in (leading.inputs[0].shape or [])[:2]]
        if size in names:
            return leading.dims[names.index(size)]
    known = memo.setdefault(tensor, {})
    if axis not in known:
        known[axis] = None  # cycles cannot prove anything
        try:
            known[axis] = _dimension(tensor, axis, leading, memo)
        except (ValueError, IndexError, TypeError):
            known[axis] = None
    return known[axis]


def _dimension(tensor: gs.Tensor, axis: int, leading: Leading, memo: IdentityMap):
    def dim_of(t, k):
        return dimension(t, k, leading, memo)

    node = producer(tensor)
    if node is None:  # a model input (a constant's dimensions are all static)
        if axis < 2 and any(t is tensor for t in leading.inputs):
            return leading.dims[axis]
        return DimOf(tensor, axis) if tensor.shape is not None else None
    if node.domain not in (None, "", "com.microsoft") or tensor is not node.outputs[0] or rank(tensor) is None:
        return None
    r = rank(tensor)
    if node.op in _SAME_SHAPE:
        return dim_of(node.inputs[0], axis)
    if node.op == "Transpose":
        perm = node.attrs.get("perm") or list(range(r))[::-1]
        return dim_of(node.inputs[0], perm[axis])
    if node.op == "GatherElements":  # the output has the indices' shape
        return dim_of(node.inputs[1], axis)
    if node.op == "Gather" and not node.attrs.get("axis", 0):  # the indices' shape, then the data's rows
        indices = rank(node.inputs[1])
        return None if indices is None else dim_of(node.inputs[1], axis) if axis < indices else \
            dim_of(node.inputs[0], axis - indices + 1)
    if node.op in _BROADCASTS:
        return _broadcast([_aligned(t, axis, r, dim_of) for t in node.inputs])
    if node.op == "MatMul":
        a, b = node.inputs
        if rank(a) is None or rank(b) is None or rank(a) < 2 or rank(b) < 2:
            return None
        if axis == r - 1:
            return dim_of(b, rank(b) - 1)
        if axis == r - 2:
            return dim_of(a, rank(a) - 2)
        return _broadcast([_aligned(t, axis, r, dim_of) for t in (a, b)])  # the batch axes broadcast
    if node.op == "Expand":
        target = _expand_target(node.inputs[1])
        shift = None if target is None else r - len(target)
        if shift is None or shift < 0:
            return None
        return _broadcast([_aligned(node.inputs[0], axis, r, dim_of),
                           _resolve(target[axis - shift], dim_of) if axis >= shift else 1])
    if node.op == "Reshape":
        target, data = entries(node.inputs[1]), node.inputs[0]
        if target is None or len(target) != r:
            return None
        if target[axis] == 0 and not node.attrs.get("allowzero", 0):
            return dim_of(data, axis)
        if target[axis] != -1:
            return _resolve(target[axis], dim_of)
        if rank(data) is None or 0 in target:
            return None  # the size -1 stands for: the input's, divided by the other entries'
        others = [_resolve(e, dim_of) for i, e in enumerate(target) if i != axis]
        return _quotient(product(*[dim_of(data, i) for i in range(rank(data))]), others)
    if node.op in ("Unsqueeze", "Squeeze"):
        axes = node.attrs.get("axes") if "axes" in node.attrs else (
            const_value(node.inputs[1]) if len(node.inputs) > 1 else None)
        if axes is None:
            return None
        if node.op == "Unsqueeze":
            axes = sorted(int(a) + r if a < 0 else int(a) for a in np.ravel(axes))
            return 1 if axis in axes else dim_of(node.inputs[0], axis - sum(a < axis for a in axes))
        ri = rank(node.inputs[0])
        kept = [i for i in range(ri) if i not in {int(a) + ri if a < 0 else int(a) for a in np.ravel(axes)}]
        return dim_of(node.inputs[0], kept[axis])
    if node.op == "Slice":  # an axis it cuts keeps its size only when cut from 0 to its end by 1
        data, bounds = node.inputs[0], [entries(t) if t.name else None for t in node.inputs[1:]]
        axes = bounds[2] if len(bounds) > 2 and bounds[2] is not None else list(range(len(bounds[0] or [])))
        axes = [a + r if isinstance(a, int) and a < 0 else a for a in axes]
        if axis not in axes:
            return dim_of(data, axis) if all(isinstance(a, int) for a in axes) and bounds[0] else None
        k, whole = axes.index(axis), dim_of(data, axis)
        step = bounds[3][k] if len(bounds) > 3 and bounds[3] is not None else 1
        end = bounds[1][k] if bounds[1] is not None else None
        reaches = isinstance(end, int) and end >= 2**31 - 1 or (
            end is not None and not isinstance(end, int) and _resolve(end, dim_of) == whole)
        return whole if bounds[0][k] == 0 and step == 1 and reaches and whole is not None else None
    if node.op == "Range":  # start 0, step 1: as many entries as the limit says
        start, limit, delta = (_fact_of(t, IdentityMap(), 0) for t in node.inputs)
        if _ints(start) != [0] or _ints(delta) != [1] or limit is None or limit.array.size != 1:
            return None
        return _resolve(limit.array.ravel()[0], dim_of)
    return None


def _expand_target(tensor: gs.Tensor) -> list | None:
    """An Expand's target as ``entries`` reads it, or as TorchScript writes ``expand(sizes)``:
    ``Where(v == -1, ones, v)`` with ``v = Reshape(sizes, [-1])``, each -1 of the sizes (keep that
    dimension) made 1, which an Expand broadcasts alike. A run-time size is never -1, so only
    written -1s are replaced."""
    target = entries(tensor)
    node = producer(tensor)
    if target is not None or node is None or node.op != "Where" or node.domain:
        return target
    condition, ones, v = producer(node.inputs[0]), node.inputs[1], node.inputs[2]
    flat = producer(v)  # TorchScript flattens the sizes first: Reshape(sizes, [-1]) of a vector
    if flat is not None and flat.op == "Reshape" and const_value(flat.inputs[1]) is not None \
            and const_value(flat.inputs[1]).tolist() == [-1]:
        read = entries(flat.inputs[0])
    else:
        read = entries(v)
    if read is None or condition is None or condition.op != "Equal" or condition.inputs[0] is not v \
            or not _is_filled(ones, v, 1):
        return None
    minus = producer(condition.inputs[1])
    if minus is None or minus.op != "Mul" or not _is_filled(minus.inputs[0], v, 1) \
            or const_value(minus.inputs[1]) is None or const_value(minus.inputs[1]).tolist() != -1:
        return None
    return [1 if e == -1 else e for e in read]


def _is_filled(tensor: gs.Tensor, like: gs.Tensor, fill: int) -> bool:
    """``tensor`` is ``ConstantOfShape(Shape(like))`` filled with ``fill`` (the Shape folded to
    the constant it is, or not)."""
    node = producer(tensor)
    if node is None or node.op != "ConstantOfShape" or node.domain:
        return False
    value, size = node.attrs.get("value"), node.inputs[0]
    shape, written = producer(size), const_value(size)
    same = (shape is not None and shape.op == "Shape" and shape.inputs[0] is like and not shape.attrs) or (
        written is not None and like.shape is not None and written.tolist() == list(like.shape))
    return same and value is not None and np.asarray(value.values).ravel().tolist() == [fill]


def _aligned(tensor: gs.Tensor, axis: int, out_rank: int, dim_of):
    """``tensor``'s dimension at output ``axis`` of a broadcast to rank ``out_rank``: 1 where it has
    fewer axes, None where its rank is unknown."""
    r = rank(tensor)
    if r is None:
        return None
    k = axis - (out_rank - r)
    return 1 if k < 0 else dim_of(tensor, k)


def _broadcast(dims: list):
    """The broadcast of dimensions: None unless every one is known and all that are not 1 agree."""
    if any(d is None for d in dims):
        return None
    rest = [d for d in dims if not (isinstance(d, int) and d == 1)]
    return 1 if not rest else rest[0] if all(d == rest[0] for d in rest) else None


def _resolve(entry, dim_of):
    """A shape entry in terms of the model inputs' dimensions (``dim_of`` reads a ``DimOf``)."""
    if isinstance(entry, DimOf):
        return dim_of(entry.tensor, entry.index)
    if isinstance(entry, Product):
        factors = [_resolve(f, dim_of) for f in entry.factors]
        return None if any(f is None for f in factors) else product(entry.coefficient, *factors)
    if isinstance(entry, Maximum):
        return None
    return int(entry) if int(entry) >= 0 else None


def _quotient(total, others: list):
    """``total`` divided by the product of ``others``, where that division is exact as products of
    the same run-time entries (a -1 in a Reshape target); None otherwise."""
    if total is None or any(o is None for o in others):
        return None
    divisor = product(*others)
    t_coefficient, t_factors = (total.coefficient, list(total.factors)) if isinstance(total, Product) else \
        (total, []) if isinstance(total, int) else (1, [total])
    d_coefficient, d_factors = (divisor.coefficient, list(divisor.factors)) if isinstance(divisor, Product) else \
        (divisor, []) if isinstance(divisor, int) else (1, [divisor])
    for factor in d_factors:
        if factor not in t_factors:
            return None
        t_factors.remove(factor)
    if d_coefficient == 0 or t_coefficient % d_coefficient:
        return None
    return product(t_coefficient // d_coefficient, *t_factors)


def _cuts_only_inner_axes(node: gs.Node) -> bool:
    """Whether a Split or Slice provably cuts no axis before the third (GeGLU's chunk of its
    projection in two along the last axis)."""
    if node.op == "Split":
        axes = [attr(node, "axis") or 0]
    elif len(node.inputs) > 3 and node.inputs[3].name:
        axes = const_value(node.inputs[3])
        axes = None if axes is None else [int(a) for a in np.ravel(axes)]
    else:
        axes = [0]  # no axes: the starts count from the first axis
    r = rank(node.inputs[0])
    if axes is None or (r is None and any(a < 0 for a in axes)):
        return False
    return all((a + r if a < 0 else a) >= 2 for a in axes)


def _is_ones_constant(tensor: gs.Tensor) -> bool:
    """A constant whose every dimension is 1 (a scalar fill value)."""
    value = const_value(tensor)
    return value is not None and all(d == 1 for d in value.shape)


def _is_sequence_input(graph: gs.Graph, tensor: gs.Tensor) -> bool:
    """A model input (ids [B, S], or hidden states [B, S, H]) whose first two dimensions
    are those of every other such input."""
    if not any(t is tensor for t in graph.inputs) or (rank(tensor) or 0) < 2:
        return False
    dims = {tuple(t.shape[:2]) for t in graph.inputs if (rank(t) or 0) >= 2}
    return len(dims) == 1
