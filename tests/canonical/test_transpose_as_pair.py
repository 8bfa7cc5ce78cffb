"""TransposeAsPair (patterns/canonical/transpose_as_pair.py): two Transposes in a row are one, or none."""

from graphs.variants import Graph
from one_rule import apply


def transpose_pair(second=(0, 1, 3, 2), then=None, first_read_by=None):
    """x [batch, seq, 2, 4] → Transpose(0, 2, 1, 3) → Transpose(second) → y; ``then`` an op after
    the pair writes y instead; ``first_read_by`` an op that also reads the first Transpose, writing z.
    With ``second`` (0, 2, 1, 3) the pair is the identity."""
    g = Graph("pair", 13)
    x = g.input("x", shape=["batch", "seq", 2, 4])
    g.output("y", shape=None)
    first = g.op("Transpose", x, perm=[0, 2, 1, 3])
    pair = g.op("Transpose", first, perm=list(second), out=None if then else "y")
    if then:
        g.op(then, pair, out="y")
    if first_read_by:
        g.output("z", shape=None)
        g.op(first_read_by, first, out="z")
    return g.model()


def test_a_pair_becomes_one_transpose():
    result = apply("TransposeAsPair", transpose_pair())
    assert result.made == {"Transpose": -1} and result.rewrote == 1 and not result.misses
    (node,) = result.model.graph.node
    assert node.op_type == "Transpose" and list(node.attribute[0].ints) == [0, 2, 3, 1] and node.output[0] == "y"
    result.assert_equivalent(atol=0, rtol=0)


def test_an_identity_pair_is_bypassed():
    result = apply("TransposeAsPair", transpose_pair(second=(0, 2, 1, 3), then="Neg"))
    assert result.made == {"Transpose": -2} and result.rewrote == 1
    (neg,) = result.model.graph.node
    assert neg.input[0] == "x"
    result.assert_equivalent(atol=0, rtol=0)


def test_near_miss_when_the_first_transpose_has_another_reader():
    result = apply("TransposeAsPair", transpose_pair(first_read_by="Neg"))
    assert not result.made
    assert result.miss().reason == "'pair/Transpose_0_output_0' (from Transpose) is also used by Neg 'pair/Neg_0' " \
                                   "outside the match"


def test_near_miss_when_the_identity_writes_a_graph_output():
    result = apply("TransposeAsPair", transpose_pair(second=(0, 2, 1, 3)))
    assert not result.made and [n.op_type for n in result.model.graph.node] == ["Transpose", "Transpose"]
    assert result.miss().reason == "its output 'y' is a graph output"
