"""SkipLayerNorm alone (patterns/fusions/skip_layer_norm.py) on small graphs in the form it reads,
the LayerNormalization already there (opset 17): the residual sum, with or without a bias Add,
folded into it; the sum handed on when used later; refusals with their reasons."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphs.attention import folded_heads
from graphs.variants import Graph
from one_rule import apply

H = 16
RNG = np.random.RandomState(0)


def block(sum_used_later: bool, skip_shape=("batch", "seq", H), bias=True, statistics_used=False):
    """x·W (+ b) + skip → LayerNormalization, optionally reusing the sum (pre-LN style) or
    handing on the normalization's mean as a second output."""
    inits = [numpy_helper.from_array(RNG.randn(H, H).astype(np.float32), "W"),
             numpy_helper.from_array(RNG.randn(H).astype(np.float32), "b"),
             numpy_helper.from_array((1 + 0.1 * RNG.randn(H)).astype(np.float32), "gamma"),
             numpy_helper.from_array((0.1 * RNG.randn(H)).astype(np.float32), "beta")]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="dense/MatMul")]
    if bias:
        nodes.append(helper.make_node("Add", ["b", "h"], ["hb"], name="dense/Add"))
    else:
        inits.pop(1)
    nodes += [helper.make_node("Add", ["hb" if bias else "h", "skip"], ["sum"], name="residual/Add"),
              helper.make_node("LayerNormalization", ["sum", "gamma", "beta"], ["ln", "mean"] if statistics_used else ["ln"],
                               name="ln", epsilon=1e-12)]
    if sum_used_later:
        nodes.append(helper.make_node("Add", ["sum", "ln"], ["y"], name="reuse/Add"))
    else:
        nodes.append(helper.make_node("Identity", ["ln"], ["y"], name="out"))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", H])]
    if statistics_used:
        outputs.append(helper.make_tensor_value_info("mean", TensorProto.FLOAT, ["batch", "seq", 1]))
    graph = helper.make_graph(nodes, "skip", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", H]),
        helper.make_tensor_value_info("skip", TensorProto.FLOAT, list(skip_shape))], outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def skip_node(model):
    (node,) = [n for n in model.graph.node if n.op_type == "SkipLayerNormalization"]
    assert node.domain == "com.microsoft"
    return node


def test_bias_and_residual_fold_into_the_layer_norm():
    applied = apply("SkipLayerNorm", block(sum_used_later=False))
    assert applied.made == {"SkipLayerNormalization": 1, "LayerNormalization": -1, "Add": -2}
    node = skip_node(applied.model)
    assert list(node.input) == ["h", "skip", "gamma", "beta", "b"] and applied.records[0].variant == "bias"
    assert next(a.f for a in node.attribute if a.name == "epsilon") == np.float32(1e-12)
    applied.assert_equivalent()


def test_a_residual_without_bias_folds_plain():
    applied = apply("SkipLayerNorm", block(sum_used_later=False, bias=False))
    assert applied.made == {"SkipLayerNormalization": 1, "LayerNormalization": -1, "Add": -1}
    assert list(skip_node(applied.model).input) == ["h", "skip", "gamma", "beta"]
    assert applied.rewrote == 1 and applied.records[0].variant == "plain"
    applied.assert_equivalent()


def test_sum_used_later_becomes_the_fourth_output():
    applied = apply("SkipLayerNorm", block(sum_used_later=True))
    fused = applied.model
    node = skip_node(fused)
    assert len(node.output) == 4 and node.output[3] == "sum" and not node.output[1] and not node.output[2]
    assert any("sum" in n.input for n in fused.graph.node if n.name == "reuse/Add")
    assert applied.rewrote == 1
    applied.assert_equivalent()


def residual_of_one_value(input_from_other: bool):
    """a = LayerNorm(t); a·W + b + a → LayerNormalization, with a second model input whose
    dimensions are named apart (as tf2onnx names every input's), so that no input is provably
    (batch, sequence). With ``input_from_other`` the sublayer reads that input instead of a."""
    inits = [numpy_helper.from_array(RNG.randn(H, H).astype(np.float32), "W"),
             numpy_helper.from_array(RNG.randn(H).astype(np.float32), "b"),
             numpy_helper.from_array((1 + 0.1 * RNG.randn(H)).astype(np.float32), "gamma"),
             numpy_helper.from_array((0.1 * RNG.randn(H)).astype(np.float32), "beta")]
    nodes = [helper.make_node("LayerNormalization", ["t", "gamma", "beta"], ["a"], name="ln0", epsilon=1e-12),
             helper.make_node("MatMul", ["p" if input_from_other else "a", "W"], ["h"], name="dense/MatMul"),
             helper.make_node("Add", ["h", "b"], ["hb"], name="dense/Add"),
             helper.make_node("Add", ["hb", "a"], ["sum"], name="residual/Add"),
             helper.make_node("LayerNormalization", ["sum", "gamma", "beta"], ["y"], name="ln1", epsilon=1e-12)]
    graph = helper.make_graph(nodes, "skip", [
        helper.make_tensor_value_info("t", TensorProto.FLOAT, ["b1", "s1", H]),
        helper.make_tensor_value_info("p", TensorProto.FLOAT, ["b2", "s2", H])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b1", "s1", H])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_addends_computed_from_one_value_cannot_broadcast_against_each_other():
    applied = apply("SkipLayerNorm", residual_of_one_value(input_from_other=False))
    assert applied.rewrote == 1 and applied.made["SkipLayerNormalization"] == 1, applied.misses
    assert applied.records[0].variant == "bias"
    applied.assert_equivalent()


@pytest.mark.parametrize("build, reason", [
    (lambda: block(sum_used_later=False, skip_shape=(1, "seq", H)), "may broadcast over batch or sequence"),
    (lambda: residual_of_one_value(input_from_other=True), "may broadcast over batch or sequence"),
    (lambda: block(sum_used_later=False, statistics_used=True),
     "the LayerNormalization's statistics output 'mean' is used"),
])
def test_near_miss_refused_with_reason(build, reason):
    applied = apply("SkipLayerNorm", build())
    assert not applied.rewrote and not applied.made
    miss = applied.miss()
    assert reason in miss.reason and miss.variant == "bias", miss
    applied.assert_equivalent()


def test_only_for_ort():
    with pytest.raises(AssertionError, match="SkipLayerNorm does not run for target onnx"):
        apply("SkipLayerNorm", block(sum_used_later=False), target="onnx")


def pre_ln_residual(cut: str, beta: bool):
    """ModernBERT's MLP residual: x + Wo·(GELU(a)·g), a and g the two halves of x·Wi cut along
    the last axis (``cut``: "split", or "sequence", which first slices one position off the
    sequence axis, so the sum broadcasts over it), then a LayerNormalization with or without β."""
    F = 2 * H
    inits = [numpy_helper.from_array(RNG.randn(H, 2 * F).astype(np.float32), "Wi"),
             numpy_helper.from_array(RNG.randn(F, H).astype(np.float32), "Wo"),
             numpy_helper.from_array((1 + 0.1 * RNG.randn(H)).astype(np.float32), "gamma"),
             numpy_helper.from_array((0.1 * RNG.randn(H)).astype(np.float32), "beta"),
             numpy_helper.from_array(np.array([0]), "zero"), numpy_helper.from_array(np.array([1]), "one")]
    nodes = [helper.make_node("MatMul", ["x", "Wi"], ["wi"], name="mlp/Wi")]
    if cut == "sequence":
        nodes.append(helper.make_node("Slice", ["wi", "zero", "one", "one"], ["first"], name="mlp/first"))
    nodes += [helper.make_node("Split", ["first" if cut == "sequence" else "wi"], ["a", "g"], name="mlp/chunk",
                               axis=-1, num_outputs=2),
              helper.make_node("Gelu", ["a"], ["act"], name="mlp/act"),
              helper.make_node("Mul", ["act", "g"], ["glu"], name="mlp/glu"),
              helper.make_node("MatMul", ["glu", "Wo"], ["mlp"], name="mlp/Wo"),
              helper.make_node("Add", ["x", "mlp"], ["sum"], name="residual/Add"),
              helper.make_node("LayerNormalization", ["sum", "gamma", "beta"] if beta else ["sum", "gamma"], ["y"],
                               name="ln", epsilon=1e-5)]
    io = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", "seq", H]) for name in ("x", "y")]
    graph = helper.make_graph(nodes, "skip", io[:1], io[1:], inits if beta else [i for i in inits if i.name != "beta"])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=9)


@pytest.mark.parametrize("beta", [True, False])
def test_a_residual_through_a_chunked_projection_folds(beta):
    """The halves of a Split along the last axis keep (batch, sequence), so the MLP output cannot
    broadcast against the residual; without β the SkipLayerNormalization omits it too."""
    applied = apply("SkipLayerNorm", pre_ln_residual("split", beta))
    assert applied.made == {"SkipLayerNormalization": 1, "LayerNormalization": -1, "Add": -1}, applied.misses
    node = skip_node(applied.model)
    assert list(node.input) == (["x", "mlp", "gamma", "beta"] if beta else ["x", "mlp", "gamma"])
    assert applied.records[0].variant == ("plain" if beta else "plain[no_beta]")
    applied.assert_equivalent()


def test_without_beta_the_bias_follows_an_omitted_beta():
    model = block(sum_used_later=False)
    ln = next(n for n in model.graph.node if n.op_type == "LayerNormalization")
    del ln.input[2]
    applied = apply("SkipLayerNorm", model)
    assert applied.made == {"SkipLayerNormalization": 1, "LayerNormalization": -1, "Add": -2}
    assert list(skip_node(applied.model).input) == ["h", "skip", "gamma", "", "b"]
    assert applied.records[0].variant == "bias[no_beta]"
    applied.assert_equivalent()


def test_a_projection_sliced_on_the_sequence_axis_is_refused():
    applied = apply("SkipLayerNorm", pre_ln_residual("sequence", beta=False))
    assert not applied.rewrote and not applied.made
    miss = applied.miss()
    assert "the skip 'mlp' may broadcast over batch or sequence" in miss.reason, miss
    assert miss.variant == "plain", miss
    applied.assert_equivalent()


def attention_residual(unfold_heads: int):
    """x + (attention output)·W + b → LayerNormalization, the attention's heads folded into the
    batch and unfolded by ``[-1, unfold_heads, S, 2]`` (4: as they were folded; DeBERTa's
    TorchScript form)."""
    g = Graph("skip", 17)
    x = g.input("x", shape=["batch", "seq", 8])
    context = folded_heads(g, x, unfold_heads=unfold_heads)
    width = 8 if unfold_heads == 4 else 4
    dense = g.op("MatMul", context, g.const("W", RNG.randn(width, 8)))
    total = g.op("Add", g.op("Add", dense, g.const("b", RNG.randn(8))), x)
    g.op("LayerNormalization", total, g.const("gamma", 1 + 0.1 * RNG.randn(8)), g.const("beta", 0.1 * RNG.randn(8)),
         epsilon=1e-7, out="y")
    g.output("y", shape=["batch", "seq", 8])
    return g.model()


def test_an_attention_output_read_back_from_heads_folded_into_the_batch_folds():
    applied = apply("SkipLayerNorm", attention_residual(unfold_heads=4))
    assert applied.made == {"SkipLayerNormalization": 1, "LayerNormalization": -1, "Add": -2}, applied.misses
    assert applied.records[0].variant == "bias"
    applied.assert_equivalent()


def test_heads_unfolded_into_another_batch_are_refused():
    """[4B, S, 2] read as [2B, 2, S, 2]: the dense output is [2B, S, 8], which broadcasts over x
    only where B is 1."""
    applied = apply("SkipLayerNorm", attention_residual(unfold_heads=2))
    assert not applied.rewrote and not applied.made
    assert "may broadcast over batch or sequence" in applied.miss().reason, applied.miss()


def test_the_requantization_pair_on_the_sum_is_absorbed():
    """An all-ops quantizer rounds the residual sum before the LayerNorm: the op adds unrounded
    (verified in steps); the addends' pairs and the output's stay."""
    from graphs import quantized_forms as QF
    applied = apply("SkipLayerNorm", QF.skip_ln_all_ops())
    assert applied.made == {"SkipLayerNormalization": 1, "LayerNormalization": -1, "Add": -1,
                            "QuantizeLinear": -1, "DequantizeLinear": -1}, applied.misses
    applied.assert_equivalent()


def test_a_per_channel_pair_on_the_sum_is_refused():
    from graphs import quantized_forms as QF
    applied = apply("SkipLayerNorm", QF.skip_ln_all_ops(per_channel=True))
    assert not applied.rewrote
    assert "quantizes an activation per channel, not per tensor" in applied.miss().reason
