"""GELU forms beyond the float32 exports: float16 constants, ONNX Runtime's own fusion-test
graphs (tests/graphs/forms.py), the standard ONNX Gelu after a bias, a bias that is a
graph input."""
import math

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import fuse_only, op_histogram
from fusekit.engine.pattern import Const
from fusekit.verify import verify
from graphs import forms as F
from graphs import variants as V

MS = "com.microsoft"


@pytest.mark.parametrize("value, stored", [(math.sqrt(2), 1.4140625), (1 / math.sqrt(2), 0.70703125),
                                           (0.044715, 0.044708251953125)])
def test_a_float16_constant_is_the_value_as_float16_holds_it(value, stored):
    assert abs(stored - value) / value > 1e-4  # beyond the float32 tolerance: only its dtype excuses it
    assert Const(value=value).accepts(np.array(stored, np.float16))
    assert not Const(value=value).accepts(np.array(stored, np.float32))


def test_a_float16_constant_one_step_off_is_refused():
    step = np.spacing(np.float16(math.sqrt(2)))
    assert not Const(value=math.sqrt(2)).accepts(np.array(np.float16(math.sqrt(2)) + step, np.float16))
    assert not Const(value=0.5).accepts(np.array(0.505, np.float16))


@pytest.mark.parametrize("build, fusion, op", [(F.gelu_erf_fp16, "Gelu", "Gelu"),
                                               (F.fast_gelu_fp16, "FastGelu", "FastGelu")])
def test_float16_gelu_fuses_and_verifies(build, fusion, op):
    model = build()
    fused, report = fuse_only(model, fusion)
    assert op_histogram(fused) == {(MS, op): 1}, report.summary()
    assert verify(model, fused).ok


@pytest.mark.parametrize("build, reason", [
    (lambda: F.gelu_erf_fp16(half=0.505), "the 0.5 of GELU is [0.505], expected 0.5 (rtol 0.0001, or float16's nearest 0.5)"),
    (lambda: F.gelu_erf_fp16(sqrt2=1.4150390625), "√2 is [1.415], expected 1.4142136 (rtol 0.0001, or float16's nearest 1.4140625)"),
    (lambda: F.fast_gelu_fp16(cubic=0.0452), "the cubic coefficient 0.044715 is"),
])
def test_float16_near_miss_says_which_constant(build, reason):
    fused, report = fuse_only(build(), "Gelu", "FastGelu")
    assert not report.counts
    (miss,) = report.misses
    assert reason in miss.reason, miss


def test_fast_gelu_x_times_x_times_coefficient():
    """ORT's fast_gelu graph: the square multiplied as x·(x·0.044715), the output through an Identity."""
    model = F.fast_gelu_x_xa()
    fused, report = fuse_only(model, "FastGelu")
    assert op_histogram(fused) == {(MS, "FastGelu"): 1, ("", "Identity"): 1}, report.summary()
    assert report.fused[0].variant.startswith("tanh_factored[x_xa")
    assert verify(model, fused).ok


def test_fast_gelu_x_times_x_times_coefficient_with_bias():
    model = F.fast_gelu_x_xa(bias=True)
    fused, report = fuse_only(model, "FastGelu", "BiasGelu")
    (node,) = [n for n in fused.graph.node if n.op_type == "FastGelu"]
    assert list(node.input) == ["input", "input_bias"]
    assert verify(model, fused).ok


def test_fast_gelu_x_times_x_times_coefficient_off_is_refused():
    fused, report = fuse_only(F.fast_gelu_x_xa(cubic=0.0452), "FastGelu")
    assert not report.counts
    (miss,) = report.misses
    assert "the cubic coefficient 0.044715 is [0.0452]" in miss.reason, miss


def test_factored_fast_gelu_with_the_coefficient_off_names_it():
    """(x·x)·a with a off: the x·(x·a) alternative, tried first, must not hide the reason."""
    model = V.gelu_tanh_factored()
    (a,) = [t for t in model.graph.initializer if t.name.endswith("/a")]
    a.CopyFrom(numpy_helper.from_array(np.array(0.0452, np.float32), a.name))
    fused, report = fuse_only(model, "FastGelu")
    assert not report.counts
    (miss,) = report.misses
    assert "the cubic coefficient 0.044715 is [0.0452]" in miss.reason, miss


@pytest.mark.parametrize("approximate, op", [("none", "BiasGelu"), ("tanh", "FastGelu")])
@pytest.mark.parametrize("bias, swapped", [("input", False), ("input", True), ("const", True)])
def test_bias_before_onnx_gelu(approximate, op, bias, swapped):
    model = F.bias_onnx_gelu(approximate, bias=bias, swapped=swapped)
    fused, report = fuse_only(model, "BiasGelu")
    (node,) = fused.graph.node
    assert (node.domain, node.op_type, list(node.input)) == (MS, op, ["X", "B"]), report.summary()
    assert report.counts == {"BiasGelu": 1}
    assert verify(model, fused).ok


def test_bias_before_onnx_gelu_is_for_ort_only():
    _, report = fuse_only(F.bias_onnx_gelu(), "BiasGelu", target="onnx")
    assert not report.counts and not report.misses


@pytest.mark.parametrize("swapped", [True, False])
def test_bias_graph_input_in_either_order(swapped):
    """ORT's bias_gelu_add_inputs_swapped: the 1-D graph input is the bias wherever it sits."""
    model = F.bias_gelu_graph_input(swapped=swapped)
    fused, report = fuse_only(model, "Gelu", "BiasGelu")
    (node,) = [n for n in fused.graph.node if n.op_type == "BiasGelu"]
    assert list(node.input) == ["A_out", "B_out"]
    assert verify(model, fused).ok


@pytest.mark.parametrize("build", [lambda: F.bias_gelu_graph_input(bias_width=1),
                                   lambda: F.bias_gelu_graph_input(swapped=False, bias_width=1),
                                   lambda: F.bias_onnx_gelu(bias_width=1, swapped=True)])
def test_a_bias_of_the_wrong_size_is_named_in_the_near_miss(build):
    """The bias broadcasts from [1]: BiasGelu wants [N]. The reason names the bias, not the activation."""
    fused, report = fuse_only(build(), "Gelu", "BiasGelu")
    assert "BiasGelu" not in report.counts
    (miss,) = [m for m in report.misses if m.fusion == "BiasGelu"]
    assert "the bias 'B" in miss.reason and "has shape [1], expected [32]" in miss.reason, miss


def test_two_activations_added_are_not_a_bias():
    """A residual Add before the GELU: neither addend is a vector, nothing fuses."""
    model = F.bias_onnx_gelu(bias="input", bias_width=32)
    model.graph.input[1].CopyFrom(helper.make_tensor_value_info("B", TensorProto.FLOAT, ["batch", "seq", 32]))
    fused, report = fuse_only(model, "BiasGelu")
    assert not report.counts
    (miss,) = report.misses
    assert "has shape ['batch', 'seq', 32], expected [32]" in miss.reason, miss


def test_a_bias_of_symbolic_size_is_refused():
    """A graph-input bias declared ['n']: its size cannot be shown to be the last dimension."""
    model = F.bias_onnx_gelu()
    dim = model.graph.input[1].type.tensor_type.shape.dim[0]
    dim.ClearField("dim_value")
    dim.dim_param = "n"
    fused, report = fuse_only(model, "BiasGelu")
    assert not report.counts
    (miss,) = report.misses
    assert "the bias 'B' has shape ['n'], expected [32]" in miss.reason, miss
