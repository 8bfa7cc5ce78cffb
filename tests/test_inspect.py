"""fusekit inspect: the architecture read off the graph matches the config each model was exported from."""
import json

import onnx
import pytest

import fusekit
from conftest import TESTMODELS
from fusekit.cli import main
from fusekit import inspect_model

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


def test_an_input_rewritten_by_ort_with_a_mask_index_is_warned_about():
    # ORT's transformers optimizer (Optimum's --optimize O2) turns the mask into valid lengths: right padding only
    from test_diff import ort_optimized
    path = TESTMODELS / "bert_tiny_opset14.onnx"
    by_ort = ort_optimized(path, heads=4, hidden=32)
    warning = "the input holds 2 com.microsoft Attention with a mask index"
    assert warning in inspect_model(by_ort).warnings[0] and "assumes right padding" in inspect_model(by_ort).warnings[0]
    assert warning in fusekit.optimize(by_ort, verify=False)[1].summary()
    # near misses: fusekit's own Attention reads the 2-D mask, and the export has no Attention at all
    by_fusekit = fusekit.optimize(path, verify=False)[0]
    assert inspect_model(by_fusekit).warnings == [] and inspect_model(path).warnings == []
    assert fusekit.optimize(by_fusekit, verify=False)[1].warnings == []


def test_standard_onnx_targets_say_when_com_microsoft_ops_pass_through():
    from test_diff import ort_optimized
    path = TESTMODELS / "bert_tiny_opset14.onnx"
    by_ort = ort_optimized(path, heads=4, hidden=32)
    for target in ("onnx", "openvino"):
        notes = fusekit.optimize(by_ort, target=target, verify=False)[1].notes
        assert any(n.startswith("the output is not standard ONNX: the input's com.microsoft ops pass through "
                                "unchanged (Attention 2, BiasGelu 2, EmbedLayerNormalization 1") for n in notes), notes
        assert not any("not standard ONNX" in n for n in fusekit.optimize(path, target=target, verify=False)[1].notes)
    assert not any("not standard ONNX" in n for n in fusekit.optimize(by_ort, target="ort", verify=False)[1].notes)


@pytest.mark.parametrize("names", [("input_ids", "token_type_ids"), ("input_word_ids", "input_type_ids")],
                         ids=["hf_tf", "keras"])
def test_tf2onnx_embeddings_are_told_apart_by_what_indexes_them(names):
    # tf2onnx writes the token-type lookup first; the word table is 3000 rows, positions 128, types 2
    from onnx import TensorProto, helper, numpy_helper
    import numpy as np
    ids, types = names
    width = 4
    tables = {f"bert/embeddings/{t}:0": numpy_helper.from_array(np.zeros((rows, width), np.float32),
                                                                f"bert/embeddings/{t}:0")
              for t, rows in (("token_type_embeddings", 2), ("word_embeddings", 3000), ("position_embeddings", 128))}
    nodes = [
        helper.make_node("Gather", ["bert/embeddings/token_type_embeddings:0", types], ["types:0"]),
        helper.make_node("Cast", [ids], ["ids64:0"], to=TensorProto.INT64),
        helper.make_node("Gather", ["bert/embeddings/word_embeddings:0", "ids64:0"], ["words:0"]),
        helper.make_node("Shape", [ids], ["shape:0"]),
        helper.make_node("Gather", ["shape:0", "one:0"], ["seq:0"]),
        helper.make_node("Range", ["zero:0", "seq:0", "one:0"], ["range:0"]),
        helper.make_node("Unsqueeze", ["range:0", "axes:0"], ["position_ids:0"]),
        helper.make_node("Gather", ["bert/embeddings/position_embeddings:0", "position_ids:0"], ["positions:0"]),
        helper.make_node("Add", ["types:0", "words:0"], ["sum:0"]),
        helper.make_node("Add", ["sum:0", "positions:0"], ["embeddings:0"]),
    ]
    scalars = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (("zero:0", 0), ("one:0", 1))]
    graph = helper.make_graph(
        nodes, "tf2onnx", [helper.make_tensor_value_info(ids, TensorProto.INT32, ["batch", "seq"]),
                           helper.make_tensor_value_info(types, TensorProto.INT32, ["batch", "seq"])],
        [helper.make_tensor_value_info("embeddings:0", TensorProto.FLOAT, ["batch", "seq", width])],
        [*tables.values(), *scalars, numpy_helper.from_array(np.array([0], np.int64), "axes:0")])
    model = helper.make_model(graph, producer_name="tf2onnx", opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    a = inspect_model(model).architecture
    assert (a.vocab_size, a.embedding_size, a.max_positions, a.type_vocab_size) == (3000, width, 128, 2)
    # with the token types unnamed, the word table is still the largest the ids index; the rest go by size
    model.graph.input[1].name = "input_b"
    for node in model.graph.node:
        node.input[:] = ["input_b" if i == types else i for i in node.input]
    model.graph.input[1].type.tensor_type.elem_type = TensorProto.INT32
    a = inspect_model(model).architecture
    assert (a.vocab_size, a.max_positions, a.type_vocab_size) == (3000, 128, 2)
