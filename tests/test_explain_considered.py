"""`explain` lists the regions that look like a fusion's where no variant even starts."""
import pytest
from onnx import TensorProto, helper

from fusekit import explain
from fusekit.reports.htmlreport import explain_page
from graphs import forms as F
from graphs import variants as V


def sign(op_type: str):
    """The sign of a fusion with nothing around it: Softmax → MatMul, 1 + Erf, 1 + Tanh."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 16])
    nodes = [helper.make_node(op_type, ["x"], ["s"], name=op_type.lower())]
    if op_type == "Softmax":
        nodes.append(helper.make_node("MatMul", ["s", "x"], ["y"], name="pv"))
    else:
        nodes.append(helper.make_node("Add", ["s", "one"], ["y"], name="plus_one"))
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    graph = helper.make_graph(nodes, "sign", [x], [y], [one])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)


def alone(op_type: str):
    """y = op(x): a pooler's Tanh, a classifier's Softmax — no fusion's sign."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 16])
    graph = helper.make_graph([helper.make_node(op_type, ["x"], ["y"], name=op_type.lower())], "alone", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)


def considered(model, target="ort"):
    return [c for c in explain(model, target=target).candidates if c.status == "considered"]


@pytest.mark.parametrize("op_type, fusion", [("Softmax", "Attention"), ("Erf", "Gelu"), ("Tanh", "FastGelu")])
def test_a_sign_no_variant_starts_on_is_considered(op_type, fusion):
    (c,) = considered(sign(op_type))
    assert (c.fusion, c.op, c.node) == (fusion, op_type, op_type.lower())
    assert c.describe().startswith("considered, no variant starts here")
    assert c.to_dict()["reason"] == "considered, no variant starts here"


def centred():
    """y = |x − mean(x)|: a LayerNorm's centring that no LayerNorm variant starts from."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 16])
    nodes = [helper.make_node("ReduceMean", ["x"], ["mean"], name="reduce", axes=[-1], keepdims=1),
             helper.make_node("Sub", ["x", "mean"], ["d"], name="centre"),
             helper.make_node("Abs", ["d"], ["y"], name="abs")]
    graph = helper.make_graph(nodes, "centred", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)


def test_a_layer_norm_chain_no_variant_starts_on_is_considered():
    e = explain(centred())
    (c,) = [c for c in e.candidates if c.status == "considered"]
    assert (c.fusion, c.node) == ("LayerNorm", "reduce")
    assert "considered, no variant starts here: ReduceMean 'reduce'" in e.summary()


def test_the_cast_placements_of_ort_fusion_tests_fuse_instead():
    """γ after a Cast (ORT's layer_norm_with_cast_3) is canonicalized, so it fuses: nothing left to consider."""
    e = explain(F.layer_norm_with_cast("before_scale"))
    assert not [c for c in e.candidates if c.status == "considered"]
    assert any(c.status == "fused" and c.fusion == "LayerNorm" for c in e.candidates)


@pytest.mark.parametrize("model", [V.ln_eps_input, V.gelu_half_off, V.gelu_tanh_coeff_off, V.ln_pytorch, V.gelu_tanh_pow])
def test_no_considered_row_where_a_fusion_or_near_miss_covers_it(model):
    assert not considered(model())


def test_only_for_targets_the_fusion_has():
    assert not considered(sign("Softmax"), target="openvino")


@pytest.mark.parametrize("op_type", ["Softmax", "Erf", "Tanh"])
def test_an_op_alone_is_no_sign(op_type):
    assert not considered(alone(op_type))


def test_a_mean_that_centres_nothing_is_not_a_layer_norm():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 1])
    graph = helper.make_graph([helper.make_node("ReduceMean", ["x"], ["y"], name="mean", axes=[-1])], "m", [x], [y])
    assert not considered(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8))


def test_the_html_report_shows_a_considered_region_as_not_fused():
    html = explain_page(explain(centred()))
    assert "considered, no variant starts here: ReduceMean &#x27;reduce&#x27;" in html
    assert "Fused regions" not in html
