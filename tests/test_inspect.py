"""fusekit inspect: the architecture read off the graph matches the config each model was exported from."""
import json

import onnx
import pytest

import fusekit
from conftest import TESTMODELS
from fusekit.cli import main
from fusekit.reports.inspection import inspect_model

CORPUS = TESTMODELS / "corpus"
MODELS = json.loads((CORPUS / "manifest.json").read_text())["models"]
ACTIVATION = {"erf": "gelu", "tanh (gelu_new)": "gelu_tanh"}


def expected(entry) -> dict:
    config = entry["config"]
    return {"layers": entry["num_layers"], "heads": entry["num_heads"], "hidden": entry["hidden"],
            "head_size": entry["hidden"] // entry["num_heads"], "intermediate": entry["intermediate"],
            "embedding_size": entry["embedding_size"], "activation": ACTIVATION[entry["gelu_form"]],
            "layer_norm_epsilon": config.get("layer_norm_eps", 1e-12), "vocab_size": config["vocab_size"],
            "max_positions": config["max_position_embeddings"], "type_vocab_size": config.get("type_vocab_size"),
            "kind": "BERT-like encoder"}


@pytest.mark.parametrize("entry", MODELS, ids=lambda e: e["file"])
def test_architecture_matches_the_export_config(entry):
    found = inspect_model(CORPUS / entry["file"])
    a = found.to_dict()["architecture"]
    assert {k: a[k] for k in expected(entry)} == expected(entry)
    want = "torch.onnx (dynamo)" if entry["exporter_kind"] == "dynamo" else "torch.onnx (TorchScript)"
    assert found.exporter["name"] == want, found.exporter
    assert found.nodes == entry["nodes"] and found.ops == dict(sorted(entry["ops"].items()))
    assert found.fusible["Attention"] == entry["expected"]["attention"]


def test_fused_models_read_the_same():
    from test_diff import ort_optimized
    path = TESTMODELS / "bert_tiny_opset14.onnx"
    unfused = inspect_model(path)
    by_fusekit = inspect_model(fusekit.optimize(path, verify=False)[0])
    by_ort = inspect_model(ort_optimized(path, heads=4, hidden=32))
    arch = unfused.to_dict()["architecture"]
    assert (arch["layers"], arch["hidden"], arch["heads"], arch["intermediate"]) == (2, 32, 4, 64)
    for other in (by_fusekit, by_ort):
        assert {k: v for k, v in other.to_dict()["architecture"].items() if k != "layers_from"} == \
            {k: v for k, v in arch.items() if k != "layers_from"}
    assert unfused.fused_ops == {} and by_fusekit.fused_ops["com.microsoft.Attention"] == 2
    assert [r["name"] for r in by_fusekit.rewritten_by] == ["fusekit"]
    assert [r["name"] for r in by_ort.rewritten_by] == ["onnxruntime.transformers optimizer"]
    assert by_ort.exporter["name"] == "torch.onnx (TorchScript)"  # the names it kept still tell
    assert by_fusekit.fusible == {} and unfused.fusible["SkipLayerNorm"] == 4


def test_opset17_layer_norm_counts_as_already_fused():
    found = inspect_model(TESTMODELS / "bert_tiny_opset17.onnx")
    assert found.fused_ops == {"LayerNormalization": 5} and found.opsets == {"ai.onnx": 17}


def test_facts_and_cli_json(capsys):
    path = TESTMODELS / "bert_tiny_opset14.onnx"
    assert main(["inspect", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["schema"] == "fusekit.inspect/1" and data["file_bytes"] == path.stat().st_size
    assert data["inputs"][0] == {"name": "input_ids", "dtype": "int64", "shape": ["batch", "sequence"]}
    assert data["outputs"][1] == {"name": "pooler_output", "dtype": "float32", "shape": ["batch", 32]}
    model = onnx.load(path)
    weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    assert data["parameters"] == {"count": sum(onnx.numpy_helper.to_array(t).size for t in weights),
                                  "bytes": sum(onnx.numpy_helper.to_array(t).nbytes for t in weights),
                                  "tensors": len(weights)}
    assert [row["layer"] for row in data["layers"]] == [0, 1, None]
    assert data["layers"][0]["fusible"] == {"Attention": 1, "BiasGelu": 1, "Gelu": 1, "LayerNorm": 2,
                                            "SkipLayerNorm": 2}
    assert main(["inspect", str(path)]) == 0
    assert "layers 2 (from node names), hidden 32, heads 4 × 8, intermediate 64, activation gelu, LayerNorm ε 1e-12" \
        in capsys.readouterr().out
