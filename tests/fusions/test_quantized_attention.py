"""QuantizedAttention alone (patterns/fusions/quantized_attention.py) on small graphs: the attention
core between quantized projections, with its Q/DQ pairs (all ops, MatMul only) or none (QAT), fuses
into MultiHeadAttention (ort) or ONNX Attention (onnx) and verifies in quantization steps on right-
and left-padded rows; a float attention, a per-channel pair and a pair read outside are refused."""
from collections import Counter

import numpy as np
import onnx
import pytest

from graphs import quantized_forms as QF
from graphs.attention import HEADS, SIZE
from one_rule import apply


def _attrs(model, op):
    (node,) = [n for n in model.graph.node if n.op_type == op]
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}, list(node.input)


@pytest.mark.parametrize("form, pairs", [("all_ops", 11), ("matmul_only", 5), ("qat", 0)])
def test_each_form_fuses_into_multi_head_attention(form, pairs):
    result = apply("QuantizedAttention", QF.attention_qdq(form))
    assert result.rewrote == 1 and not result.misses
    made = result.made
    assert made["MultiHeadAttention"] == 1 and made["Softmax"] == -1 and made["MatMul"] == -2
    assert made["QuantizeLinear"] == -pairs - (form == "all_ops")  # and the scale's own pair, evaluated
    attrs, inputs = _attrs(result.model, "MultiHeadAttention")
    assert attrs["num_heads"] == HEADS and inputs[3] == ""  # Q, K, V, no packed bias, the 2-D mask
    assert attrs["mask_filter_value"] == -10000.0
    scale = np.float32(1 / np.sqrt(SIZE))
    if form == "all_ops":  # the scale as its pair rounds it, carried exactly
        scale = np.float32(np.round(scale / (scale / 255)) * (scale / 255))
    assert np.float32(attrs["scale"]) == scale
    verdict = result.assert_equivalent()  # in steps: the right- and left-padded settings included
    if form == "qat":  # nothing dropped: the same arithmetic
        assert all(o.max_abs < 1e-5 for o in verdict.outputs)


def test_onnx_target_is_onnx_attention():
    result = apply("QuantizedAttention", QF.attention_qdq("matmul_only", opset=23), target="onnx")
    assert result.rewrote == 1 and result.made["Attention"] == 1
    attrs, _ = _attrs(result.model, "Attention")
    assert attrs["q_num_heads"] == attrs["kv_num_heads"] == HEADS
    result.assert_equivalent()


def test_float_attention_is_left_to_the_attention_fusion():
    result = apply("QuantizedAttention", QF.attention_qdq("float"))
    assert result.rewrote == 0 and not result.misses  # no quantizer reached: not even a near miss


@pytest.mark.parametrize("target", ["ort", "openvino"])
def test_a_head_merge_of_the_integers_keeps_pv_quantizer_on_the_merged_output(target):
    """NNCF's default preset (canonicalized): P·V → Q → Transpose → Reshape → DQ. The fused core's
    output is quantized by P·V's quantizer (per tensor: the same after the merge), so the output
    projection still reads DQ of integers: its INT8 block."""
    result = apply("QuantizedAttention", QF.attention_qdq("nncf_default"), target=target)
    assert result.rewrote == 1 and result.records[0].variant == "merged_integers"
    y = next(n for n in result.model.graph.node if n.output[0] == "y")
    q = next(n for n in result.model.graph.node if n.output[0] == y.input[0])
    assert (y.op_type, q.op_type if target == "ort" else "QuantizeLinear") == ("DequantizeLinear", "QuantizeLinear")
    if target == "ort":
        assert next(n for n in result.model.graph.node if q.input[0] in n.output).op_type == "MultiHeadAttention"
    result.assert_equivalent()


@pytest.mark.parametrize("kwargs, reason", [
    ({"per_channel": True}, "quantizes an activation per channel, not per tensor"),
    ({"read_inside": True}, "'scores_q' (from QuantizeLinear) is also a graph output"),
    ({"form": "nncf_default", "nan_mask": True}, "has scale inf: it reads NaN at every key"),
])
def test_near_misses(kwargs, reason):
    result = apply("QuantizedAttention", QF.attention_qdq(**kwargs))
    assert result.rewrote == 0
    assert reason in result.miss("QuantizedAttention").reason


@pytest.mark.parametrize("form, kept", [("all_ops", 9), ("matmul_only", 5)])
def test_openvino_form_drops_only_the_pairs_on_the_scores(form, kept):
    """OpenVINO's attention kernel takes quantized Q, Kᵀ, V and probabilities and folds the pairs
    after P·V: those stay (re-emitted); the pairs on the scores go."""
    result = apply("QuantizedAttention", QF.attention_qdq(form), target="openvino")
    assert result.rewrote == 1
    ops = Counter(n.op_type for n in result.model.graph.node)
    assert ops["Softmax"] == 1 and ops["MatMul"] == 3 + 2 and "MultiHeadAttention" not in ops
    # the projections' pairs (3, outside the match) and the output's, plus those kept inside
    assert ops["QuantizeLinear"] == 3 + 1 + kept
    result.assert_equivalent()


def test_openvino_form_copies_the_merge_quantizer_onto_pv():
    """A QAT core has no pair; the next block's input quantizer after the head merge is copied
    onto P·V (a second pair of one step changes nothing), where OpenVINO folds it into its
    attention kernel instead of leaving it standalone."""
    model = QF.attention_qdq("qat", output_pair=True)
    result = apply("QuantizedAttention", model, target="openvino")
    assert result.rewrote == 1 and result.made["QuantizeLinear"] == 1 and result.made["DequantizeLinear"] == 1
    verdict = result.assert_equivalent()
    assert all(o.max_abs < 1e-5 for o in verdict.outputs)
    assert apply("QuantizedAttention", QF.attention_qdq("qat"), target="openvino").made["QuantizeLinear"] == 0


@pytest.mark.parametrize("target", ["ort", "openvino"])
def test_nncf_sdpa_form(target):
    """NNCF on an sdpa export: √scale on Q and Kᵀ each rounded through a pair, the NaN guard; the
    scale carried as their product (ort), or left on the operands (openvino)."""
    result = apply("QuantizedAttention", QF.attention_qdq("nncf_sdpa"), target=target)
    assert result.rewrote == 1, result.misses
    assert result.records[0].variant == "qdq[nan_guard,sqrt_scale_qk]"
    if target == "ort":
        attrs, _ = _attrs(result.model, "MultiHeadAttention")
        assert np.isclose(attrs["scale"], 1 / np.sqrt(SIZE), rtol=1e-6)
    else:  # the pairs on the scaled Q and Kᵀ and on the probabilities stay; the merge's is copied onto P·V
        assert Counter(n.op_type for n in result.model.graph.node)["IsNaN"] == 1
        assert result.made["QuantizeLinear"] == 1
    result.assert_equivalent()


def test_openvino_core_is_no_candidate_for_a_near_miss():
    """The core OpenVINO gets is fusekit's lowered form: its Q·Kᵀ, with Kᵀ's quantizer on the sdpa
    √scale Mul, reads like a dense block to QuantizedLinear, which must not report it as a miss."""
    import fusekit
    _, report = fusekit.optimize(QF.attention_qdq("nncf_sdpa"), target="openvino", verify=False)
    assert report.counts["QuantizedAttention"] == 1 and not report.misses, report.misses
@pytest.mark.parametrize("target", ["ort", "openvino"])
def test_dynamic_form_drops_the_run_time_pairs(target):
    """quantize_dynamic's Q·Kᵀ and P·V (Optimum's avx512_vnni) as DequantizedAsMatMulInteger reads them:
    Q, Kᵀ, V and the probabilities each rounded by a DynamicQuantizeLinear. Every target computes the
    core unrounded (OpenVINO runs no run-time pair in INT8); the projections' input pair stays."""
    result = apply("QuantizedAttention", QF.attention_qdq("dynamic"), target=target)
    assert result.rewrote == 1 and not result.misses
    assert result.made["DynamicQuantizeLinear"] == -4 and result.made["DequantizeLinear"] == -4
    ops = Counter(n.op_type for n in result.model.graph.node)
    assert ops["DynamicQuantizeLinear"] == 1  # the projections' input
    if target == "ort":
        assert ops["MultiHeadAttention"] == 1
    else:
        assert ops["Softmax"] == 1 and ops["MatMul"] == 3 + 2
    result.assert_equivalent()


def test_dynamic_pair_with_a_scale_of_its_own_is_refused():
    result = apply("QuantizedAttention", QF.attention_qdq("dynamic", foreign_scale=True))
    assert result.rewrote == 0
    assert "dequantizes with a scale or zero point its DynamicQuantizeLinear did not compute" in \
        result.miss("QuantizedAttention").reason


def test_openvino_moves_the_nan_guard_past_pv():
    """An sdpa export's NaN guard between the Softmax and P·V splits OpenVINO's attention kernel; with
    no pair kept between them it zeroes the NaN rows of P·V instead: the same zero context for a
    fully masked row (every key padded), the same values elsewhere."""
    model = QF.attention_qdq("dynamic", nan_guard=True)
    result = apply("QuantizedAttention", model, target="openvino")
    assert result.rewrote == 1, result.misses
    nodes = {o: n for n in result.model.graph.node for o in n.output}
    (isnan,) = [n for n in result.model.graph.node if n.op_type == "IsNaN"]
    assert nodes[isnan.input[0]].op_type == "MatMul" and nodes[nodes[isnan.input[0]].input[0]].op_type == "Softmax"
    result.assert_equivalent()
    import onnxruntime as ort
    feeds = {"x": np.random.default_rng(0).normal(size=(2, 5, 16)).astype(np.float32),
             "attention_mask": np.array([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], np.int64)}  # the second row all padding
    ours, theirs = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
                    for m in (result.model, model))
    assert np.isfinite(ours).all() and np.allclose(ours[1], theirs[1], atol=1e-6)


def test_a_scale_dequantizer_other_layers_read_stays_for_them():
    """Intel Neural Compressor's QOperator model, read as Q/DQ, keeps one DQ of the stored scale for every
    layer: the attention reads through it and leaves it to the others (here, a graph output)."""
    model = QF.attention_qdq("all_ops")
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name for i in model.graph.initializer}
    (scale,) = [t for n in model.graph.node if n.op_type == "Mul" for t in n.input
                if t in producers and producers[t].op_type == "DequantizeLinear"
                and producers[producers[t].input[0]].op_type == "QuantizeLinear"
                and producers[producers[t].input[0]].input[0] in inits]
    model.graph.output.append(onnx.helper.make_tensor_value_info(scale, onnx.TensorProto.FLOAT, None))
    result = apply("QuantizedAttention", model)
    assert result.rewrote == 1 and not result.misses
    assert any(scale in n.output for n in result.model.graph.node)
    result.assert_equivalent()
