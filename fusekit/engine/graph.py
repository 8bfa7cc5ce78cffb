"""Reading facts off an onnx-graphsurgeon graph: constant values, attributes, ranks."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs


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
