"""A transposed product, (a·b)ᵀ, is the product of the swapped operands in reverse order, bᵀ·aᵀ.

keras-hub's attention, through tf2onnx, may compute the scores as K·Qᵀ and swap them back
before they are masked and normalized (tf2onnx's decomposition of a score einsum whose output
axes come out in the other order)::

    Transpose(MatMul(a, b), (0, 1, 3, 2))   ⇒   MatMul(Transpose(b, swap), Transpose(a, swap))

(swap = (0, 1, 3, 2)), whatever reads it: an added mask, Keras' lowered SelectV2, the Softmax.
Exact: entry (i, j) of (a·b)ᵀ is Σₖ a[j, k]·b[k, i], the same products summed in the same order
as entry (i, j) of bᵀ·aᵀ. A Transpose before an operand is folded into its swap, so K·Qᵀ with Qᵀ
written Transpose(q, 0, 2, 3, 1) becomes Q·Kᵀ with Q as Transpose(q, 0, 2, 1, 3), the attention
pattern's own form. A 4-entry perm fixes the rank at 4, so nothing else needs checking; a
product read elsewhere as well is a near miss (it would be computed twice). The tf_keras variant, the Transpose after the Softmax, is ``SoftmaxAsTransposed``.
"""
from fusekit.engine.pattern import Rule, Var, Variant, op

from .softmax_as_transposed import SWAP, _swapped

a, b = Var("a", "the left factor"), Var("b", "the right factor")
transposed = op.Transpose(op.MatMul(a, b, _bind="product"), perm=SWAP)


def rewrite(m, _, emit):
    return emit.MatMul(_swapped(emit, m["b"]), _swapped(emit, m["a"]))


RULE = Rule(
    name="ScoresAsTransposedProduct",
    variants=[Variant("transposed_product", transposed, "tf2onnx from keras-hub (a score einsum as (K·Qᵀ)ᵀ)")],
    rewrite=rewrite,
    near_miss=lambda miss: miss.complete,
)
