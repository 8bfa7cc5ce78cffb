"""Attention alone on one small layer (graphs/attention.py): each form it claims — what reaches the
Softmax, where the scale sits, how Kᵀ is built, sdpa's extras, Keras' projection — fuses for both
targets and verifies; each near miss is refused, for the reason a user would need to hear."""
import numpy as np
import pytest
from onnx import helper, numpy_helper

from graphs.attention import HEADS, SIZE, attention
from one_rule import apply

LOWEST = float(np.finfo(np.float32).min)
ROOT = 1 / np.sqrt(SIZE)
# ONNX Attention needs opset 23: the onnx form's layer is built there
OPSET = {"ort": 14, "onnx": 23}
DOMAIN = {"ort": "com.microsoft", "onnx": ""}


def fuse(target="ort", model=None, **form):
    """Attention applied alone for ``target`` to the layer in ``form`` (or to ``model``)."""
    return apply("Attention", model or attention(opset=OPSET[target], **form), target=target)


def fused_node(result, target, variant):
    """The one Attention it made, from the whole layer, named ``variant``."""
    assert result.rewrote == 1 and not result.misses, result.misses
    assert [r.variant for r in result.records] == [variant]
    assert result.made["Attention"] == 1 and result.made["Softmax"] == -1 and result.made["Transpose"] <= -4
    # ort packs Q, K and V into the op; ONNX Attention reads one packed projection MatMul
    assert result.made["MatMul"] == (-5 if target == "ort" else -4)
    (node,) = [n for n in result.model.graph.node if n.op_type == "Attention"]
    assert node.domain == DOMAIN[target]
    return node


def ort_inputs(node):
    """The com.microsoft Attention inputs by role, omitted ones left out."""
    roles = ("input", "weights", "bias", "mask_index", "past", "attention_bias")
    return {role: name for role, name in zip(roles, node.input) if name}


def attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def refused(result):
    """The near miss Attention recorded, having changed nothing."""
    assert not result.rewrote and not result.made and "Attention" not in result.ops()
    return result.miss()


# --------------------------------------------------------------------------- what reaches the Softmax

@pytest.mark.parametrize("target", ["ort", "onnx"])
@pytest.mark.parametrize("mask, scale, carried, variant", [
    ("add", "scores_mul", {"mask_index"}, "self_attention"),
    ("add", "scores_div", {"mask_index"}, "self_attention[div_scale]"),
    ("add", "q_div", {"mask_index"}, "self_attention[q_div_scale]"),  # transformers 4 DistilBERT
    ("add", "q_head_mul", {"mask_index"}, "self_attention[q_scaled_before_transpose,unscaled]"),  # HF-TF DistilBERT
    ("where", "q_div", {"mask_index"}, "self_attention[masked_fill,q_div_scale]"),  # its masked_fill
    ("shifted", "scores_mul", {"mask_index"}, "self_attention"),  # HF-TF: 9.99e-10 at kept keys
    ("none", "scores_mul", set(), "self_attention[no_mask]"),
    ("zero_constant", "scores_mul", set(), "self_attention"),  # every key attends: no mask input at all
    ("ones_computed", "scores_mul", set(), "self_attention"),
    # MPNet: a relative position bias, then the mask
    ("bias_and_mask", "scores_div", {"mask_index", "attention_bias"}, "self_attention[mask_and_bias,div_scale]"),
    ("constant_bias", "scores_mul", {"attention_bias"}, "self_attention"),  # a position bias alone
    ("keras_select", "scores_mul", {"mask_index"}, "self_attention[select]"),  # SelectV2 lowered to Mul and Add
    ("keras_remask", "scores_mul", {"mask_index"}, "self_attention[select,remasked]"),  # … probabilities masked again
])
def test_mask_form_fuses_and_verifies_with_both_padding_sides(mask, scale, carried, variant, target):
    result = fuse(target, mask=mask, scale=scale)
    node = fused_node(result, target, variant)
    if target == "ort":
        assert set(ort_inputs(node)) - {"input", "weights", "bias"} == carried
        assert abs(attrs(node)["scale"] - ROOT) < 1e-7
    else:  # ONNX Attention adds one float mask: the key padding mask and the bias summed
        assert (len(node.input) > 3) == bool(carried)
    verified = result.assert_equivalent(trials=4)  # right, left, all-ones, right at another length
    assert mask == "none" or "left padding" in verified.settings[1]


@pytest.mark.parametrize("mask, fill", [("where", LOWEST), ("add", -10000.0), ("shifted", -1e30),
                                        ("keras_select", -2.3726709e38)])
def test_fill_value_is_the_step_from_kept_to_padded_keys(mask, fill):
    result = fuse(mask=mask)
    (node,) = [n for n in result.model.graph.node if n.op_type == "Attention"]
    assert attrs(node)["mask_filter_value"] == pytest.approx(max(fill, LOWEST), rel=1e-6)


@pytest.mark.parametrize("target", ["ort", "onnx"])
def test_float16_position_bias_is_carried_beside_the_float32_mask(target):
    from onnxruntime.transformers.float16 import convert_float_to_float16
    model = convert_float_to_float16(attention("bias_and_mask", "scores_div", opset=OPSET[target]), keep_io_types=True)
    result = fuse(target, model)
    fused_node(result, target, "self_attention[mask_and_bias,div_scale]")
    result.assert_equivalent(trials=4)


# --------------------------------------------------------------------------- where the scale sits

@pytest.mark.parametrize("target", ["ort", "onnx"])
@pytest.mark.parametrize("scale, variant, carried", [
    ("scores_mul", "self_attention", ROOT),  # transformers 5: scores · 1/√h
    ("scores_div", "self_attention[div_scale]", ROOT),  # transformers 4, TF: scores / √h
    ("q_div", "self_attention[q_div_scale]", ROOT),  # transformers 4 DistilBERT: Q / √h
    ("q_mul", "self_attention[q_scale]", ROOT),  # Q · 1/√h, K unscaled
    ("sqrt_qk", "self_attention[sqrt_scale_qk]", ROOT),  # sdpa: √scale on Q and on Kᵀ
    ("q_head_mul", "self_attention[q_scaled_before_transpose,unscaled]", ROOT),  # HF-TF DistilBERT
    ("none", "self_attention[unscaled]", 1.0),
])
def test_scale_placement(scale, variant, carried, target):
    result = fuse(target, scale=scale)
    node = fused_node(result, target, variant)
    assert attrs(node)["scale"] == pytest.approx(carried, rel=1e-6)
    result.assert_equivalent()


@pytest.mark.parametrize("target", ["ort", "onnx"])
def test_scale_that_is_not_one_over_sqrt_head_size_is_carried(target):
    result = fuse(target, scale_value=0.2)
    node = fused_node(result, target, "self_attention")
    assert abs(attrs(node)["scale"] - 0.2) < 1e-7
    result.assert_equivalent()


# --------------------------------------------------------------------------- Kᵀ, sdpa, dynamo

@pytest.mark.parametrize("target", ["ort", "onnx"])
@pytest.mark.parametrize("k_transpose, variant", [
    ("direct", "self_attention"),  # TorchScript: Transpose(0,2,3,1)
    ("double", "self_attention[k_double_transpose]"),  # Transpose(0,2,1,3) then (0,1,3,2)
    ("3d", "self_attention[k_transpose_3d]"),  # dynamo: through a [B·N, S, h] view
])
def test_k_transpose_form(k_transpose, variant, target):
    result = fuse(target, k_transpose=k_transpose)
    fused_node(result, target, variant)
    result.assert_equivalent()


@pytest.mark.parametrize("target", ["ort", "onnx"])
@pytest.mark.parametrize("form, variant", [
    (dict(nan_guard=True), "self_attention[nan_guard]"),
    (dict(noop_reshape="sdpa"), "self_attention[noop_reshape]"),
    # the whole sdpa layer, and dynamo's (its Kᵀ through a 3-D view, no no-op reshape)
    (dict(scale="sqrt_qk", nan_guard=True, noop_reshape="sdpa"),
     "self_attention[nan_guard,noop_reshape,sqrt_scale_qk]"),
    (dict(scale="sqrt_qk", nan_guard=True, k_transpose="3d"), "self_attention[k_transpose_3d,nan_guard,sqrt_scale_qk]"),
])
def test_sdpa_and_dynamo_pieces(form, variant, target):
    result = fuse(target, **form)
    fused_node(result, target, variant)
    result.assert_equivalent(trials=4)


# --------------------------------------------------------------------------- head split and projections

@pytest.mark.parametrize("target", ["ort", "onnx"])
def test_hf_tf_distilbert_form_fuses_with_head_split_computed_in_int32(target):
    # Q scaled before its transpose, 9.99e-10 at kept keys, reshape targets behind int32 Casts
    result = fuse(target, mask="shifted", scale="q_head_mul", tf_shapes=True)
    node = fused_node(result, target, "self_attention[q_scaled_before_transpose,unscaled]")
    assert attrs(node)["num_heads" if target == "ort" else "q_num_heads"] == HEADS
    result.assert_equivalent(trials=4)


@pytest.mark.parametrize("target", ["ort", "onnx"])
def test_keras_projection_with_its_bias_after_the_head_split(target):
    # Keras' EinsumDense, canonicalized: x·W split into heads, then the [N, h] bias; Q scaled before its transpose
    result = fuse(target, mask="keras_select", scale="q_head_mul", bias_shape=(HEADS, SIZE))
    (record,) = result.records
    fused_node(result, target, record.variant)
    # the label names each projection's bias form, so assert what it holds, not how often
    labels = set(record.variant.partition("[")[2].rstrip("]").split(","))
    assert {"bias_after_split", "select", "q_scaled_before_transpose"} <= labels
    result.assert_equivalent(trials=4)


@pytest.mark.parametrize("target", ["ort", "onnx"])
@pytest.mark.parametrize("k_split", [(HEADS, -1), (-1, SIZE)])
def test_head_split_may_leave_the_heads_or_the_size_to_reshape(k_split, target):
    # [0, 0, 2, -1] or [0, 0, -1, 8]: the projection width gives the other
    result = fuse(target, k_split=k_split)
    node = fused_node(result, target, "self_attention")
    assert attrs(node)["num_heads" if target == "ort" else "q_num_heads"] == HEADS
    result.assert_equivalent()


@pytest.mark.parametrize("target", ["ort", "onnx"])
def test_static_batch_in_the_head_split_is_the_batch(target):
    # exported with a fixed batch of 2: the reshape targets hold 2 where the batch is
    model = attention("add", tf_shapes=True, opset=OPSET[target])
    for value in [*model.graph.input, *model.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_value = 2
    result = fuse(target, model)
    fused_node(result, target, "self_attention")
    result.assert_equivalent(trials=2)


# --------------------------------------------------------------------------- near misses

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
    ("mask_twice", "both terms added to the scores are a key padding mask"),
])
def test_mask_near_miss(mask, reason):
    miss = refused(fuse(mask=mask))
    assert reason in miss.reason, miss.reason


def test_causal_mask_is_not_a_key_padding_mask():
    # the padding mask plus a causal triangle: it depends on the query position too
    miss = refused(fuse(mask="causal"))
    assert "not one value at the unpadded keys of input 'attention_mask'" in miss.reason, miss.reason
    assert "the bias changes with the values of 'attention_mask'" in miss.reason, miss.reason


def test_bias_shaped_for_another_length_is_refused():
    model = attention("constant_bias")
    bias = next(t for t in model.graph.initializer if t.name.endswith("/bias"))
    bias.CopyFrom(numpy_helper.from_array(np.ones((1, 2, 6, 1), np.float32), bias.name))  # broadcast over keys
    miss = refused(fuse(model=model))
    assert "the constant bias has shape [1, 2, 6, 1], not (1, 1|heads, seq, seq)" in miss.reason, miss.reason


@pytest.mark.parametrize("form, reason", [
    (dict(scale_value=np.array([0.35, 0.36]).reshape(1, HEADS, 1, 1)),  # one per head
     "the attention scale is not a scalar"),
    (dict(q_weight_input=True), "the Q weight is not a constant: it is the graph input 'q_weight'"),
    (dict(probs_output=True), "'probs' (from Softmax) is also a graph output"),  # like output_attentions=True
    (dict(k_split=(4, 4)), "the head count disagrees between Q, K and V: Q 2 heads of 8, K 4 heads of 4"),
    (dict(k_split=(3, -1)), "the K head split gives 3 heads of 5, which does not make the projection width 16"),
    (dict(bias_shape=(1, SIZE)),  # a bias after the head split shared by every head
     "the Q/K/V biases have shapes [[1, 8], [1, 8], [1, 8]], expected [[2, 8], [2, 8], [2, 8]]"),
    (dict(k_transpose="3d_mixed"), "do not just swap the last two axes"),
    (dict(noop_reshape="not_noop"), "may not be a no-op (axis 1)"),
    (dict(softmax_axis=2), "normalizes over axis 2, not the key axis"),
])
def test_near_miss(form, reason):
    miss = refused(fuse(**form))
    assert reason in miss.reason, miss.reason
