"""LayerNorm fusion: every variant fuses and verifies; near-misses are refused with a reason."""
import numpy as np
import onnx
import pytest

import fusekit
from conftest import fuse_only, ops
from graphs import variants as V

EXPECTED_TAGS = {
    "pytorch": "pytorch", "pytorch_opset18": "pytorch", "mul_square": "pytorch[mul_square]",
    "reciprocal": "pytorch[reciprocal]", "sub_twice": "pytorch", "cast_fp16": "pytorch[cast,cast_back]", "keras": "keras",
    "no_gamma": "pytorch[no_gamma]", "no_beta": "pytorch[no_beta]", "commuted": "pytorch",
}


@pytest.mark.parametrize("target", fusekit.TARGETS)
@pytest.mark.parametrize("name", sorted(V.LAYER_NORM))
def test_variant_fuses_and_verifies(name, target):
    fused, report = fusekit.optimize(V.LAYER_NORM[name](), target=target)
    assert report.counts == {"LayerNorm": 1}, report.summary()
    assert report.fused[0].variant == EXPECTED_TAGS[name]
    assert ops(fused) == {"LayerNormalization"}
    assert report.verification.ok
    rel = 1e-2 if name == "cast_fp16" else 1e-5  # float16 output rounds at ~1e-3
    assert all(o.max_rel <= rel for o in report.verification.outputs), report.verification.summary()


def test_epsilon_carried_exactly():
    fused, _ = fuse_only(V.ln_pytorch(), "LayerNorm", target="onnx")
    (node,) = fused.graph.node
    eps = next(a.f for a in node.attribute if a.name == "epsilon")
    assert eps == np.float32(1e-12)


def test_reduction_over_last_axis_at_opset18_reads_axes_input():
    fused, report = fusekit.optimize(V.ln_pytorch_opset18(), target="ort")
    assert report.opset_before == report.opset_after == 18
    assert report.counts["LayerNorm"] == 1


def test_missing_gamma_becomes_ones():
    fused, _ = fuse_only(V.ln_no_gamma(), "LayerNorm")
    (node,) = fused.graph.node
    gamma = next(t for t in fused.graph.initializer if t.name == node.input[1])
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(gamma), np.ones(16, np.float32))


NEAR_MISSES = {
    "ln_eps_input": "ε is not a constant: it is the graph input 'eps'",
    "ln_eps_vector": "ε must be a scalar",
    "ln_eps_cast": "ε is not a constant: it is produced by Cast 'ln/Cast_0'",
    "ln_axis_not_last": "reduces over axis 1, not the last axis",
    "ln_inner_used_elsewhere": "is also used by Add",
    "ln_inner_graph_output": "'std' (from Sqrt) is also a graph output",
    "ln_gamma_wrong_shape": "γ has shape [1, 1, 1, 16], expected [16]",
}


@pytest.mark.parametrize("name", sorted(NEAR_MISSES))
def test_near_miss_refused_with_reason(name):
    fused, report = fusekit.optimize(V.NEAR_MISSES[name](), target="ort")
    assert "LayerNorm" not in report.counts
    assert "LayerNormalization" not in ops(fused)
    (miss,) = [m for m in report.misses if m.fusion == "LayerNorm"]
    assert NEAR_MISSES[name] in miss.reason, miss
    assert miss.variant == "pytorch" and miss.matched >= 4
    assert report.verification.ok


CAST_FORMS = {"ln_fp16_cast_centered": "pytorch[cast_back,cast_centered]",
              "ln_fp32_stats_fp16_affine": "pytorch[cast_back]",
              "ln_fp16_cast_exponent": "pytorch[cast_exponent]"}


@pytest.mark.parametrize("target", fusekit.TARGETS)
@pytest.mark.parametrize("name", sorted(CAST_FORMS))
def test_float16_cast_placements_fuse_and_verify(name, target):
    from graphs import canonical as C
    model = getattr(C, name)()
    fused, report = fusekit.optimize(model, target=target)
    assert report.counts == {"LayerNorm": 1}, report.summary()
    assert report.fused[0].variant == CAST_FORMS[name]
    assert report.verification.ok, report.verification.summary()
    (ln,) = [n for n in fused.graph.node if n.op_type == "LayerNormalization"]
    # one type for X, γ and β; a float32 normalization hands on float16 through one Cast
    assert {t.data_type for t in fused.graph.initializer if t.name in ln.input[1:]} == \
           ({onnx.TensorProto.FLOAT} if name == "ln_fp32_stats_fp16_affine" else {onnx.TensorProto.FLOAT16})
    assert ops(fused) == ({"LayerNormalization", "Cast"} if name == "ln_fp32_stats_fp16_affine"
                          else {"LayerNormalization"})


def test_float16_statistics_with_float32_gamma_is_a_near_miss():
    from graphs import canonical as C
    fused, report = fusekit.optimize(C.ln_fp16_stats_fp32_affine(), target="ort")
    assert "LayerNorm" not in report.counts
    (miss,) = [m for m in report.misses if m.fusion == "LayerNorm"]
    assert "LayerNormalization wants one type for X, γ and β" in miss.reason, miss
    assert report.verification.ok
