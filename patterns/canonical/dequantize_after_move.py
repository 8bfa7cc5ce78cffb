"""A Transpose or Reshape after a DequantizeLinear moves the integers instead, and dequantizes after.

NNCF's default preset quantizes the attention's context before the head merge, so the output
projection reads it through a Transpose and a Reshape; an export may likewise move a weight after
its DequantizeLinear. Either hides the ``DQ → MatMul`` an INT8 block starts with::

    x_q ─► DQ(s, z) ─► Transpose(perm) ─► Reshape(shape) ─► MatMul        (an activation)
      ⇒  x_q ─► Transpose(perm) ─► Reshape(shape) ─► DQ(s, z) ─► MatMul

    W_q ─► DQ(s, z, axis) ─► Transpose ─► [Reshape] ─► …                 (a constant weight)
      ⇒  W_q' ─► DQ(s, z, axis') ─► …          W_q' = the moved integers, computed here

Exact, bit for bit: DequantizeLinear computes each element on its own, (q − z[i])·s[i] with i its
index along ``axis``; a Transpose or Reshape only moves elements, so moving the integers first and
dequantizing after computes every element from the same integer, scale and zero point. A per-tensor
scale moves anywhere. A weight's per-axis scale moves with its axis: a Transpose sends it to
``perm.index(axis)``; a Reshape keeps it where the new shape has an axis of that size with the same
number of elements before it (the axis survives whole), and anything else — an axis merged or split
— is a near miss, as is an activation's per-axis scale (its shape is known only at run time). An
activation is moved only into a MatMul by a constant weight (the block it hides), never into a
product of two activations (attention's, whose pairs QuantizedAttention reads where they are); a
weight wherever it goes.
"""
from dataclasses import dataclass

import numpy as np

from fusekit.engine.graph import const_value, producer
from fusekit.engine.pattern import Const, Rule, Var, Variant, either, op


NOT_INTO_MATMUL = ("the moved activation does not feed MatMuls by a constant weight alone: no INT8 block waits for it "
                   "(a product of two activations, attention's, reads its operands' pairs where they are)")


def _dequantized(value):
    scale = Const("scale", label="the scale")
    return either(op.DequantizeLinear(value, scale, Const("zero_point", label="the zero point"), _bind="dq"),
                  op.DequantizeLinear(value, scale, _bind="dq"), tag="zero_point", labels=("", "no_zero_point"))


def _moves(source, shape):
    """The three chains of moves: Transpose then Reshape, Transpose, Reshape."""
    transposed = op.Transpose(source, _bind="transpose")
    return op.Reshape(transposed, shape, _bind="reshape"), transposed, op.Reshape(source, shape, _bind="reshape")


weight = _moves(_dequantized(Const("w_q", label="the quantized weight")), Const("shape", label="the target shape"))
activation = _moves(_dequantized(Var("x_q", "the quantized input")), Var("shape", "the target shape"))


@dataclass(frozen=True, eq=False)
class Moved:
    """What check proved: the moved integers and the scale's new axis (None per tensor)."""

    w_q: np.ndarray
    axis: int | None


def _transposed(w, axis, node):
    perm = node.attrs.get("perm", list(range(w.ndim))[::-1])
    return np.ascontiguousarray(np.transpose(w, perm)), None if axis is None else list(perm).index(axis)


def _reshaped(w, axis, node, target):
    if node.attrs.get("allowzero", 0):
        shape = list(target)
    else:  # 0 copies the input's dimension
        shape = [w.shape[i] if e == 0 else e for i, e in enumerate(target)]
    try:
        moved = w.reshape(shape)
    except ValueError:
        return f"the Reshape's target {list(target)} does not hold the weight's {list(w.shape)}"
    if axis is None:
        return np.ascontiguousarray(moved), None
    before = int(np.prod(w.shape[:axis]))
    for new in range(moved.ndim):
        if moved.shape[new] == w.shape[axis] and int(np.prod(moved.shape[:new])) == before:
            return np.ascontiguousarray(moved), new
    return f"the Reshape merges or splits the quantized axis {axis} ({w.shape[axis]} scales): no axis of " \
           f"{list(moved.shape)} carries one scale per element"


def _moved(m) -> tuple[np.ndarray, int | None] | str:
    """The integers and the scale's axis after each move of the chain, innermost first."""
    w = np.asarray(m.const("w_q"))
    axis = m.node("dq").attrs.get("axis", 1) % w.ndim if np.asarray(m.const("scale")).size > 1 else None
    moved = w, axis
    for name in ("transpose", "reshape"):
        if name in m.named and not isinstance(moved, str):
            node = m.node(name)
            moved = _transposed(*moved, node) if name == "transpose" else \
                _reshaped(*moved, node, [int(e) for e in np.asarray(m.const("shape")).reshape(-1)])
    return moved


def check(m) -> Moved | str | None:
    if m.variant.name.startswith("activation"):
        return _activation_reason(m)
    moved = _moved(m)
    if isinstance(moved, str):
        return moved
    if moved[1] is not None and m.state.opset < 13:
        return f"opset {m.state.opset}: a per-axis DequantizeLinear needs opset 13"
    return Moved(*moved)


def _activation_reason(m) -> str | None:
    if np.asarray(m.const("scale")).size != 1:
        return "the activation is quantized per channel: its axis cannot be followed through a move of unknown shape"
    moved = m.anchor.outputs[0]
    readers = moved.outputs
    if not readers or any(r.op != "MatMul" or r.inputs[0] is not moved or not _weight(r.inputs[1]) for r in readers):
        return NOT_INTO_MATMUL
    return None


def _weight(value) -> bool:
    """A constant, or the DequantizeLinear of one: a dense projection's weight."""
    node = producer(value)
    if node is not None and node.op == "DequantizeLinear":
        value = node.inputs[0]
    return const_value(value) is not None


def rewrite(m, facts: Moved | None, emit):
    zero = [m["zero_point"]] if "zero_point" in m.consts else []
    if facts is None:  # an activation: the same moves on the integers, then the DQ
        moved = m["x_q"]
        for name in ("transpose", "reshape"):
            if name in m.named:
                node = m.node(name)
                moved = emit.Transpose(moved, **node.attrs) if name == "transpose" else \
                    emit.Reshape(moved, m["shape"], **node.attrs)
                # the float value's shape, so the shape facts still read through the block it feeds
                moved.dtype, moved.shape = m["x_q"].dtype, node.outputs[0].shape
        y = emit.DequantizeLinear(moved, m["scale"], *zero)
        y.dtype, y.shape = np.float32, m.anchor.outputs[0].shape
        return y
    axis = {} if facts.axis is None else {"axis": facts.axis}
    return emit.DequantizeLinear(emit.const("weight_quantized", facts.w_q), m["scale"], *zero, **axis)


RULE = Rule(
    name="DequantizeAfterMove",
    # a weight first: its integers are folded here (the activation variants would take a constant too)
    variants=[Variant("weight_transpose_reshape", weight[0], "exports that move a dequantized weight"),
              Variant("weight_transpose", weight[1], "exports of stored integers in PyTorch's [out, in] layout"),
              Variant("weight_reshape", weight[2], "exports that move a dequantized weight"),
              Variant("activation_transpose_reshape", activation[0],
                      "NNCF (default preset: the attention's context before the output projection)"),
              Variant("activation_transpose", activation[1], "NNCF"),
              Variant("activation_reshape", activation[2], "NNCF")],
    check=check,
    rewrite=rewrite,
    # a refused move hides a weight or an input some MatMul no longer reads as INT8
    near_miss=lambda miss: miss.complete and miss.reason != NOT_INTO_MATMUL,
    reads=("dq",),  # another reader of the unmoved value keeps it
)
