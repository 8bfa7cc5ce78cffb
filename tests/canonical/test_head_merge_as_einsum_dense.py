"""HeadMergeAsEinsumDense (patterns/canonical/head_merge_as_einsum_dense.py): Keras attention's output
projection, as tf2onnx decomposes it around a Gemm, is a head merge and a MatMul."""
import numpy as np
import pytest

from graphs.canonical import static
from graphs.variants import Graph
from one_rule import apply


def head_merge(axis=1, perm=(0, 3, 1, 2, 4), alpha=1.0):
    """Keras attention's output projection as tf2onnx decomposes it: the context c [batch, 2, seq, 4]
    → Unsqueeze([axis]) → Transpose(perm) → Reshape([-1, ReduceProd of the heads and size]) →
    Gemm(Reshape(W, [-1, 8]), transB=1, alpha) → Reshape(Shape(·)[0, 1] ++ [16, 1, 1]) → Squeeze([3, 4]);
    y [batch, seq, 16]. A ``perm`` that flattens the heads in another order, or an ``alpha`` ≠ 1,
    make near misses."""
    g = Graph("merge", 13)
    x = g.input("x", shape=["batch", 2, "seq", 4])
    g.output("y", shape=["batch", "seq", 16])

    def dims(value, axes):
        return g.op("Gather", g.op("Shape", value), g.const(f"axes{axes}", axes, np.int64))
    spread = g.op("Transpose", g.op("Unsqueeze", x, g.const("axis", [axis], np.int64)), perm=list(perm))
    flat = g.op("Concat", g.const("minus_one", [-1], np.int64), g.op("ReduceProd", dims(spread, [3, 4]), keepdims=1),
                axis=0)
    weight = g.op("Reshape", g.const("w", np.random.RandomState(4).randn(1, 1, 16, 2, 4)),
                  g.const("w_shape", [-1, 8], np.int64))
    product = g.op("Gemm", g.op("Reshape", spread, flat), weight, transB=1, alpha=alpha, beta=0.0)
    target = g.op("Concat", dims(spread, [0, 1]), g.const("width", [16, 1, 1], np.int64), axis=0)
    g.op("Squeeze", g.op("Reshape", product, target), g.const("units", [3, 4], np.int64), out="y")
    return g.model()


# the rewrite's Transpose, Reshape and MatMul replace the spread, both flattens, the Gemm, the unflatten and the
# shape chains
MADE = {"MatMul": 1, "Unsqueeze": -1, "Reshape": -2, "Gemm": -1, "Squeeze": -1, "ReduceProd": -1, "Shape": -2,
        "Gather": -2, "Concat": -2}


@pytest.mark.parametrize("model, fold", [
    (head_merge, False),
    (lambda: static(head_merge(), batch=2, seq=5), True),  # static sizes: the shape facts fold every shape vector
    (lambda: head_merge(axis=4, perm=(0, 2, 4, 1, 3)), False),  # the size-1 axis inserted last, moved to the same place
], ids=["read_at_run_time", "folded_to_constants", "unit_axis_inserted_last"])
def test_head_merge_becomes_a_transpose_a_reshape_and_a_matmul(model, fold):
    result = apply("HeadMergeAsEinsumDense", model(), fold=fold)
    assert result.made == MADE and result.rewrote == 1 and not result.misses
    assert result.ops() == {"Transpose", "Reshape", "MatMul"}
    (transpose,) = [n for n in result.model.graph.node if n.op_type == "Transpose"]
    assert transpose.input[0] == "x" and list(transpose.attribute[0].ints) == [0, 2, 1, 3]
    result.assert_equivalent(atol=0, rtol=0)


@pytest.mark.parametrize("kwargs, reason", [
    (dict(perm=(0, 3, 1, 4, 2)), "Unsqueeze([1]) → Transpose([0, 3, 1, 4, 2]) is not [B, S, 1, N, h] from [B, N, S, h]"),
    (dict(alpha=0.5), "the Gemm scales, transposes its input or adds a C"),
], ids=["heads_flatten_in_another_order", "gemm_scales"])
def test_near_misses(kwargs, reason):
    result = apply("HeadMergeAsEinsumDense", head_merge(**kwargs))
    assert not result.made and "Gemm" in result.ops()
    assert result.miss().reason == reason
