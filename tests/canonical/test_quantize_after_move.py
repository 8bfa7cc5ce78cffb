"""QuantizeAfterMove (patterns/canonical/quantize_after_move.py): integers moved between their Q and DQ
on the way into a product of two activations are moved before quantizing instead."""
import pytest

from graphs.int8_blocks import split_heads_as_integers
from one_rule import apply


def chain(model) -> list[str]:
    """The ops from the input x to the product, in order."""
    ops, value = [], "x"
    while True:
        (node,) = [n for n in model.graph.node if value in n.input and n.op_type != "Identity"]
        ops.append(node.op_type)
        if node.op_type == "MatMul":
            return ops
        value = node.output[0]


@pytest.mark.parametrize("moves, variant", [(("reshape", "transpose"), "reshape_transpose"),
                                            (("transpose",), "transpose"), (("reshape",), "reshape")])
def test_the_pair_moves_next_to_the_product(moves, variant):
    model = split_heads_as_integers(moves=moves)
    before = chain(model)
    result = apply("QuantizeAfterMove", model)
    assert result.rewrote == 1 and not result.misses and result.records[0].variant == variant
    moved = [op.title() for op in moves]
    assert before == ["QuantizeLinear", *moved, "DequantizeLinear", "MatMul"]
    assert chain(result.model) == [*moved, "QuantizeLinear", "DequantizeLinear", "MatMul"]
    result.assert_equivalent(atol=0, rtol=0)  # bit for bit


def test_another_reader_of_the_integers_keeps_the_quantizer():
    result = apply("QuantizeAfterMove", split_heads_as_integers(reader=True))
    assert result.rewrote == 1 and result.made == {"QuantizeLinear": 1}
    result.assert_equivalent(atol=0, rtol=0)


def test_near_miss_for_a_value_quantized_per_channel():
    result = apply("QuantizeAfterMove", split_heads_as_integers(per_channel=True))
    assert not result.made
    assert result.miss().reason == ("the value is quantized per channel: its axis cannot be followed through a move "
                                    "of unknown shape")
    result.assert_equivalent(atol=0, rtol=0)


def test_a_dense_layer_reads_its_pair_after_the_moves():
    """No rewrite and no near miss: DequantizeAfterMove's form is the one QuantizedLinear reads."""
    result = apply("QuantizeAfterMove", split_heads_as_integers(into="dense"))
    assert result.rewrote == 0 and not result.misses


def test_intel_neural_compressor_qoperator_attention_then_fuses():
    import fusekit
    from conftest import TESTMODELS
    for target in ("ort", "openvino"):
        _, report = fusekit.optimize(TESTMODELS / "int8" / "quantizers" / "bert_inc_qoperator.onnx", target=target)
        assert report.counts["QuantizedAttention"] == 2 and report.canonical["QuantizeAfterMove"] == 6
        assert report.verification.ok, report.verification.summary()
