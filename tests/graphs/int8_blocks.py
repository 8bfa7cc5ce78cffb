"""Single INT8 dense blocks, written the way ONNX Runtime's quantizer and QAT exports
write them: the inputs of the QuantizedLinear tests, variants and near misses.

``block(...)`` returns a model with a float input ``x`` [batch, seq, 16] and output
``y``: x → Q → DQ → MatMul(DQ(W_q)) → [Q→DQ] → Add(b) → [GELU] → [Q → DQ] → y.
"""
import numpy as np
from onnx import TensorProto, helper

from .variants import HIDDEN, SQRT2, Graph, _gelu_erf

N = 24  # output columns
GELUS = (True, False, "ms", "onnx", "tanh")


def _gelu_all_quantized(g, y, pair):
    """The erf GELU as ONNX Runtime's quantizer writes it when every op type is quantized:
    each constant and each inner op's output through its own Q→DQ pair (the last op's is the
    block's output pair)."""
    def const(name, value):  # a constant's pair has a step of its own, fine enough to keep it
        scale, zero = g.const(f"{name}_scale", value / 255), g.const(f"{name}_zero_point", 0, np.uint8)
        return g.op("DequantizeLinear", g.op("QuantizeLinear", g.const(name, value), scale, zero), scale, zero)
    erf = pair(g.op("Erf", pair(g.op("Div", y, const("sqrt2", SQRT2)))))
    gated = pair(g.op("Mul", y, pair(g.op("Add", erf, const("one", 1.0)))))
    return g.op("Mul", gated, const("half", 0.5))


def _per_column(scale, columns):
    """A per-tensor quantization's scale and zero point repeated once per column (axis -1)."""
    return np.full(columns, scale, np.float32), np.full(columns, 128, np.uint8)


def block(gelu=True, requantize=True, quantize_output=True, weight_axis=None, bias_shape=(N,),
          inner_output=False, x_dtype=np.uint8, fake_weight=False, name="block", opset=14, seed=0,
          transposed=None, quantized_bias=False, all_ops=False, x_per_channel=False, y_per_channel=False):
    """``weight_axis``: None per tensor, 1 per output column, 0 per row (along K).
    ``gelu``: True the decomposed erf GELU, "ms" com.microsoft Gelu, "onnx" Gelu-20 (opset 20),
    "tanh" Gelu-20's tanh approximation, False none. ``transposed``: the weight stored [out, in]
    and transposed before the MatMul (by default only a QAT ``fake_weight`` is).
    ``quantized_bias``: the bias an int32 constant through a DequantizeLinear. ``all_ops``: a
    requantization pair on every op and constant of the GELU too. Near misses:
    ``x_per_channel`` / ``y_per_channel`` quantize the input / output per channel."""
    rng = np.random.default_rng(seed)
    transposed = fake_weight if transposed is None else transposed
    g = Graph(name, opset)
    g.output("y", shape=["batch", "seq", N])
    x = g.input("x")
    x_zero = 128 if x_dtype == np.uint8 else 0
    if x_per_channel:
        scales, zeros = _per_column(0.03, HIDDEN)
        xs, xz = g.const("x_scale", scales), g.const("x_zero_point", zeros, np.uint8)
        xq = g.op("DequantizeLinear", g.op("QuantizeLinear", x, xs, xz, axis=-1), xs, xz, axis=-1)
    else:
        xs, xz = g.const("x_scale", 0.03), g.const("x_zero_point", x_zero, x_dtype)
        xq = g.op("DequantizeLinear", g.op("QuantizeLinear", x, xs, xz), xs, xz)
    w = rng.standard_normal((HIDDEN, N)).astype(np.float32) * 0.3
    if weight_axis is None:
        scale = np.float32(np.abs(w).max() / 127)
    else:
        scale = (np.abs(w).max(axis=1 - weight_axis) / 127).astype(np.float32)
    ws, wz = g.const("w_scale", scale), g.const("w_zero_point", np.zeros(np.shape(scale), np.int8), np.int8)
    # a weight stored [out, in] is quantized along the other axis
    stored_axis = weight_axis if not transposed or weight_axis is None else 1 - weight_axis
    axis = {} if stored_axis is None else {"axis": stored_axis}
    stored = w.T if transposed else w
    if fake_weight:  # QAT: the float weight through its own pair
        weight = g.op("DequantizeLinear", g.op("QuantizeLinear", g.const("w", stored), ws, wz, **axis), ws, wz, **axis)
    else:
        b = scale if weight_axis is None else np.expand_dims(scale, 1 - weight_axis)
        w_q = np.clip(np.round(w / b), -127, 127).astype(np.int8)
        weight = g.op("DequantizeLinear", g.const("w_q", w_q.T if transposed else w_q, np.int8), ws, wz, **axis)
    if transposed:
        weight = g.op("Transpose", weight, perm=[1, 0])
    y = g.op("MatMul", xq, weight)
    if inner_output:  # the MatMul's value is also a graph output: the block must not fuse
        g.outputs.append(helper.make_tensor_value_info(y, TensorProto.FLOAT, ["batch", "seq", N]))

    def pair(t):
        ms, mz = g.const("mm_scale", 0.05), g.const("mm_zero_point", 128, np.uint8)
        return g.op("DequantizeLinear", g.op("QuantizeLinear", t, ms, mz), ms, mz)
    if requantize:
        y = pair(y)
    bias = rng.standard_normal(bias_shape) * 0.1
    if quantized_bias:  # int32 in steps of x_scale · w_scale, as the quantizer stores it
        bias_scale = np.float32(0.03 * np.max(scale))
        b_q = g.const("bias_q", np.round(bias / bias_scale), np.int32)
        y = g.op("Add", y, g.op("DequantizeLinear", b_q, g.const("bias_scale", bias_scale)))
    else:
        y = g.op("Add", y, g.const("bias", bias))
    if all_ops:
        y = _gelu_all_quantized(g, pair(y), pair)
    elif gelu is True:
        y = _gelu_erf(g, y, out=None)
    elif gelu:
        y = g.op("Gelu", y, domain="com.microsoft") if gelu == "ms" else \
            g.op("Gelu", y, approximate="tanh" if gelu == "tanh" else "none")
    if quantize_output:
        if y_per_channel:
            scales, zeros = _per_column(0.02, N)
            ys, yz = g.const("y_scale", scales), g.const("y_zero_point", zeros, np.uint8)
            y = g.op("DequantizeLinear", g.op("QuantizeLinear", y, ys, yz, axis=-1), ys, yz, axis=-1)
        else:
            ys, yz = g.const("y_scale", 0.02), g.const("y_zero_point", 128, np.uint8)
            y = g.op("DequantizeLinear", g.op("QuantizeLinear", y, ys, yz), ys, yz)
    g.op("Identity", y, out="y")
    model = g.model()
    if gelu == "ms":
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model


# --------------------------------------------------------------------------- QOperator (quantize_static, QOperator)

MS = "com.microsoft"


def qoperator(kind="matmul", weight_axis=None, float_output=False, scale_input=None, a_per_row=False,
              softmax_axis=-1, opset=14, seed=0):
    """One QOperator op between a QuantizeLinear of ``x`` and a DequantizeLinear to ``y``, as
    ``quantize_static(quant_format=QOperator)`` writes it. ``kind``: "matmul" (QLinearMatMul by an
    int8 [16, 24] weight, per tensor or per column with ``weight_axis=1``), "add" / "mul" (QLinearAdd /
    QLinearMul by a uint8 vector, as the quantizer stores a bias or γ), "softmax" (QLinearSoftmax),
    "gemm" (QGemm by an int8 [24, 16] weight, transB, with an int32 bias; ``float_output``: no y
    scale, a float result), "sigmoid", "leaky_relu" (QLinearSigmoid, QLinearLeakyRelu), "concat"
    (QLinearConcat of x quantized on two grids). Near misses: ``scale_input`` names a parameter ("b_scale", "y_zero_point")
    given as a graph input instead of a constant; ``a_per_row`` quantizes A per row."""
    rng = np.random.default_rng(seed)
    g = Graph(f"qop_{kind}", opset)
    shape = ["batch", HIDDEN] if kind == "gemm" else ["batch", "seq", HIDDEN]
    x = g.input("x", shape=shape)
    xs, xz = g.const("x_scale", 0.03), g.const("x_zero_point", 128, np.uint8)
    x_q = g.op("QuantizeLinear", x, xs, xz)
    # a softmax's output in [0, 1]: ONNX Runtime's quantizer gives it 1/256 and zero point 0
    ys, yz = (g.const("y_scale", 1 / 256), g.const("y_zero_point", 0, np.uint8)) if kind == "softmax" else \
        (g.const("y_scale", 0.05), g.const("y_zero_point", 128, np.uint8))
    if kind in ("matmul", "gemm"):
        w = rng.integers(-127, 128, (HIDDEN, N) if kind == "matmul" else (N, HIDDEN)).astype(np.int8)
        bs = np.full(N, 0.004, np.float32) * rng.uniform(0.5, 1.5, N).astype(np.float32) if weight_axis \
            else np.float32(0.004)
        b = (g.const("w_q", w, np.int8), g.const("w_scale", bs), g.const("w_zero_point", np.zeros(np.shape(bs)), np.int8))
    else:
        b = (g.const("b_q", rng.integers(0, 256, HIDDEN), np.uint8), g.const("b_scale", 0.01),
             g.const("b_zero_point", 100, np.uint8))
    a = [x_q, xs, xz]
    if a_per_row:
        a[1] = g.const("x_row_scales", np.full(4, 0.03))
        a[2] = g.const("x_row_zero_points", np.full(4, 128), np.uint8)
    if kind == "concat":  # a second quantization of x, on a grid of its own
        s2, z2 = g.const("x2_scale", 0.02), g.const("x2_zero_point", 120, np.uint8)
        b = (g.op("QuantizeLinear", x, s2, z2), s2, z2)
    inputs = {"matmul": [*a, *b, ys, yz], "add": [*a, *b, ys, yz], "mul": [*a, *b, ys, yz],
              "softmax": [*a, ys, yz], "sigmoid": [*a, ys, yz], "leaky_relu": [*a, ys, yz],
              "concat": [ys, yz, *a, *b],
              "gemm": [*a, *b, g.const("bias", rng.integers(-500, 500, N), np.int32)] + ([] if float_output else [ys, yz])}[kind]
    if scale_input:  # the parameter read from a graph input instead of a constant
        slot = {"b_scale": 4, "y_zero_point": len(inputs) - 1}[scale_input]
        dtype = TensorProto.FLOAT if scale_input.endswith("scale") else TensorProto.UINT8
        inputs[slot] = g.input(scale_input, shape=[], elem=dtype)
    op_type = {"matmul": "QLinearMatMul", "add": "QLinearAdd", "mul": "QLinearMul", "softmax": "QLinearSoftmax",
               "gemm": "QGemm", "sigmoid": "QLinearSigmoid", "leaky_relu": "QLinearLeakyRelu",
               "concat": "QLinearConcat"}[kind]
    attrs = {"softmax": {"axis": softmax_axis, "opset": 13}, "gemm": {"transB": 1, "alpha": 1.0},
             "leaky_relu": {"alpha": 0.1}, "concat": {"axis": -1}}.get(kind, {})
    domain = {} if kind == "matmul" else {"domain": MS}
    y = g.op(op_type, *inputs, **attrs, **domain)
    columns = N if kind in ("matmul", "gemm") else 2 * HIDDEN if kind == "concat" else HIDDEN
    g.output("y", shape=shape[:-1] + [columns])
    if float_output:
        g.op("Identity", y, out="y")
    else:  # the DQ writes y, so that verification compares in its steps
        g.op("DequantizeLinear", y, ys, yz, out="y")
    model = g.model()
    if domain:
        model.opset_import.append(helper.make_opsetid(MS, 1))
    return model


# --------------------------------------------------------------------------- quantize_dynamic

def dynamic_block(weights="s8pc", bias=True, zero_points=True, column_zero_points_one_scale=False, seed=0,
                  readers=1):
    """x → DynamicQuantizeLinear → MatMulInteger(W_q) → Cast → Mul(x_scale · w_scale) → [Add(b)] → y, as
    ``quantize_dynamic`` writes a Linear. ``weights``: "s8pc" int8 symmetric per output column
    (Optimum's avx512_vnni), "u8" uint8 asymmetric per tensor (transformers.js). ``zero_points``:
    False leaves MatMulInteger's zero points out (both 0). Near miss: ``column_zero_points_one_scale``,
    a zero point per column under one scale. ``readers``: that many Linears (summed) read one
    DynamicQuantizeLinear, as Q, K and V do."""
    rng = np.random.default_rng(seed)
    g = Graph("dynamic", 14)
    g.nodes.append(helper.make_node("DynamicQuantizeLinear", ["x"], ["x_q", "x_scale", "x_zero_point"], name="dql"))
    g.output("y", shape=["batch", "seq", N])
    ys = [_dynamic_linear(g, rng, i, weights, bias, zero_points, column_zero_points_one_scale) for i in range(readers)]
    g.input("x")
    if readers == 1:
        g.op("Identity", ys[0], out="y")
    else:
        g.op("Sum", *ys, out="y")
    return g.model()


def _dynamic_linear(g, rng, i, weights, bias, zero_points, column_zero_points_one_scale):
    w = (rng.standard_normal((HIDDEN, N)) * 0.3).astype(np.float32)
    if weights == "s8pc":
        scale = (np.abs(w).max(axis=0) / 127).astype(np.float32)
        w_q, zero = np.round(w / scale).astype(np.int8), np.zeros(N, np.int8)
    else:
        scale = np.float32((w.max() - w.min()) / 255)
        zero = np.uint8(round(-w.min() / scale))
        w_q = np.clip(np.round(w / scale) + zero, 0, 255).astype(np.uint8)
    if column_zero_points_one_scale:
        scale, zero = np.float32(np.max(scale)), rng.integers(-3, 4, N).astype(np.int8)
        w_q = np.round(w / scale).astype(np.int8)
    wq = g.const(f"w_q{i}", w_q, w_q.dtype)
    inputs = ["x_q", wq] + (["x_zero_point", g.const(f"w_zero_point{i}", zero, w_q.dtype)] if zero_points else [])
    acc = g.op("Cast", g.op("MatMulInteger", *inputs), to=TensorProto.FLOAT)
    y = g.op("Mul", acc, g.op("Mul", "x_scale", g.const(f"w_scale{i}", scale)))
    if bias:
        y = g.op("Add", g.const(f"bias{i}", rng.standard_normal(N) * 0.1), y)
    return y


def dynamic_product(zero_points=True, foreign_scale=False):
    """a [batch, 2, seq, 8] · b [batch, 2, 8, seq] with both operands quantized at run time, as
    ``quantize_dynamic`` writes the attention's Q·Kᵀ (Optimum's avx512_vnni): each through a
    DynamicQuantizeLinear, MatMulInteger(a_q, b_q, a_z, b_z) → Cast → Mul(a_s · b_s) → y.
    ``zero_points``: False leaves MatMulInteger's zero points out. Near miss: ``foreign_scale``,
    the product scaled by a's scale twice (not b's own)."""
    g = Graph("dynamic_product", 14)
    for name, shape in (("a", ["batch", 2, "seq", 8]), ("b", ["batch", 2, 8, "seq"])):
        g.input(name, shape)
        g.nodes.append(helper.make_node("DynamicQuantizeLinear", [name], [f"{name}_q", f"{name}_s", f"{name}_z"],
                                        name=f"{name}_quantize"))
    g.output("y", ["batch", 2, "seq", "seq"])
    acc = g.op("MatMulInteger", "a_q", "b_q", *(["a_z", "b_z"] if zero_points else []))
    scales = g.op("Mul", "a_s", "a_s" if foreign_scale else "b_s")
    g.op("Mul", g.op("Cast", acc, to=TensorProto.FLOAT), scales, out="y")
    return g.model()


# --------------------------------------------------------------------------- a weight moved after its DQ (NNCF)

def moved_weight(moves=("transpose", "reshape"), per_column=True, split_axis=False, seed=0):
    """x [batch, seq, 16] · DQ(W_q) moved → y, as NNCF's default preset leaves the attention output
    projection: W_q int8 [24, 16] ([out, in]) → DQ (per row of the stored weight, i.e. per output
    column, or per tensor) → Transpose → [16, 24] → Reshape([16, 24]) (a no-op move, as the export's
    head-merge reshape of the weight) → MatMul. ``moves`` picks the moves in order. Near miss:
    ``split_axis`` reshapes the quantized axis 24 into [4, 6]."""
    rng = np.random.default_rng(seed)
    g = Graph("moved", 14)
    x = g.input("x")
    g.output("y", shape=None)
    w = rng.integers(-127, 128, (N, HIDDEN)).astype(np.int8)
    scale = rng.uniform(0.002, 0.006, N).astype(np.float32) if per_column else np.float32(0.004)
    zero = np.zeros(np.shape(scale), np.int8)
    t = g.op("DequantizeLinear", g.const("w_q", w, np.int8), g.const("w_scale", scale), g.const("w_zero_point", zero, np.int8),
             **({"axis": 0} if per_column else {}))
    shape = [HIDDEN, N]
    for move in moves:
        if move == "transpose":
            t = g.op("Transpose", t, perm=[1, 0])
        else:
            t = g.op("Reshape", t, g.const("shape", [N // 6, 6, HIDDEN] if split_axis else shape, np.int64))
    if split_axis:
        t = g.op("Reshape", g.op("Transpose", t, perm=[2, 0, 1]), g.const("flat", shape, np.int64))
    g.op("MatMul", x, t, out="y")
    return g.model()


def moved_context(per_channel=False, into="MatMul", seed=0):
    """NNCF's default preset before the attention output projection: the context [batch, 4 heads, seq, 8]
    → Q(int8) → DQ → Transpose(0, 2, 1, 3) → Reshape([0, 0, 32]) → MatMul(DQ(W_q int8 [32, 24])) + b → y.
    Near misses: ``per_channel`` quantizes the context per head; ``into`` another op than MatMul, or
    ``"product"``, a MatMul by another activation, reads the moved value (then no block waits for it:
    no rewrite, no near miss)."""
    rng = np.random.default_rng(seed)
    g = Graph("context", 14)
    x = g.input("x", shape=["batch", 4, "seq", 8])
    g.output("y", shape=None)
    if per_channel:
        s, z = g.const("scale", np.full(4, 0.02)), g.const("zero_point", np.zeros(4), np.int8)
        axis = {"axis": 1}
    else:
        s, z, axis = g.const("scale", 0.02), g.const("zero_point", 3, np.int8), {}
    t = g.op("DequantizeLinear", g.op("QuantizeLinear", x, s, z, **axis), s, z, **axis)
    t = g.op("Reshape", g.op("Transpose", t, perm=[0, 2, 1, 3]), g.const("shape", [0, 0, 32], np.int64))
    if into == "product":  # a product of two activations, as attention's
        g.op("MatMul", t, g.input("other", shape=["batch", 32, "seq"]), out="y")
        return g.model()
    if into != "MatMul":
        g.op(into, t, out="y")
        return g.model()
    w = g.op("DequantizeLinear", g.const("w_q", rng.integers(-127, 128, (32, N)), np.int8), g.const("w_scale", 0.004),
             g.const("w_zero_point", 0, np.int8))
    g.op("Add", g.op("MatMul", t, w), g.const("bias", rng.standard_normal(N) * 0.1), out="y")
    return g.model()


def split_heads_as_integers(moves=("reshape", "transpose"), per_channel=False, into="product", reader=False):
    """Intel Neural Compressor's QOperator head split, read as Q/DQ: a projection [batch, seq, 8] →
    Q(uint8) → Reshape([0, 0, 2, 4]) → Transpose(0, 2, 1, 3) → DQ → MatMul by another activation
    (``into="product"``, attention's Q·Kᵀ) or by a dequantized weight (``"dense"``: no rewrite, no near
    miss). ``moves``: the chain between the pair; ``per_channel`` quantizes per head (a near miss);
    ``reader`` also hands the integers on as an output."""
    rng = np.random.default_rng(0)
    g = Graph("heads", 14)
    x = g.input("x", shape=["batch", "seq", 2, 4] if moves == ("transpose",) else ["batch", "seq", 8])
    g.output("y", shape=None)
    if per_channel:
        s, z, axis = g.const("scale", np.linspace(0.02, 0.03, 8)), g.const("zero_point", np.full(8, 128), np.uint8), {"axis": 2}
    else:
        s, z, axis = g.const("scale", 0.03), g.const("zero_point", 128, np.uint8), {}
    t = g.op("QuantizeLinear", x, s, z, **axis)
    if reader:
        g.op("Identity", t, out="integers")
        g.output("integers", shape=None, elem=TensorProto.UINT8)
    if "reshape" in moves:
        t = g.op("Reshape", t, g.const("shape", [0, 0, 2, 4], np.int64))
    if "transpose" in moves:
        t = g.op("Transpose", t, perm=[0, 2, 1, 3])
    t = g.op("DequantizeLinear", t, g.const("dq_scale", 0.03), g.const("dq_zero_point", 128, np.uint8))
    if into == "product":
        other = ["batch", 2, 4, "seq"] if "transpose" in moves else ["batch", "seq", 4, 3]
        g.op("MatMul", t, g.input("other", shape=other), out="y")
    else:
        w = g.op("DequantizeLinear", g.const("w_q", rng.integers(-127, 128, (4, 3)), np.int8), g.const("w_scale", 0.004))
        g.op("MatMul", t, w, out="y")
    return g.model()
