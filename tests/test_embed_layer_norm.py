"""EmbedLayerNorm: the embedding lookups, their sum and the LayerNorm as one op, on small hand-built graphs."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import fuse_only
from fusekit.verify import verify

VOCAB, POSITIONS, TYPES, WIDTH = 30, 16, 2, 8
MS = "com.microsoft"


def embeddings(segment=True, word_ids_input=True, gamma_width=WIDTH, order=("word", "segment", "position")):
    """input_ids, token_type_ids → Gather(word) + Gather(segment) + Gather(position) → LayerNormalization."""
    rng = np.random.default_rng(0)
    tables = {"word": (VOCAB, "input_ids"), "segment": (TYPES, "token_type_ids"), "position": (POSITIONS, "position_ids")}
    inits = [numpy_helper.from_array(np.arange(POSITIONS, dtype=np.int64)[None, :], "position_ids_all")]
    nodes = [helper.make_node("Shape", ["input_ids"], ["ids_shape"], name="shape"),
             helper.make_node("Gather", ["ids_shape", "one"], ["seq"], name="seq", axis=0),
             helper.make_node("Unsqueeze", ["seq", "zero_axis"], ["seq_1d"], name="seq_1d"),
             helper.make_node("Slice", ["position_ids_all", "zero_1d", "seq_1d", "one_1d"], ["position_ids"],
                              name="positions")]
    inits += [numpy_helper.from_array(np.array(1, np.int64), "one"),
              numpy_helper.from_array(np.array([0], np.int64), "zero_axis"),
              numpy_helper.from_array(np.array([0], np.int64), "zero_1d"),
              numpy_helper.from_array(np.array([1], np.int64), "one_1d")]
    terms = [t for t in order if segment or t != "segment"]
    for term in terms:
        rows, ids = tables[term]
        inits.append(numpy_helper.from_array(rng.standard_normal((rows, WIDTH)).astype(np.float32), f"{term}_table"))
        source = ids if word_ids_input or term != "word" else "input_ids_copy"
        nodes.append(helper.make_node("Gather", [f"{term}_table", source], [f"{term}_rows"], name=f"{term}_lookup"))
    if not word_ids_input:
        nodes.insert(0, helper.make_node("Abs", ["input_ids"], ["input_ids_copy"], name="copy"))
    total = f"{terms[0]}_rows"
    for term in terms[1:]:
        nodes.append(helper.make_node("Add", [total, f"{term}_rows"], [f"sum_{term}"], name=f"add_{term}"))
        total = f"sum_{term}"
    inits += [numpy_helper.from_array(np.ones(gamma_width, np.float32), "gamma"),
              numpy_helper.from_array(np.zeros(gamma_width, np.float32), "beta")]
    nodes.append(helper.make_node("LayerNormalization", [total, "gamma", "beta"], ["y"], name="ln", axis=-1,
                                  epsilon=1e-12))
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])]
    if segment:
        inputs.append(helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, ["batch", "seq"]))
    graph = helper.make_graph(nodes, "embeddings", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", WIDTH])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def embed_node(model):
    (node,) = [n for n in model.graph.node if n.op_type == "EmbedLayerNormalization"]
    return node


@pytest.mark.parametrize("segment, label", [(True, "lookups"), (False, "lookups[no_segment]")])
def test_lookups_fuse_and_verify(segment, label):
    model = embeddings(segment=segment)
    fused, report = fuse_only(model, "EmbedLayerNorm")
    assert report.counts == {"EmbedLayerNorm": 1} and report.fused[0].variant == label
    node = embed_node(fused)
    assert node.domain == MS and node.input[2] == "word_table" and node.input[3] == "position_table"
    assert (node.input[4] == "segment_table") == segment
    assert verify(model, fused).ok


def test_roles_come_from_the_inputs_not_the_order():
    """The segment lookup first (as in TF graphs): the word table is still the one the ids index."""
    fused, report = fuse_only(embeddings(order=("segment", "position", "word")), "EmbedLayerNorm")
    node = embed_node(fused)
    assert (node.input[2], node.input[3], node.input[4]) == ("word_table", "position_table", "segment_table")


@pytest.mark.parametrize("kwargs, reason", [
    (dict(word_ids_input=False, segment=False), "no lookup is indexed by a 2-D model input"),
    (dict(word_ids_input=False), "neither the segment nor the position ids are provably (batch, sequence)"),
    (dict(gamma_width=WIDTH + 1), "γ"),
])
def test_near_miss(kwargs, reason):
    fused, report = fuse_only(embeddings(**kwargs), "EmbedLayerNorm")
    assert "EmbedLayerNorm" not in report.counts
    assert [n for n in fused.graph.node if n.op_type == "LayerNormalization"]
    (miss,) = [m for m in report.misses if m.fusion == "EmbedLayerNorm"]
    assert reason in miss.reason, miss


def test_only_for_ort():
    _, report = fuse_only(embeddings(), "EmbedLayerNorm", target="openvino")
    assert report.counts == {}
