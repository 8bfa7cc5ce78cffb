"""A model as the graph the stages rewrite, and back: the proto surgery around fusing.

``import_graph`` turns a model's skeleton (``modelio.skeleton``: the model without its large
weights, what the checker, shape inference and the opset converter are handed) into an
onnx-graphsurgeon graph with the original weights attached, read lazily. ``export`` does the
reverse: the rewritten graph's skeleton is checked, then its weights are put back, the original
protos wherever a rewrite left a weight as it was.

Beside ``modelio`` rather than in it: ``modelio`` reads and writes files as ModelProtos for every
command, the reports included; this module speaks the compiler's graph (onnx-graphsurgeon, the
engine's shape facts and node names) and only ``optimize`` needs it.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .engine import shapes
from .engine.graph import default_names
from .errors import FusekitError
from .modelio import HEAVY, is_heavy


class _Weight(gs.ir.tensor.LazyValues):
    """An original weight's values, loaded as the view onnx gives of the bytes protobuf hands out:
    one copy of a large table, where onnx-graphsurgeon copies that view again to make it writable.
    Weights are only read (a rewrite that needs other values makes a new constant); a weight
    stored as raw bytes is read-only besides."""

    def load(self):
        return onnx.numpy_helper.to_array(self.tensor)


def import_graph(skel: onnx.ModelProto, weights: onnx.ModelProto) -> gs.Graph:
    """The graph of a skeleton, with the shapes the model fixes and the weights of ``weights`` attached.

    The weights stay the original TensorProtos (read lazily), so nothing is copied.
    """
    graph = gs.import_onnx(shapes.infer(skel))
    tensors = graph.tensors()
    declared = {i.name for i in weights.graph.input}
    attached = set()  # the placeholders' names, dropped from the inputs at once: once per weight costs weights × inputs
    for proto in weights.graph.initializer:
        placeholder = tensors.get(proto.name)
        if not is_heavy(proto) or placeholder is None:
            continue
        weight = gs.Constant(proto.name, _Weight(proto))
        for node in list(placeholder.outputs):
            for i, t in enumerate(node.inputs):
                if t is placeholder:
                    node.inputs[i] = weight
        if proto.name not in declared:
            attached.add(proto.name)
    if attached:
        graph.inputs = [t for t in graph.inputs if t.name not in attached]
    for node, name in zip(graph.nodes, default_names([n.op for n in graph.nodes], [n.name for n in graph.nodes])):
        node.name = name
    return graph


def fill_shapes(graph: gs.Graph):
    """Give the values that have no shape the ones onnx's inference finds on the graph as it is now.

    A model whose ops onnx does not know (com.microsoft's QLinear ops, whose outputs ONNX Runtime's
    basic optimizations leave without shapes) has none after them; once canonicalization has
    rewritten those ops into standard ones, inference reaches through. Only values without a
    shape are given one: nothing a rewrite stated is replaced."""
    variables = [t for t in graph.tensors().values() if isinstance(t, gs.Variable) and t.shape is None]
    if not variables:
        return
    skel, _ = _export_skeleton(graph.copy(), {})  # a copy: the skeleton swaps weights for placeholders
    try:
        inferred = onnx.shape_inference.infer_shapes(skel, data_prop=True).graph.value_info
    except Exception:  # shape facts only sharpen checks
        return
    inferred = {v.name: v for v in inferred if v.type.tensor_type.HasField("shape")}
    for t in variables:
        if t.name in inferred:
            found = inferred[t.name].type.tensor_type
            t.shape = [d.dim_value if d.HasField("dim_value") else d.dim_param if d.HasField("dim_param") else None
                       for d in found.shape.dim]
            if t.dtype is None and found.elem_type:
                t.dtype = onnx.helper.tensor_dtype_to_np_dtype(found.elem_type)


class _Made(NamedTuple):
    """A large weight a rewrite made (a packed QKV weight): converted to a proto where it lands."""

    name: str
    values: np.ndarray


def _export_skeleton(graph: gs.Graph, kept: dict[str, onnx.TensorProto]) -> tuple[onnx.ModelProto,
                                                                                  list[onnx.TensorProto | _Made]]:
    """The fused graph without its weights, and the weights it uses: the original protos as read
    (never copied) and the large ones rewrites made (a packed QKV weight), converted once by the
    assembly. The skeleton stays small, so checking and assembling it costs next to nothing.

    ``kept`` are the original weights the assembly keeps by name: one whose values a check
    loaded (an embedding table) is that proto, not converted back only to be dropped."""
    inputs = {t.name: t for t in graph.inputs}
    weights = []
    for tensor in list(graph.tensors().values()):
        if not isinstance(tensor, gs.Constant):
            continue
        if isinstance(tensor._values, gs.ir.tensor.LazyValues):
            weights.append(tensor._values.tensor)
        elif tensor.name in kept:
            weights.append(kept[tensor.name])
        elif tensor.values.size > HEAVY and tensor.values.dtype.kind in "fiub":
            weights.append(_Made(tensor.name, tensor.values))
        else:
            continue
        placeholder = inputs.get(tensor.name) or gs.Variable(tensor.name, tensor.dtype, tensor.shape)
        for node in list(tensor.outputs):
            for i, t in enumerate(node.inputs):
                if t is tensor:
                    node.inputs[i] = placeholder
        if tensor.name not in inputs:
            graph.inputs.append(placeholder)
    return gs.export_onnx(graph), weights


def _assemble(skel: onnx.ModelProto, weights: list[onnx.TensorProto | _Made], original: onnx.ModelProto,
              in_place: bool) -> onnx.ModelProto:
    """The skeleton with its weights put back. ``in_place`` rebuilds ``original`` itself,
    so the weights (most of a model's bytes) are never copied."""
    used = {t.name for t in weights}
    declared = {i.name for i in original.graph.input}
    if in_place:
        model = original
        kept = set()
        for i in reversed(range(len(model.graph.initializer))):
            if model.graph.initializer[i].name not in used:
                del model.graph.initializer[i]
            else:
                kept.add(model.graph.initializer[i].name)
        # a weight with an original's name is that original (rewrites never change a constant's
        # values, and name what they make afresh): only the ones rewrites made are added
        _put(model.graph.initializer, [w for w in weights if w.name not in kept])
        for repeated in (model.graph.node, model.graph.input, model.graph.output, model.graph.value_info,
                         model.opset_import):
            del repeated[:]
    else:
        model = onnx.ModelProto()
        for field_name in ("producer_name", "producer_version", "domain", "model_version", "doc_string"):
            setattr(model, field_name, getattr(original, field_name))
        model.metadata_props.extend(original.metadata_props)
        model.functions.extend(original.functions)
        model.graph.name = original.graph.name
        _put(model.graph.initializer, weights)
    model.graph.node.extend(skel.graph.node)
    model.graph.input.extend(i for i in skel.graph.input if i.name not in used or i.name in declared)
    model.graph.output.extend(skel.graph.output)
    model.graph.value_info.extend(skel.graph.value_info)
    model.graph.initializer.extend(skel.graph.initializer)
    model.opset_import.extend(skel.opset_import)
    model.functions.extend(f for f in skel.functions if f not in model.functions)
    model.ir_version = max(skel.ir_version, original.ir_version)
    return model


def _put(initializers, weights: list[onnx.TensorProto | _Made]):
    """Append ``weights`` to ``initializers``: a proto is copied in; a made weight is converted in
    its place, as numpy_helper.from_array converts a numpy dtype, since a converted proto would
    be copied once more on the way in (bert-base's packed QKV weights: 85 MB)."""
    for weight in weights:
        if isinstance(weight, _Made):
            tensor = initializers.add()
            tensor.dims.extend(weight.values.shape)
            tensor.name = weight.name
            tensor.data_type = onnx.helper.np_dtype_to_tensor_dtype(weight.values.dtype)
            tensor.raw_data = onnx.numpy_helper.tobytes_little_endian(weight.values)
        else:
            initializers.append(weight)


def export(graph: gs.Graph, original: onnx.ModelProto, metadata: dict[str, str], in_place: bool,
           functions=(), unpacked: gs.Graph | None = None, mask: str | None = None) -> onnx.ModelProto:
    """The model of ``graph``: its weights put back, the model-local ``functions`` its nodes call
    added, ``metadata`` its metadata_props. ``in_place`` rebuilds ``original`` itself (see ``_assemble``).

    With ``unpacked`` (the same model fused without packing, ``graph`` being the packed one), the
    model is the branch form (``fusekit.branches``): If the batch's ``mask`` has padding, ``graph``,
    else ``unpacked``; the weights the two read are put back once, in the outer graph.

    The skeleton is checked first: a fused graph the checker refuses is fusekit's error, not the input's.
    """
    # in place, the assembly keeps each original weight under its name (see ``_assemble``)
    kept = {t.name: t for t in original.graph.initializer if is_heavy(t)} if in_place else {}
    skel, weights = _export_skeleton(graph, kept)
    if unpacked is not None:
        from .branches import join
        other, more = _export_skeleton(unpacked, kept)
        names = {w.name for w in weights}
        weights += [w for w in more if w.name not in names]
        skel = join(skel, other, mask)
        # a weight one graph loaded (its values read by a check) is a small constant there, the
        # original proto in the other: one tensor, kept as the proto
        names = {w.name for w in weights}
        small = [t for t in skel.graph.initializer if t.name not in names]
        if len(small) < len(skel.graph.initializer):
            del skel.graph.initializer[:]
            skel.graph.initializer.extend(small)
    skel.ir_version = max(skel.ir_version, original.ir_version)
    known = {(f.domain, f.name) for f in [*original.functions, *(skel.functions if unpacked is not None else ())]}
    skel.functions.extend(f for f in functions if (f.domain, f.name) not in known)
    try:
        onnx.checker.check_model(skel)
    except onnx.checker.ValidationError as e:
        raise FusekitError(f"internal error, please report: the fused model is invalid: {str(e).splitlines()[0]}")
    model = _assemble(skel, weights, original, in_place)
    onnx.helper.set_model_props(model, metadata)
    return model
