"""A dynamically quantized dense block — input quantized at run time · quantized weight [+ bias] — as one op.

    y = DQ(DynamicQuantizeLinear(x)) · DQ(W_q) [+ b]

dynamic — ``quantize_dynamic`` (Optimum's ``avx512_vnni`` config: int8 weights per output
column; transformers.js: uint8 per tensor), as ``DequantizedAsMatMulInteger`` canonicalizes it::

    x ─► DynamicQuantizeLinear ─► DQ(x_s, x_z) ─┐
                           W_q ─► DQ(w_s, w_z) ─► MatMul ─► [Add(b)] ─► y

The DynamicQuantizeLinear and its DequantizeLinear are read, not replaced (the Q, K and V
projections share them). Forms, measured with ``benchmarks/dynamic_forms.py`` (one BERT-base
FFN-up block, 2 threads):

- ``ort``: ``com.microsoft.DynamicQuantizeMatMul(x, W_q, w_s, w_z, b)``, ONNX Runtime's integer
  kernel with the bias, which quantizes x to uint8 exactly as DynamicQuantizeLinear does
  (0.27–0.28× FP32, the MatMulInteger form 0.32–0.35×). An input several blocks read (Q, K, V)
  is quantized once, by its DynamicQuantizeLinear, and each block is
  ``MatMulIntegerToFloat(x_q, W_q, x_s, w_s, x_z, w_z, b)`` on its integers, as ONNX Runtime's own
  fusion does. Same integers, same scales: only the float rounding of the scaling differs.
- ``openvino``: ``MatMul(x, DQ(W_q)) [+ b]``. OpenVINO 2026.4 runs every other spelling with
  f32 weights (the MatMulInteger form at 1.3–1.5× its FP32), and this one as a FullyConnected
  with int8 weights decompressed in the kernel (0.63–0.81× FP32); it applies no dynamic
  quantization of its own to it, so the activation is not rounded: one rounding fewer than the
  model, closer to FP32 by up to half an input step per element (verification compares in steps).
- ``onnx``: left in the canonical form, which is standard ONNX.

The weight is a constant 2-D 8-bit matrix with its scale per tensor or per output column.
"""
import numpy as np

from fusekit.engine.pattern import Const, Fusion, Var, Variant, either, op
from fusekit.engine.rewrite import MS

from .._common import vector_reason

EIGHT_BIT = (np.int8, np.uint8)
# OpenVINO's CPU plugin quantizes a weight-compressed FullyConnected's input at run time, per group
# of this many input channels of each row (its default 32; 0 turns it off); 64–256 ran a BERT-base
# block ~20% faster than 32 (benchmarks/dynamic_forms.py), each group finer than the model's one
# scale per tensor
OPENVINO_OPTIONS = {"DYNAMIC_QUANTIZATION_GROUP_SIZE": "128"}

quantized = op.DynamicQuantizeLinear(Var("x", "the float input"), _bind="dql")
x = op.DequantizeLinear(quantized, Var("x_scale", "the input scale"), Var("x_zero_point", "the input zero point"),
                        _bind="x_dq")
w_q, w_scale = Const("w_q", label="the quantized weight"), Const("w_scale", label="the weight scale")
weight = either(op.DequantizeLinear(w_q, w_scale, Const("w_zero_point", label="the weight zero point"), _bind="w_dq"),
                op.DequantizeLinear(w_q, w_scale, _bind="w_dq"), tag="weight_zero_point",
                labels=("", "symmetric"))
dense = op.MatMul(x, weight, _bind="matmul")


def check(m) -> str | None:
    dql = m.node("dql")
    if len(dql.outputs) != 3 or m["x_scale"] is not dql.outputs[1] or m["x_zero_point"] is not dql.outputs[2]:
        return "the input is dequantized with a scale or zero point its DynamicQuantizeLinear did not compute"
    w = np.asarray(m.const("w_q"))
    if w.ndim != 2 or w.dtype.type not in EIGHT_BIT:
        return f"the weight is {w.dtype}{list(w.shape)}, not a 2-D 8-bit matrix"
    scale = np.asarray(m.const("w_scale"))
    axis = m.node("w_dq").attrs.get("axis", 1)
    if scale.size > 1 and axis % 2 != 1:
        return "the weight is quantized per row (along K): no INT8 MatMul kernel takes that scale"
    if scale.size not in (1, w.shape[1]):
        return f"the weight scale has {scale.size} values: per tensor or per output column ({w.shape[1]}) only"
    if "bias" in m.consts:
        return vector_reason("the bias", np.asarray(m.const("bias")), w.shape[1], "the weight's column count")
    return None


def _readers(m) -> int:
    """How many blocks read the dynamically quantized input: those still through its DQ and those
    already fused (reading the integers directly), so every block of a shared input counts alike."""
    dq = m.node("x_dq")
    return len(dq.outputs[0].outputs) + sum(n is not dq for n in m.node("dql").outputs[0].outputs)


def rewrite(m, _, emit):
    bias = m["bias"] if "bias" in m.consts else None
    zero = m["w_zero_point"] if "w_zero_point" in m.consts else None
    if emit.target == "ort":
        if _readers(m) > 1:  # quantize the shared input once (Q, K, V), as ONNX Runtime's own fusion does
            x_q, x_scale, x_zero = m.node("dql").outputs
            return emit.MatMulIntegerToFloat(x_q, m["w_q"], x_scale, m["w_scale"], x_zero, zero, bias, _domain=MS)
        return emit.DynamicQuantizeMatMul(m["x"], m["w_q"], m["w_scale"], zero, bias, _domain=MS)
    emit.note("DynamicQuantizedLinear left {count} dense inputs unrounded for OpenVINO, which runs their int8 "
              "weights on float inputs faster than any dynamically quantized form: one rounding fewer, closer to "
              "FP32 (verification compares in steps)")
    axis = {"axis": 1} if np.asarray(m.const("w_scale")).size > 1 else {}
    weight = emit.DequantizeLinear(m["w_q"], m["w_scale"], *([zero] if zero is not None else []), **axis)
    y = emit.MatMul(m["x"], weight)
    return emit.Add(y, bias) if bias is not None else y


FUSION = Fusion(
    name="DynamicQuantizedLinear",
    variants=[
        Variant("bias", op.Add(dense, Const("bias", label="the bias")), "ONNX Runtime quantize_dynamic, with its bias"),
        Variant("no_bias", dense, "ONNX Runtime quantize_dynamic, a Linear without bias"),
    ],
    check=check,
    rewrite=rewrite,
    signature=frozenset({"DynamicQuantizeLinear"}),
    after=("Gelu",),
    targets=("ort", "openvino"),
    reads=("x_dq", "dql"),
    runtime_options={"openvino": OPENVINO_OPTIONS},
)
