"""Edits that plant a near miss in a real export: the explain and HTML report tests need a miss
in one named layer of a real model, which a small graph does not have."""
import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from conftest import TESTMODELS

CORPUS = TESTMODELS / "corpus"
LAYER0 = "/encoder/layer.0/attention/self/"


def load(name):
    return onnx.load(CORPUS / name)


def node(model, name):
    return next(n for n in model.graph.node if n.name == name)


def set_constant(model, value_name, array):
    producer = next(n for n in model.graph.node if value_name in n.output)
    producer.attribute[0].t.CopyFrom(numpy_helper.from_array(np.asarray(array), producer.attribute[0].t.name))


def helper_const(model, name, values):
    model.graph.initializer.append(numpy_helper.from_array(np.array(values, np.int64), name))
    return name


def toposorted(model):
    graph = gs.import_onnx(model)
    graph.toposort()
    out = gs.export_onnx(graph)
    out.ir_version = model.ir_version
    return out
