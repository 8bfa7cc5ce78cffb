"""fusekit explain: each planted near miss is named, in the encoder layer it was planted in."""
import json

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import graphs.variants as V
from conftest import TESTMODELS
from fusekit.cli import main
from fusekit.errors import FusekitError
from fusekit import explain
from fusekit.reports.layers import assign
from graphs.edits import LAYER0, helper_const, load, node, set_constant, toposorted
from fusions.test_fast_gelu import NEAR_MISSES as FAST_GELU_MISSES
from fusions.test_gelu import NEAR_MISSES as GELU_MISSES
from fusions.test_layer_norm import NEAR_MISSES as LN_REASONS
from fusions.test_quick_gelu import NEAR_MISSES as QUICK_GELU_MISSES

# the reasons the fusions' own tests assert, for the near misses planted in graphs/variants.py
GELU_REASONS = {name: (fusion, miss[-1])
                for fusion, misses in (("Gelu", GELU_MISSES), ("FastGelu", FAST_GELU_MISSES),
                                       ("QuickGelu", QUICK_GELU_MISSES))
                for name, miss in misses.items() if name in V.NEAR_MISSES}
REASONS = {**{k: ("LayerNorm", v) for k, v in LN_REASONS.items()}, **GELU_REASONS}


def test_every_planted_near_miss_has_a_reason():
    assert set(REASONS) == set(V.NEAR_MISSES)  # a new near miss needs its reason here


@pytest.mark.parametrize("name", sorted(V.NEAR_MISSES))
def test_near_miss_variant_is_explained(name):
    fusion, reason = REASONS[name]
    e = explain(V.NEAR_MISSES[name]())
    (missed,) = [c for c in e.candidates if c.status == "missed"]
    assert missed.fusion == fusion and reason in missed.miss.reason
    line = e.per_fusion(fusion)["summary"]
    assert line.startswith(f"{fusion}: in the model 0 fused, 1 missed; matched ") and reason in line
    assert reason in e.summary()




def scale_per_head(model):
    set_constant(model, node(model, LAYER0 + "Mul").input[1], np.array([0.35, 0.36], np.float32).reshape(1, 2, 1, 1))


def q_weight_input(model):
    matmul = node(model, LAYER0 + "query/MatMul")
    weight = next(t for t in model.graph.initializer if t.name == matmul.input[1])
    model.graph.initializer.remove(weight)
    model.graph.input.append(helper.make_tensor_value_info(weight.name, weight.data_type, list(weight.dims)))


def probs_output(model):
    model.graph.output.append(helper.make_tensor_value_info(node(model, LAYER0 + "Softmax").output[0],
                                                            onnx.TensorProto.FLOAT, None))


def heads_disagree(model):
    concat = node(model, LAYER0 + "Concat")
    set_constant(model, concat.input[2], np.array([4]))
    set_constant(model, concat.input[3], np.array([4]))


def causal_mask(model):
    add = node(model, LAYER0 + "Add")
    model.graph.initializer.append(numpy_helper.from_array(np.triu(np.full((64, 64), -1e9, np.float32), k=1), "causal"))
    model.graph.node.extend([
        helper.make_node("Shape", ["attention_mask"], ["shape"], name="causal/Shape"),
        helper.make_node("Slice", ["shape", helper_const(model, "minus1", [-1]), helper_const(model, "big", [9])],
                         ["s"], name="causal/Last"),
        helper.make_node("Slice", ["causal", helper_const(model, "zero", [0]), "s", helper_const(model, "ax0", [0])],
                         ["c1"], name="causal/Slice0"),
        helper.make_node("Slice", ["c1", "zero", "s", helper_const(model, "ax1", [1])], ["c2"], name="causal/Slice1"),
        helper.make_node("Add", [add.input[1], "c2"], ["causal_mask"], name="causal/Add")])
    add.input[1] = "causal_mask"
    model.CopyFrom(onnx.shape_inference.infer_shapes(toposorted(model)))


# the attention near misses of tests/fusions/test_attention.py, planted in layer 0 of a two-layer BERT
ATTENTION = {
    "scale_per_head": ("bert_ts14_eager.onnx", scale_per_head, "the attention scale is not a scalar"),
    "q_weight_input": ("bert_ts14_eager.onnx", q_weight_input, "the Q weight is not a constant: it is the graph input"),
    "probs_output": ("bert_ts14_eager.onnx", probs_output, "(from Softmax) is also a graph output"),
    "heads_disagree": ("bert_ts14_eager_tf4.onnx", heads_disagree,  # its head split states the heads
                       "the head count disagrees between Q, K and V: Q 2 heads of 8, K 4 heads of 4"),
    "causal_mask": ("bert_ts14_eager.onnx", causal_mask, "is neither a key padding mask (the mask is not one value at the unpadded keys"),
}


@pytest.mark.parametrize("name", sorted(ATTENTION))
def test_attention_near_miss_is_explained_in_its_layer(name):
    file, mutate, reason = ATTENTION[name]
    model = load(file)
    mutate(model)
    e = explain(model)
    entry = e.per_fusion("Attention")
    assert entry["layers_fused"] == [1] and entry["layers_missed"] == [0], e.summary()
    assert entry["summary"].startswith("Attention: 1 of 2 layers fused; layer 0: matched ")
    assert reason in entry["summary"]
    (missed,) = [c for c in e.candidates if c.status == "missed" and c.fusion == "Attention"]
    assert missed.layer == 0 and reason in missed.miss.reason
    assert "Attention: 1 of 2 layers fused; layer 0:" in e.summary()


def test_gelu_near_miss_in_one_layer_of_a_real_model():
    model = onnx.load(TESTMODELS / "bert_tiny_opset14.onnx")
    half = node(model, "/encoder/layer.1/intermediate/intermediate_act_fn/Mul_1").input[1]
    set_constant(model, half, np.float32(0.505))
    e = explain(model)
    gelu = e.per_fusion("Gelu")
    assert gelu["layers_fused"] == [0] and gelu["layers_missed"] == [1]
    assert "layer 1: matched 5/5 nodes (erf)" in gelu["summary"] and "is [0.505], expected 0.5" in gelu["summary"]
    assert e.per_fusion("BiasGelu")["layers_fused"] == [0]  # nothing to fold a bias into in layer 1
    table = e.summary().split("per layer")[1]
    assert "1        ✓          ✓✓         ✗" in table, table


def test_shared_albert_layer_is_split_into_two_layers():
    e = explain(TESTMODELS / "corpus" / "albert_ts14_eager.onnx")
    assert e.layers.count == 2 and e.layers.method == "positions"  # both applications are named albert_layers.0
    assert e.per_fusion("Attention")["layers_fused"] == [0, 1]
    assert e.per_fusion("SkipLayerNorm")["layers_fused"] == [0, 1]
    assert [c.layer for c in e.candidates if c.fusion == "EmbedLayerNorm"] == [None]


def test_layers_by_position_agree_with_names():
    # every BERT export names its layers; assigned by position instead, the attention and FFN nodes agree
    from fusekit.reports.dataflow import Dataflow
    from fusekit.reports.layers import _by_position, attention_cores
    flow = Dataflow(onnx.load(TESTMODELS / "corpus" / "bert_ts14_eager.onnx").graph)
    names, positions = assign(flow).of, _by_position(flow, attention_cores(flow))
    inside = [i for i, name in enumerate(flow.names)
              if "/encoder/layer." in name and flow.nodes[i].op_type != "Constant"]
    assert len(inside) > 100 and all(names[i] == positions[i] for i in inside)


def test_filters_and_their_errors():
    e = explain(TESTMODELS / "bert_tiny_opset14.onnx", fusion="SkipLayerNorm", layer=1)
    data = e.to_dict()
    assert data["filter"] == {"fusion": "SkipLayerNorm", "layer": 1}
    assert [c["op"] for c in data["candidates"]] == ["Sub"] * 2  # the residual sum, respelled
    assert all(c["layer"] == 1 and c["status"] == "fused" and c["steps"] == ["SkipLayerNorm"]
               for c in data["candidates"])
    assert [f["fusion"] for f in data["fusions"]] == ["SkipLayerNorm"]
    with pytest.raises(FusekitError, match="no layer 2: the model has 2 encoder layers"):
        explain(TESTMODELS / "bert_tiny_opset14.onnx", layer=2)
    with pytest.raises(FusekitError, match="unknown fusion 'Nope'"):
        explain(TESTMODELS / "bert_tiny_opset14.onnx", fusion="Nope")


def test_fused_model_lists_earlier_fusions(tmp_path):
    import fusekit
    fused, _ = fusekit.optimize(TESTMODELS / "bert_tiny_opset14.onnx", verify=False)
    e = explain(fused)
    # EmbedLayerNorm, 2 Attention, 2 BiasGelu, 4 LayerNorm and the 4 residual sums before them
    assert {c.status for c in e.candidates} == {"earlier"} and len(e.candidates) == 13
    assert e.per_fusion("Attention")["layers_fused"] == [0, 1]


def test_cli_json(capsys):
    assert main(["explain", str(TESTMODELS / "bert_tiny_opset14.onnx"), "--json", "--fusion", "Attention"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["schema"] == "fusekit.explain/1" and data["layers"] == {"count": 2, "method": "names"}
    assert data["fusions"][0]["summary"] == "Attention: 2 of 2 layers fused"
    assert {c["node"] for c in data["candidates"]} == {f"/encoder/layer.{k}/attention/self/Reshape_3/Attention"
                                                       for k in (0, 1)}
