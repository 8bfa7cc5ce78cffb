"""An int8 activation's Q/DQ pair re-encoded as uint8, where ONNX Runtime's uint8 kernels are the fast ones.

    x ─► Q(s, z) ─► int8 ─► DQ(s, z) ─► y      ⇒      x ─► Q(s, z + 128) ─► uint8 ─► DQ(s, z + 128) ─► y

symmetric — NNCF (``ModelType.TRANSFORMER``), ``quantize_static`` with ``ActivationSymmetric``:
signed activations, which ONNX Runtime's x86 kernels run slower than FP32 (3.7–4.4× for the int8×int8
contrib ops, ``benchmarks/int8_forms.py``), where uint8 × int8 runs at 0.31–0.41× (the INT8 block then
takes its ``MatMulIntegerToFloat`` form).

Bit for bit: Q rounds x/s and adds the zero point before saturating, so the uint8 integer is the int8
one plus 128 (both ranges are 256 values, shifted by 128), and DQ subtracts a zero point 128 larger,
giving the same integer difference times the same scale. Only where every reader of the int8 value is
such a DequantizeLinear: one left reading the int8 value would keep the int8 QuantizeLinear alive
beside the new one (a near miss that names it). ONNX Runtime only.

moved — NNCF's default preset, canonicalized (``DequantizeAfterMove``): the head merge moves the
integers between the pair; it moves the uint8 ones alike (a Transpose and a Reshape only move values)::

    x ─► Q ─► Transpose ─► Reshape ─► DQ      ⇒      x ─► Q(z + 128) ─► Transpose ─► Reshape ─► DQ(z + 128)
"""
import numpy as np

from fusekit.engine.graph import const_value, is_graph_output
from fusekit.engine.pattern import Const, Fusion, Var, Variant, op

UNSIGNED = "the activation is already unsigned"
WEIGHT = "a constant (a weight keeps its int8 integers, the kernels' fast side)"

quantized = op.QuantizeLinear(Var("x", "the float activation"), Const("scale", label="the scale"),
                              Const("zero_point", label="the zero point"), _bind="q")


def dequantized(integers):
    return op.DequantizeLinear(integers, Const("dq_scale", label="the DQ scale"),
                               Const("dq_zero_point", label="the DQ zero point"), _bind="dq")


pair = dequantized(quantized)
# NNCF's default preset: the attention's context quantized before the head merge, its DQ moved after
# it (DequantizeAfterMove), so the merge moves the integers
moved = dequantized(op.Reshape(op.Transpose(quantized, _bind="transpose"), Var("shape", "the target shape"),
                               _bind="reshape"))


def _same(a, b) -> bool:
    return a is not None and b is not None and a.dtype == b.dtype and np.array_equal(a, b)


def check(m) -> str | None:
    if const_value(m["x"]) is not None:
        return WEIGHT
    zero = np.asarray(m.const("zero_point"))
    if zero.dtype != np.int8:
        return UNSIGNED if zero.dtype == np.uint8 else f"the zero point is {zero.dtype}, not 8-bit"
    if zero.size != 1 or np.asarray(m.const("scale")).size != 1:
        return "the activation is quantized per channel"
    q = m.node("q")
    if q.attrs.get("axis") is not None or q.attrs.get("output_dtype") or q.attrs.get("saturate") is not None:
        return "the QuantizeLinear has attributes the uint8 form would have to carry"
    scale = np.asarray(m.const("scale"))
    value = m.anchor.inputs[0]  # the integers the DequantizeLinear reads: Q's, or moved
    if is_graph_output(m.graph, value):
        return f"the int8 value '{value.name}' is a graph output"
    for reader in value.outputs:
        if reader.op != "DequantizeLinear" or len(reader.inputs) != 3 or reader.attrs.get("axis") is not None \
                or not _same(const_value(reader.inputs[1]), scale) or not _same(const_value(reader.inputs[2]), zero):
            return f"the int8 value is also read by {reader.op} '{reader.name}', which would keep it"
    return None


def rewrite(m, _, emit):
    unsigned = emit.small((np.asarray(m.const("zero_point")).astype(np.int16) + 128).astype(np.uint8))
    quantized = emit.shared("QuantizeLinear", m["x"], m["scale"], unsigned)
    quantized.dtype, quantized.shape = np.uint8, m["x"].shape  # later fusions read the activation's rank
    for name in ("transpose", "reshape"):  # the same moves, on the uint8 integers
        if name in m.named:
            node = m.node(name)
            quantized = emit.Transpose(quantized, **node.attrs) if name == "transpose" else \
                emit.Reshape(quantized, m["shape"], **node.attrs)
            quantized.dtype, quantized.shape = np.uint8, node.outputs[0].shape
    y = emit.DequantizeLinear(quantized, m["scale"], unsigned)
    y.dtype, y.shape = np.float32, m.anchor.outputs[0].shape
    return y


FUSION = Fusion(
    name="UnsignedActivation",
    variants=[Variant("symmetric", pair, "NNCF (transformer preset), quantize_static with ActivationSymmetric"),
              Variant("moved", moved, "NNCF (default preset: the attention's context, merged as integers)")],
    check=check,
    rewrite=rewrite,
    targets=("ort",),
    # every uint8 pair of every quantized model is no candidate: only a signed one refused is a near miss
    near_miss=lambda miss: miss.complete and miss.reason not in (UNSIGNED, WEIGHT),
    reads=("q",),  # shared by every DQ reading the value: it dies with the last of them
)
