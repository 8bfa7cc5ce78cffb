"""DynamicQuantizedLinear (patterns/fusions/dynamic_quantized_linear.py): the dynamically quantized dense block,
as DequantizedAsMatMulInteger leaves it, becomes each target's form."""
import numpy as np
import pytest
from onnx import helper

from fusekit.verify import session
from graphs.int8_blocks import dynamic_block
from one_rule import apply


def canonical(**kwargs):
    return apply("DequantizedAsMatMulInteger", dynamic_block(**kwargs)).model


@pytest.mark.parametrize("weights", ["s8pc", "u8"])
def test_ort_runs_the_integer_kernel_with_its_bias(weights):
    result = apply("DynamicQuantizedLinear", canonical(weights=weights), target="ort")
    assert result.rewrote == 1 and not result.misses
    (op,) = [n for n in result.model.graph.node if n.op_type == "DynamicQuantizeMatMul"]
    assert op.domain == "com.microsoft" and len(op.input) == 5  # x, W_q, scale, zero point, bias
    assert result.ops() == {"DynamicQuantizeMatMul", "Identity"}
    # the same uint8 quantization of x inside the kernel: only the scaling's float rounding differs
    result.assert_equivalent(rtol=1e-5, atol=1e-5)


def test_ort_quantizes_a_shared_input_once():
    """Q, K and V read one DynamicQuantizeLinear: it stays, and each block multiplies its integers."""
    result = apply("DynamicQuantizedLinear", canonical(readers=3), target="ort")
    assert result.rewrote == 3
    ops = [n.op_type for n in result.model.graph.node]
    assert ops.count("DynamicQuantizeLinear") == 1 and ops.count("MatMulIntegerToFloat") == 3
    assert "DynamicQuantizeMatMul" not in ops and "DequantizeLinear" not in ops
    result.assert_equivalent(rtol=1e-5, atol=1e-5)


def test_ort_without_a_bias():
    result = apply("DynamicQuantizedLinear", canonical(bias=False), target="ort")
    assert result.records[0].variant == "no_bias"
    (op,) = [n for n in result.model.graph.node if n.op_type == "DynamicQuantizeMatMul"]
    assert [bool(name) for name in op.input] == [True, True, True, True, False]  # no bias
    result.assert_equivalent(rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("weights", ["s8pc", "u8"])
def test_openvino_gets_int8_weights_on_the_float_input(weights):
    result = apply("DynamicQuantizedLinear", canonical(weights=weights), target="openvino")
    assert result.rewrote == 1
    assert result.ops() == {"DequantizeLinear", "MatMul", "Add", "Identity"}  # no DynamicQuantizeLinear left
    # one rounding fewer (the input's): compared in steps, within the INT8 tolerance
    result.assert_equivalent()
    x = {"x": np.random.default_rng(0).standard_normal((2, 5, 16)).astype(np.float32)}
    before, after = (session(m).run(None, x)[0] for m in (result.original, result.model))
    assert 1e-4 < np.abs(before - after).max() < 0.1  # the dropped rounding shows, and is small


def test_near_miss_when_the_input_scale_is_not_its_quantizers():
    model = canonical()
    graph = model.graph
    (dq,) = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] == "x_q"]
    graph.initializer.append(helper.make_tensor("fixed_scale", 1, [], [0.02]))
    dq.input[1] = "fixed_scale"
    result = apply("DynamicQuantizedLinear", model, target="ort")
    assert not result.made
    assert result.miss().reason == ("the input is dequantized with a scale or zero point its DynamicQuantizeLinear "
                                    "did not compute")


def test_no_form_for_onnx():
    with pytest.raises(AssertionError, match="does not run for target onnx"):
        apply("DynamicQuantizedLinear", canonical(), target="onnx")


def test_openvino_asks_for_its_run_time_activation_quantization(tmp_path):
    """The openvino form is a weight-compressed FullyConnected, whose input OpenVINO's CPU plugin
    quantizes at run time per group of input channels: the fused model asks for the group size in
    its metadata, and fusekit's OpenVINO reader hands it to compile_model as a runtime option."""
    import onnx

    import fusekit
    from fusekit.runtime.openvino import read
    fused, _ = fusekit.optimize(dynamic_block(), target="openvino", verify=False)
    props = {p.key: p.value for p in fused.metadata_props}
    assert props["openvino.runtime_options.DYNAMIC_QUANTIZATION_GROUP_SIZE"] == "128"
    onnx.save(fused, tmp_path / "fused.onnx")
    model = read(tmp_path / "fused.onnx")
    assert model.get_rt_info(["runtime_options", "DYNAMIC_QUANTIZATION_GROUP_SIZE"]).astype(str) == "128"
    ort_fused, _ = fusekit.optimize(dynamic_block(), target="ort", verify=False)
    assert not any(p.key.startswith("ort.runtime_options") for p in ort_fused.metadata_props)
