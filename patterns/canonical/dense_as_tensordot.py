"""A Dense layer on a 3-D input, as ``tf.tensordot`` spells it, is one MatMul.

tf2onnx writes Keras' ``Dense`` on a [batch, sequence, K] input as a flatten, a 2-D
MatMul and an unflatten::

    x [B, S, K] ─► Reshape([-1, K]) ─► MatMul(W [K, N]) ─► Reshape(Concat(Shape(x)[0:2], [N])) ─► [B, S, N]
                                                                ⇒     x ─► MatMul(W) ─► [B, S, N]

Exact: each row of the flattened input is one (b, s) position, multiplied by the same W
as MatMul multiplies each [K] row of the 3-D tensor, and the unflatten puts it back at
(b, s). The target must give back x's own batch and sequence (read through tf2onnx's
Casts and Gathers of ``Shape(x)``) and the weight's N; the flatten must keep K. The
flatten may be shared by several Dense layers reading the same x (Q, K and V): it is
read through, and dies with the last of them.
"""
from fusekit.engine.pattern import Const, Rule, Var, Variant, op

from .._common import flattened_dense, is_dim

x = Var("x", "the input")
flat = op.Reshape(x, Var("flat_shape", "the flatten's shape", shape_only=True), _bind="flat")
dense = op.Reshape(op.MatMul(flat, Const("weight", label="the weight")), Var("shape", "the unflatten's shape",
                                                                            shape_only=True))



def check(m) -> str | None:
    found = flattened_dense(m, "KN")
    if isinstance(found, str):
        return found
    _, n, shape = found
    if shape is None or len(shape) != 3 or not (is_dim(shape[0], m["x"], 0) and is_dim(shape[1], m["x"], 1)) \
            or shape[2] != n:
        return f"the unflatten's shape {shape} is not the input's batch and sequence and {n}"
    return None


def rewrite(m, _, emit):
    return emit.MatMul(m["x"], m["weight"])


RULE = Rule(
    name="DenseAsTensordot",
    variants=[Variant("tensordot", dense, "tf2onnx (Keras Dense on a 3-D input)")],
    check=check,
    rewrite=rewrite,
    # a MatMul of two computed values (attention's) is no Dense layer: only a refused complete match is a near miss
    near_miss=lambda miss: miss.complete,
    reads=("flat",),
)
