"""DenseAsTensordot (patterns/canonical/dense_as_tensordot.py): Keras Dense on a 3-D input, as
tf2onnx flattens it around a 2-D MatMul, is one MatMul."""
import numpy as np
import pytest
from onnx import TensorProto

from graphs.variants import Graph
from one_rule import apply


def tensordot(layers=2, unflatten_batch_from_x=True, flat=16, n=24):
    """Keras Dense on x [batch, seq, 16] as tf2onnx writes it: Reshape([-1, flat]) → MatMul(W [16, 24]) →
    Reshape(Cast(Concat(Gather(Cast(Shape(x), int32), [0, 1]), [n]), int64)); with two ``layers``
    the flatten is shared and y is the sum of both. Near misses: the unflatten reading another
    input's batch and sequence, a flatten that does not keep K = 16 (``flat``), an ``n`` not the weight's."""
    g = Graph("dense", 13)
    x = g.input("x")
    g.output("y", shape=["batch", "seq", 24])
    rng = np.random.RandomState(1)
    flattened = g.op("Reshape", x, g.const("flat", [-1, flat], np.int64))
    source = x if unflatten_batch_from_x else g.input("other")
    shape = g.op("Cast", g.op("Shape", source), to=TensorProto.INT32)
    leading = g.op("Gather", shape, g.const("free", [0, 1], np.int32), axis=0)
    target = g.op("Cast", g.op("Concat", leading, g.const("n", [n], np.int32), axis=0), to=TensorProto.INT64)
    dense = [g.op("Reshape", g.op("MatMul", flattened, g.const(f"w{i}", rng.randn(16, 24))), target,
                  out="y" if layers == 1 else None) for i in range(layers)]
    if layers == 2:
        g.op("Add", *dense, out="y")
    return g.model()


@pytest.mark.parametrize("layers", [1, 2], ids=["alone", "sharing_the_flatten"])
def test_dense_becomes_one_matmul_on_the_3d_input(layers):
    """The flatten is shared by the Dense layers reading the same x (Q, K and V): each reads through it,
    and it dies with the last of them, with the shape chain."""
    result = apply("DenseAsTensordot", tensordot(layers))
    assert result.made == {"Reshape": -1 - layers, "Shape": -1, "Cast": -2, "Gather": -1, "Concat": -1}
    assert result.rewrote == layers and not result.misses
    matmuls = [n for n in result.model.graph.node if n.op_type == "MatMul"]
    assert len(matmuls) == layers and all(n.input[0] == "x" for n in matmuls)
    assert {op for f in result.records for _, op in f.replaced} == {"MatMul", "Reshape"}
    result.assert_equivalent(atol=0, rtol=0)  # the same rows times the same weight


@pytest.mark.parametrize("kwargs, reason", [
    (dict(unflatten_batch_from_x=False),
     "the unflatten's shape [dim0(other), dim1(other), 24] is not the input's batch and sequence and 24"),
    (dict(flat=8), "the flatten's shape is [-1, 8], not [-1, 16]"),
    (dict(n=12), "the unflatten's shape [dim0(x), dim1(x), 12] is not the input's batch and sequence and 24"),
], ids=["unflatten_reads_another_value", "flatten_changes_k", "unflatten_changes_n"])
def test_near_misses(kwargs, reason):
    result = apply("DenseAsTensordot", tensordot(layers=1, **kwargs))
    assert not result.made and not result.rewrote
    assert result.miss().reason == reason
