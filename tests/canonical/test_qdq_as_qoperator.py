"""QDQAsQOperator (patterns/canonical/qdq_as_qoperator.py): ONNX Runtime's QOperator ops as DQ → float op → Q."""
from collections import Counter

import numpy as np
import pytest
from onnx import numpy_helper

from graphs.int8_blocks import qoperator
from one_rule import apply

FLOAT_OP = {"matmul": "MatMul", "add": "Add", "mul": "Mul", "softmax": "Softmax", "gemm": "Gemm",
            "sigmoid": "Sigmoid", "leaky_relu": "LeakyRelu", "concat": "Concat"}
QOP = {"matmul": "QLinearMatMul", "add": "QLinearAdd", "mul": "QLinearMul", "softmax": "QLinearSoftmax",
       "gemm": "QGemm", "sigmoid": "QLinearSigmoid", "leaky_relu": "QLinearLeakyRelu", "concat": "QLinearConcat"}


def _ops(model):
    return Counter(n.op_type for n in model.graph.node)


@pytest.mark.parametrize("kind", sorted(QOP))
def test_each_op_becomes_dq_float_op_q(kind):
    result = apply("QDQAsQOperator", qoperator(kind))
    assert result.rewrote == 1 and not result.misses
    dequantized = 1 if kind in ("softmax", "sigmoid", "leaky_relu") else 2
    # the Q of x and the DQ to y were there; the rule adds one DQ per operand and the output's Q
    assert result.made == {QOP[kind]: -1, FLOAT_OP[kind]: 1, "DequantizeLinear": dequantized, "QuantizeLinear": 1}
    # exact in real arithmetic: the kernels' float rounding moves an output by at most one step
    result.assert_equivalent(steps=1)


def test_most_outputs_are_bitwise_equal():
    """The one-step differences are rare: only where the exact value lies within float rounding of a tie."""
    import fusekit
    result = apply("QDQAsQOperator", qoperator("matmul", weight_axis=1))
    check = fusekit.verify(result.original, result.model, steps=1)
    assert check.ok and all(o.mean_abs / o.step < 0.01 for o in check.outputs), check.summary()


def test_a_per_column_weight_scale_becomes_a_per_axis_dequantize():
    result = apply("QDQAsQOperator", qoperator("matmul", weight_axis=1))
    assert result.rewrote == 1
    (dq,) = [n for n in result.model.graph.node if n.op_type == "DequantizeLinear" and n.input[0].endswith("w_q")]
    assert [(a.name, a.i) for a in dq.attribute] == [("axis", 1)]
    result.assert_equivalent(steps=1)


def test_qgemm_bias_is_dequantized_in_steps_of_both_scales():
    result = apply("QDQAsQOperator", qoperator("gemm", weight_axis=1))
    (gemm,) = [n for n in result.model.graph.node if n.op_type == "Gemm"]
    inits = {t.name: numpy_helper.to_array(t) for t in result.model.graph.initializer}
    original = {t.name: numpy_helper.to_array(t) for t in result.original.graph.initializer}
    scale = original["qop_gemm/x_scale"] * original["qop_gemm/w_scale"]
    assert np.array_equal(inits[gemm.input[2]], (original["qop_gemm/bias"] * scale).astype(np.float32))
    result.assert_equivalent(steps=1)


def test_qgemm_with_a_float_output():
    result = apply("QDQAsQOperator", qoperator("gemm", float_output=True))
    assert result.made == {"QGemm": -1, "Gemm": 1, "DequantizeLinear": 2}
    result.assert_equivalent(rtol=1e-5, atol=1e-5)


def test_a_value_several_ops_read_keeps_one_dequantize():
    """x_q read by an existing DQ and by the QOperator op: the rewrite reads the quantizer's own DQ."""
    model = qoperator("mul")
    graph = model.graph
    extra = [n for n in graph.node if n.op_type == "QuantizeLinear"][0]
    from onnx import helper
    dq = helper.make_node("DequantizeLinear", [extra.output[0], extra.input[1], extra.input[2]], ["x_again"],
                          name="shared_dq")
    graph.node.insert(1, dq)
    graph.output.append(helper.make_tensor_value_info("x_again", 1, None))
    result = apply("QDQAsQOperator", model)
    readers = [n for n in result.model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == extra.output[0]]
    assert [n.name for n in readers] == ["shared_dq"]


def test_near_miss_for_a_weight_scale_that_is_not_a_constant():
    result = apply("QDQAsQOperator", qoperator("matmul", scale_input="b_scale"))
    assert not result.made
    assert result.miss().reason == "the input B scale is not a constant: it is the graph input 'b_scale'"


def test_near_miss_for_a_zero_point_that_is_not_a_constant():
    result = apply("QDQAsQOperator", qoperator("add", scale_input="y_zero_point"))
    assert not result.made
    assert result.miss().reason == "the output zero point is not a constant: it is the graph input 'y_zero_point'"


def test_near_miss_for_per_row_activation_scales():
    result = apply("QDQAsQOperator", qoperator("matmul", a_per_row=True))
    assert not result.made
    assert result.miss().reason == ("the input A is quantized per row (4 scales): only a constant weight's per-column "
                                    "scale has a DequantizeLinear form the fusions read")


def test_near_miss_for_a_softmax_not_over_the_last_axis():
    result = apply("QDQAsQOperator", qoperator("softmax", softmax_axis=1))
    assert not result.made
    assert result.miss().reason == "normalizes over axis 1, not the last axis"
