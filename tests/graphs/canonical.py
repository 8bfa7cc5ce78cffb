"""Small graphs that more than one test file reads: exporter spellings the canonicalization rules
rewrite before a fusion takes them (tests/test_canonical.py, and each rule's own test in
tests/canonical/) and the ones the shape facts fold (tests/test_shape_facts.py). A graph only one
rule's test reads lives in that test's file.
Built with ``variants.Graph``; each builder returns an ``onnx.ModelProto`` reading ``x``
[batch, seq, 16] (most) and writing ``y``.
"""
import numpy as np
from onnx import TensorProto

from .variants import KERAS_EPS, Graph, _gamma_beta, _io


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


def global_average_pool_rank_unknown(opset=13):
    """Near miss: nothing says the input's rank."""
    g, x = _io("gap", opset)
    shaped = g.op("Reshape", x, g.input("shape", shape=["r"], elem=TensorProto.INT64))
    g.op("GlobalAveragePool", shaped, out="y")
    return g.model()




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


def ln_keras3(opset=18):
    """Keras 3 / keras-hub LayerNorm: y = x·g + (−mean·g + β), γ and β stored as [1, 1, H]."""
    g, x = _io("ln", opset)
    gamma, beta = _gamma_beta()
    mean = g.mean(x)
    d = g.op("Sub", x, mean)
    var = g.mean(g.op("Mul", d, d))
    r = g.op("Reciprocal", g.op("Sqrt", g.op("Add", var, g.const("eps", KERAS_EPS))))
    s = g.op("Mul", r, g.const("gamma", gamma.reshape(1, 1, -1)))
    shift = g.op("Add", g.op("Mul", g.op("Neg", mean), s), g.const("beta", beta.reshape(1, 1, -1)))
    g.op("Add", g.op("Mul", x, s), shift, out="y")
    return g.model()


def noop_casts(opset=14):
    """Casts that change nothing, inside an erf GELU: x → Cast(float) → GELU → Cast(float) → y,
    beside a Cast to float16 that does change the type (kept)."""
    g, x = _io("gelu", opset)
    g.outputs.clear()
    g.output("y")
    g.output("half", elem=TensorProto.FLOAT16)
    v = g.op("Cast", x, to=TensorProto.FLOAT)
    erf = g.op("Erf", g.op("Div", v, g.const("sqrt2", 1.4142135)))
    gelu = g.op("Mul", g.op("Mul", v, g.const("half", 0.5)), g.op("Add", erf, g.const("one", 1.0)))
    g.op("Cast", gelu, to=TensorProto.FLOAT, out="y")
    g.op("Cast", x, to=TensorProto.FLOAT16, out="half")
    return g.model()


def _dims(g, value, axes):
    return g.op("Gather", g.op("Shape", value), g.const(f"axes{axes}", axes, np.int64))


def static(model, **sizes):
    """``model`` with its named input and output dimensions fixed (``batch=2, seq=5``)."""
    for value in [*model.graph.input, *model.graph.output]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in sizes:
                dim.dim_value = sizes[dim.dim_param]
    return model


def batched_matmul(opset=13, proven=True):
    """Attention scores as tf2onnx decomposes Keras' einsum ``aecd,abcd->acbe`` (here x·xᵀ per
    head): x [batch, seq, 2, 4] brought to [B, 2, S, 1, 4] and [B, 2, 1, S, 4], each flattened
    to [B·2, -1, 4], a 3-D MatMul, unflattened to [B, 2, S, S, 1] and squeezed; y [batch, 2, seq, seq].
    With ``proven=False`` the unflatten reads S off the left operand where the right one's
    belongs (equal here, but not what the rule can prove)."""
    g = Graph("batched", opset)
    x = g.input("x", shape=["batch", "seq", 2, 4])
    g.output("y", shape=["batch", 2, "seq", "seq"])

    def axes(values):
        return g.const(f"a{values}", values, np.int64)
    left = g.op("Transpose", g.op("Unsqueeze", x, axes([3])), perm=[0, 2, 1, 3, 4])
    right = g.op("Transpose", g.op("Unsqueeze", x, axes([1])), perm=[0, 3, 1, 2, 4])

    def flatten(value):
        shape = g.op("Concat", g.op("ReduceProd", _dims(g, value, [0, 1]), keepdims=1), axes([-1]),
                     _dims(g, value, [4]), axis=0)
        return g.op("Reshape", value, shape)
    product = g.op("MatMul", flatten(left), g.op("Transpose", flatten(right), perm=[0, 2, 1]))
    batch = g.op("Max", _dims(g, left, [0, 1]), _dims(g, right, [0, 1]))
    target = g.op("Concat", batch, _dims(g, left, [2]), _dims(g, right if proven else left, [3] if proven else [2]),
                  axes([1]), axis=0)
    g.op("Squeeze", g.op("Reshape", product, target), axes([4]), out="y")
    return g.model()
