"""SlicesAsSplit (patterns/canonical/slices_as_split.py): a Split into pieces of one (torch.unbind as
TorchScript exports it) becomes one Slice per piece, as the dynamo exporter writes it."""
import numpy as np
import pytest
from onnx import TensorProto, helper

from graphs.variants import Graph
from one_rule import apply


def unbind(sizes="input", opset=17, pieces=(1, 1, 1)):
    """x [batch, seq, 3, 4] → Split(axis 2) → each piece negated → Concat → y [batch, seq, 3, 4].
    ``sizes``: "input" (a constant), "attribute" (below opset 13), "count" (num_outputs, opset 18)
    or "computed" (a graph input)."""
    g = Graph("unbind", opset)
    x = g.input("x", shape=["batch", "seq", sum(pieces), 4])
    g.output("y", shape=None)
    outs = [f"unbind/piece_{i}" for i in range(len(pieces))]
    inputs, attrs = [x], {"axis": 2}
    if sizes == "input":
        inputs.append(g.const("sizes", list(pieces), np.int64))
    elif sizes == "computed":
        inputs.append(g.input("sizes", shape=[len(pieces)], elem=TensorProto.INT64))
    elif sizes == "attribute":
        attrs["split"] = list(pieces)
    else:
        attrs["num_outputs"] = len(pieces)
    g.nodes.append(helper.make_node("Split", inputs, outs, name="unbind/Split", **attrs))
    g.op("Concat", *(g.op("Neg", o) for o in outs), axis=2, out="y")
    return g.model()


@pytest.mark.parametrize("graph, variant", [
    (dict(sizes="input"), "split[sizes_input]"),
    (dict(sizes="attribute", opset=11), "split[sizes_attribute]"),
    (dict(sizes="count", opset=18), "split[sizes_attribute]"),
], ids=["sizes_input", "sizes_attribute", "num_outputs"])
def test_pieces_of_one_become_slices(graph, variant):
    result = apply("SlicesAsSplit", unbind(**graph))
    assert result.made == {"Split": -1, "Slice": 3} and result.rewrote == 1 and not result.misses
    assert [r.variant for r in result.records] == [variant]
    result.assert_equivalent(atol=0, rtol=0)  # elements copied, never computed


def test_larger_pieces_stay_and_are_no_near_miss():
    result = apply("SlicesAsSplit", unbind(pieces=(2, 2)))
    assert not result.made and not result.misses


def test_sizes_computed_at_run_time_are_a_near_miss():
    result = apply("SlicesAsSplit", unbind(sizes="computed"))
    assert not result.made and result.miss().reason == "the split sizes are not constant"
