"""Reading facts off an onnx-graphsurgeon graph: constant values, attributes, ranks."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .state import IdentityMap

# Attributes that later opsets moved into inputs: (op, attribute) -> input index.
ATTRIBUTE_INPUTS = {
    ("ReduceMean", "axes"): 1,
    ("ReduceSum", "axes"): 1,
    ("ReduceMax", "axes"): 1,
    ("Unsqueeze", "axes"): 1,
    ("Squeeze", "axes"): 1,
}

ATTRIBUTE_DEFAULTS = {
    ("ReduceMean", "keepdims"): 1,
    ("ReduceSum", "keepdims"): 1,
    ("Softmax", "axis"): -1,
    ("Cast", "saturate"): 1,
    ("Gather", "axis"): 0,
    ("Gelu", "approximate"): "none",
}


def const_value(tensor: gs.Tensor) -> np.ndarray | None:
    """The value of a constant tensor (initializer or Constant node), else None."""
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    producer = tensor.inputs[0] if tensor.inputs else None
    if producer is not None and producer.op == "Identity" and not producer.domain:
        return const_value(producer.inputs[0])  # TorchScript shares a tied weight through Identity
    if producer is not None and producer.op == "Constant" and not producer.domain:
        value = producer.attrs.get("value")
        if isinstance(value, gs.Constant):
            return np.asarray(value.values)
        for key in ("value_float", "value_int"):
            if key in producer.attrs:
                return np.asarray(producer.attrs[key])
        for key in ("value_floats", "value_ints"):
            if key in producer.attrs:
                return np.asarray(list(producer.attrs[key]))
    return None


def default_names(ops: list[str], names: list[str]) -> list[str]:
    """Every node's name, unnamed ones getting ``OpType_index`` (not clashing with any other),
    so that provenance and near misses can point at every node."""
    names, taken = list(names), set(names)
    for i, op in enumerate(ops):
        if not names[i]:
            names[i] = next(f"{op}_{j}" for j in range(i, i + len(taken) + 2) if f"{op}_{j}" not in taken)
            taken.add(names[i])
    return names


def producer(tensor: gs.Tensor) -> gs.Node | None:
    return tensor.inputs[0] if tensor.inputs else None


def describe_origin(tensor: gs.Tensor) -> str:
    """Where a value comes from, for reasons: "produced by Cast 'x/Cast_3'"."""
    node = producer(tensor)
    if node is not None:
        return f"produced by {node.op} '{node.name}'"
    if isinstance(tensor, gs.Constant):
        return "an initializer"
    return f"the graph input '{tensor.name}'"


def attr(node: gs.Node, name: str):
    """An attribute's value, reading it from its input where the opset moved it there.

    Returns ``None`` when absent and without default; raises LookupError when the
    attribute lives in an input that is not constant.
    """
    if name in node.attrs:
        value = node.attrs[name]
        return list(value) if isinstance(value, (tuple, list)) else value
    index = ATTRIBUTE_INPUTS.get((node.op, name))
    if index is not None and len(node.inputs) > index and node.inputs[index].name:
        value = const_value(node.inputs[index])
        if value is None:
            raise LookupError(f"{name} of {node.op} '{node.name}' is not constant")
        return [int(v) for v in np.atleast_1d(value)]
    return ATTRIBUTE_DEFAULTS.get((node.op, name))


def rank(tensor: gs.Tensor) -> int | None:
    return None if tensor.shape is None else len(tensor.shape)


def is_graph_output(graph: gs.Graph, tensor: gs.Tensor) -> bool:
    return any(t is tensor for t in graph.outputs)


class DimOf:
    """A shape entry read at run time: dimension ``index`` of ``tensor``."""

    def __init__(self, tensor: gs.Tensor, index: int):
        self.tensor, self.index = tensor, index

    def __repr__(self):
        return f"dim{self.index}({self.tensor.name})"


def shape_entries(tensor: gs.Tensor) -> list | None:
    """What a shape tensor (a Reshape target) holds, entry by entry.

    Each entry is an int (a constant, 0 and -1 included) or a :class:`DimOf` for a
    dimension read at run time (``Unsqueeze(Gather(Shape(t), i))`` pieces, tf2onnx's Casts
    and Slices of ``Shape(t)``); ``None`` when the shape is built some other way
    (``shapes.entries`` reads it).
    """
    from .shapes import entries
    return entries(tensor)


# Ops whose output keeps the leading dimensions of their first input.
_KEEPS_LEADING = {"Cast", "Erf", "Tanh", "Sigmoid", "Relu", "Sqrt", "Reciprocal", "Neg", "Identity", "Gelu",
                  "FastGelu", "BiasGelu", "QuickGelu", "LayerNormalization", "SkipLayerNormalization",
                  "Attention", "MultiHeadAttention", "MatMul", "Softmax", "Dropout", "Not", "CumSum",
                  "EmbedLayerNormalization", "QuantizeLinear", "DequantizeLinear", "MatMulIntegerToFloat",
                  "QuantizedLinear", "QuantizedLinearGelu", "QuantizedLinearToFloat", "QuantizedLinearGeluToFloat"}
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
        result = any(const_value(t) is None and spans(t) for t in node.inputs)
    elif node.op in _KEEPS_LEADING:
        weight = node.inputs[1] if node.op in ("MatMul", "MatMulIntegerToFloat") else None
        result = (weight is None or rank(weight) == 2) and spans(node.inputs[0])
    elif node.op == "Gather" and attr(node, "axis") in (0, None) and const_value(node.inputs[0]) is not None:
        result = spans(node.inputs[1])
    elif node.op == "GatherElements":  # the output has the indices' shape
        result = spans(node.inputs[1])
    elif node.op == "Reshape" or (node.op == "Expand" and _is_ones_constant(node.inputs[0])):
        # a target [dim0(t), dim1(t), …]; an Expand of a constant of size 1 takes the target's
        # shape, unless the constant has more axes than the target
        entries = shape_entries(node.inputs[1])
        fewer = node.op == "Expand" and entries is not None and len(entries) < rank(node.inputs[0])
        result = entries is not None and len(entries) >= 2 and not fewer and all(
            isinstance(e, DimOf) and e.index == i and spans(e.tensor) for i, e in enumerate(entries[:2]))
    else:
        result = False
    memo[tensor] = result
    return result


def _is_ones_constant(tensor: gs.Tensor) -> bool:
    """A constant whose every dimension is 1 (a scalar fill value)."""
    value = const_value(tensor)
    return value is not None and all(d == 1 for d in value.shape)


def leading_origin(tensor: gs.Tensor) -> gs.Tensor:
    """The value whose first two dimensions ``tensor`` provably has: followed back through ops that
    keep the leading dimensions of their one computed input (a bias or scale vector broadcasts
    into it, never over it). Two values with the same origin cannot broadcast against each
    other in those dimensions, whatever they are."""
    for _ in range(256):
        node = producer(tensor)
        if node is None or node.domain not in (None, "", "com.microsoft"):
            return tensor
        if node.op in _ELEMENTWISE:
            computed = [t for t in node.inputs if not _is_vector_constant(t)]
            if len(computed) != 1 or len(computed) == len(node.inputs):
                return tensor
            tensor = computed[0]
        elif node.op in _KEEPS_LEADING and node.op not in ("MatMul", "MatMulIntegerToFloat", "CumSum"):
            tensor = node.inputs[0]
        elif node.op == "MatMul" and rank(node.inputs[1]) == 2:
            tensor = node.inputs[0]
        elif node.op == "Reshape":  # a target [dim0(t), dim1(t), …] gives t's leading dimensions
            from .shapes import entries
            target = entries(node.inputs[1]) or []
            if len(target) < 2 or not all(isinstance(e, DimOf) and e.index == i for i, e in enumerate(target[:2])) \
                    or target[0].tensor is not target[1].tensor:
                return tensor
            tensor = target[0].tensor
        else:
            return tensor
    return tensor


def _is_vector_constant(tensor: gs.Tensor) -> bool:
    """A constant of at most one dimension (reading its shape, not its values)."""
    node = producer(tensor)
    constant = isinstance(tensor, gs.Constant) or (node is not None and node.op == "Constant")
    return constant and tensor.shape is not None and len(tensor.shape) <= 1


def _is_sequence_input(graph: gs.Graph, tensor: gs.Tensor) -> bool:
    """A model input (ids [B, S], or hidden states [B, S, H]) whose first two dimensions
    are those of every other such input."""
    if not any(t is tensor for t in graph.inputs) or (rank(tensor) or 0) < 2:
        return False
    dims = {tuple(t.shape[:2]) for t in graph.inputs if (rank(t) or 0) >= 2}
    return len(dims) == 1
