"""Single INT8 dense blocks, written the way ONNX Runtime's quantizer and QAT exports
write them: the inputs of the QuantizedLinear tests, variants and near misses.

``block(...)`` returns a model with a float input ``x`` [batch, seq, 16] and output
``y``: x → Q → DQ → MatMul(DQ(W_q)) → [Q→DQ] → Add(b) → [GELU] → [Q → DQ] → y.
"""
import numpy as np
from onnx import TensorProto, helper

from .variants import HIDDEN, Graph, _gelu_erf

N = 24  # output columns


def block(gelu=True, requantize=True, quantize_output=True, weight_axis=None, bias_shape=(N,),
          inner_output=False, x_dtype=np.uint8, fake_weight=False, name="block", opset=14, seed=0):
    """``weight_axis``: None per tensor, 1 per output column, 0 per row (along K)."""
    rng = np.random.default_rng(seed)
    g = Graph(name, opset)
    g.output("y", shape=["batch", "seq", N])
    x = g.input("x")
    x_zero = 128 if x_dtype == np.uint8 else 0
    xs, xz = g.const("x_scale", 0.03), g.const("x_zero_point", x_zero, x_dtype)
    xq = g.op("DequantizeLinear", g.op("QuantizeLinear", x, xs, xz), xs, xz)
    w = rng.standard_normal((HIDDEN, N)).astype(np.float32) * 0.3
    if weight_axis is None:
        scale = np.float32(np.abs(w).max() / 127)
    else:
        scale = (np.abs(w).max(axis=1 - weight_axis) / 127).astype(np.float32)
    axis = {} if weight_axis is None else {"axis": weight_axis}
    ws, wz = g.const("w_scale", scale), g.const("w_zero_point", np.zeros(np.shape(scale), np.int8), np.int8)
    if fake_weight:  # QAT: the float weight [out, in] through its own pair, then Transpose
        axis_t = {} if weight_axis is None else {"axis": 1 - weight_axis}
        wq = g.op("DequantizeLinear", g.op("QuantizeLinear", g.const("w", w.T), ws, wz, **axis_t), ws, wz, **axis_t)
        weight = g.op("Transpose", wq, perm=[1, 0])
    else:
        b = scale if weight_axis is None else np.expand_dims(scale, 1 - weight_axis)
        w_q = np.clip(np.round(w / b), -127, 127).astype(np.int8)
        weight = g.op("DequantizeLinear", g.const("w_q", w_q, np.int8), ws, wz, **axis)
    y = g.op("MatMul", xq, weight)
    if inner_output:  # the MatMul's value is also a graph output: the block must not fuse
        g.outputs.append(helper.make_tensor_value_info(y, TensorProto.FLOAT, ["batch", "seq", N]))
    if requantize:
        ms, mz = g.const("mm_scale", 0.05), g.const("mm_zero_point", 128, np.uint8)
        y = g.op("DequantizeLinear", g.op("QuantizeLinear", y, ms, mz), ms, mz)
    y = g.op("Add", y, g.const("bias", rng.standard_normal(bias_shape) * 0.1))
    if gelu:
        y = _gelu_erf(g, y, out=None)
    if quantize_output:
        ys, yz = g.const("y_scale", 0.02), g.const("y_zero_point", 128, np.uint8)
        y = g.op("DequantizeLinear", g.op("QuantizeLinear", y, ys, yz), ys, yz)
    g.op("Identity", y, out="y")
    return g.model()
