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
(b0, b1) and the Squeeze drops the 1. The shape vectors are read entry by entry: each must
be the dimensions named above, of these very tensors (or, folded to constants, their static sizes).
"""
import numpy as np

from fusekit.engine import shapes
from fusekit.engine.graph import attr, producer, rank
from fusekit.engine.pattern import Rule, Var, Variant, op

from .._common import is_dim

X = Var("X", "the left operand")
Y = Var("Y", "the right operand")
left = op.Reshape(X, Var("x_flat", "the left flatten", shape_only=True))
right = op.Transpose(op.Reshape(Y, Var("y_flat", "the right flatten", shape_only=True)), perm=[0, 2, 1])
product = op.Squeeze(op.Reshape(op.MatMul(left, right), Var("unflat", "the unflatten", shape_only=True)), axes=[4])


def _reads(vector, tensor, axes) -> bool:
    """``vector`` holds dimensions ``axes`` of ``tensor``, read at run time or static."""
    found = shapes.entries(vector)
    return found is not None and len(found) == len(axes) and all(is_dim(e, tensor, a) for e, a in zip(found, axes))


def _parts(vector, count: int):
    node = producer(vector)
    if node is None or node.op != "Concat" or len(node.inputs) != count:
        return None
    return node.inputs


def _static(vector, expected) -> bool:
    """A shape vector folded to constants (static dimensions) holds ``expected``."""
    return None not in expected and shapes.entries(vector) == expected


def _size(tensor, axis: int):
    size = tensor.shape[axis]
    return size if isinstance(size, int) and size > 0 else None


def _flatten_reason(vector, tensor, what: str) -> str | None:
    b0, b1 = _size(tensor, 0), _size(tensor, 1)
    if _static(vector, [b0 * b1 if b0 and b1 else None, -1, _size(tensor, 4)]):
        return None
    parts = _parts(vector, 3)
    prod = producer(parts[0]) if parts else None
    if prod is None or prod.op != "ReduceProd" or attr(prod, "keepdims") not in (None, 1) \
            or attr(prod, "axes") is not None or len(prod.inputs) != 1 or not _reads(prod.inputs[0], tensor, [0, 1]) \
            or shapes.entries(parts[1]) != [-1] or not _reads(parts[2], tensor, [4]):
        return f"{what} is not (its batch axes' product, -1, its last axis)"
    return None


def _batch_static(x, y):
    """The broadcast batch axes where both operands' are static, else None."""
    sizes = [_size(t, a) for t in (x, y) for a in (0, 1)]
    return None if None in sizes else [max(sizes[0], sizes[2]), max(sizes[1], sizes[3])]


def check(m) -> str | None:
    x, y = m["X"], m["Y"]
    if rank(x) != 5 or rank(y) != 5 or x.shape[3] != 1 or y.shape[2] != 1:
        return f"the operands are not known to be [b0, b1, m, 1, k] and [b0, b1, 1, n, k] ({x.shape}, {y.shape})"
    reason = _flatten_reason(m["x_flat"], x, "the left flatten") or _flatten_reason(m["y_flat"], y, "the right flatten")
    if reason:
        return reason
    if _batch_static(x, y) and _static(m["unflat"], [*_batch_static(x, y), _size(x, 2), _size(y, 3), 1]):
        return None
    parts = _parts(m["unflat"], 4)
    batch = producer(parts[0]) if parts else None
    if batch is None or batch.op != "Max" or len(batch.inputs) != 2 or not _reads(batch.inputs[0], x, [0, 1]) \
            or not _reads(batch.inputs[1], y, [0, 1]) or not _reads(parts[1], x, [2]) \
            or not _reads(parts[2], y, [3]) or shapes.entries(parts[3]) != [1]:
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
