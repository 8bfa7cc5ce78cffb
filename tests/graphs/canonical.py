"""Small graphs in the spellings the canonicalization rules rewrite (patterns/canonical/) and
the shape facts fold, each beside a near miss that must not fire. Built with
``variants.Graph``; each builder returns an ``onnx.ModelProto`` reading ``x`` [batch, seq, 16]
(most) and writing ``y``.
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


def tensordot(opset=13, unflatten_batch_from_x=True):
    """Keras Dense on a 3-D input as tf2onnx writes it: Reshape([-1, K]) → MatMul(W [K, 24]) →
    Reshape(Cast(Concat(Gather(Cast(Shape(x), int32), [0, 1]), [24]), int64)), then a bias and
    the residual's LayerNorm-free sum with x's own projection (so the flatten is shared)."""
    g, x = _io("dense", opset)
    g.outputs.clear()
    g.output("y", shape=["batch", "seq", 24])
    rng = np.random.RandomState(1)
    flat = g.op("Reshape", x, g.const("flat", [-1, 16], np.int64))
    source = x if unflatten_batch_from_x else g.input("other", shape=["batch", "seq", 16])
    shape = g.op("Cast", g.op("Shape", source), to=TensorProto.INT32)
    leading = g.op("Gather", shape, g.const("free", [0, 1], np.int32), axis=0)
    target = g.op("Cast", g.op("Concat", leading, g.const("n", [24], np.int32), axis=0), to=TensorProto.INT64)
    one = g.op("Reshape", g.op("MatMul", flat, g.const("w1", rng.randn(16, 24))), target)
    two = g.op("Reshape", g.op("MatMul", flat, g.const("w2", rng.randn(16, 24))), target)
    g.op("Add", one, two, out="y")
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


def negated_integer(opset=14):
    """Near miss: (−m)·g + b on integers, where the rule is not asked to hold."""
    g = Graph("neg", opset)
    m = g.input("m", shape=[4], elem=TensorProto.INT64)
    g.output("y", shape=[4], elem=TensorProto.INT64)
    g.op("Add", g.op("Mul", g.op("Neg", m), g.const("g", [2, 3, 4, 5], np.int64)), g.const("b", [1, 1, 1, 1], np.int64),
         out="y")
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


def einsum_dense(opset=13, unflatten_from_x=True):
    """Keras EinsumDense into 2 heads of 4, as tf2onnx decomposes it: Unsqueeze(axes [2, 3]) →
    Reshape([-1, 16]) → Gemm(W [8, 16], transB=1) → Reshape([dim0, dim1 of the Unsqueeze, 2, 4, 1])
    → Squeeze([4]) → Add(bias [2, 4]); y [batch, seq, 2, 4]."""
    g, x = _io("einsum", opset)
    g.outputs.clear()
    g.output("y", shape=["batch", "seq", 2, 4])
    rng = np.random.RandomState(2)
    raised = g.op("Unsqueeze", x, g.const("axes", [2, 3], np.int64))
    flat = g.op("Reshape", raised, g.const("flat", [-1, 16], np.int64))
    product = g.op("Gemm", flat, g.const("w", rng.randn(8, 16)), transB=1, alpha=1.0, beta=0.0)
    source = raised if unflatten_from_x else g.op("Unsqueeze", g.input("other", shape=["batch", "seq", 16]),
                                                   g.const("axes", [2, 3], np.int64))
    leading = g.op("Gather", g.op("Shape", source), g.const("free", [0, 1], np.int64))
    target = g.op("Concat", leading, g.const("heads", [2, 4], np.int64), g.const("one", [1], np.int64), axis=0)
    heads = g.op("Squeeze", g.op("Reshape", product, target), g.const("last", [4], np.int64))
    g.op("Add", heads, g.const("bias", rng.randn(2, 4)), out="y")
    return g.model()


def einsum_projection(opset=13, equation="abcd,cde->abe"):
    """Keras attention's output projection as tf2onnx leaves it at opset 13: the merged heads
    x [batch, seq, 2, 4] → Einsum("abcd,cde->abe", W [2, 4, 16]) → y [batch, seq, 16]. With
    ``equation="abcd,dce->abe"`` (W's head and size axes swapped) it is a near miss's shape."""
    g = Graph("einsum_projection", opset)
    x = g.input("x", shape=["batch", "seq", 2, 4])
    g.output("y", shape=["batch", "seq", 16])
    weight = np.random.RandomState(3).randn(*((2, 4, 16) if equation.startswith("abcd,c") else (4, 2, 16)))
    g.op("Einsum", x, g.const("w", weight), equation=equation, out="y")
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


def head_merge(opset=13, perm=(0, 3, 1, 2, 4)):
    """Keras attention's output projection as tf2onnx decomposes it: the context c [batch, 2, seq, 4]
    → Unsqueeze([1]) → Transpose(perm) → Reshape([-1, 2·4]) → Gemm(Reshape(W, [-1, 8]), transB=1)
    → Reshape(Shape(·)[0, 1] ++ [16, 1, 1]) → Squeeze([3, 4]); y [batch, seq, 16]. Another
    ``perm`` flattens the heads in another order: a near miss."""
    g = Graph("merge", opset)
    x = g.input("x", shape=["batch", 2, "seq", 4])
    g.output("y", shape=["batch", "seq", 16])
    spread = g.op("Transpose", g.op("Unsqueeze", x, g.const("one", [1], np.int64)), perm=list(perm))
    flat = g.op("Concat", g.const("minus_one", [-1], np.int64),
                g.op("ReduceProd", _dims(g, spread, [3, 4]), keepdims=1), axis=0)
    weight = g.op("Reshape", g.const("w", np.random.RandomState(4).randn(1, 1, 16, 2, 4)),
                  g.const("w_shape", [-1, 8], np.int64))
    product = g.op("Gemm", g.op("Reshape", spread, flat), weight, transB=1, alpha=1.0, beta=0.0)
    target = g.op("Concat", _dims(g, spread, [0, 1]), g.const("width", [16, 1, 1], np.int64), axis=0)
    g.op("Squeeze", g.op("Reshape", product, target), g.const("units", [3, 4], np.int64), out="y")
    return g.model()


def unit_axis_elsewhere(opset=13):
    """Near miss: Unsqueeze([0]) then Squeeze([3]) removes x's own size-1 axis, not the inserted one;
    x [batch, seq, 1, 4] → y [1, batch, seq, 4]."""
    g = Graph("unit", opset)
    x = g.input("x", shape=["batch", "seq", 1, 4])
    g.output("y", shape=[1, "batch", "seq", 4])
    raised = g.op("Transpose", g.op("Unsqueeze", x, g.const("zero", [0], np.int64)), perm=[0, 1, 2, 3, 4])
    g.op("Squeeze", raised, g.const("three", [3], np.int64), out="y")
    return g.model()


def transpose_pair(opset=13, second=(0, 1, 3, 2)):
    """x [batch, seq, 2, 4] → Transpose(0, 2, 1, 3) → Transpose(second) → y. With ``second``
    (0, 2, 1, 3) the pair is the identity and its output the graph output: a near miss."""
    g = Graph("pair", opset)
    x = g.input("x", shape=["batch", "seq", 2, 4])
    g.output("y", shape=None)
    g.op("Transpose", g.op("Transpose", x, perm=[0, 2, 1, 3]), perm=list(second), out="y")
    return g.model()


def transposed_scores(opset=13, axis=2):
    """Scores computed transposed, as tf_keras' MultiHeadAttention through tf2onnx: x [batch, seq, 2, 4],
    s = Transpose(x, 0,2,1,3) · Transpose(x, 0,2,3,1) + bias [batch, 1, seq, 1], Softmax(axis),
    Transpose(0, 1, 3, 2); y [batch, 2, seq, seq]. With ``axis=3`` it normalizes over the
    queries, not the keys: a near miss."""
    g = Graph("transposed", opset)
    x = g.input("x", shape=["batch", "seq", 2, 4])
    bias = g.input("bias", shape=["batch", 1, "seq", 1])
    g.output("y", shape=["batch", 2, "seq", "seq"])
    scores = g.op("MatMul", g.op("Transpose", x, perm=[0, 2, 1, 3]), g.op("Transpose", x, perm=[0, 2, 3, 1]))
    g.op("Transpose", g.op("Softmax", g.op("Add", scores, bias), axis=axis), perm=[0, 1, 3, 2], out="y")
    return g.model()


def wrapped_lookup(form="tf2onnx", wrap=10, sign=TensorProto.FLOAT, opset=13):
    """A lookup in a [10, 16] table that wraps negative int32 ids first, as Keras 3 does:
    y = table[ids < 0 ? ids + wrap : ids], the select as tf2onnx writes it on integers
    (c·(ids + wrap) + (1 − c)·ids) or as ``Where``; the sign tested on ids cast to ``sign``.
    ``wrap`` other than 10, or an integer ``sign``, make near misses."""
    g = Graph("wrap", opset)
    ids = g.input("ids", shape=["batch", "seq"], elem=TensorProto.INT32)
    g.output("y", shape=["batch", "seq", 16])
    table = g.const("table", np.random.default_rng(3).standard_normal((10, 16)))
    negative = g.op("Less", g.op("Cast", ids, to=sign), g.const("zero", 0, _np_type(sign)))
    wrapped = g.op("Add", ids, g.const("n", wrap, np.int32))
    if form == "where":
        chosen = g.op("Where", negative, wrapped, ids)
    else:
        chosen = g.op("Add", g.op("Mul", g.op("Cast", negative, to=TensorProto.INT32), wrapped),
                      g.op("Mul", ids, g.op("Cast", g.op("Not", negative), to=TensorProto.INT32)))
    g.op("Gather", table, chosen, axis=0, out="y")
    return g.model()


def _np_type(elem):
    from onnx import helper
    return helper.tensor_dtype_to_np_dtype(elem)
