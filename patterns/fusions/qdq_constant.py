"""A quantize-dequantize pair on a scalar constant, folded into the value it rounds to.

    c ─► QuantizeLinear(s, zp) ─► DequantizeLinear(s, zp) ─► y    ⇒    y = DQ(Q(c)), a constant

qdq — ONNX Runtime's quantizer, when every op is quantized, puts such a pair on each
scalar a quantized op reads (the attention scale, the GELU constants …).

The folded value is what the pair computes, evaluated by ONNX Runtime, so nothing
changes numerically. OpenVINO 2026.4 fails to compile a model with a pair on the
attention scale (its low-precision MultiplyPartialTransformation throws "index '0'
out of range") and compiles the folded one, so ``openvino`` folds them. Only scalars:
a weight keeps its pair, which is what makes its MatMul run in INT8.
"""
import numpy as np
from onnx import helper

from fusekit.engine.pattern import Const, Fusion, Variant, either, op

from .._common import evaluate

scalar = Const("c", label="the quantized constant")


def _pair(q_zero_point: bool, dq_zero_point: bool):
    q_inputs = [scalar, Const("q_scale", label="the Q scale")] + ([Const("q_zp", label="the Q zero point")]
                                                                 if q_zero_point else [])
    dq_inputs = [Const("dq_scale", label="the DQ scale")] + ([Const("dq_zp", label="the DQ zero point")]
                                                             if dq_zero_point else [])
    return op.DequantizeLinear(op.QuantizeLinear(*q_inputs, _bind="q"), *dq_inputs, _bind="dq")


def check(m) -> str | None:
    return None if m.const("c").size == 1 else "the constant is not a scalar (a weight keeps its pair)"


def _evaluate(m) -> np.ndarray:
    """DQ(Q(c)) exactly as ONNX Runtime computes it."""
    q_in = [k for k in ("c", "q_scale", "q_zp") if k in m.consts]
    dq_in = ["q_out"] + [k for k in ("dq_scale", "dq_zp") if k in m.consts]
    nodes = [helper.make_node("QuantizeLinear", q_in, ["q_out"], **m.node("q").attrs),
             helper.make_node("DequantizeLinear", dq_in, ["y"], **m.node("dq").attrs)]
    values = {k: m.const(k) for k in q_in + dq_in[1:]}
    return evaluate(nodes, values, "y", np.asarray(m.const("dq_scale")).dtype, m.state.opset)


def rewrite(m, _, emit):
    return emit.Identity(emit.const("folded", _evaluate(m)))


FUSION = Fusion(
    name="QDQConstant",
    variants=[Variant("qdq", either(_pair(True, True), _pair(False, False), _pair(True, False), _pair(False, True),
                                    tag="zero_points"), "ONNX Runtime quantize_static, all ops quantized")],
    check=check,
    rewrite=rewrite,
    signature=frozenset(),  # never a near miss: every activation's Q/DQ pair would be one
    after=("FakeQuantize",),
    targets=("openvino",),
)
