"""Attention/disentangled (patterns/fusions/attention.py): DeBERTa's attention, its heads folded into the
batch, a bias computed from Q and K added to the scores, a masked_fill softmax. The fused op reads the Q, K
and V projections (the bias reads Q and K too) and gets the bias, with the masked cells' fill, as its
additive term: MultiHeadAttention's attention_bias for ort, ONNX Attention's float mask for onnx.

Equivalence is checked with right, left and no padding (fusekit.verify), padded query rows included: a row
whose every cell is masked stays uniform, as the masked_fill left it."""
import pytest

from graphs.disentangled import HEADS, disentangled
from one_rule import apply

FORMS = {"ort": ("MultiHeadAttention", 17), "onnx": ("Attention", 23)}


@pytest.mark.parametrize("target", FORMS)
@pytest.mark.parametrize("kwargs", [dict(), dict(mask="keys"), dict(mask="none"), dict(refill=True),
                                    dict(mask="per_head"), dict(bias_rank="broadcast")],
                         ids=["query_and_key_mask", "key_mask", "unmasked", "refilled", "per_head_mask",
                              "broadcast_bias"])
def test_disentangled_attention_fuses_with_its_bias_and_verifies(kwargs, target):
    op, opset = FORMS[target]
    result = apply("Attention", disentangled(opset=opset, **kwargs), target=target, fold=True)
    assert result.rewrote == 1 and not result.misses
    assert result.made[op] == 1 and result.made["Softmax"] == -1 and result.made["MatMul"] == -2  # Q·Kᵀ and ·V
    (record,) = result.records
    label = "masked_fill" if kwargs.get("mask") != "none" else "unmasked"
    assert record.variant == f"disentangled[{label}{',refilled' if kwargs.get('refill') else ''}]"
    (node,) = [n for n in result.model.graph.node if n.op_type == op]
    heads = {a.name: a.i for a in node.attribute}
    assert heads.get("num_heads", heads.get("q_num_heads")) == HEADS
    scale = next(a.f for a in node.attribute if a.name == "scale")
    assert scale == pytest.approx(1 / 24 ** 0.5, rel=1e-6)  # 1/√(3h), carried from the Kᵀ divisor
    result.assert_equivalent()


@pytest.mark.parametrize("kwargs, reason", [
    (dict(fill=-1e4), "the masked_fill value [-10000.] does not absorb the scores added to it (it must be finite "
                      "and ≤ -1e+30): a row whose every key is masked would not stay uniform"),
    (dict(bias_rank=4), "the bias 'disentangled_pairs/Unsqueeze_0_output_0' has rank 4, so it could enlarge the "
                        "[B·N, S, S] scores it is added to"),
    (dict(flat=(-1, 8, "S")), "the Q heads folded into the batch [-1, 8, dim1(x)] is not [-1, S, 8]"),
    (dict(mask="per_head", refill=True), "the probabilities are filled with 0 by a per-head condition, which "
                                         "fusekit cannot carry past the head merge"),
], ids=["fill_not_absorbing", "bias_enlarges_the_scores", "heads_folded_otherwise", "per_head_refill"])
def test_near_misses(kwargs, reason):
    result = apply("Attention", disentangled(**kwargs), fold=True)
    assert result.rewrote == 0 and result.miss().reason == reason
