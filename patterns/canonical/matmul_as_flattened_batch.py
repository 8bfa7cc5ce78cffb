"""A batched product of 4-D tensors, as tf2onnx decomposes an einsum, is one 4-D MatMul.

tf2onnx writes Keras attention's einsums (the scores ``aecd,abcd->acbe``, the context
``acbe,aecd->abcd``) by bringing both operands to 5-D, [b0, b1, m, 1, k] and
[b0, b1, 1, n, k], flattening the two batch axes, and multiplying in 3-D::

    X [b0, b1, m, 1, k] ─► Reshape(Concat(ReduceProd(Shape(X)[0, 1]), [-1], Shape(X)[4])) ─────────────┐
    Y [b0, b1, 1, n, k] ─► Reshape(Concat(ReduceProd(Shape(Y)[0, 1]), [-1], Shape(Y)[4])) ─► Transpose(0, 2, 1) ─► MatMul
      ─► Reshape(Concat(Max(Shape(X)[0, 1], Shape(Y)[0, 1]), Shape(X)[2], Shape(Y)[3], [1])) ─► Squeeze([4])

    ⇒   MatMul(Squeeze(X, [3]), Transpose(Squeeze(Y, [2]), (0, 1, 3, 2)))      [b0, b1, m, n]

Exact wherever the original runs: row (b0·B1 + b1, i) of the flattened X is X[b0, b1, i, 0, :]
(row-major, the size-1 axis dropped), likewise for Y, so the 3-D MatMul computes, per
(b0, b1), the same dot products over k as the 4-D one; the last Reshape puts each back at
(b0, b1) and the Squeeze drops the 1. Each shape vector is read as a whole (``shapes.entries``) and
must be the dimensions named above, of these very tensors, read at run time or static.
"""
import numpy as np

from fusekit.engine import shapes
from fusekit.engine.graph import rank
from fusekit.engine.pattern import Rule, Var, Variant, op
from fusekit.engine.shapes import dim

X = Var("X", "the left operand")
Y = Var("Y", "the right operand")
left = op.Reshape(X, Var("x_flat", "the left flatten", shape_only=True))
right = op.Transpose(op.Reshape(Y, Var("y_flat", "the right flatten", shape_only=True)), perm=[0, 2, 1])
product = op.Squeeze(op.Reshape(op.MatMul(left, right), Var("unflat", "the unflatten", shape_only=True)), axes=[4])


def _flatten_reason(vector, tensor, what: str) -> str | None:
    expected = [shapes.product(dim(tensor, 0), dim(tensor, 1)), -1, dim(tensor, 4)]
    return None if shapes.entries(vector) == expected else f"{what} is not (its batch axes' product, -1, its last axis)"


def check(m) -> str | None:
    x, y = m["X"], m["Y"]
    if rank(x) != 5 or rank(y) != 5 or x.shape[3] != 1 or y.shape[2] != 1:
        return f"the operands are not known to be [b0, b1, m, 1, k] and [b0, b1, 1, n, k] ({x.shape}, {y.shape})"
    reason = _flatten_reason(m["x_flat"], x, "the left flatten") or _flatten_reason(m["y_flat"], y, "the right flatten")
    if reason:
        return reason
    batch = [shapes.maximum(dim(x, a), dim(y, a)) for a in (0, 1)]
    if shapes.entries(m["unflat"]) != [*batch, dim(x, 2), dim(y, 3), 1]:
        return "the unflatten is not (the broadcast batch axes, the left's m, the right's n, 1)"
    return None


def _squeeze(emit, value, axis: int):
    if emit.opset >= 13:
        return emit.Squeeze(value, emit.small(np.array([axis], np.int64)))
    return emit.Squeeze(value, axes=[axis])


def rewrite(m, _, emit):
    return emit.MatMul(_squeeze(emit, m["X"], 3), emit.Transpose(_squeeze(emit, m["Y"], 2), perm=[0, 1, 3, 2]))


RULE = Rule(
    name="MatMulAsFlattenedBatch",
    variants=[Variant("einsum_batched", product, "tf2onnx (Keras attention's einsums)")],
    check=check,
    rewrite=rewrite,
    near_miss=lambda miss: miss.complete,
)
