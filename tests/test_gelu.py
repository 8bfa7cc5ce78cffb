"""The GELU family through the whole pipeline: which fusion claims each form, per target, and the
bias fold composing with the fusion before it. Each fusion alone, variant by variant, near misses
included, is tested in tests/fusions/ (test_gelu, test_fast_gelu, test_quick_gelu, test_bias_gelu)."""
import pytest

import fusekit
from conftest import fuse_only, op_histogram
from graphs import variants as V
from fusions.test_fast_gelu import fast_gelu_x_xa
from fusions.test_gelu import erf_gelu_after_graph_input_bias

MS = "com.microsoft"

# variant -> {target: expected fused ops (domain, op)}
EXPECTED = {
    "quick_gelu": {"ort": {(MS, "QuickGelu")}, "onnx": {("", "Mul"), ("", "Sigmoid")}},
    "bias_gelu": {"ort": {("", "MatMul"), (MS, "BiasGelu")}, "onnx": {("", "MatMul"), ("", "Add"), ("", "Gelu")}},
    "bias_fast_gelu": {"ort": {("", "MatMul"), (MS, "FastGelu")}, "onnx": {("", "MatMul"), ("", "Add"), ("", "Gelu")}},
}


@pytest.mark.parametrize("target", ["ort", "onnx"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_variant_fuses_to_target_form(name, target):
    fused, report = fusekit.optimize(V.GELU[name](), target=target)
    assert set(op_histogram(fused)) == EXPECTED[name][target], report.summary()
    assert report.verification.ok
    assert all(o.max_rel <= 1e-5 for o in report.verification.outputs), report.verification.summary()


def test_tanh_form_on_onnx_target_is_approximate_gelu():
    fused, report = fusekit.optimize(V.gelu_tanh_pow(), target="onnx")
    (node,) = fused.graph.node
    assert {a.name: a.s for a in node.attribute} == {"approximate": b"tanh"}
    assert report.opset_after == 20


def test_bias_gelu_records_both_steps():
    _, report = fusekit.optimize(V.gelu_bias(), target="ort")
    assert report.counts == {"Gelu": 1, "BiasGelu": 1}


def test_fast_gelu_x_times_x_times_coefficient_with_bias():
    model = fast_gelu_x_xa(bias=True)
    fused, report = fuse_only(model, "FastGelu", "BiasGelu")
    (node,) = [n for n in fused.graph.node if n.op_type == "FastGelu"]
    assert list(node.input) == ["input", "input_bias"]
    assert fusekit.verify(model, fused).ok


@pytest.mark.parametrize("swapped", [True, False])
def test_bias_graph_input_in_either_order(swapped):
    """ORT's bias_gelu_add_inputs_swapped: the 1-D graph input is the bias wherever it sits."""
    model = erf_gelu_after_graph_input_bias(swapped=swapped)
    fused, report = fuse_only(model, "Gelu", "BiasGelu")
    (node,) = [n for n in fused.graph.node if n.op_type == "BiasGelu"]
    assert list(node.input) == ["A_out", "B_out"]
    assert fusekit.verify(model, fused).ok
