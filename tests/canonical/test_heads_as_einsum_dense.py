"""HeadsAsEinsumDense (patterns/canonical/heads_as_einsum_dense.py): Keras EinsumDense into heads, as
tf2onnx decomposes it around a Gemm, is a MatMul and a head split."""
import numpy as np

from graphs.variants import Graph
from one_rule import apply


def einsum_dense(unflatten_from_x=True, alpha=1.0):
    """Keras EinsumDense into 2 heads of 4, as tf2onnx decomposes it: Unsqueeze(axes [2, 3]) →
    Reshape([-1, 16]) → Gemm(W [8, 16], transB=1) → Reshape([dim0, dim1 of the Unsqueeze, 2, 4, 1])
    → Squeeze([4]) → Add(bias [2, 4]); y [batch, seq, 2, 4]. Near misses: the unflatten reading
    another input's batch and sequence, a Gemm that scales (``alpha``)."""
    g = Graph("einsum", 13)
    x = g.input("x")
    g.output("y", shape=["batch", "seq", 2, 4])
    rng = np.random.RandomState(2)
    raised = g.op("Unsqueeze", x, g.const("axes", [2, 3], np.int64))
    flat = g.op("Reshape", raised, g.const("flat", [-1, 16], np.int64))
    product = g.op("Gemm", flat, g.const("w", rng.randn(8, 16)), transB=1, alpha=alpha, beta=0.0)
    source = raised if unflatten_from_x else g.op("Unsqueeze", g.input("other"), g.const("axes", [2, 3], np.int64))
    leading = g.op("Gather", g.op("Shape", source), g.const("free", [0, 1], np.int64))
    target = g.op("Concat", leading, g.const("heads", [2, 4], np.int64), g.const("one", [1], np.int64), axis=0)
    heads = g.op("Squeeze", g.op("Reshape", product, target), g.const("last", [4], np.int64))
    g.op("Add", heads, g.const("bias", rng.randn(2, 4)), out="y")
    return g.model()


def test_einsum_dense_becomes_a_matmul_and_a_head_split():
    result = apply("HeadsAsEinsumDense", einsum_dense())
    assert result.made == {"MatMul": 1, "Gemm": -1, "Unsqueeze": -1, "Reshape": -1, "Squeeze": -1, "Shape": -1,
                           "Gather": -1, "Concat": -1}
    assert result.rewrote == 1 and not result.misses
    assert result.ops() == {"MatMul", "Reshape", "Add"}
    (matmul,) = [n for n in result.model.graph.node if n.op_type == "MatMul"]
    weight = next(t for t in result.model.graph.initializer if t.name == matmul.input[1])
    assert matmul.input[0] == "x" and list(weight.dims) == [16, 8]  # Wᵀ
    result.assert_equivalent(atol=0, rtol=0)  # Gemm with transB and MatMul by Wᵀ: the same products


def test_near_miss_when_the_unflatten_reads_another_value():
    result = apply("HeadsAsEinsumDense", einsum_dense(unflatten_from_x=False))
    assert not result.made and "Gemm" in result.ops()
    assert result.miss().reason == ("the unflatten's shape [dim0(einsum/Unsqueeze_1_output_0), "
                                    "dim1(einsum/Unsqueeze_1_output_0), 2, 4, 1] is not the input's batch and "
                                    "sequence and sizes making 8")


def test_a_gemm_that_scales_is_no_projection_and_no_near_miss():
    """α ≠ 1 fails while the shape is still matching, so the rule records nothing: an Unsqueeze
    → Squeeze pair elsewhere is no projection to explain either."""
    result = apply("HeadsAsEinsumDense", einsum_dense(alpha=0.5))
    assert not result.made and not result.misses
