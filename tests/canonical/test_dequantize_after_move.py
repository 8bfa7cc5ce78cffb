"""DequantizeAfterMove (patterns/canonical/dequantize_after_move.py): a Transpose or Reshape after a
DequantizeLinear moves the integers instead (a weight's folded), and dequantizes after."""
import numpy as np
import pytest
from onnx import numpy_helper

from graphs.int8_blocks import moved_context, moved_weight
from one_rule import apply


def _dq(model):
    (dq,) = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return dq, inits[dq.input[0]], {a.name: a.i for a in dq.attribute}


@pytest.mark.parametrize("per_column", [True, False])
def test_transpose_then_reshape_fold_into_the_integers(per_column):
    result = apply("DequantizeAfterMove", moved_weight(per_column=per_column))
    assert result.rewrote == 1 and not result.misses and result.records[0].variant == "weight_transpose_reshape"
    assert result.made == {"Transpose": -1, "Reshape": -1}
    dq, w_q, attrs = _dq(result.model)
    assert w_q.shape == (16, 24) and attrs == ({"axis": 1} if per_column else {})  # the scale's axis moved along
    assert next(n for n in result.model.graph.node if n.op_type == "MatMul").input[1] == dq.output[0]
    result.assert_equivalent(atol=0, rtol=0)  # bit for bit


def test_a_transpose_alone():
    result = apply("DequantizeAfterMove", moved_weight(moves=("transpose",)))
    assert result.rewrote == 1 and result.records[0].variant == "weight_transpose"
    result.assert_equivalent(atol=0, rtol=0)


def test_the_reshaped_weight_feeds_the_int8_block_fusion():
    """Canonicalized, the block is the stored-weight form QuantizedLinear reads (no Transpose variant needed)."""
    result = apply("DequantizeAfterMove", moved_weight())
    ops = [n.op_type for n in result.model.graph.node]
    assert ops == ["DequantizeLinear", "MatMul"]
    assert np.asarray(_dq(result.model)[1]).dtype == np.int8


def test_near_miss_when_a_reshape_splits_the_quantized_axis():
    result = apply("DequantizeAfterMove", moved_weight(moves=("transpose", "reshape"), split_axis=True))
    assert result.made == {"Transpose": -1}  # the Transpose folds alone; the Reshape splitting the 24 scales cannot
    assert result.miss().reason == ("the Reshape merges or splits the quantized axis 1 (24 scales): no axis of "
                                    "[4, 6, 16] carries one scale per element")
    result.assert_equivalent(atol=0, rtol=0)


def test_an_activation_is_moved_as_integers_and_dequantized_after():
    """NNCF's default preset: the context's DQ moves past the head merge, so the projection reads DQ → MatMul."""
    result = apply("DequantizeAfterMove", moved_context())
    assert result.rewrote == 1 and result.records[0].variant == "activation_transpose_reshape" and not result.misses
    ops = [n.op_type for n in result.model.graph.node]
    assert ops.index("Transpose") < ops.index("Reshape") < ops.index("MatMul")
    matmul = next(n for n in result.model.graph.node if n.op_type == "MatMul")
    producer = next(n for n in result.model.graph.node if matmul.input[0] in n.output)
    assert producer.op_type == "DequantizeLinear"
    result.assert_equivalent(atol=0, rtol=0)  # bit for bit


def test_the_moved_context_then_fuses_into_an_int8_block():
    import fusekit
    _, report = fusekit.optimize(moved_context(), target="ort")
    assert report.counts.get("QuantizedLinear") == 1 and report.verification.ok


def test_near_miss_for_a_context_quantized_per_head():
    result = apply("DequantizeAfterMove", moved_context(per_channel=True))
    assert not result.made
    assert result.miss().reason == ("the activation is quantized per channel: its axis cannot be followed through a "
                                    "move of unknown shape")


@pytest.mark.parametrize("into", ["Relu", "product"])
def test_a_move_into_no_dense_projection_is_left_alone(into):
    """No INT8 block waits behind another op, or behind a product of two activations (attention's
    Q·Kᵀ and P·V, whose pairs QuantizedAttention reads where the quantizer put them)."""
    result = apply("DequantizeAfterMove", moved_context(into=into))
    assert result.rewrote == 0 and not result.misses


def test_the_moved_integers_keep_the_float_values_shape():
    """The shape facts read through the block the move feeds (SkipLayerNorm proves the residual's
    [batch, sequence] through it): each moved value gets the shape of the float value it replaces."""
    result = apply("DequantizeAfterMove", moved_context())
    shapes = {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]
              for v in result.model.graph.value_info if v.type.tensor_type.HasField("shape")}
    moved = {n.op_type: n.output[0] for n in result.model.graph.node if n.op_type in ("Transpose", "Reshape")}
    assert len(shapes[moved["Transpose"]]) == 4 and len(shapes[moved["Reshape"]]) == 3
