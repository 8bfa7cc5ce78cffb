"""SoftmaxAsTransposed (patterns/canonical/softmax_as_transposed.py): scores computed transposed, K·Qᵀ,
normalized over the keys and transposed back, are Q·Kᵀ normalized over the last axis."""
import pytest

from graphs.variants import Graph
from one_rule import apply


def transposed_scores(axis=2, masked=True, opset=13):
    """Scores computed transposed, as tf_keras' MultiHeadAttention through tf2onnx: x [batch, seq, 2, 4],
    s = Transpose(x, 0,2,1,3) · Transpose(x, 0,2,3,1) (+ bias [batch, 1, seq, 1] where ``masked``),
    Softmax(axis), Transpose(0, 1, 3, 2); y [batch, 2, seq, seq]. With ``axis=3`` it normalizes over
    the queries, not the keys; below opset 13 Softmax normalizes over every axis from ``axis``: near misses."""
    g = Graph("transposed", opset)
    x = g.input("x", shape=["batch", "seq", 2, 4])
    g.output("y", shape=["batch", 2, "seq", "seq"])
    scores = g.op("MatMul", g.op("Transpose", x, perm=[0, 2, 1, 3]), g.op("Transpose", x, perm=[0, 2, 3, 1]))
    if masked:
        scores = g.op("Add", scores, g.input("bias", shape=["batch", 1, "seq", 1]))
    g.op("Transpose", g.op("Softmax", scores, axis=axis), perm=[0, 1, 3, 2], out="y")
    return g.model()


@pytest.mark.parametrize("masked, made, perms", [
    (True, {}, [[0, 1, 3, 2], [0, 2, 1, 3], [0, 2, 3, 1]]),  # Q, Kᵀ and the mask as a row
    (False, {"Transpose": -1}, [[0, 2, 1, 3], [0, 2, 3, 1]]),
], ids=["masked", "unmasked"])
def test_transposed_scores_become_scores_normalized_over_the_last_axis(masked, made, perms):
    """The Transposes before K and Q fold into their swaps: Q and Kᵀ read x as the attention pattern does."""
    result = apply("SoftmaxAsTransposed", transposed_scores(masked=masked))
    assert result.made == made and result.rewrote == 1 and not result.misses
    assert [r.variant for r in result.records] == [f"transposed_scores[{'masked' if masked else 'unmasked'}]"]
    (softmax,) = [n for n in result.model.graph.node if n.op_type == "Softmax"]
    assert softmax.attribute[0].i == -1 and softmax.output[0] == "y"
    assert sorted(list(n.attribute[0].ints) for n in result.model.graph.node if n.op_type == "Transpose") == perms
    result.assert_equivalent(atol=0, rtol=0)  # the same products and the same normalization


@pytest.mark.parametrize("kwargs, reason", [
    (dict(axis=3), "normalizes over axis 3, not the second last"),
    (dict(opset=12), "below opset 13 Softmax normalizes over all axes from 2, not one"),
], ids=["normalizes_the_queries", "opset_12_softmax"])
def test_near_misses(kwargs, reason):
    result = apply("SoftmaxAsTransposed", transposed_scores(**kwargs))
    assert not result.made and result.model.graph.node[-1].op_type == "Transpose"
    assert result.miss().reason == reason
