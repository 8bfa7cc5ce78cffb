"""engine.shapes.spans_batch_and_sequence: which values provably have the model's (batch, sequence)."""
import numpy as np
import onnx_graphsurgeon as gs
import pytest

from fusekit.engine.shapes import infer, spans_batch_and_sequence
from graphs.attention import folded_heads
from graphs.variants import Graph


def _graph():
    """ids [b1, s1] and types [b2, s2]: dimensions named apart, as tf2onnx declares them."""
    ids = gs.Variable("ids", np.int64, ["b1", "s1"])
    types = gs.Variable("types", np.int64, ["b2", "s2"])
    graph = gs.Graph(inputs=[ids, types], opset=17)
    shape = graph.layer(op="Shape", inputs=[ids], outputs=["shape"])[0]
    return graph, ids, types, shape


def _expand(graph, fill, shape, name):
    return graph.layer(op="Expand", inputs=[gs.Constant(f"{name}_fill", fill), shape], outputs=[name])[0]


def test_values_are_proven_against_the_given_ids():
    graph, ids, types, shape = _graph()
    doubled = graph.layer(op="Add", inputs=[ids, ids], outputs=["doubled"])[0]
    assert spans_batch_and_sequence(graph, doubled, ids=ids)
    assert not spans_batch_and_sequence(graph, doubled)  # the inputs' dimensions differ by name
    assert not spans_batch_and_sequence(graph, types, ids=ids)


def test_an_expanded_fill_value_takes_the_target_shape():
    graph, ids, _, shape = _graph()
    zeros = _expand(graph, np.array(0, np.int64), shape, "zeros")
    assert spans_batch_and_sequence(graph, zeros, ids=ids)
    # a fill of more axes than the target keeps its own leading ones: [1, 1, B, S]
    wide = _expand(graph, np.zeros((1, 1, 1, 1), np.int64), shape, "wide")
    assert not spans_batch_and_sequence(graph, wide, ids=ids)
    # a fill that is not all size 1 has a shape of its own
    rows = _expand(graph, np.zeros((2, 1), np.int64), shape, "rows")
    assert not spans_batch_and_sequence(graph, rows, ids=ids)


def test_a_reshape_from_more_axes_keeps_the_leading_ones():
    """[B, S] ids, viewed as [B, S, 1, 1] and back to [B, S]: the target names both dimensions."""
    graph, ids, _, shape = _graph()
    four = graph.layer(op="Unsqueeze", inputs=[ids, gs.Constant("axes", np.array([2, 3]))], outputs=["four"])[0]
    four.shape = ["b1", "s1", 1, 1]
    back = graph.layer(op="Reshape", inputs=[four, shape], outputs=["back"])[0]
    assert spans_batch_and_sequence(graph, back, ids=ids)


def _projection(graph, ids, width=8):
    """Embedded ids through a dense projection: [B, S, 4] → [B, S, width]."""
    table = gs.Constant("table", np.ones((16, 4), np.float32))
    hidden = graph.layer(op="Gather", inputs=[table, ids], outputs=["hidden"])[0]
    hidden.shape = ["b1", "s1", 4]
    dense = graph.layer(op="MatMul", inputs=[hidden, gs.Constant("W", np.ones((4, width), np.float32))],
                        outputs=["dense"])[0]
    dense.shape = ["b1", "s1", width]
    return dense


def _slice(graph, data, axes, name):
    bounds = [gs.Constant(f"{name}_starts", np.array([0])), gs.Constant(f"{name}_ends", np.array([2]))]
    if axes is not None:
        bounds.append(gs.Constant(f"{name}_axes", np.array([axes])))
    return graph.layer(op="Slice", inputs=[data, *bounds], outputs=[name])[0]


def test_a_split_or_slice_of_the_hidden_axis_keeps_batch_and_sequence():
    """GeGLU's projection chunked in two along the last axis (a Split, or two Slices)."""
    graph, ids, _, _ = _graph()
    dense = _projection(graph, ids)
    halves = graph.layer(op="Split", inputs=[dense], outputs=["input", "gate"], attrs={"axis": -1, "num_outputs": 2})
    assert all(spans_batch_and_sequence(graph, half, ids=ids) for half in halves)
    assert spans_batch_and_sequence(graph, _slice(graph, dense, -1, "last"), ids=ids)
    assert spans_batch_and_sequence(graph, _slice(graph, dense, 2, "third"), ids=ids)


def test_a_split_or_slice_that_may_cut_batch_or_sequence_does_not_prove():
    graph, ids, _, _ = _graph()
    dense = _projection(graph, ids)
    assert not spans_batch_and_sequence(graph, _slice(graph, dense, 1, "sequence"), ids=ids)
    assert not spans_batch_and_sequence(graph, _slice(graph, dense, None, "first"), ids=ids)  # axes default to 0
    rows = graph.layer(op="Split", inputs=[dense], outputs=["top", "bottom"], attrs={"num_outputs": 2})  # axis 0
    assert not any(spans_batch_and_sequence(graph, half, ids=ids) for half in rows)
    dense.shape = None  # the last axis of a value of unknown rank may be the sequence
    assert not spans_batch_and_sequence(graph, _slice(graph, dense, -1, "unranked"), ids=ids)


def test_a_product_keeps_batch_and_sequence_only_over_a_3d_input():
    """x·W contracts x's last axis: over [B, S, H] it keeps (B, S), over the 2-D [B, S] it
    contracts S away, and over a value of unknown rank nothing says which."""
    graph, ids, _, _ = _graph()
    dense = _projection(graph, ids)
    weight = gs.Constant("W_out", np.ones((dense.shape[-1], 3), np.float32))
    assert spans_batch_and_sequence(graph, graph.layer(op="MatMul", inputs=[dense, weight], outputs=["out"])[0], ids=ids)
    floats = graph.layer(op="Cast", inputs=[ids], outputs=["floats"], attrs={"to": 1})[0]
    floats.shape = ["b1", "s1"]
    rows = graph.layer(op="MatMul", inputs=[floats, gs.Constant("W_rows", np.ones((5, 3), np.float32))],
                       outputs=["rows"])[0]
    assert spans_batch_and_sequence(graph, floats, ids=ids) and not spans_batch_and_sequence(graph, rows, ids=ids)
    dense.shape = None
    unranked = graph.layer(op="MatMul", inputs=[dense, weight], outputs=["unranked"])[0]
    assert not spans_batch_and_sequence(graph, unranked, ids=ids)


def _heads_graph(**form):
    g = Graph("heads", 17)
    folded_heads(g, g.input("x", shape=["batch", "seq", 8]), out="y", **form)
    g.output("y", shape=None)
    graph = gs.import_onnx(infer(g.model()))
    return graph, graph.tensors()["y"]


def test_heads_folded_into_the_batch_and_unfolded_keep_batch_and_sequence():
    graph, y = _heads_graph()
    assert spans_batch_and_sequence(graph, y)


@pytest.mark.parametrize("build", [
    lambda: _heads_graph(unfold_heads=2),  # [4B, S, 2] read as [2B, 2, S, 2]: the batch doubled
    lambda: _heads_graph(cut_end=3),  # the sequence cut to 3 by the Slice: [B, min(S, 3), 8]
])
def test_heads_unfolded_other_than_they_were_folded_do_not_prove(build):
    graph, y = build()
    assert not spans_batch_and_sequence(graph, y)


def test_a_broadcast_keeps_batch_and_sequence_only_where_nothing_else_can_stretch_them():
    """With a batch or a sequence of 1, another operand larger on that axis would broadcast the
    result to its own size: only operands that are 1 there, too short to reach, or the same
    dimension leave the hidden states' (batch, sequence) in place."""
    graph, ids, _, shape = _graph()
    dense = _projection(graph, ids)

    def added(name, other):
        out = graph.layer(op="Add", inputs=[dense, other], outputs=[name])[0]
        out.shape = None  # as shape inference leaves a broadcast it cannot resolve
        return out

    assert spans_batch_and_sequence(graph, added("bias", gs.Constant("b", np.ones(8, np.float32))), ids=ids)
    assert spans_batch_and_sequence(graph, added("row", gs.Constant("r", np.ones((1, 1, 8), np.float32))), ids=ids)
    assert spans_batch_and_sequence(graph, added("self", _projection_again(graph, ids)), ids=ids)
    # [2, 1, 8] stretches a batch of 1 to 2; [1, 5, 8] a sequence of 1 to 5
    assert not spans_batch_and_sequence(graph, added("pair", gs.Constant("p", np.ones((2, 1, 8), np.float32))), ids=ids)
    assert not spans_batch_and_sequence(graph, added("five", gs.Constant("f", np.ones((1, 5, 8), np.float32))), ids=ids)
    # a spanning operand of lower rank is not the result's leading axes: [B, S] + [4, B, S] is [4, B, S]
    wide = gs.Variable("wide", np.float32, [4, "b1", "s1"])
    graph.inputs.append(wide)
    floats = graph.layer(op="Cast", inputs=[ids], outputs=["floats"], attrs={"to": 1})[0]
    floats.shape = ["b1", "s1"]
    low = graph.layer(op="Add", inputs=[floats, wide], outputs=["low"])[0]
    assert spans_batch_and_sequence(graph, floats, ids=ids)
    assert not spans_batch_and_sequence(graph, low, ids=ids)


def _projection_again(graph, ids):
    """A second [B, S, 8] value computed from the same ids."""
    hidden = graph.layer(op="Gather", inputs=[gs.Constant("table2", np.ones((16, 8), np.float32)), ids],
                         outputs=["hidden2"])[0]
    hidden.shape = ["b1", "s1", 8]
    return hidden


def test_a_dimension_onnx_names_after_the_inputs_is_theirs():
    """onnx's inference carries an input's named dimension only where it provably is that one;
    a name of its own ('unk__3') proves nothing."""
    graph, ids, _, _ = _graph()
    dense = _projection(graph, ids)
    graph.inputs = [ids]  # ids alone name the model's (batch, sequence)
    for name, dims, spans in (("named", ["b1", "s1", 8], True), ("unnamed", ["unk__3", "s1", 8], False)):
        other = graph.layer(op="Tile", inputs=[dense, gs.Constant(f"{name}_reps", np.array([1, 1, 1]))],
                            outputs=[f"{name}_tiled"])[0]
        other.shape = dims
        out = graph.layer(op="Add", inputs=[dense, other], outputs=[name])[0]
        assert spans_batch_and_sequence(graph, out) is spans, name


def test_a_position_term_sliced_to_the_sequence_cannot_stretch_it():
    """Rows [0, S) of a position-id buffer: no longer than the sequence, so wherever the Add runs at
    all it keeps (batch, sequence); a slice to a fixed 5 rows could stretch a sequence of 1."""
    graph, ids, _, shape = _graph()
    dense = _projection(graph, ids)
    graph.inputs = [ids]
    length = graph.layer(op="Gather", inputs=[shape, gs.Constant("one", np.array([1]))], outputs=["length"])[0]
    for name, end, spans in (("sliced", length, True), ("fixed", gs.Constant("five", np.array([5])), False)):
        rows = graph.layer(op="Slice", inputs=[gs.Constant(f"{name}_buffer", np.arange(16)[None, :]),
                                               gs.Constant(f"{name}_start", np.array([0])), end,
                                               gs.Constant(f"{name}_axes", np.array([1]))], outputs=[f"{name}_rows"])[0]
        rows.shape = ["unk__0", "unk__1"]
        term = graph.layer(op="Gather", inputs=[gs.Constant(f"{name}_table", np.ones((16, 8), np.float32)), rows],
                           outputs=[f"{name}_term"])[0]
        term.shape = ["unk__0", "unk__1", 8]
        out = graph.layer(op="Add", inputs=[dense, term], outputs=[name])[0]
        assert spans_batch_and_sequence(graph, out) is spans, name


def test_dynamic_quantization_keeps_the_integers_in_place():
    graph, ids, _, _ = _graph()
    dense = _projection(graph, ids)
    q, scale, zero = graph.layer(op="DynamicQuantizeLinear", inputs=[dense], outputs=["q", "q_scale", "q_zero"])
    q.shape, scale.shape, zero.shape = ["b1", "s1", 8], [], []
    assert spans_batch_and_sequence(graph, q, ids=ids)
    assert not spans_batch_and_sequence(graph, scale, ids=ids)
