"""QuantizedLinear alone on one INT8 dense block (graphs/int8_blocks.py): each form it claims fuses
for every target and verifies in quantization steps; each near miss is refused with its reason."""
from collections import Counter

import numpy as np
import pytest

from graphs.int8_blocks import block
from one_rule import apply

TARGETS = ("onnx", "ort", "openvino")
GELU = "gelu_quantized[half_after,div_sqrt2]"  # the decomposed erf GELU, as TorchScript writes it

# name: (block form, the variant its record names, how many output steps it may move)
FORMS = {
    "gelu_quantized": ({}, GELU, 4),
    "quantized": (dict(gelu=False), "quantized", 4),
    "gelu": (dict(quantize_output=False), "gelu[half_after,div_sqrt2]", 4),
    "float": (dict(gelu=False, quantize_output=False), "float", 4),
    "no_requantization": (dict(requantize=False), GELU, 4),
    "per_column_weight": (dict(weight_axis=1), GELU, 4),
    "quantized_bias": (dict(quantized_bias=True), GELU, 4),  # the bias an int32 constant through a DQ
    "transposed_weight": (dict(transposed=True), "gelu_quantized[half_after,div_sqrt2,transposed]", 4),
    "transposed_weight_per_column": (dict(transposed=True, weight_axis=1),
                                     "gelu_quantized[half_after,div_sqrt2,transposed]", 4),
    "fake_quantized_weight": (dict(fake_weight=True, transposed=False),
                              "gelu_quantized[half_after,div_sqrt2,fake_quantized]", 4),
    "qat_weight": (dict(fake_weight=True), "gelu_quantized[half_after,div_sqrt2,fake_quantized_transposed]", 4),
    "qat_weight_per_column": (dict(fake_weight=True, weight_axis=1),
                              "gelu_quantized[half_after,div_sqrt2,fake_quantized_transposed]", 4),
    "int8_activation": (dict(x_dtype=np.int8), GELU, 4),
    "ms_gelu": (dict(gelu="ms"), "gelu_quantized", 4),  # com.microsoft Gelu
    "onnx_gelu": (dict(gelu="onnx", opset=20), "gelu_quantized", 4),  # Gelu-20
    # every op of the GELU re-quantized: each of its 8 dropped pairs may move the output, so the
    # verifier's own INT8 tolerance is the bound
    "all_ops": (dict(all_ops=True), GELU, None),
}


def assert_made(result, target, form):
    """What each target's form of the block is. The input's Q→DQ is read, not replaced, and
    every other QuantizeLinear is dropped or inside the fused form."""
    ops = Counter(n.op_type for n in result.model.graph.node)
    quantized = form.get("quantize_output", True)
    gelu = bool(form.get("gelu", True) or form.get("all_ops"))
    if target == "onnx":  # a call of a model-local function
        name = "QuantizedLinear" + ("Gelu" if gelu else "") + ("" if quantized else "ToFloat")
        assert [n.op_type for n in result.model.graph.node if n.domain == "fusekit"] == [name]
        assert [f.name for f in result.model.functions] == [name]
        assert result.made[name] == 1 and "MatMul" not in ops and ops["QuantizeLinear"] == 1
    elif target == "ort" and form.get("x_dtype", np.uint8) == np.uint8:  # ONNX Runtime's integer MatMul
        assert result.made["MatMulIntegerToFloat"] == 1 and "MatMul" not in ops
        assert ops["QuantizeLinear"] == 1 + quantized and ops["Gelu"] == gelu
    else:  # the body inlined (OpenVINO; ONNX Runtime on int8 activations), its requantization pairs gone
        assert ops["MatMul"] == 1 and ops["QuantizeLinear"] == 1 + quantized
        assert "MatMulIntegerToFloat" not in ops


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", sorted(FORMS))
def test_block_fuses_and_verifies_in_steps(name, target):
    form, variant, steps = FORMS[name]
    result = apply("QuantizedLinear", block(**form), target=target)
    assert result.rewrote == 1 and not result.misses, result.misses
    assert [r.variant for r in result.records] == [variant]
    assert_made(result, target, form)
    (out,) = result.assert_equivalent().outputs
    assert out.step and (steps is None or out.max_abs <= steps * out.step)


def test_requantization_pair_and_the_gelu_are_replaced():
    (record,) = apply("QuantizedLinear", block(), target="onnx").records
    replaced = Counter(op for _, op in record.replaced)
    assert replaced["QuantizeLinear"] == 2 and replaced["DequantizeLinear"] == 2  # requantization + weight, output Q
    assert replaced["Erf"] == 1 and replaced["MatMul"] == 1
    assert record.steps == ["QuantizedLinear"]


@pytest.mark.parametrize("target", TARGETS)
def test_a_tanh_gelu_is_not_carried_as_the_erf_one(target):
    result = apply("QuantizedLinear", block(gelu="tanh", opset=20), target=target)
    (record,) = result.records
    assert record.variant == "float"  # MatMul + bias only; the tanh GELU and its Q stay outside
    assert Counter(n.op_type for n in result.model.graph.node)["Gelu"] == 1
    result.assert_equivalent()


@pytest.mark.parametrize("target", ["onnx", "ort"])
def test_output_quantized_per_channel_stays_outside(target):
    # the block fuses with a float output; its per-channel Q→DQ stays, and the miss says why
    result = apply("QuantizedLinear", block(y_per_channel=True), target=target)
    assert [r.variant for r in result.records] == ["gelu[half_after,div_sqrt2]"]
    assert Counter(n.op_type for n in result.model.graph.node)["QuantizeLinear"] == 2  # the input's, the output's
    assert "the output is quantized per channel, not per tensor" in result.miss().reason
    result.assert_equivalent()


NEAR_MISSES = {
    "per_row_weight": (dict(weight_axis=0), "quantized per row (along K)"),
    "bias_not_a_vector": (dict(bias_shape=(1, 24)), "the bias has shape [1, 24], expected [24]"),
    "inner_value_is_an_output": (dict(inner_output=True), "is also a graph output"),
    "input_per_channel": (dict(x_per_channel=True), "the input is quantized per channel, not per tensor"),
    "opset_12": (dict(opset=12), "opset 12: per-channel DequantizeLinear needs opset 13"),
}


@pytest.mark.parametrize("name", sorted(NEAR_MISSES))
def test_near_miss_refused_with_reason(name):
    form, reason = NEAR_MISSES[name]
    result = apply("QuantizedLinear", block(**form), target="onnx")
    assert not result.rewrote and not result.made and "MatMul" in result.ops()
    assert reason in result.miss().reason, result.miss()
