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


def sdpa_scale(opset=14):
    """Optimum's attention scale, computed from the head size at run time:
    y = x · Sqrt(Cast(1 / Sqrt(Cast(Shape(x)[-1:])))), x [batch, seq, 16]."""
    g, x = _io("scale", opset)
    size = g.op("Slice", g.op("Shape", x), g.const("start", [-1], np.int64), g.const("end", [2**62], np.int64))
    root = g.op("Sqrt", g.op("Cast", size, to=TensorProto.FLOAT))
    inverse = g.op("Cast", g.op("Div", g.const("one", 1.0), root), to=TensorProto.FLOAT)
    g.op("Mul", x, g.op("Sqrt", inverse), out="y")
    return g.model()


def head_split(opset=14):
    """A head-split reshape built from Shape(x): [B, S, heads, size] with heads = hidden / 4 read
    off the hidden size, then merged back: y = Reshape(Reshape(x, [B, S, 4, H/4]), Shape(x))."""
    g, x = _io("split", opset)
    shape = g.op("Shape", x)
    zero = g.const("zero", [0], np.int64)
    dims = [g.op("Unsqueeze", g.op("Gather", shape, g.const(f"i{i}", i, np.int64)), zero) for i in range(3)]
    size = g.op("Div", dims[2], g.const("heads", [4], np.int64))
    split = g.op("Reshape", x, g.op("Concat", dims[0], dims[1], g.const("four", [4], np.int64), size, axis=0))
    g.op("Reshape", split, shape, out="y")
    return g.model()


def epsilon_cast(opset=14):
    """A constant chain no Shape starts: y = x + Cast(ε); left as written."""
    g, x = _io("eps", opset)
    g.op("Add", x, g.op("Cast", g.const("eps", 1e-5, np.float64), to=TensorProto.FLOAT), out="y")
    return g.model()
