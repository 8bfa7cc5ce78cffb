"""Every family × exporter in the committed corpus: each layer fuses, and the result verifies.

The corpus (testmodels/corpus, made by testmodels/export_corpus.py) holds tiny random
BERT, DistilBERT, RoBERTa, ALBERT and ELECTRA encoders from the TorchScript exporter
(eager and sdpa attention, opsets 14 and 17, transformers 5 and 4.x masks) and the
dynamo exporter; manifest.json gives the expected count of each fused op.
"""
import json

import pytest

import fusekit
from conftest import TESTMODELS, op_histogram, residual_adds_into_layer_norms

MS = "com.microsoft"
CORPUS = TESTMODELS / "corpus"
MODELS = json.loads((CORPUS / "manifest.json").read_text())["models"]
UNFUSED = {"Softmax", "Erf", "Tanh", "ReduceMean", "Sqrt", "Pow", "IsNaN"}


@pytest.mark.parametrize("entry", MODELS, ids=lambda e: e["file"])
def test_ort_target_fuses_every_layer(entry):
    fused, report = fusekit.optimize(CORPUS / entry["file"], target="ort")
    expected, hist = entry["expected"], op_histogram(fused)
    assert hist[(MS, "Attention")] == expected["attention"], report.summary()
    # each residual sum respelled before its LayerNormalization (ONNX Runtime's CPU SkipLayerNorm is slow)
    assert report.counts["SkipLayerNorm"] == expected["skip_layer_norm"], report.summary()
    assert hist[("", "LayerNormalization")] == expected["skip_layer_norm"], report.summary()
    assert hist[(MS, "SkipLayerNormalization")] == 0 and residual_adds_into_layer_norms(fused) == []
    assert hist[(MS, "EmbedLayerNormalization")] == expected["embed_layer_norm"], report.summary()
    assert hist[(MS, "BiasGelu")] + hist[(MS, "FastGelu")] == expected["gelu"], report.summary()
    assert not UNFUSED & {op for _, op in hist}, report.summary()
    assert report.verification.ok, report.verification.summary()
    assert all(o.max_rel <= 1e-5 for o in report.verification.outputs), report.verification.summary()
    assert not report.misses, report.summary()


def test_attention_carries_heads_scale_and_mask_fill():
    fused, report = fusekit.optimize(CORPUS / "bert_ts14_eager_tf420.onnx", target="ort")
    attention = next(n for n in fused.graph.node if n.op_type == "Attention")
    attrs = {a.name: (a.i if a.type == a.INT else a.f) for a in attention.attribute}
    assert attrs["num_heads"] == 2
    assert abs(attrs["scale"] - 1 / 8 ** 0.5) < 1e-6  # Div(√8) read as a scale
    assert attrs["mask_filter_value"] == -10000.0  # transformers 4.20's (1 - mask) · -10000
    assert report.verification.ok


@pytest.mark.parametrize("entry", [e for e in MODELS if e["exporter"] in ("ts14_eager", "dynamo18")],
                         ids=lambda e: e["file"])
def test_onnx_target_uses_standard_ops_only(entry):
    fused, report = fusekit.optimize(CORPUS / entry["file"], target="onnx")
    expected, hist = entry["expected"], op_histogram(fused)
    assert all(domain == "" for domain, _ in hist), hist
    assert report.opset_after == 23
    assert hist[("", "Attention")] == expected["attention"], report.summary()
    assert hist[("", "LayerNormalization")] == expected["layer_norm"]
    assert hist[("", "Gelu")] == expected["gelu"]
    assert not UNFUSED & {op for _, op in hist}, report.summary()
    assert report.verification.ok, report.verification.summary()


@pytest.mark.parametrize("name", ["bert_ts14_eager.onnx", "bert_ts14_sdpa.onnx", "bert_dynamo18.onnx"])
def test_left_padding_verifies_exactly(name):
    # the fused op gets the raw 2-D mask, so left-padded rows stay exact (no mask index)
    result = fusekit.verify(CORPUS / name, fusekit.optimize(CORPUS / name, verify=False)[0], trials=2, seed=5)
    hidden = result.outputs[0]
    assert result.ok and "left padding" in result.settings[1]
    assert hidden.valid_max_abs <= 1e-5 * hidden.scale and hidden.padded_max_abs <= 1e-5 * hidden.scale


def test_a_fused_model_can_be_the_reference():
    # its ids feed EmbedLayerNormalization, not a Gather: the vocabulary is still found
    fused, _ = fusekit.optimize(CORPUS / "bert_ts14_eager.onnx", verify=False)
    assert fusekit.verify(fused, CORPUS / "bert_ts14_eager.onnx").ok
