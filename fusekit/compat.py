"""Reading a model the way ONNX Runtime reads it.

ONNX Runtime loads models that onnx's checker refuses or that predate the opsets
fusekit reads. Each is brought to the form fusekit reads, and each change is
returned as a note, so the user sees what was done and verification (which runs
the file as it is on disk) covers it:

- nodes listed before their inputs are computed (ONNX Runtime's own test graphs)
  are sorted topologically; a graph with a cycle is refused;
- ``com.microsoft`` ops in a model that does not import the domain get the import;
- ``LayerNormalization`` in the default domain below opset 17 is ONNX Runtime's
  contrib op (its transformers optimizer writes it into opset 11–16 models): the
  same inputs (X, Scale, B), attributes (axis, epsilon, stash_type) and outputs
  (Y, Mean, InvStdDev) as opset 17's, so the model is converted to opset 17 and
  the node becomes the standard op;
- opsets below 11 are converted to 11 with onnx's version converter.

What an input holds that fusekit keeps as it is is said too: a warning where it computes
wrongly on some inputs (``input_warnings``), a note where a standard-ONNX target's output
still holds ONNX Runtime's contrib ops (``pass_through_notes``).
"""
from __future__ import annotations

import heapq
from collections import Counter

import onnx
from onnx import version_converter

from .branches import walk
from .engine.rewrite import MS
from .errors import FusekitError, first_line
from .modelio import default_opset, skeleton

MIN_OPSET = 11  # older opsets are converted to this one
STANDARD_LAYER_NORM = 17
# Where ONNX Runtime's LayerNormalization waits while the converter runs: the
# converter has no adapter for an op its opset lacks, and passes other domains through.
ORT_LAYER_NORM = "fusekit.ort_layer_norm"


def prepare(model: onnx.ModelProto, what: str, copy: bool = False) -> tuple[onnx.ModelProto, list[str]]:
    """``model`` in the form fusekit reads, and what was done to it, as notes.

    Changes are made in place, or on a copy with ``copy=True``; a model that needs no
    change is returned as it is.
    """
    undeclared = (any(n.domain == MS for n in _all_nodes(model.graph))
                  and not any(o.domain == MS for o in model.opset_import))
    order = topological_order(model.graph, what)
    opset = default_opset(model)
    layer_norms = sum(_is_ort_layer_norm(n, opset) for n in model.graph.node)
    target = STANDARD_LAYER_NORM if layer_norms else MIN_OPSET if 0 < opset < MIN_OPSET else None
    sort = order != list(range(len(order)))
    if not (undeclared or sort or target):
        return model, []
    if copy:  # the caller keeps its model as it was
        model = _copy(model)
    notes = []
    if undeclared:
        model.opset_import.append(onnx.helper.make_opsetid(MS, 1))
        notes.append(f"the model uses {MS} ops without importing the domain: imported it (version 1), "
                     "as ONNX Runtime assumes")
    if sort:
        nodes = [model.graph.node[i] for i in order]
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        notes.append("the nodes were not in topological order: sorted them")
    if target is not None:
        _convert(model, opset, target, what)
        why = (f"{layer_norms} LayerNormalization node(s) are ONNX Runtime's contrib op below opset "
               f"{STANDARD_LAYER_NORM}; read them as the standard op" if layer_norms
               else f"fusekit reads opset {MIN_OPSET} and newer")
        notes.append(f"converted the model from opset {opset} to {target} ({why})")
    return model, notes


def input_warnings(model: onnx.ModelProto) -> list[str]:
    """What an input already holds that fusekit keeps as it is, but that computes wrongly on some inputs.

    ONNX Runtime's transformers optimizer (and Optimum's --optimize, which runs it) turns
    the attention mask into a mask index, one valid length per row (EmbedLayerNormalization's
    second output, or ReduceSum over the mask): it assumes every row is padded on the right.
    """
    producers = {o: n for n in walk(model.graph) for o in n.output}
    rank_one = {v.name for v in [*model.graph.input, *model.graph.value_info]
                if v.type.tensor_type.HasField("shape") and len(v.type.tensor_type.shape.dim) == 1}

    def is_mask_index(value: str) -> bool:
        node = producers.get(value)
        while node is not None and node.op_type == "Cast":
            value, node = node.input[0], producers.get(node.input[0])
        if node is None:
            return value in rank_one
        return node.op_type == "ReduceSum" or (node.op_type == "EmbedLayerNormalization" and
                                                len(node.output) > 1 and node.output[1] == value)

    indexed = [n for n in walk(model.graph) if n.domain == MS and n.op_type == "Attention"
               and len(n.input) > 3 and n.input[3] and is_mask_index(n.input[3])]
    if not indexed:
        return []
    return [f"the input holds {len(indexed)} com.microsoft Attention with a mask index (ONNX Runtime's transformers "
            f"optimizer, e.g. '{indexed[0].name}'): its attention assumes right padding, and rows padded on "
            "the left compute wrong values; fuse the original export instead"]


def pass_through_notes(model: onnx.ModelProto, target: str) -> list[str]:
    """A note when a standard-ONNX target's output still holds com.microsoft ops from the input."""
    kept = Counter(n.op_type for n in walk(model.graph) if n.domain == MS)
    if target == "ort" or not kept:
        return []
    ops = ", ".join(f"{op} {k}" for op, k in sorted(kept.items()))
    return [f"the output is not standard ONNX: the input's com.microsoft ops pass through unchanged ({ops}); "
            f"only runtimes that implement ONNX Runtime's contrib ops run them"]


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    twin = onnx.ModelProto()
    twin.CopyFrom(model)
    return twin


def topological_order(graph: onnx.GraphProto, what: str) -> list[int]:
    """The node indices in an order where each node follows the producers of its inputs
    (the file's order wherever it allows); a cycle, or an input nothing produces, is a
    FusekitError naming the node."""
    producer = {}
    for i, node in enumerate(graph.node):
        for name in node.output:
            producer.setdefault(name, i)
    given = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    users: list[list[int]] = [[] for _ in graph.node]
    waiting = [0] * len(graph.node)
    for i, node in enumerate(graph.node):
        reads = _reads(node)
        missing = sorted(name for name in reads if name not in given and name not in producer)
        if missing:
            raise FusekitError(f"{what}: invalid ONNX model: node {_label(node, i)} reads {missing[0]!r}, "
                               "which is no graph input, initializer or node output")
        for p in {producer[name] for name in reads if name in producer}:
            if p == i:
                raise FusekitError(f"{what}: invalid ONNX model: the graph has a cycle "
                                   f"(node {_label(node, i)} reads its own output)")
            users[p].append(i)
            waiting[i] += 1
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    if len(order) < len(graph.node):
        stuck = [_label(graph.node[i], i) for i, w in enumerate(waiting) if w][:3]
        raise FusekitError(f"{what}: invalid ONNX model: the graph has a cycle "
                           f"(through or after nodes {', '.join(stuck)})")
    return order


def _reads(node: onnx.NodeProto) -> set[str]:
    """The values a node reads: its inputs and what its subgraphs read from outside them."""
    names = {name for name in node.input if name}
    for attr in node.attribute:
        for g in [attr.g] if attr.HasField("g") else list(attr.graphs):
            defined = {i.name for i in g.input} | {t.name for t in g.initializer}
            defined |= {o for n in g.node for o in n.output}
            names |= {name for n in g.node for name in _reads(n) if name not in defined}
    return names


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for g in [attr.g] if attr.HasField("g") else list(attr.graphs):
                yield from _all_nodes(g)


def _label(node: onnx.NodeProto, i: int) -> str:
    return repr(node.name) if node.name else f"#{i} ({node.op_type})"


def _is_ort_layer_norm(node: onnx.NodeProto, opset: int) -> bool:
    return node.op_type == "LayerNormalization" and node.domain in ("", "ai.onnx") and opset < STANDARD_LAYER_NORM


def _convert(model: onnx.ModelProto, opset: int, target: int, what: str):
    """Convert ``model`` in place from ``opset`` to ``target``; the checker and the converter
    see only its skeleton, so its large weights are never copied."""
    skel = skeleton(model)
    for node in skel.graph.node:
        if _is_ort_layer_norm(node, opset):
            node.domain = ORT_LAYER_NORM
    skel.opset_import.append(onnx.helper.make_opsetid(ORT_LAYER_NORM, 1))
    try:
        onnx.checker.check_model(skel)
    except (onnx.checker.ValidationError, onnx.onnx_cpp2py_export.shape_inference.InferenceError) as e:
        raise FusekitError(f"{what}: invalid ONNX model: {first_line(e)}") from None
    try:
        converted = version_converter.convert_version(skel, target)
        converted.ir_version = max(converted.ir_version, onnx.helper.find_min_ir_version_for(
            [onnx.helper.make_opsetid("", target)]))
    except Exception as e:  # noqa: BLE001 - the converter raises bare RuntimeErrors and asserts
        raise FusekitError(f"{what}: the model's opset {opset} cannot be converted to opset {target}, "
                           f"which fusekit needs to read it: {first_line(e)}") from None
    for node in converted.graph.node:
        if node.domain == ORT_LAYER_NORM:
            node.domain = ""
    imports = [o for o in converted.opset_import if o.domain != ORT_LAYER_NORM]
    del converted.opset_import[:]
    converted.opset_import.extend(imports)
    _replace_skeleton(model, converted)


def _replace_skeleton(model: onnx.ModelProto, skel: onnx.ModelProto):
    """Put ``skel``'s graph into ``model``, keeping the weights ``skel`` held as inputs."""
    light = {t.name for t in skel.graph.initializer}
    declared = {i.name for i in model.graph.input}
    held = {t.name for t in model.graph.initializer if t.name not in light}
    for i in reversed(range(len(model.graph.initializer))):
        if model.graph.initializer[i].name in light:
            del model.graph.initializer[i]
    for repeated in (model.graph.node, model.graph.input, model.graph.output, model.graph.value_info,
                     model.opset_import):
        del repeated[:]
    g = skel.graph
    model.graph.node.extend(g.node)
    model.graph.input.extend(i for i in g.input if i.name not in held or i.name in declared)
    model.graph.output.extend(g.output)
    model.graph.value_info.extend(g.value_info)
    model.graph.initializer.extend(g.initializer)
    model.opset_import.extend(skel.opset_import)
    model.ir_version = max(model.ir_version, skel.ir_version)
