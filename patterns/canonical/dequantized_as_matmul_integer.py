"""An integer MatMul scaled back to float is the MatMul of the two dequantized operands.

``quantize_dynamic`` (Optimum's ``avx512_vnni`` config, transformers.js) writes each Linear as::

    x ─► DynamicQuantizeLinear ─► x_q, x_s, x_z
    MatMulInteger(x_q, W_q, x_z, w_z) ─► Cast(float) ─► Mul(·, Mul(x_s, w_s)) ─► Add(b)

      ⇒  x_q ─► DQ(x_s, x_z) ─┐
         W_q ─► DQ(w_s, w_z) ─► MatMul ─► Add(b)

the Q/DQ form the INT8 fusions read (the quantized input's scale and zero point then come from
its DynamicQuantizeLinear, not from constants). Optimum's ``avx512_vnni`` config also quantizes
the attention's Q·Kᵀ and P·V, where both operands are activations, each quantized at run time::

    a ─► DynamicQuantizeLinear ─► a_q, a_s, a_z
    b ─► DynamicQuantizeLinear ─► b_q, b_s, b_z
    MatMulInteger(a_q, b_q, a_z, b_z) ─► Cast(float) ─► Mul(·, Mul(a_s, b_s))

      ⇒  DQ(a_q, a_s, a_z) · DQ(b_q, b_s, b_z)

(the activations variant: each operand dequantized by its own quantizer's scale and zero point).
Exact in real arithmetic: Σ (x_q − x_z)(w_q − w_z) · x_s·w_s = Σ (x_q − x_z)·x_s · (w_q − w_z)·w_s.
In float32 the integer sum is exact and scaled once, where the dequantized form rounds each product and partial sum:
the two differ by a relative ~K·2⁻²⁴ (1e-5 at K = 3072), far below one quantization step of x.

The weight is a constant 2-D 8-bit matrix, its scale per tensor or per output column (its zero
point then per column or one for all: it is repeated); the input's scale and zero point are
scalars. A per-column zero point under a single scale has no DequantizeLinear form: a near miss.
"""
from dataclasses import dataclass

import numpy as np
from onnx import TensorProto

from fusekit.engine.graph import producer
from fusekit.engine.pattern import Const, Rule, Var, Variant, either, op

from .._common import is_float

EIGHT_BIT = (np.int8, np.uint8)

x_q, w_q = Var("x_q", "the quantized input"), Const("w_q", label="the quantized weight")
x_zero, w_zero = Var("x_zero_point", "the input zero point"), Const("w_zero_point", label="the weight zero point")
integer = either(op.MatMulInteger(x_q, w_q, x_zero, w_zero, _bind="matmul"),
                 op.MatMulInteger(x_q, w_q, x_zero, _bind="matmul"),
                 op.MatMulInteger(x_q, w_q, _bind="matmul"), tag="zero_points",
                 labels=("", "symmetric_weight", "symmetric"))
scales = op.Mul(Var("x_scale", "the input scale"), Const("w_scale", label="the weight scale"))
scaled = op.Mul(op.Cast(integer, to=TensorProto.FLOAT), scales)

# both operands quantized at run time (Q·Kᵀ, P·V)
y_q, y_zero = Var("y_q", "the second quantized input"), Var("y_zero_point", "the second input zero point")
products = either(op.MatMulInteger(x_q, y_q, x_zero, y_zero, _bind="matmul"),
                  op.MatMulInteger(x_q, y_q, _bind="matmul"), tag="zero_points", labels=("", "symmetric"))
activations = op.Mul(op.Cast(products, to=TensorProto.FLOAT),
                     op.Mul(Var("x_scale", "the input scale"), Var("y_scale", "the second input scale")))


@dataclass(frozen=True)
class WeightFacts:
    """What check proved: the weight's DequantizeLinear parameters."""

    per_column: bool


def _scalar(t) -> bool:
    return all(d == 1 for d in t.shape)


def _quantizer_reason(m, name: str) -> str | None:
    """Why the activation ``name`` is not a DynamicQuantizeLinear's integers under its own scale and zero point."""
    node = producer(m[f"{name}_q"])
    if node is None or node.op != "DynamicQuantizeLinear":
        return f"'{m[f'{name}_q'].name}' is not quantized by a DynamicQuantizeLinear: its scale is not known to be " \
               "a scalar"
    if m[f"{name}_scale"] is not node.outputs[1] or (f"{name}_zero_point" in m.values
                                                     and m[f"{name}_zero_point"] is not node.outputs[2]):
        return f"'{m[f'{name}_q'].name}' is scaled by a scale or zero point its DynamicQuantizeLinear did not compute"
    return None


def check(m) -> WeightFacts | str | None:
    if "y_q" in m.values:
        return _quantizer_reason(m, "x") or _quantizer_reason(m, "y")
    w = np.asarray(m.const("w_q"))
    if w.ndim != 2 or w.dtype.type not in EIGHT_BIT:
        return f"the weight is {w.dtype}{list(w.shape)}, not a 2-D 8-bit matrix"
    scale = np.asarray(m.const("w_scale"))
    zero = np.asarray(m.const("w_zero_point")) if "w_zero_point" in m.consts else np.zeros((), w.dtype)
    if scale.dtype != np.float32:
        return f"the weight scale is {scale.dtype}, not float32"
    if scale.size not in (1, w.shape[1]) or zero.size not in (1, w.shape[1]):
        return f"the weight scale has {scale.size} values and its zero point {zero.size}: per tensor or per " \
               f"output column ({w.shape[1]}) only"
    if scale.size == 1 and zero.size > 1:
        return "the weight has a zero point per column under one scale: DequantizeLinear takes them per axis together"
    if scale.size > 1 and m.state.opset < 13:
        return f"opset {m.state.opset}: a per-column DequantizeLinear needs opset 13"
    for name in ("x_scale", "x_zero_point"):
        if name in m.values and m[name].shape is not None and not _scalar(m[name]):
            return f"the input's {'scale' if name == 'x_scale' else 'zero point'} is not a scalar: " \
                   "only a per-tensor input has a DequantizeLinear form"
    if not is_float(m["x_scale"]) and m["x_scale"].dtype is not None:
        return f"the input scale is {m['x_scale'].dtype}, not float"
    return WeightFacts(scale.size > 1)


def _dequantized(m, emit, name: str):
    zero = [m[f"{name}_zero_point"]] if f"{name}_zero_point" in m.values else []
    x = emit.shared("DequantizeLinear", m[f"{name}_q"], m[f"{name}_scale"], *zero)
    x.dtype, x.shape = np.float32, m[f"{name}_q"].shape
    return x


def rewrite(m, facts: WeightFacts | None, emit):
    x = _dequantized(m, emit, "x")
    if "y_q" in m.values:
        y = emit.MatMul(x, _dequantized(m, emit, "y"))
        y.dtype, y.shape = np.float32, m.anchor.outputs[0].shape
        return y
    w = np.asarray(m.const("w_q"))
    w_zero = np.asarray(m.const("w_zero_point")) if "w_zero_point" in m.consts else np.zeros((), w.dtype)
    if facts.per_column:
        w_zero = np.broadcast_to(w_zero.reshape(-1), (w.shape[1],)).astype(w.dtype)
        weight = emit.DequantizeLinear(m["w_q"], m["w_scale"], emit.const("weight_zero_point", w_zero), axis=1)
    else:
        weight = emit.DequantizeLinear(m["w_q"], emit.small(np.asarray(m.const("w_scale")).reshape(())),
                                       emit.small(w_zero.reshape(()).astype(w.dtype)))
    weight.dtype, weight.shape = np.float32, list(w.shape)
    y = emit.MatMul(x, weight)
    y.dtype, y.shape = np.float32, m.anchor.outputs[0].shape
    return y


RULE = Rule(
    name="DequantizedAsMatMulInteger",
    variants=[Variant("scaled", scaled, "ONNX Runtime quantize_dynamic (Optimum avx512_vnni, transformers.js)"),
              Variant("activations", activations, "ONNX Runtime quantize_dynamic with the attention's MatMuls "
                                                  "quantized (Optimum avx512_vnni)")],
    check=check,
    rewrite=rewrite,
    # a MatMulInteger whose scaling back to float was found but refused hides a dense block
    near_miss=lambda miss: miss.complete or "MatMulInteger" in miss.ops,
)
