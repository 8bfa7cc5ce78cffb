"""Canonicalization rules: each rewrites its spelling exactly, and refuses a near miss with the reason."""
import numpy as np
import pytest
from onnx import TensorProto

import fusekit
from conftest import fuse_only, ops
from graphs import canonical as C


def rule_only(model, *names, target="ort"):
    fused, report = fuse_only(model, *names, target=target)
    return fused, report


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
def test_flattened_batch_becomes_a_4d_matmul_of_head_transposes(fixed):
    model = C.static(C.batched_matmul(), batch=2, seq=5) if fixed else C.batched_matmul()
    fused, report = rule_only(model, "MatMulAsFlattenedBatch", "TransposeAsUnitAxis", "TransposeAsPair")
    assert report.canonical == {"MatMulAsFlattenedBatch": 1, "TransposeAsUnitAxis": 2, "TransposeAsPair": 1}
    assert ops(fused) == {"MatMul", "Transpose"}, ops(fused)
    perms = sorted(list(n.attribute[0].ints) for n in fused.graph.node if n.op_type == "Transpose")
    assert perms == [[0, 2, 1, 3], [0, 2, 3, 1]]  # Q and Kᵀ as the attention pattern reads them
    result = fusekit.verify(model, fused, atol=0.0, rtol=0.0)
    assert result.ok, result.summary()  # the same dot products


@pytest.mark.parametrize("fixed", [False, True])
def test_head_merge_becomes_a_transpose_a_reshape_and_a_matmul(fixed):
    model = C.static(C.head_merge(), batch=2, seq=5) if fixed else C.head_merge()
    fused, report = rule_only(model, "HeadMergeAsEinsumDense")
    assert report.canonical == {"HeadMergeAsEinsumDense": 1}
    assert ops(fused) == {"Transpose", "Reshape", "MatMul"}, ops(fused)
    result = fusekit.verify(model, fused)
    assert result.ok, result.summary()


def test_head_merge_near_miss_when_the_heads_flatten_in_another_order():
    fused, report = fusekit.optimize(C.head_merge(perm=(0, 3, 1, 4, 2)), target="ort", verify=False)
    assert "Gemm" in ops(fused)
    (miss,) = [m for m in report.misses if m.fusion == "HeadMergeAsEinsumDense"]
    assert "is not [B, S, 1, N, h] from [B, N, S, h]" in miss.reason, miss


def test_transposed_scores_become_scores_normalized_over_the_last_axis():
    model = C.transposed_scores()
    fused, report = rule_only(model, "SoftmaxAsTransposed")
    assert report.canonical == {"SoftmaxAsTransposed": 1}
    (softmax,) = [n for n in fused.graph.node if n.op_type == "Softmax"]
    assert softmax.attribute[0].i == -1 and fused.graph.node[-1].op_type == "Softmax"
    perms = sorted(list(n.attribute[0].ints) for n in fused.graph.node if n.op_type == "Transpose")
    assert perms == [[0, 1, 3, 2], [0, 2, 1, 3], [0, 2, 3, 1]]  # Q, Kᵀ and the bias as a row
    result = fusekit.verify(model, fused)
    assert result.ok, result.summary()


def test_transposed_scores_near_miss_when_the_softmax_normalizes_the_queries():
    fused, report = fusekit.optimize(C.transposed_scores(axis=3), target="ort", verify=False)
    assert fused.graph.node[-1].op_type == "Transpose"
    (miss,) = [m for m in report.misses if m.fusion == "SoftmaxAsTransposed"]
    assert "normalizes over axis 3, not the second last" in miss.reason, miss


def _lookup(model, ids):
    import onnxruntime as ort
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})[0]


@pytest.mark.parametrize("form", ["tf2onnx", "where"])
def test_wrapped_lookup_reads_as_a_plain_gather(form):
    model = C.wrapped_lookup(form)
    fused, report = rule_only(model, "GatherAsWrappedGather")
    assert report.canonical == {"GatherAsWrappedGather": 1}, report.summary()
    (gather,) = fused.graph.node
    assert gather.op_type == "Gather" and gather.input[1] == "ids"
    # every index Gather takes, negative ones included, reads the same row bit for bit
    ids = np.arange(-10, 10, dtype=np.int32).reshape(2, 10)
    np.testing.assert_array_equal(_lookup(fused, ids), _lookup(model, ids))


@pytest.mark.parametrize("kwargs, reason", [
    (dict(wrap=9), "the wrap adds [9], but the table has 10 entries along axis 0"),
    (dict(sign=TensorProto.INT8), "cast to an integer type, which may wrap"),
])
def test_wrapped_lookup_near_misses(kwargs, reason):
    fused, report = fusekit.optimize(C.wrapped_lookup(**kwargs), target="ort", verify=False)
    assert not report.canonical and "Less" in ops(fused)
    (miss,) = [m for m in report.misses if m.fusion == "GatherAsWrappedGather"]
    assert reason in miss.reason, miss


def test_keras_hub_embeddings_fuse_once_the_wraps_are_gone():
    """keras-hub wraps its token and segment ids: without the wraps its embeddings fuse."""
    from conftest import TESTMODELS
    fused, report = fusekit.optimize(TESTMODELS / "exporters" / "kerashub-bert_tf2onnx_18.onnx", target="ort")
    assert report.canonical["GatherAsWrappedGather"] == 2 and report.counts["EmbedLayerNorm"] == 1, report.summary()
    assert report.verification.ok
