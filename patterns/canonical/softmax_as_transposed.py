"""Attention scores computed transposed, (K·Qᵀ), normalized over the keys and transposed back,
are the scores Q·Kᵀ normalized over the last axis.

tf_keras' MultiHeadAttention, through tf2onnx, multiplies K by Qᵀ, adds the mask as a
column, takes the Softmax over axis 2 (the keys) and transposes the probabilities::

    Transpose(Softmax(Add(MatMul(a, b), m), axis=2), (0, 1, 3, 2))
        ⇒   Softmax(Add(MatMul(Transpose(b, swap), Transpose(a, swap)), Transpose(m, swap)), axis=-1)

(swap = (0, 1, 3, 2); without the Add where no mask is added). Exact: swapping the last two
axes of a MatMul's result is the MatMul of the swapped operands in reverse order (each
entry the same products summed in the same order); an Add of two rank-4 values
broadcasts axis by axis, so it commutes with the swap; and the Softmax over axis 2 of a
value, swapped, is the Softmax over the last axis of the swapped value. A Transpose
before an operand is folded into its swap (p then swap is one permutation).
"""
from fusekit.engine.graph import attr, producer, rank
from fusekit.engine.pattern import Rule, Var, Variant, either, op

SWAP = [0, 1, 3, 2]
a, b = Var("a", "the left factor"), Var("b", "the right factor")
product = op.MatMul(a, b, _bind="product")
normalized = op.Softmax(either(op.Add(product, Var("m", "the added mask")), product, tag="mask",
                               labels=("masked", "unmasked")), _bind="softmax")
transposed = op.Transpose(normalized, perm=SWAP)


def check(m) -> str | None:
    axis = attr(m.node("softmax"), "axis")
    if m.state.opset < 13:
        return f"below opset 13 Softmax normalizes over all axes from {axis}, not one"
    if axis not in (2, -2):
        return f"normalizes over axis {-1 if axis is None else axis}, not the second last"
    ranks = [rank(m.node("product").outputs[0])] + ([rank(m["m"])] if "m" in m.values else [])
    if any(r != 4 for r in ranks):
        return f"the scores (and the mask) are not known to be 4-D (ranks {ranks})"
    return None


def _swapped(emit, value):
    """``value`` with its last two axes swapped; a Transpose before it is folded into one."""
    before = producer(value)
    if before is None or before.op != "Transpose" or attr(before, "perm") is None:
        return emit.Transpose(value, perm=SWAP)
    perm = [attr(before, "perm")[i] for i in SWAP]
    return before.inputs[0] if perm == sorted(perm) else emit.Transpose(before.inputs[0], perm=perm)


def rewrite(m, _, emit):
    scores = emit.MatMul(_swapped(emit, m["b"]), _swapped(emit, m["a"]))
    if "m" in m.values:
        scores = emit.Add(scores, _swapped(emit, m["m"]))
    return emit.Softmax(scores, axis=-1)


RULE = Rule(
    name="SoftmaxAsTransposed",
    variants=[Variant("transposed_scores", transposed, "tf2onnx from tf_keras (MultiHeadAttention's K·Qᵀ)")],
    check=check,
    rewrite=rewrite,
    near_miss=lambda miss: miss.complete,
)
