"""FakeQuantize: OpenVINO's op rewritten as the Q→DQ pair it stands for, and the ranges that stand for no pair."""
from collections import Counter

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import fusekit
from conftest import fuse_only


def ops(model):
    return Counter(n.op_type for n in model.graph.node)


def _fake_quantize_model(in_low=-1.28, in_high=1.27, out_low=None, out_high=None, levels=256):
    ov = "org.openvinotoolkit"
    out_low = in_low if out_low is None else out_low
    out_high = in_high if out_high is None else out_high
    inits = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in
             (("il", in_low), ("ih", in_high), ("ol", out_low), ("oh", out_high))]
    node = helper.make_node("FakeQuantize", ["x", "il", "ih", "ol", "oh"], ["y"], domain=ov, levels=levels, name="fq")
    graph = helper.make_graph([node], "fq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14), helper.make_opsetid(ov, 1)],
                             ir_version=8)


def test_fake_quantize_becomes_the_pair_it_stands_for():
    fused, report = fusekit.optimize(_fake_quantize_model(), target="ort")
    assert report.counts["FakeQuantize"] == 1
    assert ops(fused) == {"QuantizeLinear": 1, "DequantizeLinear": 1}
    q = next(n for n in fused.graph.node if n.op_type == "QuantizeLinear")
    inits = {t.name: numpy_helper.to_array(t) for t in fused.graph.initializer}
    assert inits[q.input[1]] == pytest.approx(0.01) and inits[q.input[2]] == 128
    assert report.verification.ok and report.verification.outputs[0].max_abs <= report.verification.outputs[0].step


@pytest.mark.parametrize("kwargs, reason", [
    (dict(out_low=-2.56, out_high=2.54), "output range differs"),
    (dict(levels=255, in_low=-1.27, in_high=1.27), "255 levels on an activation"),
    (dict(in_low=-1.283, in_high=1.267), "zero is not on the quantization grid"),
    (dict(levels=16), "16 levels"),
])
def test_fake_quantize_near_miss(kwargs, reason):
    fused, report = fuse_only(_fake_quantize_model(**kwargs), "FakeQuantize", target="openvino")
    assert "FakeQuantize" not in report.counts and ops(fused) == {"FakeQuantize": 1}
    (miss,) = report.misses
    assert reason in miss.reason, miss
