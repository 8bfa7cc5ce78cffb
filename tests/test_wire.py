"""fusekit.wire: a model written one weight at a time reads back as the model, whatever its weights hold."""
from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fusekit.wire import read_model, write_model


def _model(*weights: TensorProto) -> onnx.ModelProto:
    nodes = [helper.make_node("Identity", [w.name], [f"y{i}"]) for i, w in enumerate(weights)]
    outputs = [helper.make_tensor_value_info(f"y{i}", w.data_type, None) for i, w in enumerate(weights)]
    graph = helper.make_graph(nodes, "g", [], outputs, initializer=list(weights))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, {"after": "the graph"})  # a field numbered after the graph
    return model


def _short(name: str) -> TensorProto:
    """A float tensor whose raw_data is one value short of its shape: a size read off the shape is wrong."""
    t = numpy_helper.from_array(np.arange(300, dtype=np.float32).reshape(30, 10), name)
    t.raw_data = t.raw_data[:-4]
    return t


def _packed_int4(name: str) -> TensorProto:
    """Two int4 values a byte: fewer bytes than elements."""
    t = TensorProto(name=name, data_type=TensorProto.INT4, dims=[4096])
    t.raw_data = bytes(range(256)) * 8
    return t


WEIGHTS = {
    "float32": lambda: [numpy_helper.from_array(np.random.default_rng(0).random((64, 48), np.float32), "w")],
    "typed fields": lambda: [helper.make_tensor("w", TensorProto.FLOAT, [3000], np.ones(3000).tolist())],
    "empty": lambda: [numpy_helper.from_array(np.zeros((0, 8), np.float32), "w")],
    "doc and metadata": lambda: [_documented(numpy_helper.from_array(np.ones(2000, np.int64), "w"))],
    "raw_data short of the shape": lambda: [numpy_helper.from_array(np.ones(5, np.float32), "a"), _short("w")],
    "packed int4": lambda: [_packed_int4("w"), numpy_helper.from_array(np.ones(7, np.float16), "b")],
}


def _documented(t: TensorProto) -> TensorProto:
    t.doc_string = "a weight"
    t.metadata_props.add(key="k", value="v")
    return t


@pytest.mark.parametrize("kind", list(WEIGHTS))
def test_written_model_reads_back_as_itself(kind):
    model = _model(*WEIGHTS[kind]())
    f = io.BytesIO()
    write_model(model, f)
    parsed = onnx.ModelProto.FromString(f.getvalue())  # protobuf's own reader: the length prefixes hold
    assert parsed == model
    f.seek(0)
    read, raw_lengths = read_model(f, len(f.getvalue()))
    assert read == model
    assert raw_lengths == [len(t.raw_data) if t.HasField("raw_data") else None for t in model.graph.initializer]
