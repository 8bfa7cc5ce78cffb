"""ScoresAsTransposedProduct (patterns/canonical/scores_as_transposed_product.py): scores computed as a
transposed product (K·Qᵀ)ᵀ, as tf2onnx decomposes keras-hub's score einsum, are Q·Kᵀ.

No keras-hub export at hand emits this form (the corpus' keras-hub models write the scores as Q·Kᵀ), so the
graphs are built here: the rule alone, and the whole attention fusing after it."""
import numpy as np
import pytest

import fusekit
from graphs.attention import HEADS, HIDDEN, SIZE
from graphs.variants import Graph
from one_rule import apply


def transposed_product(masked=True, perm=(0, 1, 3, 2), product_output=False, opset=13):
    """x [batch, seq, 2, 4]: s = Transpose(Transpose(x, 0,2,1,3) · Transpose(x, 0,2,3,1), perm)
    (+ bias [batch, 1, 1, seq] where ``masked``) → Softmax(-1) → y. Near misses: ``perm`` that is not the
    swap of the last two axes (no candidate), ``product_output`` (the product also an output, z)."""
    g = Graph("transposed_product", opset)
    x = g.input("x", shape=["batch", "seq", 2, 4])
    g.output("y", shape=None)
    product = g.op("MatMul", g.op("Transpose", x, perm=[0, 2, 1, 3]), g.op("Transpose", x, perm=[0, 2, 3, 1]),
                   out="z" if product_output else None)
    if product_output:
        g.output("z", shape=None)
    scores = g.op("Transpose", product, perm=list(perm))
    if masked:
        scores = g.op("Add", scores, g.input("bias", shape=["batch", 1, 1, "seq"]))
    g.op("Softmax", scores, axis=-1, out="y")
    return g.model()


@pytest.mark.parametrize("masked", [True, False], ids=["masked", "unmasked"])
def test_a_transposed_product_becomes_the_product_of_the_swapped_operands(masked):
    """The Transposes before the factors fold into their swaps: no Transpose is added, one goes."""
    result = apply("ScoresAsTransposedProduct", transposed_product(masked=masked))
    assert result.made == {"Transpose": -1} and result.rewrote == 1 and not result.misses
    assert [r.variant for r in result.records] == ["transposed_product"]
    assert sorted(list(n.attribute[0].ints) for n in result.model.graph.node if n.op_type == "Transpose") == [
        [0, 2, 1, 3], [0, 2, 3, 1]]
    result.assert_equivalent(atol=0, rtol=0)  # the same products, summed in the same order


def test_a_product_read_elsewhere_is_a_near_miss():
    result = apply("ScoresAsTransposedProduct", transposed_product(product_output=True))
    assert not result.made and result.miss().reason == "'z' (from MatMul) is also a graph output"


def test_another_transpose_is_no_candidate():
    result = apply("ScoresAsTransposedProduct", transposed_product(perm=(0, 2, 1, 3)))
    assert not result.made and not result.misses


def keras_hub_attention():
    """Self-attention as keras-hub writes it: Q scaled by 1/√h after the head split, the scores (K·Qᵀ)ᵀ,
    an added [B, 1, 1, S] mask."""
    g = Graph("kerashub_transposed", 14)
    x = g.input("x", ["batch", "seq", HIDDEN])
    g.input("attention_mask", ["batch", "seq"], 7)  # int64
    g.output("y", ["batch", "seq", HIDDEN])
    rng = np.random.default_rng(0)

    def split(name):
        proj = g.op("Add", g.op("MatMul", x, g.const(f"w_{name}", rng.normal(0, 0.3, (HIDDEN, HIDDEN)))),
                    g.const(f"b_{name}", rng.normal(0, 0.3, HIDDEN)))
        return g.op("Reshape", proj, g.const("split", [0, 0, HEADS, SIZE], np.int64))
    q, k, v = g.op("Mul", split("q"), g.const("scale", 1 / np.sqrt(SIZE))), split("k"), split("v")
    k_q = g.op("MatMul", g.op("Transpose", k, perm=[0, 2, 1, 3]), g.op("Transpose", q, perm=[0, 2, 3, 1]))
    scores = g.op("Transpose", k_q, perm=[0, 1, 3, 2])
    keep = g.op("Cast", g.op("Unsqueeze", "attention_mask", g.const("axes", [1, 2], np.int64)), to=1)
    mask = g.op("Mul", g.op("Sub", g.const("one", 1.0), keep), g.const("fill", -10000.0))
    probs = g.op("Softmax", g.op("Add", scores, mask), axis=-1)
    context = g.op("Transpose", g.op("MatMul", probs, g.op("Transpose", v, perm=[0, 2, 1, 3])), perm=[0, 2, 1, 3])
    g.op("Reshape", context, g.const("merge", [0, 0, HIDDEN], np.int64), out="y")
    return g.model()


@pytest.mark.parametrize("target", ["ort", "onnx"])
def test_keras_hub_attention_fuses_once_canonicalized(target):
    """Canonicalized, the scores read as Q·Kᵀ with Q scaled before its transpose, and the attention fuses."""
    _, report = fusekit.optimize(keras_hub_attention(), target=target)
    assert report.counts["Attention"] == 1 and report.verification.ok, report.summary()
    (attention,) = [r for r in report.fused if r.fusion == "Attention"]
    assert "ScoresAsTransposedProduct" in attention.rules
