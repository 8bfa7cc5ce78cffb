"""FakeQuantize alone: OpenVINO's op rewritten as the Q→DQ pair it stands for, on an activation and
on a constant weight, and the ranges that stand for no pair. The original models run in OpenVINO
inside the verifier, the rewritten ones in ONNX Runtime."""
from collections import Counter

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from one_rule import apply

OV = "org.openvinotoolkit"
COLUMNS = 8


def ops(model):
    return Counter(n.op_type for n in model.graph.node)


def _fake_quantize_model(in_low=-1.28, in_high=1.27, out_low=None, out_high=None, levels=256, weight=False,
                         opset=14):
    """x [batch, 16] through one FakeQuantize; with ``weight`` the FakeQuantize is on a constant
    [16, 8] weight that x multiplies. Ranges may be arrays (per channel)."""
    out_low = in_low if out_low is None else out_low
    out_high = in_high if out_high is None else out_high
    inits = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in
             (("il", in_low), ("ih", in_high), ("ol", out_low), ("oh", out_high))]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])
    if weight:
        w = np.random.default_rng(0).uniform(-1.2, 1.2, (16, COLUMNS)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, "w"))
        nodes = [helper.make_node("FakeQuantize", ["w", "il", "ih", "ol", "oh"], ["wq"], domain=OV, levels=levels,
                                  name="fq"),
                 helper.make_node("MatMul", ["x", "wq"], ["y"], name="matmul")]
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", COLUMNS])
    else:
        nodes = [helper.make_node("FakeQuantize", ["x", "il", "ih", "ol", "oh"], ["y"], domain=OV, levels=levels,
                                  name="fq")]
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])
    graph = helper.make_graph(nodes, "fq", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(OV, 1)],
                             ir_version=8)


def per_column(low, high):
    """Ranges per output column of the [16, 8] weight, shaped [1, 8]."""
    return (np.linspace(low, low / 2, COLUMNS, dtype=np.float32).reshape(1, COLUMNS),
            np.linspace(high, high / 2, COLUMNS, dtype=np.float32).reshape(1, COLUMNS))


def per_channel(shape, low=-1.28, high=1.27):
    """Ranges per channel, shaped ``shape`` (one axis longer than 1), each a different width."""
    widths = np.linspace(1.0, 0.5, int(np.prod(shape)), dtype=np.float32).reshape(shape)
    return low * widths, high * widths


TARGETS = ("ort", "onnx", "openvino")

# name: (model form, variant, the ops it becomes)
FORMS = {
    "activation": (dict(), "activation", {"QuantizeLinear": 1, "DequantizeLinear": 1}),
    "activation_unsigned_range": (dict(in_low=0.0, in_high=2.55), "activation", {"QuantizeLinear": 1,
                                                                                 "DequantizeLinear": 1}),
    "activation_per_channel": (dict(zip(("in_low", "in_high"), per_channel((1, 16)))), "activation",
                               {"QuantizeLinear": 1, "DequantizeLinear": 1}),
    # a weight's integers are computed here: no QuantizeLinear left
    "weight": (dict(weight=True), "weight", {"DequantizeLinear": 1}),
    "weight_255_levels": (dict(weight=True, levels=255, in_low=-1.27, in_high=1.27), "weight", {"DequantizeLinear": 1}),
    "weight_per_column": (dict(weight=True, **dict(zip(("in_low", "in_high"), per_channel((1, COLUMNS))))),
                          "weight", {"DequantizeLinear": 1}),
    "weight_per_column_255_levels": (dict(weight=True, levels=255, **dict(zip(
        ("in_low", "in_high"), per_channel((1, COLUMNS), -1.27, 1.27)))), "weight", {"DequantizeLinear": 1}),
}


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", sorted(FORMS))
def test_fake_quantize_becomes_the_pair_it_stands_for(name, target):
    form, variant, pair = FORMS[name]
    result = apply("FakeQuantize", _fake_quantize_model(**form), target=target)
    assert result.rewrote == 1 and not result.misses
    assert [r.variant for r in result.records] == [variant]
    assert result.made == {"FakeQuantize": -1, **pair}
    (out,) = result.assert_equivalent().outputs  # the original in OpenVINO, the pair in ONNX Runtime
    assert out.max_abs <= out.step


def test_activation_grid_is_the_scale_and_zero_point():
    fused = apply("FakeQuantize", _fake_quantize_model(), target="ort").model
    q = next(n for n in fused.graph.node if n.op_type == "QuantizeLinear")
    inits = {t.name: numpy_helper.to_array(t) for t in fused.graph.initializer}
    assert inits[q.input[1]] == pytest.approx(0.01) and inits[q.input[2]] == 128


@pytest.mark.parametrize("kwargs, reason", [
    (dict(out_low=-2.56, out_high=2.54), "output range differs"),
    (dict(levels=255, in_low=-1.27, in_high=1.27), "255 levels on an activation"),
    (dict(in_low=-1.283, in_high=1.267), "zero is not on the quantization grid"),
    (dict(levels=16), "16 levels"),
    (dict(in_low=1.0, in_high=1.0), "an empty range (high ≤ low)"),
    (dict(weight=True, in_low=np.full((16, COLUMNS), -1.28), in_high=np.full((16, COLUMNS), 1.27)),
     "ranges of shape [16, 8]: per-channel along more than one axis"),
    (dict(weight=True, opset=12, **dict(zip(("in_low", "in_high"), per_channel((1, COLUMNS))))),
     "per-channel ranges need a per-axis QuantizeLinear (opset 13), the model has opset 12"),
])
def test_fake_quantize_near_miss(kwargs, reason):
    result = apply("FakeQuantize", _fake_quantize_model(**kwargs), target="openvino")
    assert not result.rewrote and not result.made and ops(result.model)["FakeQuantize"] == 1
    assert reason in result.miss().reason, result.miss()
