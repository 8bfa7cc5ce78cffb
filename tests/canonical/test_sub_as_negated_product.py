"""SubAsNegatedProduct (patterns/canonical/sub_as_negated_product.py): ``(−m)·g + b`` is ``b − m·g``."""
import numpy as np
import pytest
from onnx import TensorProto

from graphs import canonical as C
from graphs.variants import Graph
from one_rule import apply


def negated_product(elem=TensorProto.FLOAT, swapped=False, shared=False):
    """y = (−m)·g + b on m [4]; ``swapped`` writes it b + g·(−m); ``shared`` also writes −m·g to
    the output 'z', so the Mul serves more than the sum."""
    dtype = np.float32 if elem == TensorProto.FLOAT else np.int64
    g = Graph("neg", 14)
    m = g.input("m", shape=[4], elem=elem)
    g.output("y", shape=[4], elem=elem)
    gain, addend = g.const("g", [2, 3, 4, 5], dtype), g.const("b", [1, 1, 1, 1], dtype)
    negated = g.op("Neg", m)
    product = g.op("Mul", gain, negated) if swapped else g.op("Mul", negated, gain)
    g.op("Add", addend, product, out="y") if swapped else g.op("Add", product, addend, out="y")
    if shared:
        g.output("z", shape=[4], elem=elem)
        g.op("Identity", product, out="z")
    return g.model()


def test_keras3_layer_norm_shift_becomes_a_subtraction_bit_for_bit():
    result = apply("SubAsNegatedProduct", C.ln_keras3())
    assert result.made == {"Neg": -1, "Add": -1, "Sub": 1} and result.rewrote == 1 and not result.misses
    result.assert_equivalent(atol=0, rtol=0)


@pytest.mark.parametrize("swapped", [False, True], ids=["as_written", "operands_swapped"])
def test_either_operand_order_binds_the_same_sum(swapped):
    """Add and Mul are commutative: b + g·(−m) must bind m, g and b as (−m)·g + b does."""
    result = apply("SubAsNegatedProduct", negated_product(swapped=swapped))
    assert result.made == {"Neg": -1, "Add": -1, "Sub": 1} and result.rewrote == 1
    (sub,) = [n for n in result.model.graph.node if n.op_type == "Sub"]
    assert sub.input[0] == "neg/b"
    result.assert_equivalent(atol=0, rtol=0)


def test_near_miss_on_integers():
    result = apply("SubAsNegatedProduct", negated_product(elem=TensorProto.INT64))
    assert not result.made
    assert result.miss().reason == \
        "the negated value has type int64, not a floating type (−x·g + b wraps otherwise)"


def test_near_miss_when_the_product_has_another_reader():
    result = apply("SubAsNegatedProduct", negated_product(shared=True))
    assert not result.made
    assert "is also used by Identity 'neg/Identity_0' outside the match" in result.miss().reason
