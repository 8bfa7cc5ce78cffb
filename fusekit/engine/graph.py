"""Reading facts off an onnx-graphsurgeon graph: constant values, attributes, ranks; and the
graph-wide surgery the passes run after rewriting (``toposort``, ``cleanup``, ``disconnect``),
onnx-graphsurgeon's results in time linear in the graph."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import FusekitError


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


def disconnect(node: gs.Node, outputs: bool = False):
    """``node.inputs.clear()`` (and ``node.outputs.clear()`` with ``outputs``), finding ``node``
    among each value's readers and writers by identity.

    onnx-graphsurgeon's ``clear`` removes it with ``list.remove``, which compares it by value
    (names, attributes, every input and output) with each reader before it: a value every
    layer reads (the mask, a shared constant) made that cost grow with the square of the depth.
    """
    for tensor in node.inputs:
        readers = tensor.outputs
        list.__delitem__(readers, next(i for i, n in enumerate(readers) if n is node))  # past the list's syncing
    list.clear(node.inputs)
    if outputs:
        for tensor in node.outputs:
            writers = tensor.inputs
            list.__delitem__(writers, next(i for i, n in enumerate(writers) if n is node))
        list.clear(node.outputs)


def _nested(graph: gs.Graph) -> bool:
    """Whether ``graph`` has local functions or nodes holding subgraphs: what onnx-graphsurgeon's
    ``toposort`` and ``cleanup`` recurse into, and ours leave to them."""
    return bool(graph.functions) or any(isinstance(a, gs.Graph) for node in graph.nodes for a in node.attrs.values())


def cleanup(graph: gs.Graph) -> gs.Graph:
    """``graph.cleanup(remove_unused_graph_inputs=False)`` in time linear in the graph.

    Drops the nodes no graph output depends on, as onnx-graphsurgeon does; its ``cleanup``
    checks each graph input against a list of every used value, compared by value, which grew
    with the square of the graph for a model of many inputs.
    """
    if _nested(graph):
        return graph.cleanup(remove_unused_graph_inputs=False)
    for tensor in graph.inputs:
        tensor.inputs.clear()  # a graph input has no producer
    local = {t.name for node in graph.nodes for t in node.outputs if not t.is_empty()}
    local |= {t.name for t in graph.inputs}
    local |= {t.name for t in [*graph.outputs, *(t for node in graph.nodes for t in node.inputs)]
              if isinstance(t, gs.Constant)}
    seen: set[str] = set()
    used: set[int] = set()
    frontier = list(graph.outputs)
    while frontier:
        tensor = frontier.pop()
        if not tensor.is_empty():
            if tensor.name not in local or tensor.name in seen:
                continue
            seen.add(tensor.name)
        for node in tensor.inputs:
            if id(node) not in used:
                used.add(id(node))
                frontier.extend(node.inputs)
    kept = []
    for node in graph.nodes:
        if id(node) in used:
            kept.append(node)
        else:
            disconnect(node, outputs=True)
    graph.nodes = kept
    return graph


def toposort(graph: gs.Graph) -> gs.Graph:
    """``graph.toposort()`` in time linear in nodes and edges, to the same order.

    onnx-graphsurgeon orders nodes by their level (1 + the highest level among their
    producers), ties in the order its depth-first walk from each node in list order first
    finished them; it walks with a recursive call and per-node closures, the bulk of a
    sweep's cost on a large graph. This is that walk with an explicit stack and the levels
    bucketed. A graph whose nodes hold subgraphs, or that has local functions, is left to
    onnx-graphsurgeon, which sorts those too.
    """
    if _nested(graph):
        return graph.toposort()
    inside = {id(node) for node in graph.nodes}

    def producers(node: gs.Node) -> list[gs.Node]:
        found: dict[int, gs.Node] = {}
        for tensor in node.inputs:
            for p in tensor.inputs:
                if id(p) in inside:  # a producer outside the graph is no constraint on its order
                    found.setdefault(id(p), p)
        return list(found.values())

    level: dict[int, int] = {}
    finished: list[gs.Node] = []
    for root in graph.nodes:
        if id(root) in level:
            continue
        stack, on_path = [[root, iter(producers(root)), -1]], {id(root)}
        while stack:
            frame = stack[-1]
            for p in frame[1]:
                known = level.get(id(p))
                if known is None:
                    if id(p) in on_path:
                        raise FusekitError(f"internal error, please report: the graph has a cycle through '{p.name}'")
                    stack.append([p, iter(producers(p)), -1])
                    on_path.add(id(p))
                    break
                frame[2] = max(frame[2], known)
            else:
                stack.pop()
                on_path.discard(id(frame[0]))
                level[id(frame[0])] = frame[2] + 1
                finished.append(frame[0])
                if stack:
                    stack[-1][2] = max(stack[-1][2], frame[2] + 1)
    buckets: list[list[gs.Node]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for node in finished:
        buckets[level[id(node)]].append(node)
    graph.nodes = [node for bucket in buckets for node in bucket]
    return graph
