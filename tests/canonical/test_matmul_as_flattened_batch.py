"""MatMulAsFlattenedBatch (patterns/canonical/matmul_as_flattened_batch.py): a batched product of 4-D
tensors, as tf2onnx flattens Keras attention's einsums into 3-D, is one 4-D MatMul."""
import pytest

from graphs.canonical import batched_matmul, static
from one_rule import apply

# what the rewrite leaves of the 5-D operands: MatMul(Squeeze(X, [3]), Transpose(Squeeze(Y, [2]))), the flattens'
# and the unflatten's shape chains gone with them
MADE = {"Squeeze": 1, "Reshape": -3, "Shape": -8, "Gather": -8, "ReduceProd": -2, "Concat": -3, "Max": -1}


@pytest.mark.parametrize("fixed", [False, True], ids=["read_at_run_time", "folded_to_constants"])
def test_flattened_batch_becomes_a_4d_matmul(fixed):
    """With dynamic sizes the shape vectors read Shape(X) and Shape(Y) at run time; with static ones
    the shape facts fold them to the constants the rule then reads."""
    model = static(batched_matmul(), batch=2, seq=5) if fixed else batched_matmul()
    result = apply("MatMulAsFlattenedBatch", model, fold=fixed)
    assert result.made == MADE and result.rewrote == 1 and not result.misses
    nodes = {n.output[0]: n for n in result.model.graph.node}
    (matmul,) = [n for n in result.model.graph.node if n.op_type == "MatMul"]
    left, right = nodes[matmul.input[0]], nodes[matmul.input[1]]
    assert left.op_type == "Squeeze" and right.op_type == "Transpose" and list(right.attribute[0].ints) == [0, 1, 3, 2]
    assert nodes[right.input[0]].op_type == "Squeeze"
    result.assert_equivalent(atol=0, rtol=0)  # the same dot products


def test_near_miss_when_the_unflatten_reads_the_wrong_operand():
    result = apply("MatMulAsFlattenedBatch", batched_matmul(proven=False))
    assert not result.made and "ReduceProd" in result.ops()
    assert result.miss().reason == "the unflatten is not (the broadcast batch axes, the left's m, the right's n, 1)"
