"""Static shape facts: values a Shape starts and the static dimensions fix become constants."""
import numpy as np
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
