"""DequantizedAsMatMulInteger (patterns/canonical/dequantized_as_matmul_integer.py): quantize_dynamic's
integer MatMul scaled back to float, read as the MatMul of the dequantized operands."""
import numpy as np
import pytest
from onnx import numpy_helper

from graphs.int8_blocks import dynamic_block, dynamic_product
from one_rule import apply


@pytest.mark.parametrize("weights", ["s8pc", "u8"])
def test_the_integer_matmul_becomes_a_matmul_of_dequantized_operands(weights):
    result = apply("DequantizedAsMatMulInteger", dynamic_block(weights))
    assert result.rewrote == 1 and not result.misses
    assert result.made == {"MatMulInteger": -1, "Cast": -1, "Mul": -2, "DequantizeLinear": 2, "MatMul": 1}
    (w_dq,) = [n for n in result.model.graph.node if n.op_type == "DequantizeLinear" and n.input[0].endswith("w_q0")]
    assert [(a.name, a.i) for a in w_dq.attribute] == ([("axis", 1)] if weights == "s8pc" else [])
    # exact in real arithmetic; in float32 the integer sum is scaled once, the dequantized form rounds each product
    result.assert_equivalent(rtol=1e-5, atol=1e-5)


def test_without_zero_points():
    result = apply("DequantizedAsMatMulInteger", dynamic_block(zero_points=False))
    assert result.rewrote == 1 and "symmetric" in result.records[0].variant
    result.assert_equivalent(rtol=1e-5, atol=1e-5)


def test_the_input_dequantize_reads_the_dynamic_quantizer():
    result = apply("DequantizedAsMatMulInteger", dynamic_block())
    (x_dq,) = [n for n in result.model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == "x_q"]
    assert list(x_dq.input) == ["x_q", "x_scale", "x_zero_point"]
    scale = {t.name: numpy_helper.to_array(t) for t in result.model.graph.initializer}
    assert any(v.shape == (24,) and v.dtype == np.float32 for v in scale.values())  # the per-column weight scale


def test_near_miss_for_column_zero_points_under_one_scale():
    result = apply("DequantizedAsMatMulInteger", dynamic_block(column_zero_points_one_scale=True))
    assert not result.made
    assert result.miss().reason == ("the weight has a zero point per column under one scale: DequantizeLinear "
                                    "takes them per axis together")


@pytest.mark.parametrize("zero_points", [True, False])
def test_two_activations_each_dequantized_by_its_own_quantizer(zero_points):
    """Q·Kᵀ as Optimum's avx512_vnni config quantizes it: both operands from a DynamicQuantizeLinear."""
    result = apply("DequantizedAsMatMulInteger", dynamic_product(zero_points))
    assert result.rewrote == 1 and not result.misses and "activations" in result.records[0].variant
    assert result.made == {"MatMulInteger": -1, "Cast": -1, "Mul": -2, "DequantizeLinear": 2, "MatMul": 1}
    dqs = {n.input[0]: list(n.input) for n in result.model.graph.node if n.op_type == "DequantizeLinear"}
    assert dqs == {"a_q": ["a_q", "a_s"] + ["a_z"] * zero_points, "b_q": ["b_q", "b_s"] + ["b_z"] * zero_points}
    result.assert_equivalent(rtol=1e-5, atol=1e-5)


def test_near_miss_for_a_scale_its_quantizer_did_not_compute():
    result = apply("DequantizedAsMatMulInteger", dynamic_product(foreign_scale=True))
    assert not result.made
    assert result.miss().reason == "'b_q' is scaled by a scale or zero point its DynamicQuantizeLinear did not compute"
