"""Canonicalization in the pipeline: what rules rewrite, fusions then take, with provenance through
both; rules applied in turn; a rule switched off; exporter models. Each rule alone, on its own
graphs and near misses, is tested in tests/canonical/."""
import pytest

import fusekit
from conftest import fuse_only, ops
from graphs import canonical as C


def test_global_average_pool_layer_norm_fuses_with_provenance():
    model = C.ln_global_average_pool()
    fused, report = fusekit.optimize(model, target="ort")
    assert report.counts == {"LayerNorm": 1}, report.summary()
    assert report.verification.ok
    (record,) = report.fused
    assert record.rules == ["MeanAsGlobalAveragePool", "MeanAsGlobalAveragePool"]
    assert record.steps == ["LayerNorm"]
    # the record names the original nodes, GlobalAveragePools included
    assert sorted(op for _, op in record.replaced).count("GlobalAveragePool") == 2
    assert {n.name for n in model.graph.node} >= {name for name, _ in record.replaced}


def test_keras3_layer_norm_shift_and_gamma_shape_fuse():
    model = C.ln_keras3()
    fused, report = fusekit.optimize(model, target="onnx")
    assert report.counts == {"LayerNorm": 1} and report.canonical == {"SubAsNegatedProduct": 1}, report.summary()
    assert ops(fused) == {"LayerNormalization"} and report.verification.ok
    (node,) = fused.graph.node
    gamma = next(t for t in fused.graph.initializer if t.name == node.input[1])
    assert list(gamma.dims) == [16]


def test_noop_casts_are_bypassed_and_the_gelu_fuses():
    model = C.noop_casts()
    fused, report = fusekit.optimize(model, target="ort")
    assert report.counts == {"Gelu": 1}, report.summary()
    # the Cast writing the output 'y' keeps its name; the one that changes the type stays
    casts = [n for n in fused.graph.node if n.op_type == "Cast"]
    assert sorted(n.output[0] for n in casts) == ["half", "y"]
    assert report.canonical == {"NoOpCast": 1}
    (miss,) = [m for m in report.misses if m.fusion == "NoOpCast"]  # the float16 Cast is none
    assert miss.anchor == "gelu/Cast_1" and "its output 'y' is a graph output" in miss.reason
    assert report.verification.ok


def test_tf2onnx_keras3_model_fuses_its_layer_norms_gelus_and_ffn_residuals():
    """keras-hub at opset 13: GlobalAveragePool means, the negated shift, [1, 1, H] γ and β,
    tensordot Dense layers, attention einsums decomposed into 3-D batches and an Einsum output
    projection; every attention, LayerNorm, GELU with its bias and residual fuses."""
    from conftest import TESTMODELS
    fused, report = fusekit.optimize(TESTMODELS / "exporters" / "kerashub-bert_tf2onnx_13.onnx", target="ort")
    assert {k: report.counts[k] for k in ("Attention", "LayerNorm", "FastGelu", "BiasGelu", "SkipLayerNorm")} == \
        {"Attention": 2, "LayerNorm": 5, "FastGelu": 2, "BiasGelu": 2, "SkipLayerNorm": 4}, report.summary()
    assert {"MeanAsGlobalAveragePool", "SubAsNegatedProduct", "DenseAsTensordot"} <= set(report.canonical)
    assert report.verification.ok


def test_explain_names_the_rules_a_fused_node_went_through():
    explanation = fusekit.explain(C.ln_global_average_pool(), target="ort")
    (candidate,) = [c for c in explanation.candidates if c.fusion == "LayerNorm"]
    assert candidate.rules == ["MeanAsGlobalAveragePool"] * 2
    assert "(canonicalized first: MeanAsGlobalAveragePool 2)" in candidate.describe()
    data = explanation.to_dict()
    assert data["canonical"] == {"MeanAsGlobalAveragePool": 2}
    assert "canonicalized: MeanAsGlobalAveragePool 2" in explanation.summary()


def test_a_rule_can_be_disabled():
    fused, report = fusekit.optimize(C.ln_global_average_pool(), target="ort", verify=False,
                                     disable=["MeanAsGlobalAveragePool"])
    assert "GlobalAveragePool" in ops(fused) and not report.counts and not report.canonical


@pytest.mark.parametrize("fixed", [False, True])  # static sizes fold the shape vectors to constants
def test_einsum_rules_in_turn_leave_a_4d_matmul_of_head_transposes(fixed):
    model = C.static(C.batched_matmul(), batch=2, seq=5) if fixed else C.batched_matmul()
    fused, report = fuse_only(model, "MatMulAsFlattenedBatch", "TransposeAsUnitAxis", "TransposeAsPair")
    assert report.canonical == {"MatMulAsFlattenedBatch": 1, "TransposeAsUnitAxis": 2, "TransposeAsPair": 1}
    assert ops(fused) == {"MatMul", "Transpose"}, ops(fused)
    perms = sorted(list(n.attribute[0].ints) for n in fused.graph.node if n.op_type == "Transpose")
    assert perms == [[0, 2, 1, 3], [0, 2, 3, 1]]  # Q and Kᵀ as the attention pattern reads them
    result = fusekit.verify(model, fused, atol=0.0, rtol=0.0)
    assert result.ok, result.summary()  # the same dot products


def test_keras_hub_embeddings_fuse_once_the_wraps_are_gone():
    """keras-hub wraps its token and segment ids: without the wraps its embeddings fuse."""
    from conftest import TESTMODELS
    fused, report = fusekit.optimize(TESTMODELS / "exporters" / "kerashub-bert_tf2onnx_18.onnx", target="ort")
    assert report.canonical["GatherAsWrappedGather"] == 2 and report.counts["EmbedLayerNorm"] == 1, report.summary()
    assert report.verification.ok
