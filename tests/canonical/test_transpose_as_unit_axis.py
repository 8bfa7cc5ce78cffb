"""TransposeAsUnitAxis (patterns/canonical/transpose_as_unit_axis.py): a size-1 axis inserted, moved and
removed again is a Transpose of the other axes, or nothing."""
import numpy as np
import pytest

from graphs.variants import Graph
from one_rule import apply


def unit_axis(inserted, perm, removed, writes_output=False, shape=("batch", "seq", 2, 4)):
    """x [batch, seq, 2, 4] → Unsqueeze([inserted]) → Transpose(perm) (none where ``perm`` is None) →
    Squeeze([removed]) → Neg → y, or with ``writes_output`` the Squeeze writing y itself."""
    g = Graph("unit", 13)
    x = g.input("x", shape=list(shape))
    g.output("y", shape=None)
    value = g.op("Unsqueeze", x, g.const("inserted", [inserted], np.int64))
    if perm is not None:
        value = g.op("Transpose", value, perm=list(perm))
    lowered = g.op("Squeeze", value, g.const("removed", [removed], np.int64), out="y" if writes_output else None)
    if not writes_output:
        g.op("Neg", lowered, out="y")
    return g.model()


@pytest.mark.parametrize("graph, made, variant, perms", [
    # [B, S, 2, 4] → [B, S, 2, 1, 4] → [B, 2, 1, S, 4] → [B, 2, S, 4]: tf2onnx's head transpose of Q
    (dict(inserted=3, perm=(0, 2, 3, 1, 4), removed=2), {"Unsqueeze": -1, "Squeeze": -1}, "unit_axis[transposed]",
     [[0, 2, 1, 3]]),
    # [B, S, 2, 4] → [B, 1, S, 2, 4] → [B, S, 1, 2, 4] → [B, S, 2, 4]: nothing moved but the unit axis
    (dict(inserted=1, perm=(0, 2, 1, 3, 4), removed=2), {"Unsqueeze": -1, "Transpose": -1, "Squeeze": -1},
     "unit_axis[transposed]", []),
    (dict(inserted=2, perm=None, removed=2), {"Unsqueeze": -1, "Squeeze": -1}, "unit_axis[in_place]", []),
], ids=["moved_is_a_transpose", "moved_back_is_nothing", "in_place_is_nothing"])
def test_unit_axis_is_a_transpose_or_nothing(graph, made, variant, perms):
    result = apply("TransposeAsUnitAxis", unit_axis(**graph))
    assert result.made == made and result.rewrote == 1 and not result.misses
    assert [r.variant for r in result.records] == [variant]
    assert [list(n.attribute[0].ints) for n in result.model.graph.node if n.op_type == "Transpose"] == perms
    result.assert_equivalent(atol=0, rtol=0)  # elements moved, never computed


@pytest.mark.parametrize("graph, reason", [
    # Squeeze([3]) removes x's own size-1 axis, not the inserted one: x [batch, seq, 1, 4] → [1, batch, seq, 4]
    (dict(inserted=0, perm=(0, 1, 2, 3, 4), removed=3, shape=("batch", "seq", 1, 4)),
     "the Squeeze removes axis 3, not the inserted axis 0 (perm [0, 1, 2, 3, 4])"),
    (dict(inserted=2, perm=None, removed=2, writes_output=True), "its output 'y' is a graph output"),
], ids=["removes_another_axis", "nothing_left_writes_a_graph_output"])
def test_near_misses(graph, reason):
    result = apply("TransposeAsUnitAxis", unit_axis(**graph))
    assert not result.made and {"Unsqueeze", "Squeeze"} <= result.ops()
    assert result.miss().reason == reason
