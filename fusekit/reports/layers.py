"""Which encoder layer each node of a model belongs to.

Two ways, tried in order:

- **names**: exporters write the module path into node names or metadata —
  TorchScript ``/encoder/layer.7/attention/...``, tf2onnx ``bert/encoder/layer_7/...``,
  dynamo's ``namespace`` metadata ``encoder.layer.7.attention: ...``. They are used
  when every attention block names a layer of its own.
- **positions**: otherwise (ALBERT applies one named layer several times; some
  graphs carry no names) layers are read off the data flow. Each attention block
  reads the hidden states that enter its layer; a node belongs to layer k when it
  depends on the hidden states entering layer k but not on those entering layer
  k + 1. The last layer ends at the first graph output computed from it, so a
  pooler after it is outside every layer.

An attention block is a fused attention node, or the Softmax of an unfused one
(a Softmax whose probabilities reach a MatMul within three nodes). Nodes outside
every layer (embeddings, the attention-mask computation shared by all layers, a
pooler) get ``None``. Constant nodes take the layer of their users when they agree.
"""
from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Callable

import networkx as nx
import onnx

from .dataflow import Dataflow

FUSED_ATTENTION = {"Attention", "MultiHeadAttention", "PackedAttention"}
PROJECTIONS = {"MatMul", "Gemm"}
LAYER_IN_NAME = re.compile(r"(?:^|[/.:_ ])(?:layers?|blocks?)[._](\d+)(?=$|[/.:_ ])")


@dataclass
class Layers:
    count: int
    method: str  # "names", "positions" or "none" (no attention found)
    of: list[int | None]  # the layer of each node, by index in graph.node
    names: list[str]  # each node's name (unnamed ones as fusekit names them)

    def by_name(self) -> dict[str, int | None]:
        return dict(zip(self.names, self.of))

    def describe(self) -> str:
        if not self.count:
            return "no encoder layers (no attention found)"
        source = {"names": "node names", "positions": "the data flow"}[self.method]
        return f"{self.count} encoder layer{'s' * (self.count != 1)} (assigned from {source})"


def assign(model_or_flow: onnx.ModelProto | Dataflow) -> Layers:
    flow = model_or_flow if isinstance(model_or_flow, Dataflow) else Dataflow(model_or_flow.graph)
    cores = attention_cores(flow)
    if not cores:
        return Layers(0, "none", [None] * len(flow.nodes), flow.names)
    named = [_layer_in_name(flow.nodes[i]) for i in range(len(flow.nodes))]
    core_numbers = [named[i] for i in cores]
    if None not in core_numbers and len(set(core_numbers)) == len(cores):
        rank = {n: k for k, n in enumerate(sorted(core_numbers))}
        of, method = [rank.get(n) for n in named], "names"
    else:
        of, method = _by_position(flow, cores), "positions"
    return Layers(len(cores), method, _constants_follow_users(flow, of), flow.names)


def attention_cores(flow: Dataflow) -> list[int]:
    """The node that stands for each attention block, in graph order."""
    return [i for i in flow.order if flow.nodes[i].op_type in FUSED_ATTENTION
            or (flow.nodes[i].op_type == "Softmax" and _reaches_matmul(flow, i, hops=3))]


def _reaches_matmul(flow: Dataflow, start: int, hops: int) -> bool:
    frontier = {start}
    for _ in range(hops):
        frontier = {u for i in frontier for u in flow.users(i)}
        if any(flow.nodes[i].op_type == "MatMul" for i in frontier):
            return True
    return False


def _layer_in_name(node: onnx.NodeProto) -> int | None:
    text = " ".join([node.name] + [p.value for p in node.metadata_props if p.key == "namespace"])
    found = LAYER_IN_NAME.search(text)
    return int(found.group(1)) if found else None


def hidden_input(flow: Dataflow, core: int, upstream: Callable[[int], bool]) -> str | None:
    """The hidden states entering an attention block's layer (``upstream(i)``: whether node
    ``i`` is an ancestor of ``core``; see ``_reaches``).

    A fused attention reads them as input 0. For a Softmax, they are the nearest
    computed value upstream that two of its projections (Q and K) read.
    """
    node = flow.nodes[core]
    if node.op_type in FUSED_ATTENTION:
        return node.input[0]
    seen, queue = set(), deque(node.input)
    while queue:
        value = queue.popleft()
        if value in seen or not value or flow.is_constant(value):
            continue  # weights are shared by ALBERT's layers; they are no layer boundary
        seen.add(value)
        readers = flow.consumers.get(value, ())
        if sum(flow.nodes[c].op_type in PROJECTIONS and upstream(c) for c in readers) >= 2:
            return value
        if value in flow.producer:
            queue.extend(flow.nodes[flow.producer[value]].input)
    return None


def _reaches(flow: Dataflow, cores: list[int]) -> list[int]:
    """For each node, the attention cores it is an ancestor of, as bits (bit k: ``cores[k]``).

    One pass over the graph for all cores, where the ancestors of each core cost a pass each.
    """
    bit = {core: 1 << k for k, core in enumerate(cores)}
    reached = [0] * len(flow.nodes)
    for i in reversed(flow.order):
        for u in flow.users(i):
            reached[i] |= reached[u] | bit.get(u, 0)
    return reached


def _by_position(flow: Dataflow, cores: list[int]) -> list[int | None]:
    reached = _reaches(flow, cores)
    boundaries = {}
    for k, core in enumerate(cores):
        value = hidden_input(flow, core, lambda i, k=k: bool(reached[i] >> k & 1))
        if value is not None:
            boundaries.setdefault(value, k + 1)
    level, depth = _levels(flow, boundaries)
    count = len(cores)
    # the last layer ends at the graph output closest to it (the last hidden state)
    ends = [o for o in flow.outputs if o in flow.producer and level[flow.producer[o]] == count]
    after: set[int] = set()
    if ends:
        end = min(ends, key=lambda o: depth[flow.producer[o]])
        after = nx.descendants(flow.dag, flow.producer[end])
    return [level[i] - 1 if 1 <= level[i] <= count and i not in after else None for i in range(len(flow.nodes))]


def _levels(flow: Dataflow, boundaries: dict[str, int]) -> tuple[list[int], list[int]]:
    """For each node, how many layer boundaries it depends on, and its longest path from the inputs."""
    level, depth = [0] * len(flow.nodes), [0] * len(flow.nodes)
    value_level: dict[str, int] = {}
    for i in flow.order:
        node = flow.nodes[i]
        level[i] = max((value_level.get(t, 0) for t in node.input), default=0)
        depth[i] = 1 + max((depth[p] for p in flow.feeders(i)), default=0)
        for t in node.output:
            value_level[t] = max(level[i], boundaries.get(t, 0))
    return level, depth


def _constants_follow_users(flow: Dataflow, of: list[int | None]) -> list[int | None]:
    of = list(of)
    for i in reversed(flow.order):
        if of[i] is None and all(flow.is_constant(t) for t in flow.nodes[i].output):
            found = {of[u] for u in flow.users(i)}
            if len(found) == 1:
                of[i] = found.pop()
    return of


__all__ = ["Layers", "assign", "attention_cores", "hidden_input"]
