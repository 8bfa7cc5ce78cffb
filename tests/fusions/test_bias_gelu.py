"""BiasGelu alone (patterns/fusions/bias_gelu.py) on small graphs in the form it reads: a bias Add
before the Gelu or FastGelu that the Gelu and FastGelu fusions made (com.microsoft), or before the
ONNX Gelu of an opset-20 export. The bias is the vector addend, on either side of the Add."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from one_rule import apply

MS = "com.microsoft"
F32 = TensorProto.FLOAT
# variant: (the activation node's op, domain, attributes; the op BiasGelu makes)
GELUS = {"gelu": ("Gelu", MS, {}, "BiasGelu"),
         "fast_gelu": ("FastGelu", MS, {}, "FastGelu"),
         "onnx_gelu": ("Gelu", "", {"approximate": "none"}, "BiasGelu"),
         "onnx_fast_gelu": ("Gelu", "", {"approximate": "tanh"}, "FastGelu")}


def _io(name, width, batch=True):
    return helper.make_tensor_value_info(name, F32, ["batch", "seq", width] if batch else [width])


def bias_gelu(variant="onnx_gelu", bias="input", bias_width=None, swapped=False, identity=False, width=32):
    """Add(X, B) → the activation of ``variant``, B a 1-D graph input (``bias="input"``) or an
    initializer, the Add's inputs swapped or not; with ``identity``, X and B reach the Add through
    Identity nodes (ORT's bias_gelu_add_inputs_swapped)."""
    op, domain, attrs, _ = GELUS[variant]
    bias_width = width if bias_width is None else bias_width
    nodes, x, b = [], "X", "B"
    if identity:
        nodes += [helper.make_node("Identity", ["X"], ["X_out"], name="identity_X"),
                  helper.make_node("Identity", ["B"], ["B_out"], name="identity_B")]
        x, b = "X_out", "B_out"
    nodes += [helper.make_node("Add", [b, x] if swapped else [x, b], ["add0_out"], name="add0"),
              helper.make_node(op, ["add0_out"], ["Y"], name="gelu", domain=domain, **attrs)]
    inputs, inits = [_io("X", width)], []
    if bias == "input":
        inputs.append(_io("B", bias_width, batch=False))
    else:
        inits.append(numpy_helper.from_array(
            np.random.default_rng(0).standard_normal(bias_width).astype(np.float32), "B"))
    graph = helper.make_graph(nodes, "bias_gelu", inputs, [_io("Y", width)], inits)
    opsets = [helper.make_opsetid("", 14 if domain else 20)] + ([helper.make_opsetid(MS, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=opsets, ir_version=8 if domain else 9)


@pytest.mark.parametrize("variant", sorted(GELUS))
def test_variant_folds_the_bias(variant):
    op = GELUS[variant][3]
    applied = apply("BiasGelu", bias_gelu(variant, bias="const"))
    assert applied.rewrote == 1 and applied.records[0].variant == variant
    (node,) = applied.model.graph.node
    assert (node.domain, node.op_type, list(node.input)) == (MS, op, ["X", "B"])
    result = applied.assert_equivalent()
    assert all(o.max_rel <= 1e-5 for o in result.outputs), result.summary()


@pytest.mark.parametrize("variant, op", [("onnx_gelu", "BiasGelu"), ("onnx_fast_gelu", "FastGelu")])
@pytest.mark.parametrize("bias, swapped", [("input", False), ("input", True), ("const", True)])
def test_bias_before_onnx_gelu(variant, op, bias, swapped):
    applied = apply("BiasGelu", bias_gelu(variant, bias=bias, swapped=swapped))
    (node,) = applied.model.graph.node
    assert (node.domain, node.op_type, list(node.input)) == (MS, op, ["X", "B"])
    assert applied.rewrote == 1 and applied.records[0].variant == variant
    applied.assert_equivalent()


@pytest.mark.parametrize("swapped", [True, False])
def test_bias_graph_input_in_either_order(swapped):
    """ORT's bias_gelu_add_inputs_swapped: the 1-D graph input is the bias wherever it sits."""
    applied = apply("BiasGelu", bias_gelu("gelu", swapped=swapped, identity=True))
    (node,) = [n for n in applied.model.graph.node if n.op_type == "BiasGelu"]
    assert list(node.input) == ["X_out", "B_out"] and applied.rewrote == 1
    applied.assert_equivalent()


def test_only_for_ort():
    with pytest.raises(AssertionError, match="BiasGelu does not run for target onnx"):
        apply("BiasGelu", bias_gelu(), target="onnx")


@pytest.mark.parametrize("kwargs", [dict(variant="gelu", identity=True, swapped=True),
                                    dict(variant="gelu", identity=True, swapped=False),
                                    dict(variant="onnx_gelu", swapped=True)])
def test_a_bias_of_the_wrong_size_is_named_in_the_near_miss(kwargs):
    """The bias broadcasts from [1]: BiasGelu wants [N]. The reason names the bias, not the activation."""
    applied = apply("BiasGelu", bias_gelu(bias_width=1, **kwargs))
    assert not applied.rewrote and not applied.made
    miss = applied.miss()
    assert "the bias 'B" in miss.reason and "has shape [1], expected [32]" in miss.reason, miss
    applied.assert_equivalent()


def test_two_activations_added_are_not_a_bias():
    """A residual Add before the GELU: neither addend is a vector, nothing fuses."""
    model = bias_gelu()
    model.graph.input[1].CopyFrom(helper.make_tensor_value_info("B", F32, ["batch", "seq", 32]))
    applied = apply("BiasGelu", model)
    assert not applied.rewrote
    (miss,) = applied.misses
    assert "has shape ['batch', 'seq', 32], expected [32]" in miss.reason, miss


def test_a_bias_of_symbolic_size_is_refused():
    """A graph-input bias declared ['n']: its size cannot be shown to be the last dimension."""
    model = bias_gelu()
    dim = model.graph.input[1].type.tensor_type.shape.dim[0]
    dim.ClearField("dim_value")
    dim.dim_param = "n"
    applied = apply("BiasGelu", model)
    assert not applied.rewrote
    (miss,) = applied.misses
    assert "the bias 'B' has shape ['n'], expected [32]" in miss.reason, miss
