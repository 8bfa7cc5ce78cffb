"""Who produces and who consumes each value of a graph proto: the one index that
``layers``, ``diff``, ``explain``, ``inspection`` and the INT8 analysis walk.

Nodes are identified by their index in ``graph.node``; names are for people, and
exports do not always give them.
"""
from __future__ import annotations

import heapq
from collections import defaultdict
from functools import cached_property
from pathlib import Path

import networkx as nx
import numpy as np
import onnx
from onnx import numpy_helper

from ..branches import describe, view
from ..engine.graph import default_names
from ..errors import FusekitError
from ..modelio import read

# Weight element types and their sizes in bytes.
FLOAT_TYPES = {onnx.TensorProto.FLOAT: 4, onnx.TensorProto.FLOAT16: 2, onnx.TensorProto.BFLOAT16: 2,
               onnx.TensorProto.DOUBLE: 8}


def name_unnamed(nodes) -> list[str]:
    """Every node's name, unnamed ones named as fusekit's import names them (``graphio.import_graph``)."""
    return default_names([n.op_type for n in nodes], [n.name for n in nodes])


def proto_constant(value: str, initializers: dict, producer_of) -> np.ndarray | None:
    """The value of an initializer, a Constant node's output, or an Identity of either
    (``producer_of(name)`` gives the node writing ``name``, or None)."""
    if value in initializers:
        return numpy_helper.to_array(initializers[value])
    node = producer_of(value)
    if node is None:
        return None
    if node.op_type == "Identity":
        return proto_constant(node.input[0], initializers, producer_of)
    if node.op_type == "Constant" and node.attribute:
        found = onnx.helper.get_attribute_value(node.attribute[0])
        return numpy_helper.to_array(found) if isinstance(found, onnx.TensorProto) else np.asarray(found)
    return None


class Dataflow:
    """A read-only view of one graph: producers, consumers, constants, a topological order."""

    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self.nodes = list(graph.node)
        self.names = name_unnamed(self.nodes)
        self.index = {name: i for i, name in enumerate(self.names)}
        self.initializers = {t.name: t for t in graph.initializer}
        self.inputs = [i.name for i in graph.input if i.name not in self.initializers]
        self.outputs = [o.name for o in graph.output]
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = defaultdict(list)
        for i, node in enumerate(self.nodes):
            for t in node.output:
                if t:
                    self.producer[t] = i
            for t in dict.fromkeys(node.input):  # a node reading a value twice consumes it once
                if t:
                    self.consumers[t].append(i)

    @cached_property
    def dag(self) -> nx.DiGraph:
        dag = nx.DiGraph()
        dag.add_nodes_from(range(len(self.nodes)))
        dag.add_edges_from((self.producer[t], i) for i, n in enumerate(self.nodes) for t in n.input
                           if t in self.producer)
        return dag

    @cached_property
    def order(self) -> list[int]:
        """Node indices in topological order (file order breaks ties): a heap over the ready
        nodes, so the order needs no ``dag`` built."""
        waiting = [len({self.producer[t] for t in n.input if t in self.producer}) for n in self.nodes]
        ready = [i for i, w in enumerate(waiting) if w == 0]
        order = []
        while ready:
            i = heapq.heappop(ready)
            order.append(i)
            for u in {c for t in self.nodes[i].output if t for c in self.consumers.get(t, ())}:
                waiting[u] -= 1
                if waiting[u] == 0:
                    heapq.heappush(ready, u)
        if len(order) < len(self.nodes):
            stuck = next(i for i, w in enumerate(waiting) if w)
            raise FusekitError(f"the graph has a cycle (through or after node '{self.names[stuck]}')")
        return order

    @cached_property
    def value_names(self) -> frozenset[str]:
        """Every value the graph has: node outputs, graph inputs, initializers."""
        return frozenset(self.producer) | frozenset(self.inputs) | frozenset(self.initializers)

    def op(self, i: int) -> str:
        return op_key(self.nodes[i])

    def users(self, i: int) -> list[int]:
        return sorted({c for t in self.nodes[i].output for c in self.consumers.get(t, ())})

    def feeders(self, i: int) -> list[int]:
        return sorted({self.producer[t] for t in self.nodes[i].input if t in self.producer})

    def is_constant(self, value: str) -> bool:
        """An initializer, or the output of a Constant node (through Identity, as tied weights are)."""
        if value in self.initializers:
            return True
        i = self.producer.get(value)
        if i is None:
            return False
        node = self.nodes[i]
        if node.op_type == "Constant":
            return True
        return node.op_type == "Identity" and self.is_constant(node.input[0])

    def constant(self, value: str) -> np.ndarray | None:
        return proto_constant(value, self.initializers, self.producer_node)

    def producer_node(self, value: str) -> onnx.NodeProto | None:
        i = self.producer.get(value)
        return None if i is None else self.nodes[i]

    def shape_of(self, value: str) -> list[int] | None:
        """A constant's shape without reading its data."""
        if value in self.initializers:
            return list(self.initializers[value].dims)
        found = self.constant(value)
        return None if found is None else list(found.shape)


def attribute(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def parameter_count(graph: onnx.GraphProto) -> tuple[int, int, int]:
    """Elements, bytes and number of the floating-point initializers (the weights), read from their dims."""
    count = size = tensors = 0
    for t in graph.initializer:
        if t.data_type in FLOAT_TYPES:
            n = int(np.prod(t.dims, dtype=np.int64))
            count, size, tensors = count + n, size + n * FLOAT_TYPES[t.data_type], tensors + 1
    return count, size, tensors


def op_key(node: onnx.NodeProto) -> str:
    """An op as reports name it: ``Add``, ``com.microsoft.Attention``."""
    return f"{node.domain}.{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type


def op_histogram(graph: onnx.GraphProto) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for node in graph.node:
        counts[op_key(node)] += 1
    return dict(sorted(counts.items()))


def stored_bytes(path, model: onnx.ModelProto) -> int:
    """The size on disk of a model file and of the external data files it names."""
    path = Path(path)
    files = {path}
    for t in onnx.external_data_helper._get_all_tensors(model):
        for entry in t.external_data:
            if entry.key == "location":
                files.add(path.parent / entry.value)
    return sum(f.stat().st_size for f in files if f.is_file())


def readable_size(n: float) -> str:
    """A byte count as reports write it: ``512 B``, ``1.5 MB``."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def load_to_read(model_or_path) -> tuple[onnx.ModelProto, list[str]]:
    """A model to report on, and the notes of what was done to read it (see :func:`modelio.read`);
    a packed model in the branch form is read as its packed branch (``fusekit.branches.view``)."""
    if isinstance(model_or_path, onnx.ModelProto):
        return view(model_or_path), [n for n in [describe(model_or_path)] if n]
    loaded = read(model_or_path)
    note = describe(loaded.model)
    return view(loaded.model, copy=False), loaded.notes + ([note] if note else [])
