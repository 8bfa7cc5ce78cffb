"""A quantize-dequantize pair on a scalar constant, folded into the value it rounds to.

    c ─► QuantizeLinear(s, zp) ─► DequantizeLinear(s, zp) ─► y    ⇒    y = DQ(Q(c)), a constant

qdq — ONNX Runtime's quantizer, when every op is quantized, puts such a pair on each
scalar a quantized op reads (the attention scale, the GELU constants …).

The folded value is what the pair computes, evaluated by ONNX Runtime, so nothing
changes numerically. OpenVINO 2026.4 fails to compile a model with a pair on the
attention scale (its low-precision MultiplyPartialTransformation throws "index '0'
out of range") and compiles the folded one, so ``openvino`` folds them. Only scalars:
a weight keeps its pair, which is what makes its MatMul run in INT8.

one_row_table — a one-row embedding table stored quantized (NNCF on RoBERTa's single token
type), folded the same way into the floats its DequantizeLinear computes::

    table_q [1, H] ─► DequantizeLinear(s, zp) ─► Gather    ⇒    table [1, H] ─► Gather

OpenVINO 2026.4 fails to compile NNCF's RoBERTa with that DQ in place (constant folding of a
Convert throws, once the sdpa attention's √-scaled Q·Kᵀ is in the same model) and compiles it
folded; one row costs 3 bytes per element more as float. Larger tables keep their DQ.
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


table = op.DequantizeLinear(Const("table", label="the quantized table"), Const("dq_scale", label="the DQ scale"),
                            Const("dq_zp", label="the DQ zero point"), _bind="dq")


def check(m) -> str | None:
    if m.variant.name == "one_row_table":
        value, readers = m.const("table"), m.anchor.outputs[0].outputs
        if value.ndim != 2 or value.shape[0] != 1 or not readers or any(
                r.op != "Gather" or r.inputs[0] is not m.anchor.outputs[0] for r in readers):
            return "not a one-row table that only Gathers read"
        return None
    return None if m.const("c").size == 1 else "the constant is not a scalar (a weight keeps its pair)"


def _evaluate(m) -> np.ndarray:
    """DQ(Q(c)), or DQ(table), exactly as ONNX Runtime computes it."""
    if m.variant.name == "one_row_table":
        node = helper.make_node("DequantizeLinear", ["table", "dq_scale", "dq_zp"], ["y"], **m.node("dq").attrs)
        return evaluate([node], {k: m.const(k) for k in ("table", "dq_scale", "dq_zp")}, "y",
                        np.asarray(m.const("dq_scale")).dtype, m.state.opset)
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
                                    tag="zero_points"), "ONNX Runtime quantize_static, all ops quantized"),
              Variant("one_row_table", table, "NNCF (RoBERTa's token type table)")],
    check=check,
    rewrite=rewrite,
    signature=frozenset(),  # never a near miss: every activation's Q/DQ pair would be one
    after=("FakeQuantize",),
    targets=("openvino",),
)
