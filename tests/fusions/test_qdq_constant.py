"""QDQConstant alone (--target openvino): a Q→DQ pair on a scalar constant folds into the value it
rounds to, exactly; a weight keeps its pair."""
import numpy as np
import pytest
from onnx import TensorProto

from graphs.variants import Graph
from one_rule import apply


def scaled(q_zero_point=True, dq_zero_point=True, value=0.3535534, shape=()):
    """y = x · DQ(Q(c)): ONNX Runtime's quantizer, all ops quantized, on the attention scale
    (a scalar) or, with ``shape``, on a weight it multiplies."""
    g = Graph("qdq_constant")
    g.output("y")
    c = g.const("c", np.full(shape, value, np.float32))
    scale, zero = g.const("scale", 0.0027), g.const("zero_point", 3, np.uint8)
    q = g.op("QuantizeLinear", c, scale, *([zero] if q_zero_point else []))
    g.op("Mul", g.input("x"), g.op("DequantizeLinear", q, scale, *([zero] if dq_zero_point else [])), out="y")
    return g.model()


@pytest.mark.parametrize("q_zero_point, dq_zero_point", [(True, True), (False, False), (True, False),
                                                         (False, True)])
def test_pair_on_a_scalar_folds_exactly(q_zero_point, dq_zero_point):
    result = apply("QDQConstant", scaled(q_zero_point, dq_zero_point), target="openvino")
    assert result.rewrote == 1 and not result.misses
    assert [r.variant for r in result.records] == ["qdq"]
    assert result.made == {"QuantizeLinear": -1, "DequantizeLinear": -1, "Identity": 1}
    assert np.asarray(result.records[0].constants["c"]).size == 1
    result.assert_equivalent(atol=0, rtol=0)  # the folded value is what the pair computes


def test_a_weight_keeps_its_pair():
    # the pair is what makes a weight's MatMul run in INT8; signature-less, so no near miss either
    result = apply("QDQConstant", scaled(shape=(16,)), target="openvino")
    assert not result.rewrote and not result.made and not result.misses


def table(rows):
    """y = Gather(DQ(table_q [rows, 8] int8), ids): an embedding table stored quantized (NNCF)."""
    g = Graph("qdq_table")
    g.output("y")
    rng = np.random.default_rng(0)
    q = g.const("table_q", rng.integers(-127, 128, (rows, 8)), np.int8)
    dq = g.op("DequantizeLinear", q, g.const("scale", 0.013), g.const("zero_point", 2, np.int8))
    g.op("Gather", dq, g.op("Mul", g.input("ids", ["batch", "seq"], TensorProto.INT64), g.const("zero", 0, np.int64)),
         out="y")
    return g.model()


def test_a_one_row_table_folds_into_its_floats():
    """RoBERTa's token type table as NNCF stores it: OpenVINO 2026.4 fails to compile the model with
    its DQ in place; folded, it is the floats the DQ computes."""
    result = apply("QDQConstant", table(1), target="openvino")
    assert result.rewrote == 1 and result.records[0].variant == "one_row_table"
    assert result.made == {"DequantizeLinear": -1, "Identity": 1}
    result.assert_equivalent(atol=0, rtol=0)


def test_a_larger_table_keeps_its_dequantize():
    result = apply("QDQConstant", table(4), target="openvino")
    assert not result.rewrote and not result.made and not result.misses  # signature-less: never a near miss
