"""ONNX Runtime's QOperator ops read as the Q/DQ form they stand for: DequantizeLinear → float op → QuantizeLinear.

``quantize_static(quant_format=QuantFormat.QOperator)`` (ONNX Runtime's documentation, older
Optimum, Neural Compressor) writes each quantized op as one integer op carrying its scales and
zero points; the QDQ format writes the same model as float ops between Q/DQ pairs, which is the
form the INT8 block fusion and the FP32 fusions (LayerNorm, GELU, SkipLayerNorm) read::

    a_q ─► QLinearMatMul(a_s, a_z, b_q, b_s, b_z, y_s, y_z) ─► y_q
      ⇒  a_q ─► DQ(a_s, a_z) ─┐
         b_q ─► DQ(b_s, b_z) ─► MatMul ─► Q(y_s, y_z) ─► y_q

    QLinearAdd, QLinearMul (com.microsoft)      ⇒  Q(Add(DQ(a), DQ(b))), Q(Mul(DQ(a), DQ(b)))
    QLinearSoftmax(x_q, x_s, [x_z], y_s, y_z)    ⇒  Q(Softmax(DQ(x)))
    QLinearSigmoid, QLinearLeakyRelu (alpha)     ⇒  Q(Sigmoid(DQ(x))), Q(LeakyRelu(DQ(x)))
    QLinearConcat(y_s, y_z, x0_q, x0_s, x0_z, …) ⇒  Q(Concat(DQ(x0), DQ(x1), …))        (up to 8 inputs)
    QGemm(a_q, …, b_q, …, C_int32, [y_s, y_z])   ⇒  [Q](Gemm(DQ(a), DQ(b), C · a_s · b_s))

Each op's definition is exactly that composition in real arithmetic (the ONNX and
com.microsoft specs define them so), so the rewrite changes what is computed only in float
rounding: ONNX Runtime's kernels accumulate a QLinearMatMul or QGemm in int32 and scale the sum
once by the float32 ``a_s·b_s/y_s``, and compute QLinearAdd/Mul/Softmax with scale ratios and
lookup tables, where the Q/DQ form rounds each dequantized value and each partial sum in float32.
The two agree to a relative ~K·2⁻²⁴ before the output rounding, so a quantized output differs by
at most one step, and only where the exact value lies that close to a rounding tie; a float
output (QGemm without ``y_s``) by that relative error. The verification of a rewritten model
compares in steps.

A value several ops read gets one DequantizeLinear (the quantizer's own where it wrote one), as
the QDQ format has it: the Q, K and V projections share their input's. Scales and zero points
must be constants, per tensor, except a constant weight's (``b`` of QLinearMatMul and QGemm),
which may be per output column; anything else is a near miss that says which.
"""
from dataclasses import dataclass

import numpy as np

from fusekit.engine.pattern import Const, Rule, Var, Variant, either, op
from fusekit.engine.rewrite import MS

EIGHT_BIT = (np.int8, np.uint8)
PARTS = {"a": "input A", "b": "input B", "x": "input", "y": "output"}
CONCATENATED = 8  # the most inputs of a QLinearConcat read (one variant alternative each)


def _what(name: str) -> str:
    return PARTS.get(name) or f"input {name[1:]}"


def _q(name: str, zero_point: bool = True):
    """The (value, scale[, zero point]) operands of one quantized tensor of a QOperator op."""
    what = _what(name)
    value = Var(name, f"the {what}") if name != "y" else None
    scale = Const(f"{name}_scale", label=f"the {what} scale")
    zero = [Const(f"{name}_zero_point", label=f"the {what} zero point")] if zero_point else []
    return [value, scale, *zero] if value is not None else [scale, *zero]


def _binary(op_type: str, domain: str = MS):
    full = getattr(op, op_type)
    return either(full(*_q("a"), *_q("b"), *_q("y"), _domain=domain, _bind="qop"),
                  full(*_q("a"), *_q("b"), *_q("y", zero_point=False), _domain=domain, _bind="qop"))


def _softmax():
    return either(op.QLinearSoftmax(*_q("x"), *_q("y"), _domain=MS, _bind="qop"),
                  op.QLinearSoftmax(*_q("x", zero_point=False), *_q("y"), _domain=MS, _bind="qop"))


def _unary(op_type: str):
    full = getattr(op, op_type)
    return either(full(*_q("x"), *_q("y"), _domain=MS, _bind="qop"),
                  full(*_q("x", zero_point=False), *_q("y", zero_point=False), _domain=MS, _bind="qop"))


def _concat():
    """QLinearConcat(y_s, y_z, x0, x0_s, x0_z, x1, …): the output's parameters first, then each input's."""
    return either(*(op.QLinearConcat(*_q("y"), *(p for i in range(n) for p in _q(f"x{i}")), _domain=MS, _bind="qop")
                    for n in range(1, CONCATENATED + 1)))


def _qgemm():
    bias = Const("bias", label="the int32 bias C")
    return either(op.QGemm(*_q("a"), *_q("b"), bias, *_q("y"), _domain=MS, _bind="qop"),
                  op.QGemm(*_q("a"), *_q("b"), bias, _domain=MS, _bind="qop"),
                  op.QGemm(*_q("a"), *_q("b"), _domain=MS, _bind="qop"),
                  tag="gemm", labels=("", "float_output", "float_output_no_bias"))


@dataclass(frozen=True)
class QOperatorFacts:
    """What check proved: the float op the QOperator op stands for, and the weight's DQ axis."""

    float_op: str
    b_axis: int | None  # the per-column axis of a constant weight's scale; None per tensor


FLOAT_OP = {"QLinearMatMul": "MatMul", "QLinearAdd": "Add", "QLinearMul": "Mul", "QLinearSoftmax": "Softmax",
            "QGemm": "Gemm", "QLinearSigmoid": "Sigmoid", "QLinearLeakyRelu": "LeakyRelu", "QLinearConcat": "Concat"}


def _params(m, name: str) -> str | None:
    """Why the scale / zero point of ``name`` are not one float scale and one 8-bit zero point per tensor."""
    scale = np.asarray(m.const(f"{name}_scale"))
    if scale.dtype != np.float32:
        return f"the {_what(name)} scale is {scale.dtype}, not float32"
    if f"{name}_zero_point" in m.consts:
        zero = np.asarray(m.const(f"{name}_zero_point"))
        if zero.dtype.type not in EIGHT_BIT:
            return f"the {_what(name)} zero point is {zero.dtype}, not 8-bit"
        if zero.size != scale.size:
            return f"the {_what(name)} scale has {scale.size} values and its zero point {zero.size}"
    if scale.size != 1:
        per = "per row" if name in ("a", "y") else "per channel"
        return f"the {_what(name)} is quantized {per} ({scale.size} scales): only a constant weight's " \
               "per-column scale has a DequantizeLinear form the fusions read"
    return None


def _weight_axis(m, node) -> int | None | str:
    """The DequantizeLinear axis of ``b``'s per-column scale (None per tensor), or why it cannot have one."""
    scale = np.asarray(m.const("b_scale"))
    if scale.dtype != np.float32:
        return f"the input B scale is {scale.dtype}, not float32"
    if "b_zero_point" in m.consts and np.asarray(m.const("b_zero_point")).size != scale.size:
        return f"the input B scale has {scale.size} values and its zero point {np.asarray(m.const('b_zero_point')).size}"
    if scale.size == 1:
        return None
    shape = m["b"].shape
    if shape is None or len(shape) != 2 or not isinstance(shape[-1], int):
        return "input B is quantized per column but is not a 2-D matrix of known size"
    trans_b = bool(node.attrs.get("transB", 0)) if node.op == "QGemm" else False
    columns, axis = (shape[0], 0) if trans_b else (shape[1], 1)
    if scale.size != columns:
        return f"input B has {scale.size} scales, not one per output column ({columns})"
    if m.state.opset < 13:
        return f"opset {m.state.opset}: a per-column DequantizeLinear needs opset 13"
    return axis


def check(m) -> QOperatorFacts | str:
    node = m.node("qop")
    float_op = FLOAT_OP[node.op]
    b_axis = None
    for name in (k.removesuffix("_scale") for k in m.consts if k.endswith("_scale")):
        if name == "b" and float_op in ("MatMul", "Gemm"):
            b_axis = _weight_axis(m, node)
            if isinstance(b_axis, str):
                return b_axis
            continue
        if (reason := _params(m, name)):
            return reason
    if float_op == "Softmax":
        axis, rank = node.attrs.get("axis", -1), len(m["x"].shape) if m["x"].shape is not None else None
        if axis != -1 and (rank is None or axis != rank - 1):
            # below opset 13 Softmax flattens from its axis: only over the last axis do all opsets agree
            return f"normalizes over axis {axis}, not the last axis"
    if float_op == "Gemm" and "bias" in m.consts and np.asarray(m.const("bias")).dtype != np.int32:
        return f"the bias C is {np.asarray(m.const('bias')).dtype}, not int32"
    return QOperatorFacts(float_op, b_axis)


def _typed(t, dtype, shape):
    t.dtype, t.shape = dtype, shape
    return t


def _dequantized(m, emit, name: str, axis: int | None = None):
    """DQ of the quantized operand ``name``: the one already reading it with these parameters where there is one."""
    zero = [m[f"{name}_zero_point"]] if f"{name}_zero_point" in m.consts else []
    attrs = {} if axis is None else {"axis": axis}
    return _typed(emit.shared("DequantizeLinear", m[name], m[f"{name}_scale"], *zero, **attrs), np.float32,
                  m[name].shape)


def rewrite(m, facts: QOperatorFacts, emit):
    node = m.node("qop")
    out = node.outputs[0]
    attrs = {}
    if facts.float_op == "Concat":
        inputs = [_dequantized(m, emit, f"x{i}") for i in range(CONCATENATED) if f"x{i}" in m.values]
        attrs = {"axis": node.attrs["axis"]}
    elif facts.float_op in ("Softmax", "Sigmoid", "LeakyRelu"):
        inputs = [_dequantized(m, emit, "x")]
        attrs = {"Softmax": {"axis": node.attrs.get("axis", -1)}, "Sigmoid": {},
                 "LeakyRelu": {"alpha": node.attrs.get("alpha", 0.01)}}[facts.float_op]
    else:
        inputs = [_dequantized(m, emit, "a"), _dequantized(m, emit, "b", facts.b_axis)]
    if facts.float_op == "Gemm":
        attrs = {k: node.attrs[k] for k in ("alpha", "transA", "transB") if k in node.attrs}
        if "bias" in m.consts:  # C is stored in steps of a_s · b_s, zero point 0
            scale = np.asarray(m.const("a_scale"), np.float32) * np.asarray(m.const("b_scale"), np.float32)
            bias = (np.asarray(m.const("bias")).astype(np.float32) * scale.reshape(-1)).astype(np.float32)
            inputs.append(emit.const("bias", bias))
    result = _typed(getattr(emit, facts.float_op)(*inputs, **attrs), np.float32, out.shape)
    if "y_scale" not in m.consts:
        return result
    zero = [m["y_zero_point"]] if "y_zero_point" in m.consts else []
    dtype = np.asarray(m.const("y_zero_point")).dtype if zero else np.dtype(np.uint8)
    return _typed(emit.QuantizeLinear(result, m["y_scale"], *zero), dtype, out.shape)


RULE = Rule(
    name="QDQAsQOperator",
    variants=[
        Variant("qlinear_matmul", op.QLinearMatMul(*_q("a"), *_q("b"), *_q("y"), _bind="qop"),
                "ONNX Runtime quantize_static (QOperator), Neural Compressor (QOperator)"),
        Variant("qlinear_add", _binary("QLinearAdd"), "ONNX Runtime quantize_static (QOperator)"),
        Variant("qlinear_mul", _binary("QLinearMul"), "ONNX Runtime quantize_static (QOperator)"),
        Variant("qlinear_softmax", _softmax(), "ONNX Runtime quantize_static (QOperator)"),
        Variant("qgemm", _qgemm(), "ONNX Runtime quantize_static (QOperator)"),
        Variant("qlinear_concat", _concat(), "ONNX Runtime quantize_static (QOperator)"),
        Variant("qlinear_sigmoid", _unary("QLinearSigmoid"), "ONNX Runtime quantize_static (QOperator)"),
        Variant("qlinear_leaky_relu", _unary("QLinearLeakyRelu"), "ONNX Runtime quantize_static (QOperator)"),
    ],
    check=check,
    rewrite=rewrite,
    # every QOperator op left as it is hides a block from the fusions: each one not taken says why
    near_miss=lambda miss: True,
)
