"""The exporter corpus: every model loads, fuses at least what it fuses today, and verifies.

testmodels/exporters holds tiny random-weight BERT-family encoders from the exporters
other than torch.onnx with transformers 5: tf2onnx (tf_keras, keras-hub, transformers'
TF classes), Optimum, float16 converters, MPNet and an eager transformers-4 DistilBERT,
and ModernBERT and DeBERTa-v3 from transformers 5 through both torch.onnx exporters
(see testmodels/exporters/README.md).
manifest.json records for each what fusekit does today (`fusekit_today`, written by
testmodels/exporters_status.py) and what a full fusion gives (`expected`), which every
model now reaches with `--target ort` but for the ops `expected` lists as `pending`
(none today).

Verification (right padding, left padding, all-ones masks, two lengths) is the
correctness guard. A model fusekit cannot load or verify today is an expected failure
with its reason, strict, so that the test reports the fix.
"""
import json
from collections import Counter

import pytest

import fusekit
from conftest import TESTMODELS, residual_adds_into_layer_norms

EXPORTERS = TESTMODELS / "exporters"
MODELS = json.loads((EXPORTERS / "manifest.json").read_text())["models"]

def known_failure(entry) -> str | None:
    today = entry["fusekit_today"]
    if not today["loads"]:
        return f"refused at load: {today['error']}"
    if not today["verifies"]:
        return f"does not verify today: {today['worst_output']}"
    return None


def cases():
    for entry in MODELS:
        reason = known_failure(entry)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        yield pytest.param(entry, id=entry["file"], marks=marks)


@pytest.mark.parametrize("entry", list(cases()))
def test_fuses_at_least_what_it_fuses_today_and_verifies(entry):
    fused, report = fusekit.optimize(EXPORTERS / entry["file"], target="ort")
    assert report.verification.ok, report.verification.summary()
    floor = entry["fusekit_today"]["counts"]
    assert all(report.counts[fusion] >= n for fusion, n in floor.items()), report.summary()
    # and everything a full fusion gives: every fused op, and none of the chains left
    ops = Counter(f"{n.domain}.{n.op_type}" if n.domain else n.op_type for n in fused.graph.node)
    expected = entry["expected"]
    for counts in (expected["ops"], expected["unfused_left"]):
        due = {op: n for op, n in counts.items() if op not in expected.get("pending", ())}
        assert {op: ops[op] for op in due} == due, report.summary()
    assert residual_adds_into_layer_norms(fused) == []



def test_the_manifest_describes_every_committed_model():
    assert sorted(p.name for p in EXPORTERS.glob("*.onnx")) == sorted(e["file"] for e in MODELS)
    for entry in MODELS:
        layers, ops = entry["layers"], entry["expected"]["ops"]
        # DeBERTa's disentangled and ModernBERT's rotary attention read their projections through
        assert ops.get("com.microsoft.Attention", 0) + ops.get("com.microsoft.MultiHeadAttention", 0) == layers
        assert entry["fusekit_today"]["counts"]["SkipLayerNorm"] == 2 * layers


# Models whose every attention layer fuses, for both targets; the manifest's floor above
# holds --target ort only. Verification runs right padding, left padding, all-ones masks
# and a second length.
DEBERTA = [f"debertav3_{export}.onnx" for export in ("ts17_eager", "dynamo18_eager")]
OPTIMUM = [f"{family}_optimum_{option}.onnx" for family in ("bert", "roberta", "distilbert", "albert")
           for option in ("default", "opset14", "O1", "fp16")]  # the scale folded from Shape(Q)
HF_TF = [f"hftf-{family}_tf2onnx_{opset}.onnx" for family in ("bert", "roberta", "distilbert")
         for opset in (13, 18)]  # tensordot projections, canonicalized into MatMul
ATTENTION_EVERY_LAYER = sorted(OPTIMUM + HF_TF + [
    "bert_optimum_default_fp16ort.onnx", "bert_optimum_default_fp16ort_keepio.onnx",
    "bert_ts14_eager_fp16occ.onnx", "bert_ts14_eager_fp16occ_keepio.onnx", "bert_ts14_eager_fp16ort.onnx",
    "bert_ts14_eager_fp16ort_keepio.onnx",
    "distilbert_ts14_eager_tf4.onnx",  # masked_fill mask, Q divided by √h
    "mpnet_ts14_tf5.onnx",  # relative position bias beside the mask
] + [f"kerashub-bert_tf2onnx_{opset}.onnx" for opset in (13, 18)]  # einsums decomposed into 3-D batches
  + [f"tfkeras-bert_tf2onnx_{opset}.onnx" for opset in (13, 17, 18)]  # and the scores as (K·Qᵀ)ᵀ
  + DEBERTA)  # heads folded into the batch, the disentangled bias carried as the op's additive term


@pytest.mark.parametrize("target", ["ort", "onnx"])
@pytest.mark.parametrize("file", ATTENTION_EVERY_LAYER)
def test_attention_fuses_every_layer_and_verifies(file, target):
    entry = next(e for e in MODELS if e["file"] == file)
    _, report = fusekit.optimize(EXPORTERS / file, target=target)
    assert report.counts["Attention"] == entry["layers"], report.summary()
    assert report.verification.ok, report.verification.summary()
    padding = [s.split(", ")[-1] for s in report.verification.settings]
    assert padding == ["right padding", "left padding", "no padding", "right padding"]


# ModernBERT: rotary positions, global and local (sliding-window) layers. Every layer fuses with
# its rotary embedding for ort and onnx; openvino keeps the exported form (its own RoPE fusion
# and attention kernel take it). Verified with right, left and no padding, and sequences longer
# than the 6-token window: a padded token whose window holds no real one is compared too.
ROTARY = [f"modernbert_{export}.onnx" for export in ("ts17_eager", "ts17_sdpa", "dynamo18_eager")]


@pytest.mark.parametrize("target", ["ort", "onnx", "openvino"])
@pytest.mark.parametrize("file", ROTARY)
def test_rotary_attention_fuses_every_layer_and_verifies(file, target):
    entry = next(e for e in MODELS if e["file"] == file)
    fused, report = fusekit.optimize(EXPORTERS / file, target=target)
    assert report.verification.ok, report.verification.summary()
    padding = [s.split(", ")[-1] for s in report.verification.settings]
    assert padding == ["right padding", "left padding", "no padding", "right padding"]
    ops = Counter(f"{n.domain}.{n.op_type}" if n.domain else n.op_type for n in fused.graph.node)
    layers = entry["layers"]
    if target == "openvino":
        assert report.counts["RotaryAttention"] == 0 and ops["Softmax"] == layers
        return
    assert report.counts["RotaryAttention"] == layers and ops["Softmax"] == 0, report.summary()
    domain = "com.microsoft." if target == "ort" else ""
    attention = "com.microsoft.MultiHeadAttention" if target == "ort" else "Attention"
    assert (ops[attention], ops[f"{domain}RotaryEmbedding"]) == (layers, 2 * layers)


@pytest.mark.parametrize("target", ["ort", "onnx", "openvino"])
@pytest.mark.parametrize("file", ROTARY)
def test_rotary_attention_packs_and_verifies(file, target):
    """--pack: each token keeps the position it has in its padded row, in the rotary embedding and
    the band, as the attention core (rotations included) reads the tokens unpacked."""
    _, report = fusekit.optimize(EXPORTERS / file, target=target, pack=True)
    assert report.packed and report.counts["Pack"] > 0, report.summary()
    assert report.verification.ok, report.verification.summary()


@pytest.mark.parametrize("file", DEBERTA)
def test_debertav3_verifies_on_openvino(file):
    """OpenVINO keeps the attention as written (see the README's choice of forms): the rest fuses and verifies."""
    entry = next(e for e in MODELS if e["file"] == file)
    _, report = fusekit.optimize(EXPORTERS / file, target="openvino")
    assert report.verification.ok, report.verification.summary()
    assert [s.split(", ")[-1] for s in report.verification.settings] == [
        "right padding", "left padding", "no padding", "right padding"]
    floor = entry["fusekit_today"]["targets"]["openvino"]["counts"]
    assert all(report.counts[fusion] >= n for fusion, n in floor.items()), report.summary()


def test_every_model_of_the_corpus_is_held_to_attention_in_every_layer():
    assert sorted(ATTENTION_EVERY_LAYER + ROTARY) == sorted(e["file"] for e in MODELS)
    assert [e["file"] for e in MODELS if e["expected"].get("pending")] == []
