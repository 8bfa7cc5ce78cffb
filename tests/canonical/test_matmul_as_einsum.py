"""MatMulAsEinsum (patterns/canonical/matmul_as_einsum.py): an Einsum projection by a constant weight is
a MatMul on the contracted axes, flattened."""
import numpy as np
import pytest
from onnx import TensorProto

from graphs.variants import Graph
from one_rule import apply


def einsum_projection(equation="abcd,cde->abe", x_shape=("batch", "seq", 2, 4), w_shape=(2, 4, 16)):
    """A projection as tf2onnx leaves it at opset 13: x → Einsum(equation, W) → y [batch, seq, 16].
    By default Keras attention's output projection, the merged heads [batch, seq, 2, 4] times
    W [2, 4, 16]. With no ``x_shape`` x [batch, seq, 8] is reshaped to a shape given at run time, of
    a rank nothing says."""
    g = Graph("einsum_projection", 13)
    if x_shape is None:
        shape = g.input("shape", shape=["r"], elem=TensorProto.INT64)
        x = g.op("Reshape", g.input("x", shape=["batch", "seq", 8]), shape)
    else:
        x = g.input("x", shape=list(x_shape))
    g.output("y", shape=["batch", "seq", 16])
    g.op("Einsum", x, g.const("w", np.random.RandomState(3).randn(*w_shape)), equation=equation, out="y")
    return g.model()


@pytest.mark.parametrize("kwargs, made, width", [
    (dict(), {"Einsum": -1, "Reshape": 1, "MatMul": 1}, 8),  # two contracted letters: flattened to N·h
    (dict(equation="abc,cd->abd", x_shape=("batch", "seq", 8), w_shape=(8, 16)), {"Einsum": -1, "MatMul": 1}, 8),
], ids=["heads_and_size", "one_contracted_axis"])
def test_einsum_projection_becomes_a_matmul(kwargs, made, width):
    result = apply("MatMulAsEinsum", einsum_projection(**kwargs))
    assert result.made == made and result.rewrote == 1 and not result.misses
    (matmul,) = [n for n in result.model.graph.node if n.op_type == "MatMul"]
    weight = next(t for t in result.model.graph.initializer if t.name == matmul.input[1])
    assert list(weight.dims) == [width, 16]  # [N·h, E]
    result.assert_equivalent(atol=0, rtol=0)  # the same products, summed in the same order


@pytest.mark.parametrize("kwargs, reason", [
    (dict(equation="abcd,dce->abe", w_shape=(4, 2, 16)),
     "Einsum 'einsum_projection/Einsum_0': equation 'abcd,dce->abe' is not x[P C]·W[C e] → [P e]"),
    (dict(x_shape=None), "the input is not known to be 4-D (rank None)"),
], ids=["weight_contracts_in_another_order", "input_rank_unknown"])
def test_near_misses(kwargs, reason):
    result = apply("MatMulAsEinsum", einsum_projection(**kwargs))
    assert not result.made and "Einsum" in result.ops()
    assert result.miss().reason == reason
