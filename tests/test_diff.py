"""fusekit diff: every original node is kept, replaced, bypassed or dead — in fusekit's
output (from provenance and from structure alone) and in ONNX Runtime's optimizer output."""
import json
import logging

import onnx
import pytest

import fusekit
from conftest import TESTMODELS
from fusekit.cli import main
from fusekit.reports.diff import diff

CORPUS = TESTMODELS / "corpus"
BERT_TINY = TESTMODELS / "bert_tiny_opset14.onnx"
FUSEKIT_MODELS = [BERT_TINY, CORPUS / "bert_ts14_sdpa.onnx", CORPUS / "bert_dynamo18.onnx",
                  CORPUS / "albert_ts14_eager.onnx", CORPUS / "distilbert_ts14_eager.onnx",
                  CORPUS / "roberta_ts17_sdpa.onnx"]


def ort_optimized(path, heads, hidden):
    from onnxruntime.transformers.optimizer import optimize_model
    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)  # its progress chatter
    return optimize_model(str(path), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0).model


def assert_every_node_accounted(d):
    acct = d.to_dict()["accounting"]
    assert d.ok and acct["unaccounted"] == 0, d.summary()
    assert acct["kept"] + acct["replaced"] + acct["bypassed"] + acct["dead"] == acct["original_nodes"]
    status = d.status()
    assert sorted(status) == list(range(len(d.original.nodes)))  # each node exactly once
    for i, j in d.kept.items():  # kept means the same op under the same name (or outputs)
        o, f = d.original.nodes[i], d.fused.nodes[j]
        assert o.op_type == f.op_type and (o.name == f.name or list(o.output) == list(f.output))
    for i in d.dead:  # dead means only removed nodes read it, and it is no graph output
        assert all(status[u] in ("replaced", "bypassed", "dead") for u in d.original.users(i))
        assert not set(d.original.nodes[i].output) & set(d.original.outputs)


@pytest.mark.parametrize("path", FUSEKIT_MODELS, ids=lambda p: p.name)
def test_fusekit_output_is_fully_accounted_from_provenance_and_from_structure(path):
    original = onnx.load(path)
    fused, report = fusekit.optimize(original, verify=False)
    d = diff(original, fused)
    assert_every_node_accounted(d)
    records = report.fused + [r for r in report.rewrites if r.node]  # a bypassed no-op has no node
    assert d.alignment == "provenance" and len(d.regions) == len(records)
    for region, record in zip(sorted(d.regions, key=lambda r: d.fused.names[r.index]),
                              sorted(records, key=lambda f: f.node)):
        assert d.fused.names[region.index] == record.node
        assert sorted(d.original.names[i] for i in region.replaced) == sorted(n for n, _ in record.replaced)
    structural = diff(original, fused, use_provenance=False)
    assert_every_node_accounted(structural)
    by_structure = structural.replaced
    for i, region in d.replaced.items():  # structure alone finds each replaced node's fused node
        assert i in by_structure and by_structure[i].index == region.index, d.original.names[i]


def test_fused_node_lists_constants_layer_and_rewiring():
    original = onnx.load(BERT_TINY)
    fused, _ = fusekit.optimize(original, verify=False)
    data = diff(original, fused).to_dict()
    attention = next(r for r in data["fused_nodes"] if r["op"] == "com.microsoft.Attention" and r["layer"] == 1)
    assert attention["fusion"] == "Attention" and abs(attention["constants"]["scale"] - 8 ** -0.5) < 1e-6
    assert {r["op"] for r in attention["replaced"]} >= {"MatMul", "Softmax", "Transpose", "Reshape"}
    assert all(r["layer"] == 1 for r in attention["replaced"])
    assert len(attention["absorbed"]) == 6  # the Q/K/V weights and biases, packed into one
    inputs = {i["index"]: i for i in attention["inputs"]}
    assert inputs[0]["from"] == "fused" and inputs[1]["from"] == "constant"
    assert inputs[3]["from"] == "added" and "'attention_mask'" in inputs[3]["detail"]
    assert attention["outputs"] == [{"name": "/encoder/layer.1/attention/self/Reshape_3_output_0", "takes_over": True,
                                     "users": ["/encoder/layer.1/attention/output/dense/MatMul"]}]
    rows = {r["layer"]: r for r in data["layers"]["rows"]}
    assert rows[0]["fused"] == {"com.microsoft.Attention": 1, "com.microsoft.BiasGelu": 1,
                                "LayerNormalization": 2, "Sub": 2}  # each residual sum respelled as a Sub
    assert sum(r["original"] for r in rows.values()) == data["accounting"]["original_nodes"] == 286
    assert data["summary"]["nodes"] == [286, 30] and data["ops"]["after"]["com.microsoft.Attention"] == 2


@pytest.mark.parametrize("name, heads, hidden", [
    ("bert_tiny_opset14.onnx", 4, 32),  # everything fused: EmbedLayerNorm, Attention, SkipLayerNorm, BiasGelu
    ("corpus/albert_ts14_eager.onnx", 2, 16),  # Identity nodes of the tied weights removed
    ("corpus/roberta_ts14_eager.onnx", 2, 16),  # a no-op Reshape removed, users rewired upstream
])
def test_onnxruntime_optimizer_output_is_fully_accounted(name, heads, hidden, tmp_path):
    path = TESTMODELS / name
    optimized = ort_optimized(path, heads, hidden)
    onnx.save(optimized, tmp_path / "ort.onnx")  # com.microsoft undeclared, as ONNX Runtime allows
    d = diff(path, tmp_path / "ort.onnx")
    assert_every_node_accounted(d)
    assert d.alignment == "structure" and any(n.startswith("fused: ") and "without importing the domain" in n
                                              for n in d.notes)
    fused_ops = {"Attention", "SkipLayerNormalization", "BiasGelu", "FastGelu", "EmbedLayerNormalization"}
    new = [j for j, n in enumerate(d.fused.nodes) if n.op_type in fused_ops]
    regions = {r.index: r for r in d.regions}
    assert new and all(regions.get(j) and regions[j].replaced for j in new), d.summary()
    for j in new:
        if d.fused.nodes[j].op_type == "Attention":  # one layer's attention, Softmax and all
            (softmax,) = [i for i in regions[j].replaced if d.original.nodes[i].op_type == "Softmax"]
            assert d.layers.of[softmax] == d.layer_of_region(regions[j]) is not None
    if "albert" in name:  # the shared layer's second application reads its weights through Identity
        status = d.status()
        identities = [i for i, n in enumerate(d.original.nodes) if n.op_type == "Identity"]
        bypassed = [i for i in identities if any(status[u] == "kept" for u in d.original.users(i))]
        assert len(identities) == 6 and len(bypassed) == 3  # the others fed the fused Q/K/V
        assert all(status[i] == "bypassed" for i in bypassed)


def test_a_lost_node_is_unaccounted_and_fails_the_command(tmp_path, capsys):
    original = onnx.load(BERT_TINY)
    fused, _ = fusekit.optimize(original, verify=False)
    gemm = next(n for n in fused.graph.node if n.name == "/pooler/dense/Gemm")
    tanh = next(n for n in fused.graph.node if n.name == "/pooler/activation/Tanh")
    tanh.input[0] = gemm.input[0]  # the pooler's dense layer silently dropped
    fused.graph.node.remove(gemm)
    d = diff(original, fused)
    assert not d.ok and [d.original.names[i] for i in d.unaccounted] == ["/pooler/dense/Gemm"]
    assert "UNACCOUNTED: Gemm '/pooler/dense/Gemm' is gone, but /pooler/activation/Tanh still needed it" in d.summary()
    onnx.save(fused, tmp_path / "broken.onnx")
    assert main(["diff", str(BERT_TINY), str(tmp_path / "broken.onnx"), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["schema"] == "fusekit.diff/1" and data["accounting"]["ok"] is False
    assert data["unaccounted"] == [{"name": "/pooler/dense/Gemm", "op": "Gemm", "layer": None,
                                    "users": ["/pooler/activation/Tanh"]}]
