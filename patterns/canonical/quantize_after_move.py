"""Integers moved between their QuantizeLinear and DequantizeLinear are moved before quantizing instead.

Intel Neural Compressor's QOperator models (read as Q/DQ by QDQAsQOperator) split the heads of the
quantized Q, K and V projections as integers: the attention's products read ``DQ`` of a Reshape and
a Transpose of the projection's ``Q``. QuantizedAttention reads the pair on each operand where the
QDQ forms put it, right before the product::

    x ─► Q(s, z) ─► Reshape(shape) ─► Transpose(perm) ─► DQ(s', z') ─► MatMul(·, activation)
      ⇒  x ─► Reshape(shape) ─► Transpose(perm) ─► Q(s, z) ─► DQ(s', z') ─► MatMul

Exact, bit for bit: a QuantizeLinear with one scale and zero point computes each element on its own,
and a Reshape or Transpose only moves elements. A per-axis quantizer is a near miss (its axis would
have to be followed through a move of a shape known only at run time). Only a move into a product
of two activations is rewritten: a dense layer's input is where DequantizeAfterMove puts the pair,
after the moves, which is the form QuantizedLinear reads. Another reader of the integers keeps the
quantizer.
"""
import numpy as np

from fusekit.engine.pattern import Rule, Var, Variant, op

from .._common import quantize
from .dequantize_after_move import _dequantized, _weight

NOT_INTO_PRODUCT = ("the moved integers feed no product of two activations alone: a dense layer reads them "
                    "dequantized after the moves (DequantizeAfterMove)")


integers = quantize(Var("x", "the quantized value"), "q", "quantizer", bind="q")  # q_scale, q_zero_point
shape = Var("shape", "the target shape")
reshaped = op.Reshape(integers, shape, _bind="reshape")
MOVES = {"reshape_transpose": op.Transpose(reshaped, _bind="transpose"),
         "transpose": op.Transpose(integers, _bind="transpose"),
         "reshape": reshaped}


def check(m) -> str | None:
    if any(np.asarray(m.const(c)).size != 1 for c in ("q_scale", "q_zero_point") if c in m.consts):
        return "the value is quantized per channel: its axis cannot be followed through a move of unknown shape"
    product = m.anchor.outputs[0]
    readers = product.outputs
    if not readers or any(r.op != "MatMul" or _weight(r.inputs[1 if r.inputs[0] is product else 0]) for r in readers):
        return NOT_INTO_PRODUCT
    return None


def rewrite(m, _, emit):
    moved = m["x"]
    for name in ("reshape", "transpose"):  # innermost first
        if name in m.named:
            node = m.node(name)
            moved = emit.Reshape(moved, m["shape"], **node.attrs) if name == "reshape" else \
                emit.Transpose(moved, **node.attrs)
            # the float value's type, and the moved shape, so the shape facts read through
            moved.dtype, moved.shape = m["x"].dtype, node.outputs[0].shape
    q = m.node("q")
    quantized = emit.QuantizeLinear(moved, *q.inputs[1:], **q.attrs)
    quantized.dtype, quantized.shape = q.outputs[0].dtype, m.anchor.inputs[0].shape
    dq = m.anchor
    y = emit.DequantizeLinear(quantized, *dq.inputs[1:], **dq.attrs)
    y.dtype, y.shape = dq.outputs[0].dtype, dq.outputs[0].shape
    return y


RULE = Rule(
    name="QuantizeAfterMove",
    variants=[Variant(name, _dequantized(moves), "Intel Neural Compressor QOperator (the attention's head splits)")
              for name, moves in MOVES.items()],
    check=check,
    rewrite=rewrite,
    # a dense layer's input is no miss: DequantizeAfterMove's form is the one wanted there
    near_miss=lambda miss: miss.complete and miss.reason != NOT_INTO_PRODUCT,
    reads=("q",),  # another reader of the integers keeps the quantizer
)
