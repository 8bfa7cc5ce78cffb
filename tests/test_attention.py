"""Attention near misses: each is refused, for the reason a user would need to hear."""
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import fusekit
from conftest import TESTMODELS

CORPUS = TESTMODELS / "corpus"
LAYER0 = "/encoder/layer.0/attention/self/"


def load(name):
    return onnx.load(CORPUS / name)


def node(model, name):
    return next(n for n in model.graph.node if n.name == name)


def set_constant(model, value_name, array):
    producer = next(n for n in model.graph.node if value_name in n.output)
    producer.attribute[0].t.CopyFrom(numpy_helper.from_array(np.asarray(array), producer.attribute[0].t.name))


def layer0_miss(model, verify=True):
    fused, report = fusekit.optimize(model, target="ort", verify=verify)
    attention = [n for n in fused.graph.node if n.op_type == "Attention"]
    misses = [m for m in report.misses if m.fusion == "Attention" and "layer.0" in m.anchor]
    assert len(attention) == 1 and len(misses) == 1, report.summary()  # layer 1 still fuses
    if verify:
        assert report.verification.ok
    return misses[0]


def test_scale_that_is_not_a_scalar_cannot_be_carried():
    model = load("bert_ts14_eager.onnx")
    scale = node(model, LAYER0 + "Mul").input[1]
    set_constant(model, scale, np.array([0.35, 0.36], np.float32).reshape(1, 2, 1, 1))  # one per head
    miss = layer0_miss(model)
    assert "the attention scale is not a scalar" in miss.reason


def test_scale_that_is_not_one_over_sqrt_head_size_is_carried():
    model = load("bert_ts14_eager.onnx")
    set_constant(model, node(model, LAYER0 + "Mul").input[1], np.float32(0.2))
    fused, report = fusekit.optimize(model, target="ort")
    scales = [a.f for n in fused.graph.node if n.op_type == "Attention" for a in n.attribute if a.name == "scale"]
    assert len(scales) == 2 and any(abs(s - 0.2) < 1e-7 for s in scales)
    assert report.verification.ok


def test_q_weight_that_is_not_a_constant():
    model = load("bert_ts14_eager.onnx")
    matmul = node(model, "/encoder/layer.0/attention/self/query/MatMul")
    weight = next(t for t in model.graph.initializer if t.name == matmul.input[1])
    model.graph.initializer.remove(weight)
    model.graph.input.append(helper.make_tensor_value_info(weight.name, weight.data_type, list(weight.dims)))
    miss = layer0_miss(model, verify=False)  # a weight input needs feeding; the refusal is what matters
    assert f"the Q weight is not a constant: it is the graph input '{weight.name}'" in miss.reason


def test_attention_probabilities_that_are_a_graph_output():
    model = load("bert_ts14_eager.onnx")  # like output_attentions=True
    probs = node(model, LAYER0 + "Softmax").output[0]
    model.graph.output.append(helper.make_tensor_value_info(probs, onnx.TensorProto.FLOAT, None))
    miss = layer0_miss(model)
    assert f"'{probs}' (from Softmax) is also a graph output" in miss.reason


def test_head_count_that_disagrees_between_q_and_k():
    model = load("bert_ts14_eager_tf4.onnx")  # its head split states the heads: (B, S, 2, 8)
    key_split = node(model, LAYER0 + "Concat")  # feeds the K Reshape
    set_constant(model, key_split.input[2], np.array([4]))
    set_constant(model, key_split.input[3], np.array([4]))
    miss = layer0_miss(model, verify=False)  # the mutated graph no longer runs
    assert "the head count disagrees between Q, K and V: Q 2 heads of 8, K 4 heads of 4" in miss.reason


def test_causal_mask_is_not_a_key_padding_mask():
    model = load("bert_ts14_eager.onnx")
    add = node(model, LAYER0 + "Add")  # scores + mask: make the mask depend on the query position too
    triu = np.triu(np.full((64, 64), -1e9, np.float32), k=1)
    model.graph.initializer.append(numpy_helper.from_array(triu, "causal"))
    model.graph.node.extend([
        helper.make_node("Shape", ["attention_mask"], ["shape"], name="causal/Shape"),
        helper.make_node("Slice", ["shape", helper_const(model, "minus1", [-1]), helper_const(model, "big", [9])], ["s"],
                         name="causal/Last"),
        helper.make_node("Slice", ["causal", helper_const(model, "zero", [0]), "s", helper_const(model, "ax0", [0])],
                         ["c1"], name="causal/Slice0"),
        helper.make_node("Slice", ["c1", "zero", "s", helper_const(model, "ax1", [1])], ["c2"], name="causal/Slice1"),
        helper.make_node("Add", [add.input[1], "c2"], ["causal_mask"], name="causal/Add"),
    ])
    add.input[1] = "causal_mask"
    fused, report = fusekit.optimize(onnx.shape_inference.infer_shapes(toposorted(model)), target="ort")
    misses = [m for m in report.misses if m.fusion == "Attention" and "layer.0" in m.anchor]
    assert misses and "not one value at the unpadded keys of input 'attention_mask'" in misses[0].reason
    assert "the bias changes with the values of 'attention_mask'" in misses[0].reason, report.summary()
    assert report.verification.ok


def helper_const(model, name, values):
    model.graph.initializer.append(numpy_helper.from_array(np.array(values, np.int64), name))
    return name


def toposorted(model):
    import onnx_graphsurgeon as gs
    graph = gs.import_onnx(model)
    graph.toposort()
    out = gs.export_onnx(graph)
    out.ir_version = model.ir_version
    return out


@pytest.mark.parametrize("name", ["bert_ts14_eager.onnx", "bert_ts14_sdpa.onnx", "bert_dynamo18.onnx"])
def test_left_padding_verifies_exactly(name):
    # the fused op gets the raw 2-D mask, so left-padded rows stay exact (no mask index)
    result = fusekit.verify(CORPUS / name, fusekit.optimize(CORPUS / name, verify=False)[0], trials=2, seed=5)
    hidden = result.outputs[0]
    assert result.ok and "left padding" in result.settings[1]
    assert hidden.valid_max_abs <= 1e-5 * hidden.scale and hidden.padded_max_abs <= 1e-5 * hidden.scale


# --------------------------------------------------------------------------- forms on one small layer

from conftest import fuse_only  # noqa: E402
from graphs.attention import attention  # noqa: E402

LOWEST = float(np.finfo(np.float32).min)


def fused_attention(model, target):
    fused, report = fuse_only(model, "Attention", target=target)
    nodes = [n for n in fused.graph.node if n.op_type == "Attention"]
    return fused, report, nodes


def ort_inputs(node):
    """The com.microsoft Attention inputs by role, omitted ones left out."""
    roles = ("input", "weights", "bias", "mask_index", "past", "attention_bias")
    return {role: name for role, name in zip(roles, node.input) if name}


def attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


@pytest.mark.parametrize("target", ["ort", "onnx"])
@pytest.mark.parametrize("mask, scale, carried", [
    ("add", "scores_mul", {"mask_index"}),
    ("add", "scores_div", {"mask_index"}),
    ("add", "q_div", {"mask_index"}),  # transformers 4 DistilBERT
    ("add", "q_head_mul", {"mask_index"}),  # HF-TF DistilBERT
    ("where", "q_div", {"mask_index"}),  # transformers 4 DistilBERT's masked_fill
    ("shifted", "scores_mul", {"mask_index"}),  # HF-TF: 9.99e-10 at kept keys
    ("none", "scores_mul", set()),
    ("zero_constant", "scores_mul", set()),  # every key attends: no mask input at all
    ("ones_computed", "scores_mul", set()),
    ("bias_and_mask", "scores_div", {"mask_index", "attention_bias"}),  # MPNet
    ("constant_bias", "scores_mul", {"attention_bias"}),
    ("keras_select", "scores_mul", {"mask_index"}),  # Keras' SelectV2 lowered to Mul and Add
    ("keras_remask", "scores_mul", {"mask_index"}),  # … and the probabilities masked again
])
def test_form_fuses_and_verifies_with_both_padding_sides(mask, scale, carried, target):
    model = attention(mask, scale)
    fused, report, (node,) = fused_attention(model, target)
    if target == "ort":
        assert set(ort_inputs(node)) - {"input", "weights", "bias"} == carried
        assert abs(attrs(node)["scale"] - 1 / np.sqrt(8)) < 1e-7
    else:  # ONNX Attention adds one float mask: the key padding mask and the bias summed
        assert (len(node.input) > 3) == bool(carried)
    result = fusekit.verify(model, fused, trials=4)  # right, left, all-ones, right at another length
    assert result.ok, result.summary()
    assert mask == "none" or "left padding" in result.settings[1]


@pytest.mark.parametrize("target", ["ort", "onnx"])
def test_hf_tf_distilbert_form_fuses_with_head_split_computed_in_int32(target):
    # Q scaled before its transpose, 9.99e-10 at kept keys, reshape targets behind int32 Casts
    model = attention("shifted", "q_head_mul", tf_shapes=True)
    fused, _, (node,) = fused_attention(model, target)
    assert attrs(node)["num_heads" if target == "ort" else "q_num_heads"] == 2
    assert fusekit.verify(model, fused, trials=4).ok


@pytest.mark.parametrize("target", ["ort", "onnx"])
def test_keras_projection_with_its_bias_after_the_head_split(target):
    # Keras' EinsumDense, canonicalized: x·W split into heads, then the [N, h] bias; Q scaled before its transpose
    model = attention("keras_select", "q_head_mul", bias_shape=(2, 8))
    fused, _, (node,) = fused_attention(model, target)
    assert fusekit.verify(model, fused, trials=4).ok


def test_bias_after_the_head_split_shared_by_every_head_is_refused():
    _, report, nodes = fused_attention(attention("add", bias_shape=(1, 8)), "ort")
    (miss,) = [m for m in report.misses if m.fusion == "Attention"]
    assert not nodes and "the Q/K/V biases have shapes [[1, 8], [1, 8], [1, 8]], expected [[2, 8], [2, 8], [2, 8]]" \
        in miss.reason


@pytest.mark.parametrize("target", ["ort", "onnx"])
def test_static_batch_in_the_head_split_is_the_batch(target):
    # exported with a fixed batch of 2: the reshape targets hold 2 where the batch is
    model = attention("add", tf_shapes=True)
    for value in [*model.graph.input, *model.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_value = 2
    fused, _, (node,) = fused_attention(model, target)
    assert fusekit.verify(model, fused, trials=2).ok


@pytest.mark.parametrize("mask, fill", [("where", LOWEST), ("add", -10000.0), ("shifted", -1e30),
                                        ("keras_select", -2.3726709e38)])
def test_fill_value_is_the_step_from_kept_to_padded_keys(mask, fill):
    _, _, (node,) = fused_attention(attention(mask), "ort")
    assert attrs(node)["mask_filter_value"] == pytest.approx(max(fill, LOWEST), rel=1e-6)


@pytest.mark.parametrize("mask, reason", [
    ("where_small_fill", "the masked_fill value [-1.] is not one large negative number"),
    ("where_keeps", "the masked_fill condition is not true exactly at the padded keys of input 'attention_mask'"),
    ("bias_from_ids", "nor a position bias (the bias changes with the values of 'input_ids', not only with their sizes)"),
    ("select_fill_at_kept_keys", "the fill added beside the selected scores is not 0 at the kept keys of input "
                                 "'attention_mask' and one large negative number at the padded ones"),
    # ids are probed inside the table they index, not only as 0/1
    ("bias_from_sep_ids", "nor a position bias (the bias changes with the values of 'input_ids'"),
    ("where_reads_scores", "the mask reads the values of the scores (Greater "),
    ("remask_only", "the probabilities are masked by input 'attention_mask' after the Softmax, but the scores are "
                    "not masked by it before"),
])
def test_mask_near_miss(mask, reason):
    fused, report, nodes = fused_attention(attention(mask), "ort")
    (miss,) = [m for m in report.misses if m.fusion == "Attention"]
    assert not nodes and reason in miss.reason, miss.reason


def test_bias_shaped_for_another_length_is_refused():
    model = attention("constant_bias")
    bias = next(t for t in model.graph.initializer if t.name.endswith("/bias"))
    bias.CopyFrom(numpy_helper.from_array(np.ones((1, 2, 6, 1), np.float32), bias.name))  # broadcast over keys
    _, report, nodes = fused_attention(model, "ort")
    (miss,) = [m for m in report.misses if m.fusion == "Attention"]
    assert not nodes and "the constant bias has shape [1, 2, 6, 1], not (1, 1|heads, seq, seq)" in miss.reason



@pytest.mark.parametrize("target", ["ort", "onnx"])
def test_float16_position_bias_is_carried_beside_the_float32_mask(target):
    from onnxruntime.transformers.float16 import convert_float_to_float16
    model = convert_float_to_float16(attention("bias_and_mask", "scores_div"), keep_io_types=True)
    fused, _, (node,) = fused_attention(model, target)
    assert fusekit.verify(model, fused, trials=4).ok
