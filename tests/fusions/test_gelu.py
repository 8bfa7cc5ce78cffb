"""Gelu alone (patterns/fusions/gelu.py) on small graphs: each order of x · 0.5 · (1 + erf(x / √2)),
with Div(√2) or Mul(1/√2), in float32 and float16, becomes one Gelu (com.microsoft for ``ort``,
ONNX Gelu at opset 20 otherwise); each near miss names the constant or the use that refused it."""
import math

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphs import variants as V
from graphs.variants import SQRT2
from one_rule import apply

MS = "com.microsoft"
ONNX_GELU = 20  # the opset of ONNX Gelu, which the onnx target emits


def gelu_keras(opset=14):
    """Keras: x · ((erf(x / √2) + 1) · 0.5), the 0.5 inside, the scale a Div."""
    g, x = V._io("gelu", opset)
    e = g.op("Erf", g.op("Div", x, g.const("sqrt2", SQRT2)))
    g.op("Mul", x, g.op("Mul", g.op("Add", e, g.const("one", 1.0)), g.const("half", 0.5)), out="y")
    return g.model()


def gelu_erf_fp16(sqrt2=math.sqrt(2), half=0.5, width=16):
    """x · 0.5 · (1 + erf(x / √2)) with float16 input and constants, as fp16 converters leave it."""
    nodes = [helper.make_node("Div", ["x", "sqrt2"], ["scaled"], name="div"),
             helper.make_node("Erf", ["scaled"], ["erf"], name="erf"),
             helper.make_node("Add", ["erf", "one"], ["erf1"], name="add"),
             helper.make_node("Mul", ["x", "erf1"], ["xerf"], name="mul"),
             helper.make_node("Mul", ["xerf", "half"], ["y"], name="mul_half")]
    inits = [numpy_helper.from_array(np.array(v, np.float16), k)
             for k, v in {"sqrt2": sqrt2, "one": 1, "half": half}.items()]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT16, ["batch", "seq", width]) for n in ("x", "y")]
    graph = helper.make_graph(nodes, "gelu_fp16", io[:1], io[1:], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)


# name: (graph at an opset, the labels its record names)
VARIANTS = {
    "half_after": (V.gelu_erf_div_half_after, "erf[half_after,div_sqrt2]"),  # TorchScript, dynamo
    "half_first": (V.gelu_erf_div_half_before, "erf[half_first,div_sqrt2]"),  # TorchScript, dynamo
    "tf": (V.gelu_erf_mul_tf, "erf[half_inner,mul_inv_sqrt2]"),  # tf2onnx
    "keras": (gelu_keras, "erf[half_inner,div_sqrt2]"),  # keras2onnx
}


@pytest.mark.parametrize("target, op", [("ort", (MS, "Gelu")), ("onnx", ("", "Gelu"))])
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_fuses_to_target_form(name, target, op):
    build, variant = VARIANTS[name]
    applied = apply("Gelu", build(opset=ONNX_GELU if target == "onnx" else 14), target=target)
    assert applied.rewrote == 1 and applied.made["Gelu"] == 1 and applied.made["Erf"] == -1
    assert applied.records[0].variant == variant
    (node,) = applied.model.graph.node
    assert (node.domain, node.op_type) == op and list(node.input) == ["x"]
    result = applied.assert_equivalent()
    assert all(o.max_rel <= 1e-5 for o in result.outputs), result.summary()


def test_float16_gelu_fuses_and_verifies():
    """fp16's √2 is 1.4140625: the constant as float16 holds it is √2."""
    applied = apply("Gelu", gelu_erf_fp16())
    (node,) = applied.model.graph.node
    assert (node.domain, node.op_type) == (MS, "Gelu") and applied.rewrote == 1
    assert applied.records[0].variant == "erf[half_after,div_sqrt2]"
    applied.assert_equivalent()


NEAR_MISSES = {
    "gelu_sqrt2_off": (V.gelu_sqrt2_off, "√2 is [1.428356], expected 1.4142136"),
    "gelu_half_off": (V.gelu_half_off, "the 0.5 of GELU is [0.505], expected 0.5"),
    "gelu_inner_graph_output": (V.gelu_inner_graph_output, "'erf' (from Erf) is also a graph output"),
    "fp16_half_off": (lambda: gelu_erf_fp16(half=0.505),
                      "the 0.5 of GELU is [0.505], expected 0.5 (rtol 0.0001, or float16's nearest 0.5)"),
    "fp16_sqrt2_off": (lambda: gelu_erf_fp16(sqrt2=1.4150390625),
                       "√2 is [1.415], expected 1.4142136 (rtol 0.0001, or float16's nearest 1.4140625)"),
}


@pytest.mark.parametrize("name", sorted(NEAR_MISSES))
def test_near_miss_refused_with_reason(name):
    build, reason = NEAR_MISSES[name]
    applied = apply("Gelu", build())
    assert not applied.rewrote and not applied.made
    assert all(n.domain == "" for n in applied.model.graph.node)
    (miss,) = applied.misses
    assert miss.fusion == "Gelu" and miss.variant == "erf" and reason in miss.reason, miss
    applied.assert_equivalent()


def erf_gelu_after_graph_input_bias(swapped=True, width=32):
    """The erf GELU after Add(B, A), both graph inputs through Identity, B the 1-D bias
    (ORT's bias_gelu_add_inputs_swapped: the bias is the Add's first input)."""
    nodes = [helper.make_node("Identity", ["A"], ["A_out"], name="identity_A"),
             helper.make_node("Identity", ["B"], ["B_out"], name="identity_B"),
             helper.make_node("Add", ["B_out", "A_out"] if swapped else ["A_out", "B_out"], ["add0_out"], name="add0"),
             helper.make_node("Div", ["add0_out", "div_const"], ["div_out"], name="div"),
             helper.make_node("Mul", ["add0_out", "mul_const"], ["mul_out"], name="mul0"),
             helper.make_node("Erf", ["div_out"], ["erf_out"], name="erf"),
             helper.make_node("Add", ["erf_out", "add_const"], ["add1_out"], name="add1"),
             helper.make_node("Mul", ["mul_out", "add1_out"], ["C"], name="mul1")]
    inits = [numpy_helper.from_array(np.array(v, np.float32), k)
             for k, v in {"div_const": 1.4142135381698608, "mul_const": 0.5, "add_const": 1}.items()]
    inputs = [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["batch", "seq", width]),
              helper.make_tensor_value_info("B", TensorProto.FLOAT, [width])]
    graph = helper.make_graph(nodes, "bias_gelu", inputs,
                              [helper.make_tensor_value_info("C", TensorProto.FLOAT, ["batch", "seq", width])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)


@pytest.mark.parametrize("swapped", [True, False])
def test_after_a_bias_the_gelu_reads_the_sum(swapped):
    """ORT's bias_gelu_add_inputs_swapped: the GELU fuses on the Add's output; the Add is left
    for BiasGelu (tests/fusions/test_bias_gelu.py)."""
    applied = apply("Gelu", erf_gelu_after_graph_input_bias(swapped))
    assert applied.made == {"Gelu": 1, "Div": -1, "Erf": -1, "Add": -1, "Mul": -2}
    assert applied.records[0].variant == "erf[half_first,div_sqrt2]"
    (node,) = [n for n in applied.model.graph.node if n.op_type == "Gelu"]
    assert list(node.input) == ["add0_out"]
    applied.assert_equivalent()
