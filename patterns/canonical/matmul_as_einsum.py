"""A projection written as ``Einsum`` with a constant weight is a MatMul on the contracted axes, flattened.

tf2onnx leaves Keras' attention output projection (EinsumDense ``"abcd,cde->abe"``: the
merged heads [B, S, N, h] times W [N, h, E]) as an ``Einsum`` at opset 13::

    x [B, S, N, h] ─► Einsum("abcd,cde->abe", W [N, h, E])
                                        ⇒   x ─► Reshape([0, 0, N·h]) ─► MatMul(W as [N·h, E])

Exact: out[a, b, e] = Σ_c Σ_d x[a, b, c, d]·W[c, d, e]; the Reshape and the weight's
reshape both flatten (c, d) row-major to c·h + d, so the MatMul sums the same products.
Any equation ``P C, C e -> P e`` is read (P kept letters, C contracted letters at the
end of x and the start of W, in one order, e one output letter); with one contracted
letter no Reshape is needed. x's rank must be known to be |P| + |C|.
"""
from dataclasses import dataclass

import numpy as np

from fusekit.engine.graph import rank
from fusekit.engine.pattern import Const, Rule, Var, Variant, op


def split(equation: str):
    """(kept, contracted, out) letters of ``P C, C e -> P e``, or a reason it is not that."""
    text = equation.replace(" ", "")
    if "->" not in text or text.count(",") != 1 or "." in text:
        return f"equation '{equation}' is not two operands and an explicit output"
    inputs, out = text.split("->")
    left, right = inputs.split(",")
    if len(set(left)) != len(left) or len(set(right)) != len(right) or len(right) < 2:
        return f"equation '{equation}' repeats a letter or has a weight of rank < 2"
    contracted, e = right[:-1], right[-1]
    kept = left[:len(left) - len(contracted)]
    if not left.endswith(contracted) or out != kept + e or e in left or set(kept) & set(contracted):
        return f"equation '{equation}' is not x[P C]·W[C e] → [P e]"
    return kept, contracted, e


def _projection(equation, node):
    found = split(equation if isinstance(equation, str) else equation.decode())
    return found if isinstance(found, str) else None


projection = op.Einsum(Var("x", "the input"), Const("weight", label="the weight"), equation=_projection)


@dataclass(frozen=True)
class MatMulAsEinsumFacts:
    """What check proved, for rewrite."""

    kept: int  # how many leading axes of x the product keeps (|P|)


def check(m) -> MatMulAsEinsumFacts | str:
    equation = m.anchor.attrs["equation"]
    kept, contracted, _ = split(equation if isinstance(equation, str) else equation.decode())
    weight = m.const("weight")
    if weight.ndim != len(contracted) + 1:
        return f"the weight has shape {list(weight.shape)}, not one axis per letter of '{contracted}' and one more"
    if rank(m["x"]) != len(kept) + len(contracted):
        return f"the input is not known to be {len(kept) + len(contracted)}-D (rank {rank(m['x'])})"
    dims = list(m["x"].shape)[len(kept):]
    if any(isinstance(d, int) and d != w for d, w in zip(dims, weight.shape)):
        return f"the input's contracted axes {dims} do not match the weight's {list(weight.shape[:-1])}"
    return MatMulAsEinsumFacts(len(kept))


def rewrite(m, facts: MatMulAsEinsumFacts, emit):
    weight = m.const("weight")
    width = int(np.prod(weight.shape[:-1]))
    x = m["x"]
    if weight.ndim > 2:
        x = emit.Reshape(x, emit.small(np.array([0] * facts.kept + [width], np.int64)))
    return emit.MatMul(x, emit.const("weight", np.ascontiguousarray(weight.reshape(width, weight.shape[-1]))))


RULE = Rule(
    name="MatMulAsEinsum",
    variants=[Variant("projection", projection, "tf2onnx at opset 13 (Keras attention's output projection)")],
    check=check,
    rewrite=rewrite,
    signature=frozenset({"Einsum"}),
)
