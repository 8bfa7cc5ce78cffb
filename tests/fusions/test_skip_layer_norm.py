"""SkipLayerNorm on hand-built graphs: the residual sum handed on when used later, and refusals."""
import numpy as np
from onnx import TensorProto, helper, numpy_helper

import fusekit
from conftest import op_histogram

H = 16
RNG = np.random.RandomState(0)


def block(sum_used_later: bool, skip_shape=("batch", "seq", H)):
    """x·W + b + skip → LayerNormalization, optionally reusing the sum (pre-LN style)."""
    inits = [numpy_helper.from_array(RNG.randn(H, H).astype(np.float32), "W"),
             numpy_helper.from_array(RNG.randn(H).astype(np.float32), "b"),
             numpy_helper.from_array((1 + 0.1 * RNG.randn(H)).astype(np.float32), "gamma"),
             numpy_helper.from_array((0.1 * RNG.randn(H)).astype(np.float32), "beta")]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="dense/MatMul"),
             helper.make_node("Add", ["b", "h"], ["hb"], name="dense/Add"),
             helper.make_node("Add", ["hb", "skip"], ["sum"], name="residual/Add"),
             helper.make_node("LayerNormalization", ["sum", "gamma", "beta"], ["ln"], name="ln", epsilon=1e-12)]
    if sum_used_later:
        nodes.append(helper.make_node("Add", ["sum", "ln"], ["y"], name="reuse/Add"))
    else:
        nodes.append(helper.make_node("Identity", ["ln"], ["y"], name="out"))
    graph = helper.make_graph(nodes, "skip", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", H]),
        helper.make_tensor_value_info("skip", TensorProto.FLOAT, list(skip_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", H])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_bias_and_residual_fold_into_the_layer_norm():
    fused, report = fusekit.optimize(block(sum_used_later=False))
    assert op_histogram(fused)[("com.microsoft", "SkipLayerNormalization")] == 1
    (node,) = [n for n in fused.graph.node if n.op_type == "SkipLayerNormalization"]
    assert list(node.input)[4] == "b" and report.fused[0].variant == "bias"
    assert report.verification.ok


def test_sum_used_later_becomes_the_fourth_output():
    fused, report = fusekit.optimize(block(sum_used_later=True))
    (node,) = [n for n in fused.graph.node if n.op_type == "SkipLayerNormalization"]
    assert len(node.output) == 4 and node.output[3] == "sum" and not node.output[1] and not node.output[2]
    assert any("sum" in n.input for n in fused.graph.node if n.name == "reuse/Add")
    assert report.verification.ok, report.verification.summary()


def test_a_broadcasting_skip_is_not_a_residual():
    fused, report = fusekit.optimize(block(sum_used_later=False, skip_shape=(1, "seq", H)))
    assert "SkipLayerNorm" not in report.counts
    (miss,) = report.misses
    assert "may broadcast over batch or sequence" in miss.reason


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
    model = residual_of_one_value(input_from_other=False)
    fused, report = fusekit.optimize(model, verify=False)
    assert report.counts == {"SkipLayerNorm": 1}, report.summary()
    assert fusekit.verify(model, fused).ok


def test_addends_from_two_inputs_named_apart_are_refused():
    fused, report = fusekit.optimize(residual_of_one_value(input_from_other=True), verify=False)
    assert not report.counts
    (miss,) = [m for m in report.misses if m.fusion == "SkipLayerNorm"]
    assert "may broadcast over batch or sequence" in miss.reason, miss
