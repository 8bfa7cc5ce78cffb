"""A bias Add folded into the GELU that follows it (runs after Gelu/FastGelu fusion).

    x ─► Add(bias) ─► Gelu                             ⇒   BiasGelu(x, bias)
    x ─► Add(bias) ─► FastGelu                         ⇒   FastGelu(x, bias)
    x ─► Add(bias) ─► Gelu (ONNX, opset 20)            ⇒   BiasGelu(x, bias)
    x ─► Add(bias) ─► Gelu(approximate="tanh") (ONNX)  ⇒   FastGelu(x, bias)

The first two are what the Gelu and FastGelu fusions made; the ONNX Gelu is what an
opset-20 export (and ONNX Runtime's own fusion tests) writes.

The bias is whichever addend is a vector of the last dimension's size, which is what
both com.microsoft ops broadcast: a constant, or any other value (a graph input) whose
declared shape says so. Only ``ort`` has these ops.
"""
from dataclasses import dataclass

import onnx_graphsurgeon as gs

from fusekit.engine.graph import const_value
from fusekit.engine.pattern import Fusion, Var, Variant, op
from fusekit.engine.rewrite import MS

from .._common import last_dim

x = Var("x", "the input")
b = Var("bias", "the bias")


@dataclass(frozen=True)
class BiasGeluFacts:
    """Which addend is the input and which the bias, for rewrite."""

    input: gs.Tensor
    bias: gs.Tensor


def _roles(m):
    """(input, bias): the bias is the constant addend, else the one declared 1-D, on either side of the Add."""
    first, second = m["x"], m["bias"]
    constant = [const_value(t) is not None for t in (first, second)]
    vector = [t.shape is not None and len(t.shape) == 1 for t in (first, second)]
    if (constant[0] and not constant[1]) or (constant == [False, False] and vector == [True, False]):
        return second, first
    return first, second


def check(m) -> BiasGeluFacts | str:
    x_, bias = _roles(m)
    size = last_dim(x_)
    value = const_value(bias)
    shape = list(value.shape) if value is not None else bias.shape
    what = "the bias" if value is not None else f"the bias '{bias.name}'"
    if shape is None:
        return f"{what} has no known shape (BiasGelu needs a vector of the last dimension)"
    if size is None:
        return f"{what} cannot be checked: the last dimension of the input '{x_.name}' is unknown"
    if list(shape) != [size]:
        return f"{what} has shape {list(shape)}, expected [{size}]"
    return BiasGeluFacts(x_, bias)


def rewrite(m, facts: BiasGeluFacts, emit):
    if m.variant.name in ("gelu", "onnx_gelu"):
        return emit.BiasGelu(facts.input, facts.bias, _domain=MS)
    return emit.FastGelu(facts.input, facts.bias, _domain=MS)


FUSION = Fusion(
    name="BiasGelu",
    variants=[
        Variant("gelu", op.Gelu(op.Add(x, b), _domain=MS), "MatMul + bias before GELU (every BERT FFN)"),
        Variant("fast_gelu", op.FastGelu(op.Add(x, b), _domain=MS), "MatMul + bias before tanh GELU"),
        Variant("onnx_gelu", op.Gelu(op.Add(x, b), approximate="none"), "opset-20 exports with ONNX Gelu"),
        Variant("onnx_fast_gelu", op.Gelu(op.Add(x, b), approximate="tanh"), "opset-20 exports, Gelu(approximate='tanh')"),
    ],
    check=check,
    rewrite=rewrite,
    signature=frozenset({"Add"}),
    after=("Gelu", "FastGelu"),
    targets=("ort",),
)
