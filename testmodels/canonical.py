"""Small graphs in the spellings the canonicalization rules rewrite (patterns/canon_*.py),
each beside a near miss the rule must refuse. Built with ``variants.Graph``; every
builder returns an ``onnx.ModelProto`` with input ``x`` [batch, seq, 16] and output ``y``.
"""
import numpy as np
from onnx import TensorProto

from .variants import F32, KERAS_EPS, X_SHAPE, Graph, _gamma_beta, _io


def _keras_ln_tail(g, x, mean, var):
    """The rest of a tf2onnx LayerNorm, given its mean and variance."""
    gamma, beta = _gamma_beta()
    r = g.op("Reciprocal", g.op("Sqrt", g.op("Add", var, g.const("eps", KERAS_EPS))))
    s = g.op("Mul", r, g.const("gamma", gamma))
    g.op("Add", g.op("Mul", x, s), g.op("Sub", g.const("beta", beta), g.op("Mul", mean, s)), out="y")


def ln_global_average_pool(opset=13):
    """tf2onnx at opsets ≤ 17: both means of the LayerNorm as GlobalAveragePool."""
    g, x = _io("ln", opset)
    mean = g.op("GlobalAveragePool", x)
    d = g.op("Sub", x, mean)
    _keras_ln_tail(g, x, mean, g.op("GlobalAveragePool", g.op("Mul", d, d)))
    return g.model()


def global_average_pool_rank4(opset=13):
    """Near miss: on a rank-4 input GlobalAveragePool averages over two axes."""
    g = Graph("gap", opset)
    x = g.input("x", shape=["batch", "seq", 4, 4])
    g.output("y", shape=["batch", "seq", 1, 1])
    g.op("GlobalAveragePool", x, out="y")
    return g.model()


def global_average_pool_rank_unknown(opset=13):
    """Near miss: nothing says the input's rank."""
    g, x = _io("gap", opset)
    shaped = g.op("Reshape", x, g.input("shape", shape=["r"], elem=TensorProto.INT64))
    g.op("GlobalAveragePool", shaped, out="y")
    return g.model()


__all__ = ["F32", "X_SHAPE", "np"]
