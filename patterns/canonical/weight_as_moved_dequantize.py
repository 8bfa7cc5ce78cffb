"""A quantized weight moved after its DequantizeLinear is the DequantizeLinear of the moved integers.

NNCF's default preset quantizes the attention output projection's weight before the export's
own Transpose and Reshape of it, so its MatMul reads::

    W_q ─► DQ(s, z, axis) ─► Transpose(perm) ─► Reshape(shape) ─► MatMul
      ⇒  W_q' ─► DQ(s, z, axis') ─► MatMul            W_q' = reshape(transpose(W_q, perm), shape)

Exact, bit for bit: DequantizeLinear computes each element on its own, (w − z[i])·s[i] with i its
index along ``axis``; a Transpose or Reshape only moves elements, so moving the integers first and
dequantizing after computes every element from the same integer, scale and zero point. The scale's
axis moves with the integers: a Transpose sends it to ``perm.index(axis)``; a Reshape keeps it where
the new shape has an axis of that size with the same number of elements before it (the axis
survives whole), and anything else — an axis merged or split — is a near miss. A per-tensor
scale moves anywhere. A Transpose then a Reshape fold in one rewrite.
"""
from dataclasses import dataclass

import numpy as np

from fusekit.engine.pattern import Const, Rule, Variant, either, op

weight = either(op.DequantizeLinear(Const("w_q", label="the quantized weight"), Const("scale", label="the scale"),
                                    Const("zero_point", label="the zero point"), _bind="dq"),
                op.DequantizeLinear(Const("w_q", label="the quantized weight"), Const("scale", label="the scale"),
                                    _bind="dq"), tag="zero_point", labels=("", "no_zero_point"))
transposed = op.Transpose(weight, _bind="transpose")
shape = Const("shape", label="the target shape")


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


def check(m) -> Moved | str:
    moved = _moved(m)
    if isinstance(moved, str):
        return moved
    if moved[1] is not None and m.state.opset < 13:
        return f"opset {m.state.opset}: a per-axis DequantizeLinear needs opset 13"
    return Moved(*moved)


def rewrite(m, facts: Moved, emit):
    zero = [m["zero_point"]] if "zero_point" in m.consts else []
    axis = {} if facts.axis is None else {"axis": facts.axis}
    return emit.DequantizeLinear(emit.const("weight_quantized", facts.w_q), m["scale"], *zero, **axis)


RULE = Rule(
    name="WeightAsMovedDequantize",
    variants=[Variant("transpose_reshape", op.Reshape(transposed, shape, _bind="reshape"),
                      "NNCF (default preset: the attention output projection)"),
              Variant("transpose", transposed, "NNCF, PyTorch QAT exports of stored integers"),
              Variant("reshape", op.Reshape(weight, shape, _bind="reshape"), "NNCF")],
    check=check,
    rewrite=rewrite,
    # a move of a dequantized constant refused is a weight some MatMul no longer reads as INT8
    near_miss=lambda miss: miss.complete,
    reads=("dq",),  # another reader of the unmoved weight keeps it
)
