"""engine.shapes.entries: a shape vector read in symbolic terms, compared once with the vector a check expects."""
import numpy as np
import onnx_graphsurgeon as gs

from fusekit.engine.shapes import DimOf, Maximum, Product, dim, entries, maximum, product


def _graph():
    """x [b, s, 16] and y [b, s, 4]: dimensions known only at run time, and one static each."""
    x = gs.Variable("x", np.float32, ["b", "s", 16])
    y = gs.Variable("y", np.float32, ["b", "s", 4])
    return gs.Graph(inputs=[x, y], opset=13), x, y


def _op(graph, op, inputs, **attrs):
    (out,) = graph.layer(op=op, inputs=inputs, outputs=[f"{op}_{len(graph.nodes)}"], attrs=attrs)
    return out


def _dims(graph, tensor, axes):
    """``Shape(tensor)[axes]``, as exporters read dimensions."""
    return _op(graph, "Gather", [_op(graph, "Shape", [tensor]), np.array(axes, np.int64)])


def test_a_concat_of_shape_pieces_and_constants_reads_as_the_dimensions_it_names():
    graph, x, _ = _graph()
    scalar = _op(graph, "Gather", [_op(graph, "Shape", [x]), np.array(0, np.int64)])
    target = _op(graph, "Concat", [_op(graph, "Unsqueeze", [scalar], axes=[0]), _dims(graph, x, [1]),
                                   np.array([-1, 4], np.int64)], axis=0)
    assert entries(target) == [dim(x, 0), dim(x, 1), -1, 4] == [DimOf(x, 0), DimOf(x, 1), -1, 4]
    assert entries(_op(graph, "Shape", [x], start=1)) == [dim(x, 1), 16]  # a static size reads as the int
    assert dim(x, 2) == 16


def test_products_read_the_same_whichever_op_and_order_computes_them():
    graph, x, _ = _graph()
    batch_by_sequence = product(dim(x, 0), dim(x, 1))
    assert isinstance(batch_by_sequence, Product)
    reduced = _op(graph, "ReduceProd", [_dims(graph, x, [0, 1])], keepdims=1)
    multiplied = _op(graph, "Mul", [_dims(graph, x, [1]), _dims(graph, x, [0])])
    assert entries(reduced) == entries(multiplied) == [batch_by_sequence] == [product(dim(x, 1), dim(x, 0))]
    # a static factor multiplies in; all static is an int
    assert entries(_op(graph, "ReduceProd", [_dims(graph, x, [2, 0])], keepdims=1)) == [product(16, dim(x, 0))]
    assert entries(_op(graph, "ReduceProd", [_dims(graph, x, [2, 2])], keepdims=1)) == [256]


def test_a_max_of_two_shapes_reads_as_their_broadcast():
    graph, x, y = _graph()
    batch = _op(graph, "Max", [_dims(graph, x, [0, 2]), _dims(graph, y, [0, 2])])
    found = entries(batch)
    assert found == [maximum(dim(y, 0), dim(x, 0)), 16]  # in any order; 16 and 4 are known
    assert isinstance(found[0], Maximum) and maximum(dim(x, 0), dim(x, 0)) == dim(x, 0)


def test_near_misses_do_not_read_as_the_expected_vector():
    graph, x, y = _graph()
    expected = [product(dim(x, 0), dim(x, 1)), -1, dim(x, 2)]
    # the same names on another tensor are not the same dimensions (tf2onnx names each input's apart)
    other = _op(graph, "Concat", [_op(graph, "ReduceProd", [_dims(graph, y, [0, 1])], keepdims=1),
                                  np.array([-1], np.int64), _dims(graph, x, [2])], axis=0)
    assert entries(other) is not None and entries(other) != expected
    # the product of other axes
    axes = _op(graph, "Concat", [_op(graph, "ReduceProd", [_dims(graph, x, [0, 2])], keepdims=1),
                                 np.array([-1], np.int64), _dims(graph, x, [2])], axis=0)
    assert entries(axes) != expected
    # a product that keeps no axis is a scalar, not a shape vector
    assert entries(_op(graph, "ReduceProd", [_dims(graph, x, [0, 1])], keepdims=0)) is None
    # at opset 18, no axes and noop_with_empty_axes reduce nothing
    assert entries(_op(graph, "ReduceProd", [_dims(graph, x, [0, 1])], keepdims=1, noop_with_empty_axes=1)) is None


def test_the_integer_evaluators_say_nothing_they_cannot_say_exactly():
    graph, x, _ = _graph()
    assert entries(_op(graph, "Div", [_dims(graph, x, [2]), np.array([4], np.int64)])) == [4]  # the head size
    # ONNX truncates a negative quotient where numpy floors: left unread
    assert entries(_op(graph, "Div", [np.array([-7], np.int64), np.array([2], np.int64)])) is None
    # a slice of a shape, and a cast between integer types, keep run-time entries as they are
    sliced = _op(graph, "Slice", [_op(graph, "Shape", [x]), np.array([1], np.int64), np.array([3], np.int64)])
    assert entries(_op(graph, "Cast", [sliced], to=6)) == [dim(x, 1), 16]  # to int32
    # a sum of a run-time dimension is not a product
    assert entries(_op(graph, "Add", [_dims(graph, x, [0]), np.array([1], np.int64)])) is None
