"""The quantizer corpus: INT8 encoders as NNCF, Optimum / ONNX Runtime dynamic quantization, Intel
Neural Compressor and QAT exports write them (testmodels/int8/quantizers, made by
testmodels/export_quantized.py from the FP32 sources beside them).

For every model and target (`ort`, `openvino`) fusekit must never make things worse: the model
loads, the output verifies against the quantizer's model in quantization steps, and it is no
further from the FP32 source than the quantizer's own output. It must reach at least what it
reaches today (the manifest's `fusekit_today`, written by testmodels/quantizers_status.py), and
every item of a full fusion (`expected`) that is not `pending`. A pending item that is reached
fails the test, so that the manifest is brought up to date and the item is held from then on.
"""
import json
from functools import cache

import onnx
import pytest

import fusekit
from conftest import TESTMODELS
from testmodels.quantizers_status import (TARGETS, check_feeds, error_to, openvino_facts, quantized_dense_layers,
                                          reached, run_ort)

FOLDER = TESTMODELS / "int8" / "quantizers"
MANIFEST = json.loads((FOLDER / "manifest.json").read_text())
MODELS = [e for e in MANIFEST["models"] if e["form"] != "fp32"]
# Dropping a requantization pair moves a block's output by up to a step either way: on a two-layer
# model that can cost a few percent of the error as often as it saves it.
ERROR_SLACK = 1.05


@cache
def reference(source: str, quantized: str):
    model = onnx.load(FOLDER / quantized)
    feeds = check_feeds(model)
    return feeds, run_ort(FOLDER / source, feeds), run_ort(model, feeds)


@cache
def fused(file: str, target: str):
    return fusekit.optimize(FOLDER / file, target=target)


CASES = [pytest.param(e, t, id=f"{e['file'].removesuffix('.onnx')}-{t}") for e in MODELS for t in TARGETS]


@pytest.mark.parametrize("entry, target", CASES)
def test_never_worse_at_least_today_and_pending_flips(entry, target):
    model, report = fused(entry["file"], target)
    assert report.verification.ok, report.verification.summary()
    assert all(o.step for o in report.verification.outputs), "not compared in quantization steps"

    feeds, fp32, as_written = reference(entry["source"], entry["file"])
    ours, theirs = error_to(fp32, run_ort(model, feeds), feeds), error_to(fp32, as_written, feeds)
    assert ours <= ERROR_SLACK * theirs, f"fusekit {ours:.4g} from FP32, the quantizer's model {theirs:.4g}"

    today = entry["fusekit_today"][target]
    assert all(report.counts.get(f, 0) >= n for f, n in today["counts"].items()), report.summary()
    now = {"counts": dict(report.counts)} | ({"openvino": openvino_facts(model)} if target == "openvino" else {})
    if target == "openvino" and today["openvino"]["compiles"]:
        assert now["openvino"]["compiles"], now["openvino"]["error"]
        assert now["openvino"]["fc_int8"] >= today["openvino"]["fc_int8"]
        for left in ("standalone_fakequantize", "standalone_softmax"):
            assert now["openvino"][left] <= today["openvino"][left], left

    items = reached(entry["expected"][target], now)
    pending = set(entry["pending"][target])
    missed = [i for i, ok in items.items() if not ok and i not in pending]
    assert not missed, f"not reached, and not pending: {missed}; {now}\n{report.summary()}"
    flipped = [i for i in pending if items[i]]
    assert not flipped, f"pending but reached now: {flipped}; run testmodels/quantizers_status.py to hold it"


def test_the_manifest_describes_every_committed_model():
    assert sorted(p.name for p in FOLDER.glob("*.onnx")) == sorted(e["file"] for e in MANIFEST["models"])
    assert sum(p.stat().st_size for p in FOLDER.glob("*.onnx")) == MANIFEST["total_onnx_bytes"] < 3_000_000
    for entry in MODELS:
        assert (FOLDER / entry["source"]).is_file()
        assert set(entry["pending"]) == set(TARGETS) == set(entry["expected"])
        # every quantizer quantized all 12 dense layers (Q, K, V, attention output, FFN up and down × 2)
        assert entry["dense_layers"] == quantized_dense_layers(onnx.load(FOLDER / entry["file"])) == 12


def test_every_quantizer_form_is_in_the_corpus():
    kind = {e["file"]: e["file"].split("_", 1)[1].removesuffix(".onnx") for e in MODELS}
    assert set(kind.values()) == {"nncf_transformer", "nncf_default", "dynamic_avx512vnni", "dynamic_u8",
                                  "inc_qoperator", "inc_qdq", "qat_linear", "qat_qdqbert"}
    for tool in ("nncf", "dynamic"):  # BERT for every form, DistilBERT and RoBERTa for NNCF and dynamic
        assert {e["family"] for e in MODELS if kind[e["file"]].startswith(tool)} == {"bert", "distilbert", "roberta"}
