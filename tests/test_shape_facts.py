"""Static shape facts: values a Shape starts and the static dimensions fix become constants."""
import sys

import numpy as np
import onnx_graphsurgeon as gs
import pytest
from onnx import numpy_helper

import fusekit
from conftest import fuse_only, ops
from fusekit.engine import shapes
from fusekit.modelio import skeleton
from graphs import canonical as C


def constants(model):
    return {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node if n.op_type == "Constant"}


def test_sdpa_scale_folds_to_the_constant_it_is():
    fused, report = fuse_only(C.sdpa_scale())
    assert ops(fused) == {"Constant", "Mul"}
    (value,) = constants(fused).values()
    assert value == np.sqrt(np.float32(1) / np.sqrt(np.float32(16)))  # the float32 ops, exactly
    (record,) = report.rewrites
    assert not report.fused and record.canonical and record.rules == ["ShapeFact"]
    assert sorted(op for _, op in record.replaced) == ["Cast", "Cast", "Div", "Shape", "Slice", "Sqrt", "Sqrt"]
    assert fusekit.verify(C.sdpa_scale(), fused).ok


def test_head_size_folds_but_batch_and_sequence_stay_dynamic():
    fused, report = fuse_only(C.head_split())
    folded = constants(fused)
    assert [list(v) for v in folded.values()] == [[4]]  # 16 / 4, read off the hidden size
    assert "Shape" in ops(fused)  # batch and sequence are read at run time
    assert fusekit.verify(C.head_split(), fused).ok


def test_constant_chain_without_shape_is_left_as_written():
    fused, report = fuse_only(C.epsilon_cast())
    assert ops(fused) == {"Cast", "Add"} and not report.rewrites


def test_symbolic_inference_fills_ranks_onnx_leaves_unknown():
    model = C.global_average_pool_rank_unknown()  # a Reshape to a target of unknown length
    inferred = shapes.infer(skeleton(model))
    assert inferred.graph.node  # no error, and nothing it cannot know is made up
    known = {v.name for v in inferred.graph.value_info if v.type.tensor_type.HasField("shape")}
    assert "gap/Reshape_0_output_0" not in known


def head_size_after_a_minus_one():
    """x [batch, seq, 16] → Reshape([dim0, dim1, 4, -1]) → Transpose → Reshape([-1, dim1, dim3]); the scale
    DeBERTa's TorchScript export computes, Sqrt(Cast(Shape(·)[-1]) · 3), multiplies y. onnx leaves the -1 a
    symbol of its own (it does not cancel batch and seq), so only the sizes proven through the reshapes fold it."""
    from graphs.variants import Graph
    g = Graph("minus_one", 17)
    x = g.input("x", ["batch", "seq", 16])
    g.output("y", ["batch", "seq", 16])
    shape = g.op("Shape", x)
    dims = [g.op("Gather", shape, g.const(f"i{i}", [i], np.int64), axis=0) for i in (0, 1)]
    split = g.op("Reshape", x, g.op("Concat", *dims, g.const("heads", [4, -1], np.int64), axis=0))
    heads = g.op("Transpose", split, perm=[0, 2, 1, 3])
    inner = g.op("Shape", split)
    size = g.op("Slice", inner, g.const("last", [-1], np.int64), g.const("end", [2**62], np.int64))
    flat = g.op("Reshape", heads, g.op("Concat", g.const("minus", [-1], np.int64), dims[1], size, axis=0))
    last = g.op("Slice", g.op("Shape", flat), g.const("last", [-1], np.int64), g.const("end", [2**62], np.int64))
    scale = g.op("Sqrt", g.op("Mul", g.op("Cast", last, to=1), g.const("three", [3.0])))
    back = g.op("Reshape", g.op("Transpose", g.op("Reshape", flat, g.op("Concat", dims[0], g.const("four", [4], np.int64),
                                                                        dims[1], size, axis=0)), perm=[0, 2, 1, 3]),
                g.op("Concat", *dims, g.const("width", [16], np.int64), axis=0))
    g.op("Div", back, scale, out="y")
    return g.model()


def test_a_head_size_behind_a_minus_one_folds_through_the_reshapes():
    fused, report = fuse_only(head_size_after_a_minus_one())
    assert "Sqrt" not in ops(fused)
    assert any(np.allclose(v, np.sqrt(np.float32(12))) for v in constants(fused).values())  # √(3·4), as float32
    assert fusekit.verify(head_size_after_a_minus_one(), fused).ok


def test_values_without_a_shape_get_the_ones_inference_finds_on_the_rewritten_graph():
    """A QOperator model's values after its com.microsoft ops have no shape (INC's BERT: every
    LayerNorm's input, so γ cannot be checked against the width); once QDQAsQOperator has written
    them as standard ops, ``fill_shapes`` gives them what onnx's inference finds, and nothing else."""
    import onnx_graphsurgeon as gs
    from fusekit.graphio import fill_shapes
    from graphs.int8_blocks import qoperator
    from one_rule import apply
    graph = gs.import_onnx(apply("QDQAsQOperator", qoperator("add")).model)
    lost = [t for t in graph.tensors().values() if isinstance(t, gs.Variable) and t not in graph.inputs
            and t not in graph.outputs]
    assert lost
    for t in lost:
        t.shape = None
    stated = lost[0].outputs[0].outputs[0]  # a value a rewrite gave a shape keeps it
    stated.shape = ["stated", "by", 16]
    fill_shapes(graph)
    assert all(t.shape is not None and t.shape[-1] == 16 for t in lost)
    assert stated.shape == ["stated", "by", 16]
def _residual_chain(layers: int):
    """ids [B, S] → embedding [B, S, 8] → ``layers`` bias Adds: a value as deep as a large model's."""
    ids = gs.Variable("ids", np.int64, ["batch", "sequence"])
    h = gs.Variable("h0", np.float32, ["batch", "sequence", 8])
    nodes = [gs.Node("Gather", inputs=[gs.Constant("table", np.ones((10, 8), np.float32)), ids], outputs=[h])]
    for i in range(layers):
        out = gs.Variable(f"h{i + 1}", np.float32, ["batch", "sequence", 8])
        nodes.append(gs.Node("Add", inputs=[h, gs.Constant(f"b{i}", np.ones(8, np.float32))], outputs=[out]))
        h = out
    return gs.Graph(nodes=nodes, inputs=[ids], outputs=[h]), h


def test_facts_follow_a_value_back_through_every_layer_of_a_deep_model():
    graph, last = _residual_chain(1000)  # DeBERTa-v3-base's 12 layers went past the default depth
    with pytest.raises(RecursionError):
        shapes.spans_batch_and_sequence(graph, last)
    with shapes.deep_walks():
        assert shapes.spans_batch_and_sequence(graph, last)
    assert sys.getrecursionlimit() < shapes.WALK_DEPTH  # restored after the block
