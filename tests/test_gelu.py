"""GELU family fusions: erf, tanh, sigmoid forms and the bias fold, per target."""
import pytest

import fusekit
from conftest import op_histogram
from graphs import variants as V

MS = "com.microsoft"

# variant -> {target: expected fused ops (domain, op)}
EXPECTED = {
    "erf_div_half_after": {"ort": {(MS, "Gelu")}, "onnx": {("", "Gelu")}},
    "erf_div_half_before": {"ort": {(MS, "Gelu")}, "onnx": {("", "Gelu")}},
    "erf_mul_tf": {"ort": {(MS, "Gelu")}, "onnx": {("", "Gelu")}},
    "tanh_pow": {"ort": {(MS, "FastGelu")}, "onnx": {("", "Gelu")}},
    "tanh_mul3": {"ort": {(MS, "FastGelu")}, "onnx": {("", "Gelu")}},
    "tanh_factored": {"ort": {(MS, "FastGelu")}, "onnx": {("", "Gelu")}},
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


def test_quick_gelu_alpha_carried_and_not_called_gelu():
    fused, report = fusekit.optimize(V.gelu_quick(), target="ort")
    (node,) = fused.graph.node
    assert node.op_type == "QuickGelu"
    assert abs(node.attribute[0].f - 1.702) < 1e-6
    assert "Gelu" not in report.counts and "FastGelu" not in report.counts


def test_bias_gelu_records_both_steps():
    _, report = fusekit.optimize(V.gelu_bias(), target="ort")
    assert report.counts == {"Gelu": 1, "BiasGelu": 1}


NEAR_MISSES = {
    "gelu_sqrt2_off": ("Gelu", "√2 is [1.428356], expected 1.4142136"),
    "gelu_half_off": ("Gelu", "the 0.5 of GELU is [0.505], expected 0.5"),
    "tanh_coeff_off": ("FastGelu", "the cubic coefficient 0.044715 is [0.045162]"),
    "gelu_inner_graph_output": ("Gelu", "'erf' (from Erf) is also a graph output"),
    "sigmoid_silu": ("QuickGelu", "expected Mul, found the graph input 'x'"),
}


@pytest.mark.parametrize("name", sorted(NEAR_MISSES))
def test_near_miss_refused_with_reason(name):
    fusion, reason = NEAR_MISSES[name]
    fused, report = fusekit.optimize(V.NEAR_MISSES[name](), target="ort")
    assert not report.counts, report.summary()
    assert all(n.domain == "" for n in fused.graph.node)
    (miss,) = report.misses
    assert miss.fusion == fusion and reason in miss.reason, miss
