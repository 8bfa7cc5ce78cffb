"""Fragments shared by several patterns, and the checks they all need."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from fusekit.engine import shapes
from fusekit.engine.graph import const_value, is_graph_output, rank
from fusekit.engine.pattern import Const, Pattern, either, op
from fusekit.engine.shapes import DimOf
from fusekit.engine.state import IdentityMap

SQRT2 = math.sqrt(2.0)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def c(value: float, label: str | None = None) -> Const:
    """A constant that must equal ``value`` to the default relative tolerance, or, stored in
    float16, be ``value`` as float16 holds it (``Const.stored``)."""
    return Const(value=value, label=label)


def exactly(value: float, label: str | None = None) -> Const:
    """A constant that must be ``value`` exactly, as its own type holds it."""
    return Const(value=value, rtol=0.0, label=label)


def product3(a: Pattern, b: Pattern, c_: Pattern, step=lambda p: p) -> list[Pattern]:
    """The three ways two binary Muls can multiply a·b·c (each Mul matches either order);
    ``step`` wraps the inner product (see ``requantized``)."""
    return [op.Mul(step(op.Mul(a, b)), c_), op.Mul(step(op.Mul(a, c_)), b), op.Mul(a, step(op.Mul(b, c_)))]


def dequantize(data: Pattern, name: str | None = None, what: str = "", bind: str | None = None) -> Pattern:
    """DequantizeLinear(data, scale[, zero point]); named constants ``<name>_scale`` and
    ``<name>_zero_point`` when ``name`` is given (the zero point is absent when omitted)."""
    scale = Const(name and f"{name}_scale", label=f"the {what} scale".replace("  ", " "))
    zero = Const(name and f"{name}_zero_point", label=f"the {what} zero point".replace("  ", " "))
    return either(op.DequantizeLinear(data, scale, zero, _bind=bind), op.DequantizeLinear(data, scale, _bind=bind))


def quantize(data: Pattern, name: str | None = None, what: str = "", bind: str | None = None) -> Pattern:
    scale = Const(name and f"{name}_scale", label=f"the {what} scale".replace("  ", " "))
    zero = Const(name and f"{name}_zero_point", label=f"the {what} zero point".replace("  ", " "))
    return either(op.QuantizeLinear(data, scale, zero, _bind=bind), op.QuantizeLinear(data, scale, _bind=bind))


def evaluate(nodes: list[onnx.NodeProto], values: dict[str, np.ndarray], output: str, dtype,
             opset: int) -> np.ndarray:
    """Run a few nodes on named constants in ONNX Runtime (graph optimizations off), so that
    a folded QuantizeLinear rounds exactly as the model's own would."""
    import onnxruntime as ort  # only when a fold runs: fusing a model without one needs no runtime
    out = helper.make_tensor_value_info(output, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), None)
    graph = helper.make_graph(nodes, "fold", [], [out],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in values.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, {})[0]


def requantized(p: Pattern) -> Pattern:
    """``p``, or ``p`` rounded through a QuantizeLinear→DequantizeLinear pair (ONNX Runtime's
    quantizer puts one on the output of every op it quantizes)."""
    return either(dequantize(quantize(p, what="requantization"), what="requantization"), p)


def stored(name: str, label: str) -> Pattern:
    """A constant as a quantizer may leave it: the value itself, its stored integers dequantized
    (``DQ(c_q)``: ONNX Runtime's quantizer, all ops, on γ, β and biases), or the value rounded
    through a Q→DQ pair (the same quantizer on a scalar such as ε). ``constant(m, name)`` reads
    its value as the graph computes it, so carrying it is exact."""
    quantized = Const(f"{name}_q", label=f"{label}, stored quantized")
    raw = Const(f"{name}_raw", label=label)
    return either(Const(name, label=label),
                  dequantize(quantized, f"{name}_dq", f"{label}'s", bind=f"{name}_dq"),
                  dequantize(quantize(raw, f"{name}_qq", f"{label}'s", bind=f"{name}_quantize"), f"{name}_dq", f"{label}'s",
                             bind=f"{name}_dq"),
                  tag=f"{name}_stored", labels=("", f"{name}_dequantized", f"{name}_requantized"))


def has_constant(m, name: str) -> bool:
    """Whether the match bound the :func:`stored` constant ``name`` (an optional γ or β)."""
    return name in m.consts or f"{name}_dq" in m.named


def constant(m, name: str) -> np.ndarray:
    """The value of the :func:`stored` constant ``name``: DQ(c_q) or DQ(Q(c)) evaluated by ONNX
    Runtime, bit for bit what the graph computes."""
    if name in m.consts:
        return np.asarray(m.const(name))
    nodes = [m.node(f"{name}_quantize")] if f"{name}_quantize" in m.named else []
    nodes.append(m.node(f"{name}_dq"))
    cache = m.state.memo(__name__ + ".constant", IdentityMap)
    if nodes[-1] not in cache:
        values, protos, inner = {}, [], {}
        for i, node in enumerate(nodes):
            inputs = []
            for j, tensor in enumerate(node.inputs):
                if id(tensor) in inner:
                    inputs.append(inner[id(tensor)])
                    continue
                key = f"c{i}_{j}"
                values[key] = const_value(tensor)
                inputs.append(key)
            inner[id(node.outputs[0])] = f"v{i}"
            protos.append(helper.make_node(node.op, inputs, [f"v{i}"], **node.attrs))
        dtype = const_value(nodes[-1].inputs[1]).dtype  # a DequantizeLinear gives its scale's type
        cache[nodes[-1]] = evaluate(protos, values, f"v{len(nodes) - 1}", dtype, m.state.opset)
    return cache[nodes[-1]]


def dropped_pairs(m, constants=()) -> int:
    """How many Q→DQ pairs on computed values a match absorbs, run-time ones (DynamicQuantizeLinear)
    included (those rounding ``constants`` are carried exactly, see :func:`constant`)."""
    return sum(n.op in ("QuantizeLinear", "DynamicQuantizeLinear") for n in m.nodes) \
        - sum(f"{c}_quantize" in m.named for c in constants)


def per_channel_pair(m) -> str | None:
    """Why a match may not drop its requantization pairs: one quantizes per channel (or by a
    scale computed at run time), so its rounding is no single step the verification measures."""
    for node in m.nodes:
        scale = const_value(node.inputs[1]) if node.op == "QuantizeLinear" else None
        if node.op == "QuantizeLinear" and (scale is None or scale.size != 1):
            return f"the Q/DQ pair at '{node.name}' quantizes an activation per channel, not per tensor"
    return None


def last_axis(axes, node) -> str | None:
    """Attribute predicate: a reduction over exactly the last axis of its input."""
    if axes is None or len(axes) != 1:
        return f"reduces over axes {axes}, not just the last axis"
    r = rank(node.inputs[0])
    if axes[0] == -1 or (r is not None and axes[0] == r - 1):
        return None
    if r is None:
        return f"reduces over axis {axes[0]} and the input's rank is unknown, so it cannot be shown to be the last axis"
    return f"reduces over axis {axes[0]}, not the last axis ({r - 1})"


def last_axis_attr(axis, node) -> str | None:
    """Attribute predicate: an ``axis`` attribute (default -1) naming the input's last axis."""
    r = rank(node.inputs[0])
    if axis is None or axis == -1 or (r is not None and axis == r - 1):
        return None
    return f"works from axis {axis}, not the last axis"


def last_dim(tensor) -> int | None:
    shape = tensor.shape
    if not shape or not isinstance(shape[-1], (int, np.integer)) or shape[-1] < 0:
        return None
    return int(shape[-1])


def vector_reason(name: str, value: np.ndarray, size: int | None, what: str = "the last dimension") -> str | None:
    """Why ``value`` is not a 1-D vector of ``size`` elements (None when it is)."""
    if size is None:
        return f"{name} cannot be checked: {what} of the input is unknown"
    if value.ndim != 1 or value.shape[0] != size:
        return f"{name} has shape {list(value.shape)}, expected [{size}]"
    return None


def statistics_reason(graph, layer_norm) -> str | None:
    """Why a LayerNormalization whose Mean or InvStdDev output is read cannot be folded
    into an op that has no such output; None when only Y is read."""
    used = [t.name for t in layer_norm.outputs[1:] if t.outputs or is_graph_output(graph, t)]
    return f"the LayerNormalization's statistics output '{used[0]}' is used" if used else None


def is_float(tensor) -> bool:
    return tensor.dtype is not None and np.issubdtype(np.dtype(tensor.dtype), np.floating)


def onnx_dtype(tensor) -> int:
    return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(tensor.dtype))


def bias(name: str = "bias") -> Const:
    return Const(name, label="the bias")


__all__ = ["c", "exactly", "product3", "dequantize", "quantize", "requantized", "stored", "constant", "has_constant", "dropped_pairs", "per_channel_pair", "evaluate", "last_axis", "last_axis_attr", "last_dim", "vector_reason", "is_float", "onnx_dtype",
           "either", "op", "SQRT2", "SQRT_2_OVER_PI", "bias"]


def is_dim(entry, tensor, index: int) -> bool:
    """Whether a shape entry is dimension ``index`` of ``tensor``: read off it at run time, or its static size."""
    if isinstance(entry, DimOf):
        return entry.tensor is tensor and entry.index == index
    size = tensor.shape[index] if tensor.shape is not None else None
    return isinstance(size, int) and entry == size


@dataclass(frozen=True)
class Permutation:
    """What a rule that moves axes proved: its chain is one Transpose of ``x`` by ``perm``."""

    perm: tuple[int, ...]


def as_transpose(m, facts: Permutation, emit):
    """The rewrite of a rule whose check proves a :class:`Permutation` of ``x``: that Transpose,
    or ``x`` itself for the identity."""
    perm = list(facts.perm)
    return m["x"] if perm == sorted(perm) else emit.Transpose(m["x"], perm=perm)


def flattened_dense(m, layout: str):
    """What tf2onnx's Dense and EinsumDense decompositions share: a 3-D input ``x`` flattened
    to [-1, K] (``flat_shape``) for a 2-D constant ``weight`` stored ``layout`` "KN" or "NK".
    Returns (K, N, the unflatten's ``shape`` entries), or why not."""
    if rank(m["x"]) != 3:
        return f"the input is not known to be 3-D (rank {rank(m['x'])})"
    weight = m.const("weight")
    if weight.ndim != 2:
        return f"the weight has shape {list(weight.shape)}, not [{layout[0]}, {layout[1]}]"
    k, n = weight.shape if layout == "KN" else weight.shape[::-1]
    flat_shape = shapes.entries(m["flat_shape"])
    if flat_shape != [-1, k]:
        return f"the flatten's shape is {flat_shape}, not [-1, {k}]"
    return k, n, shapes.entries(m["shape"])
