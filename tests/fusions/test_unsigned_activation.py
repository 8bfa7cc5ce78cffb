"""UnsignedActivation (patterns/fusions/unsigned_activation.py): an int8 activation's Q/DQ pair re-encoded as
uint8 with its zero point + 128, for ONNX Runtime."""
import numpy as np
from onnx import TensorProto, helper, numpy_helper

from graphs.int8_blocks import block
from graphs.variants import Graph
from one_rule import apply


def pair(zero=-3, dtype=np.int8, readers=2, also=None):
    """x → Q(0.03, zero) → ``readers`` DQs → y0, y1 … (added); ``also`` an op that reads the int8 value too."""
    g = Graph("pair", 14)
    x = g.input("x")
    s, z = g.const("scale", 0.03), g.const("zero_point", zero, dtype)
    q = g.op("QuantizeLinear", x, s, z)
    outputs = [g.op("DequantizeLinear", q, s, z) for _ in range(readers)]
    g.output("y")
    g.op("Sum", *outputs, out="y")
    if also:
        g.outputs.append(helper.make_tensor_value_info("z", TensorProto.INT8 if dtype == np.int8 else TensorProto.UINT8,
                                                       None))
        g.op(also, q, out="z")
    return g.model()


def test_signed_pairs_become_unsigned_bit_for_bit():
    result = apply("UnsignedActivation", pair(), target="ort")
    assert result.rewrote == 2 and not result.misses
    assert result.made == {}  # one QuantizeLinear (shared) and the two DequantizeLinear, re-encoded
    (q,) = [n for n in result.model.graph.node if n.op_type == "QuantizeLinear"]
    zero = numpy_helper.to_array(next(t for t in result.model.graph.initializer if t.name == q.input[2]))
    assert zero.dtype == np.uint8 and zero == 125  # −3 + 128
    result.assert_equivalent(atol=0, rtol=0)


def test_an_unsigned_pair_is_no_candidate():
    result = apply("UnsignedActivation", pair(zero=128, dtype=np.uint8), target="ort")
    assert not result.made and result.rewrote == 0 and not result.misses


def test_near_miss_when_something_else_reads_the_int8_value():
    result = apply("UnsignedActivation", pair(readers=1, also="Identity"), target="ort")
    assert not result.made
    assert result.miss().reason == "the int8 value is also read by Identity 'pair/Identity_0', which would keep it"


def test_the_int8_block_then_takes_onnx_runtimes_integer_kernel():
    """Unsigned, the block with int8 activations takes MatMulIntegerToFloat (ONNX Runtime's fast uint8 × int8)."""
    import fusekit
    fused, report = fusekit.optimize(block(x_dtype=np.int8, gelu=False, quantize_output=False), target="ort")
    assert [n.op_type for n in fused.graph.node if n.op_type == "MatMulIntegerToFloat"] == ["MatMulIntegerToFloat"]
    assert report.verification.ok, report.verification.summary()


def test_a_fake_quantized_weight_keeps_its_int8_integers():
    result = apply("UnsignedActivation", block(fake_weight=True, x_dtype=np.uint8), target="ort")
    assert result.rewrote == 0 and not [m for m in result.misses if m.fusion == "UnsignedActivation"]


def test_integers_moved_through_the_head_merge_are_re_encoded_with_their_moves():
    """NNCF's default preset, canonicalized: Q(int8) → Transpose → Reshape → DQ before the output
    projection. The uint8 integers take the same moves, bit for bit, so the block reads uint8."""
    import onnx
    from graphs.int8_blocks import moved_context
    canonical = apply("DequantizeAfterMove", moved_context()).model
    result = apply("UnsignedActivation", canonical)
    assert result.rewrote == 1 and result.records[0].variant == "moved" and not result.misses
    produced = {o: n.op_type for n in result.model.graph.node for o in n.output}
    (matmul,) = [n for n in result.model.graph.node if n.op_type == "MatMul"]
    (dq,) = [n for n in result.model.graph.node if n.output[0] == matmul.input[0]]
    (reshape,) = [n for n in result.model.graph.node if n.output[0] == dq.input[0]]
    (transpose,) = [n for n in result.model.graph.node if n.output[0] == reshape.input[0]]
    assert (dq.op_type, reshape.op_type, transpose.op_type, produced[transpose.input[0]]) == \
        ("DequantizeLinear", "Reshape", "Transpose", "QuantizeLinear")
    types = {v.name: v.type.tensor_type.elem_type for v in onnx.shape_inference.infer_shapes(result.model).graph.value_info}
    assert types[transpose.input[0]] == types[reshape.output[0]] == TensorProto.UINT8
    result.assert_equivalent(atol=0, rtol=0)
