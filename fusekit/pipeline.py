"""The optimize pipeline: load, raise the opset where a fused form needs it, fuse, verify."""
from __future__ import annotations

import gc
import time
from collections import Counter

import onnx
import onnx_graphsurgeon as gs
from onnx import version_converter

from . import patterns, provenance

from .compat import prepare
from .engine import canonicalize, passes, shapes
from .errors import FusekitError
from .engine.graph import default_names
from .engine.matcher import Match, match_variant
from .modelio import default_opset, is_heavy, read, skeleton
from .engine.pattern import Fusion, Rule, root_ops
from .engine.rewrite import compose
from .engine.state import RunState
from .report import Report
from .stages import pack as packing
from .verify import verify as verify_models

TARGETS = ("ort", "onnx", "openvino")


def fusions_for(target: str, disable=()) -> list[Fusion]:
    unknown = set(disable) - set(patterns.BY_NAME)
    if unknown:
        raise FusekitError(f"unknown fusion(s) {', '.join(sorted(unknown))}; known: {', '.join(patterns.BY_NAME)}")
    return [f for f in patterns.ALL if target in f.targets and f.name not in disable]


def rules_for(target: str, disable=()) -> list[Rule]:
    """The canonicalization rules that run (``fusions_for`` has checked ``disable``)."""
    return [r for r in patterns.RULES if target in r.targets and r.name not in disable]


def _canonicalize(graph: gs.Graph, rules: list[Rule], target: str, opset: int) -> canonicalize.Canonical:
    return canonicalize.run(graph, rules, target, opset, fold=shapes.fold)


def _import(skel: onnx.ModelProto, weights: onnx.ModelProto) -> gs.Graph:
    """The graph of a skeleton, with the shapes the model fixes and the weights of ``weights`` attached.

    The weights stay the original TensorProtos (read lazily), so nothing is copied.
    """
    graph = gs.import_onnx(shapes.infer(skel))
    tensors = graph.tensors()
    declared = {i.name for i in weights.graph.input}
    for proto in weights.graph.initializer:
        placeholder = tensors.get(proto.name)
        if not is_heavy(proto) or placeholder is None:
            continue
        weight = gs.Constant(proto.name, gs.ir.tensor.LazyValues(proto))
        for node in list(placeholder.outputs):
            for i, t in enumerate(node.inputs):
                if t is placeholder:
                    node.inputs[i] = weight
        if proto.name not in declared:
            graph.inputs = [t for t in graph.inputs if t is not placeholder]
    for node, name in zip(graph.nodes, default_names([n.op for n in graph.nodes], [n.name for n in graph.nodes])):
        node.name = name
    return graph


def _has_match(graph: gs.Graph, fusion: Fusion, target: str, opset: int) -> bool:
    anchors = fusion.anchor_ops()
    state = RunState(target=target, opset=opset)
    return any(isinstance(match_variant(graph, fusion, v, n, state), Match)
               for n in graph.nodes if n.op in anchors
               for v in fusion.variants if n.op in root_ops(v.pattern))


def _raise_opset(skel: onnx.ModelProto, graph: gs.Graph, weights: onnx.ModelProto, fusions: list[Fusion],
                 rules: list[Rule], target: str, report: Report):
    """Convert the model to the opset the fused forms need, or drop the fusions that need it.

    Works on the skeleton. A fusion that needs a newer opset is looked for in ``graph`` as
    read and, where it is not found there, in its canonical form (tf2onnx's LayerNorm is one
    only after canonicalization); the graph is canonicalized once more after a conversion.
    Returns the skeleton (converted or not), the canonical graph to fuse with what
    canonicalization did to it, and the fusions that may run on it.
    """
    current = default_opset(skel)
    canonical = None
    needing = {f.name: f.min_opset.get(target, 0) for f in fusions if f.min_opset.get(target, 0) > current}
    wanted = {name: v for name, v in needing.items() if _has_match(graph, patterns.BY_NAME[name], target, current)}
    if len(wanted) < len(needing):
        canonical = _canonicalize(graph, rules, target, current)
        wanted = {name: v for name, v in needing.items()
                  if _has_match(graph, patterns.BY_NAME[name], target, current)}
    if not wanted:
        return skel, graph, canonical or _canonicalize(graph, rules, target, current), fusions
    opset = max(wanted.values())
    try:
        converted = version_converter.convert_version(skel, opset)
        converted.ir_version = max(converted.ir_version, onnx.helper.find_min_ir_version_for(
            [onnx.helper.make_opsetid("", opset)]))
        onnx.checker.check_model(converted)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        report.notes.append(f"kept {', '.join(wanted)} unfused: their {target} form needs opset {opset}, "
                            f"and converting from opset {current} failed ({first})")
        return (skel, graph, canonical or _canonicalize(graph, rules, target, current),
                [f for f in fusions if f.name not in wanted])
    report.notes.append(f"raised the opset {current} → {opset} for the {target} form of {', '.join(wanted)}")
    if canonical is not None:
        del graph, canonical
        gc.collect()  # the first graph's node/tensor cycles hold what its matches loaded until collected
    graph = _import(converted, weights)  # the converted model's own canonical form
    return converted, graph, _canonicalize(graph, rules, target, opset), fusions


# constants of more elements than this leave the skeleton with the weights
SKELETON_CONSTANT = 1024


def _export_skeleton(graph: gs.Graph) -> tuple[onnx.ModelProto, list[onnx.TensorProto]]:
    """The fused graph without its weights, and the weight protos it uses: the original ones as
    read (never copied) and the large ones rewrites made (a packed QKV weight), converted once.
    The skeleton stays small, so checking and assembling it costs next to nothing."""
    inputs = {t.name: t for t in graph.inputs}
    weights = []
    for tensor in list(graph.tensors().values()):
        if not isinstance(tensor, gs.Constant):
            continue
        if isinstance(tensor._values, gs.ir.tensor.LazyValues):
            weights.append(tensor._values.tensor)
        elif tensor.values.size > SKELETON_CONSTANT and tensor.values.dtype.kind in "fiub":
            weights.append(onnx.numpy_helper.from_array(tensor.values, tensor.name))
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


def _assemble(skel: onnx.ModelProto, weights: list[onnx.TensorProto], original: onnx.ModelProto,
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
        model.graph.initializer.extend(w for w in weights if w.name not in kept)
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
        model.graph.initializer.extend(weights)
    model.graph.node.extend(skel.graph.node)
    model.graph.input.extend(i for i in skel.graph.input if i.name not in used or i.name in declared)
    model.graph.output.extend(skel.graph.output)
    model.graph.value_info.extend(skel.graph.value_info)
    model.graph.initializer.extend(skel.graph.initializer)
    model.opset_import.extend(skel.opset_import)
    model.functions.extend(f for f in skel.functions if f not in model.functions)
    model.ir_version = max(skel.ir_version, original.ir_version)
    return model


def _export(graph: gs.Graph, original: onnx.ModelProto, report: Report, target: str,
            in_place: bool, functions=()) -> onnx.ModelProto:
    skel, weights = _export_skeleton(graph)
    skel.ir_version = max(skel.ir_version, original.ir_version)
    known = {(f.domain, f.name) for f in original.functions}
    skel.functions.extend(f for f in functions if (f.domain, f.name) not in known)
    try:
        onnx.checker.check_model(skel)
    except onnx.checker.ValidationError as e:
        raise FusekitError(f"internal error, please report: the fused model is invalid: {str(e).splitlines()[0]}")
    props = provenance.metadata(original, report.fused + report.rewrites, target, report.packed)
    model = _assemble(skel, weights, original, in_place)
    onnx.helper.set_model_props(model, props)
    return model


MS = "com.microsoft"


def input_warnings(model: onnx.ModelProto) -> list[str]:
    """What an input already holds that fusekit keeps as it is, but that computes wrongly on some inputs.

    ONNX Runtime's transformers optimizer (and Optimum's --optimize, which runs it) turns
    the attention mask into a mask index, one valid length per row (EmbedLayerNormalization's
    second output, or ReduceSum over the mask): it assumes every row is padded on the right.
    """
    producers = {o: n for n in model.graph.node for o in n.output}
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

    indexed = [n for n in model.graph.node if n.domain == MS and n.op_type == "Attention"
               and len(n.input) > 3 and n.input[3] and is_mask_index(n.input[3])]
    if not indexed:
        return []
    return [f"the input holds {len(indexed)} com.microsoft Attention with a mask index (ONNX Runtime's transformers "
            f"optimizer, e.g. '{indexed[0].name}'): its attention assumes right padding, and rows padded on "
            "the left compute wrong values; fuse the original export instead"]


def _pass_through_note(model: onnx.ModelProto, target: str) -> list[str]:
    """A note when a standard-ONNX target's output still holds com.microsoft ops from the input."""
    kept = Counter(n.op_type for n in model.graph.node if n.domain == MS)
    if target == "ort" or not kept:
        return []
    ops = ", ".join(f"{op} {k}" for op, k in sorted(kept.items()))
    return [f"the output is not standard ONNX: the input's com.microsoft ops pass through unchanged ({ops}); "
            f"only runtimes that implement ONNX Runtime's contrib ops run them"]


def _pack(graph: gs.Graph, target: str, opset: int, report: Report):
    state = RunState(target=target, opset=opset, names={n.name for n in graph.nodes} | set(graph.tensors()))
    result = packing.run(graph, state, patterns.BY_NAME["Attention"])
    report.misses += result.misses
    if result.misses:
        report.notes.append(f"not packed: {result.misses[0].reason}")
        return
    report.fused = compose(report.fused + result.fused)
    report.packed = {"mask": result.mask, "outputs": result.outputs}
    derived = [name for name, kind in result.outputs.items() if kind == "derived"]
    report.notes.append(f"packed: the token-wise ops run on the valid tokens of '{result.mask}' only; padded positions "
                        "of " + ", ".join(n for n, k in result.outputs.items() if k == "tokens") + " are 0"
                        + (f"; {', '.join(derived)} read the unpacked hidden states, so a value read from a padded "
                           "position differs" if derived else ""))


def optimize(model_or_path, target: str = "ort", verify: bool = True, disable=(), trials: int = 4,
             seed: int = 0, shapes=None, rtol=None, atol=None, in_place: bool = False,
             pack: bool = False) -> tuple[onnx.ModelProto, Report]:
    """Fuse ``model_or_path`` for ``target`` and, unless ``verify=False``, prove it equivalent.

    ``in_place=True`` turns a given ModelProto into the fused model instead of copying
    its weights (half the memory for large models); the original is then gone, so
    verification needs a path to the original.

    Returns the fused model and a :class:`Report`; ``report.verification.ok`` says
    whether it proved equivalent. Raises FusekitError on bad input.

    ``pack=True`` then runs the token-wise part of the model on the batch's valid tokens
    alone (``fusekit.stages.pack``), or says in a near miss why that would not be exact.
    """
    if target not in TARGETS:
        raise FusekitError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    start = time.perf_counter()
    if isinstance(model_or_path, onnx.ModelProto):  # read as a file is: see modelio.read
        opset = default_opset(model_or_path)
        original, notes = prepare(model_or_path, "the model", copy=not in_place)
    else:
        loaded = read(model_or_path)
        original, notes, opset = loaded.model, loaded.notes, loaded.opset
    report = Report(target, nodes_before=len(original.graph.node), opset_before=opset, notes=notes)
    report.warnings = input_warnings(original)
    fusions, rules = fusions_for(target, disable), rules_for(target, disable)
    skel = skeleton(original)
    graph = _import(skel, original)
    skel, graph, canonical, fusions = _raise_opset(skel, graph, original, fusions, rules, target, report)
    result = passes.run(graph, fusions, target, default_opset(skel), canonical=canonical)
    del canonical
    gc.collect()  # weights the checks loaded, held in the matches' cycles: gone before the export copies
    report.fused = [f for f in result.fused if not f.canonical]
    report.rewrites = [f for f in result.fused if f.canonical]
    report.misses = result.misses
    report.notes += result.notes
    if pack:
        _pack(graph, target, default_opset(skel), report)
    if in_place and verify and isinstance(model_or_path, onnx.ModelProto):
        raise FusekitError("in_place=True leaves no original to verify against: pass a path, or verify=False")
    fused = _export(graph, original, report, target, in_place or original is not model_or_path, result.functions)
    del graph, result
    gc.collect()  # the graph's node/tensor cycles hold the replaced weights until collected
    report.nodes_after, report.opset_after = len(fused.graph.node), default_opset(fused)
    report.notes += _pass_through_note(fused, target)
    if verify:
        t = time.perf_counter()
        # the model as given: verification covers what reading it changed
        report.verification = verify_models(model_or_path, fused, trials=trials, seed=seed, shapes=shapes,
                                            rtol=rtol, atol=atol)
        report.verify_seconds = time.perf_counter() - t
    report.seconds = time.perf_counter() - start
    return fused, report


__all__ = ["optimize", "input_warnings", "TARGETS"]
