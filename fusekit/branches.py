"""A packed model's branch form: ``If(the batch has padding)`` between the packed and the unpacked graph.

``optimize --pack`` writes the model as one ``If`` at run time::

    mask ─► ReduceMin ─► Equal 0 ─► If ─┬─ then (padding):    the packed graph   ─┐
                                        └─ else (no padding): the unpacked graph ─┴─► outputs

Both branches are the same fused graph, the then branch with the packing points
(``fusekit.stages.pack``); both read the weights from the outer graph, so each is stored once.
The mask is proven a 0/1 key padding mask, so its minimum is 0 exactly when a position is
padding. Either branch computes the model on any batch (the unpacked one is the fused model
itself, the packed one is exact for the masks packing proves): the condition chooses the
cheaper, it never decides a result. Without padding the packed graph would only pay its
packing points; with the branch, a batch without padding runs the unpacked graph.

``join`` builds the form from the two graphs' skeletons; ``view`` reads it back as the model
the reports walk: the packed branch in the If's place, the graph that holds every fused node
and every packing point (the else branch holds the same fusions without the points). A model
in any other form is its own view. ``walk`` visits every node, the branches' included, for
what asks whether a model holds an op anywhere.
"""
from __future__ import annotations

import json

import onnx
from onnx import helper

from .provenance import PACK_KEY

BRANCH = "fusekit/pack/branch"  # the If node
CONDITION = ("fusekit/pack/min_mask", "fusekit/pack/padding", "fusekit/pack/mask_as_int")  # ReduceMin, Equal, Cast
SUFFIX = {"then_branch": "/padding", "else_branch": "/no_padding"}  # a branch's own names for the outputs


def _branch(skel: onnx.ModelProto, attribute: str, outputs: list[onnx.ValueInfoProto]) -> onnx.GraphProto:
    """``skel``'s nodes as an If branch: outer values (inputs, weights) read from the outer graph;
    each output under a name of its own, since the If's outputs take the graph's names."""
    produced = {o for n in skel.graph.node for o in n.output}
    used = produced | {n for n in skel.graph.node for n in n.input}
    suffix = SUFFIX[attribute]
    while any(o.name + suffix in used for o in outputs):
        suffix += "_"
    renamed = {o.name: o.name + suffix for o in outputs if o.name in produced}
    nodes = []
    for node in skel.graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.input[:] = [renamed.get(i, i) for i in node.input]
        copy.output[:] = [renamed.get(o, o) for o in node.output]
        nodes.append(copy)
    # an output that is an input or a weight of the outer graph: the branch still produces it
    nodes += [helper.make_node("Identity", [o.name], [o.name + suffix], name=f"{o.name}{suffix}/identity")
              for o in outputs if o.name not in renamed]
    branch_outputs = []
    for o in outputs:
        out = onnx.ValueInfoProto()
        out.CopyFrom(o)
        out.name = o.name + suffix
        branch_outputs.append(out)
    info = [v for v in skel.graph.value_info if v.name not in renamed]
    return helper.make_graph(nodes, BRANCH + suffix, [], branch_outputs, value_info=info)


def join(packed: onnx.ModelProto, unpacked: onnx.ModelProto, mask: str) -> onnx.ModelProto:
    """The skeleton of the branch form of ``packed`` and ``unpacked`` (skeletons of one model,
    fused, with and without packing): their inputs, the weight placeholders included, and their
    small constants move to the outer graph, each once."""
    model = onnx.ModelProto()
    model.CopyFrom(unpacked)
    graph = model.graph
    del graph.node[:], graph.value_info[:]
    inputs = {i.name for i in graph.input}
    graph.input.extend(i for i in packed.graph.input if i.name not in inputs)
    constants = {t.name: t for t in graph.initializer}
    for t in packed.graph.initializer:
        if t.name not in constants:
            graph.initializer.append(t)
        elif t.SerializeToString() != constants[t.name].SerializeToString():
            raise ValueError(f"the packed and unpacked graphs hold two constants named {t.name!r}")
    known = {(o.domain, o.version) for o in model.opset_import}
    model.opset_import.extend(o for o in packed.opset_import if (o.domain, o.version) not in known)
    model.functions.extend(f for f in packed.functions if (f.domain, f.name) not in
                           {(g.domain, g.name) for g in model.functions})
    dtype = next(i.type.tensor_type.elem_type for i in graph.input if i.name == mask)
    if dtype == onnx.TensorProto.BOOL:  # ReduceMin takes numbers
        graph.node.append(helper.make_node("Cast", [mask], [CONDITION[2]], name=CONDITION[2], to=onnx.TensorProto.INT32))
        mask, dtype = CONDITION[2], onnx.TensorProto.INT32
    zero = helper.make_tensor(CONDITION[0] + "/zero", dtype, [], [0])
    graph.initializer.append(zero)
    outputs = list(unpacked.graph.output)  # the original's names, types and shapes
    graph.node.extend([
        helper.make_node("ReduceMin", [mask], [CONDITION[0]], name=CONDITION[0], keepdims=0),
        helper.make_node("Equal", [CONDITION[0], zero.name], [CONDITION[1]], name=CONDITION[1]),
        helper.make_node("If", [CONDITION[1]], [o.name for o in outputs], name=BRANCH,
                         then_branch=_branch(packed, "then_branch", outputs),
                         else_branch=_branch(unpacked, "else_branch", outputs)),
    ])
    return model


def walk(graph: onnx.GraphProto):
    """Every node of ``graph`` and of the graphs its nodes hold (If branches, Loop bodies), in order:
    for what a model holds anywhere (quantized ops, Casts, the embedding tables' Gathers)."""
    for node in graph.node:
        yield node
        for a in node.attribute:
            for g in [a.g] if a.type == onnx.AttributeProto.GRAPH else a.graphs:
                yield from walk(g)


def branch_node(model: onnx.ModelProto) -> onnx.NodeProto | None:
    """The If a packed model branches at, when it is in the branch form."""
    text = next((p.value for p in model.metadata_props if p.key == PACK_KEY), None)
    name = json.loads(text).get("branch") if text else None
    return next((n for n in model.graph.node if n.op_type == "If" and n.name == name), None) if name else None


def describe(model: onnx.ModelProto) -> str | None:
    """What a report on a model in the branch form reads, in one line (None for any other model)."""
    node = branch_node(model)
    if node is None:
        return None
    size = {a.name: len(a.g.node) for a in node.attribute if a.type == onnx.AttributeProto.GRAPH}
    return (f"packed as a branch: read as the graph If '{node.name}' runs on a batch with padding ({size['then_branch']} "
            f"nodes); a batch without padding runs the same fusions without the packing points "
            f"({size['else_branch']} nodes)")


def view(model: onnx.ModelProto, branch: str = "then_branch", copy: bool = True) -> onnx.ModelProto:
    """``model`` as the reports read it: for the branch form, its packed (``then_branch``) or
    unpacked (``else_branch``) branch in place of the If and its condition, the branch's values
    taking the If's output names back. ``copy=False`` rewrites ``model`` itself (a model the
    caller loaded to read: its weights are not copied). Any other model is returned as it is."""
    node = branch_node(model)
    if node is None:
        return model
    if copy:
        model, original = onnx.ModelProto(), model
        model.CopyFrom(original)
        node = branch_node(model)
    body = next(a.g for a in node.attribute if a.name == branch)
    back = {o.name: outer for o, outer in zip(body.output, node.output)}
    nodes = []
    for n in model.graph.node:
        if n.name in CONDITION:
            continue
        for inner in body.node if n is node else [n]:
            moved = onnx.NodeProto()
            moved.CopyFrom(inner)
            moved.input[:] = [back.get(i, i) for i in inner.input]
            moved.output[:] = [back.get(o, o) for o in inner.output]
            if list(moved.input) != list(moved.output):  # not the Identity of an output the outer graph holds
                nodes.append(moved)
    model.graph.value_info.extend(body.value_info)
    zero = [i for i, t in enumerate(model.graph.initializer) if t.name == CONDITION[0] + "/zero"]
    for i in reversed(zero):
        del model.graph.initializer[i]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model
