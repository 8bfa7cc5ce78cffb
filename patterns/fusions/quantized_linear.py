"""An INT8 dense block — quantized input · quantized weight + bias [→ GELU] [→ quantize] — as one op.

    y = Q( gelu( DQ(x_q) · DQ(W_q) + b ) )         GELU and the output Q each optional

qdq — ONNX Runtime's ``quantize_static`` (QDQ format)::

    x_q ─► DQ ─┐
    W_q ─► DQ ─► MatMul ─► [Q→DQ] ─► Add(b) ─► [Q→DQ] ─► [GELU] ─► [Q] ─► y_q
                            requantization pairs          every op of the decomposed GELU
                            (on by default)               re-quantized too when all op
                                                          types were quantized; b may be a DQ

qat — a PyTorch quantization-aware-training export: the float weight ``[out, in]``
goes through its own Q→DQ pair and a Transpose::

    W ─► Q ─► DQ ─► Transpose ─► MatMul …

The four variants are the block with and without GELU, each with and without the
output QuantizeLinear (the Q/K/V and the output projections end in a float Add).
The input's DequantizeLinear is read, not replaced: the Q, K and V projections
share it.

The fused node carries the quantized weight (``[K, N]``, its scale per tensor or
per output column), the float bias, the activation and the input and output
quantization parameters. Its body is a model-local function in the ``fusekit``
domain — DQ, DQ, MatMul, Add, [GELU], [Q] — which is the form each target gets:

- ``onnx``: the function call (any ONNX runtime inlines the body);
- ``openvino`` and ``ort``: the body inlined. Without the intermediate Q→DQ
  pairs OpenVINO's CPU plugin folds the whole block into one INT8 FullyConnected
  (bias, GELU and the output FakeQuantize as post-ops), and ONNX Runtime runs the
  MatMul as MatMulIntegerToFloat (see ``benchmarks/int8_forms.py``).

Dropping a requantization pair removes one rounding to the pair's step, so the
fused block differs from the QDQ one by at most half a step of each dropped pair
before the output rounding: the verifier's INT8 tolerance covers it and the
report names how many pairs were dropped.
"""
import numpy as np
import onnx
from onnx import helper, numpy_helper

from fusekit.engine.pattern import Const, Fusion, Var, Variant, either, op
from fusekit.engine.rewrite import MS
from fusekit.engine.state import IdentityMap

from .._common import SQRT2, dequantize, evaluate, last_dim, quantize, requantized, vector_reason
from .gelu import erf_gelu

DOMAIN = "fusekit"
EIGHT_BIT = (np.int8, np.uint8)

x = dequantize(Var("x_q", "the quantized input"), "x", "input", bind="x_dq")
stored = dequantize(Const("w_q", label="the quantized weight"), "w", "weight", bind="w_dq")
fake = dequantize(quantize(Const("w", label="the weight"), "wq", "weight", bind="w_q_node"), "w", "weight",
                  bind="w_dq")
weight = either(stored, fake, op.Transpose(stored, perm=[1, 0]), op.Transpose(fake, perm=[1, 0]), tag="weight",
                labels=("", "fake_quantized", "transposed", "fake_quantized_transposed"))
bias = either(Const("bias", label="the bias"), dequantize(Const("bias_q", label="the quantized bias"), "bias", "bias"))
dense = op.Add(requantized(op.MatMul(x, weight, _bind="matmul")), bias, _bind="add")

def _erf_form(approximate, node):
    return None if approximate in (None, "none") else f"is the {approximate} approximation, not the erf GELU"


activation = either(op.Gelu(requantized(dense), _domain=MS), op.Gelu(requantized(dense), approximate=_erf_form),
                    erf_gelu(requantized(dense), step=requantized))


def quantized_output(p):
    return quantize(p, "y", "output", bind="y_q")


def _dtype(m, name: str, default=None):
    """The type a zero point gives its tensor (``default`` when there is none)."""
    if name in m.consts:
        return np.asarray(m.const(name)).dtype
    return None if default is None else np.dtype(default)


def _input_type(m):
    return _dtype(m, "x_zero_point", m["x_q"].dtype)


def check(m) -> str | None:
    if m.state.opset < 13:
        return f"opset {m.state.opset}: per-channel DequantizeLinear needs opset 13"
    if m.const("x_scale").size != 1 or ("x_zero_point" in m.consts and m.const("x_zero_point").size != 1):
        return "the input is quantized per channel, not per tensor"
    x_type = _input_type(m)
    if x_type not in EIGHT_BIT:
        return f"the input is {x_type or 'of unknown type'}, not 8-bit"
    w = _weight(m)
    if isinstance(w, str):
        return w
    w_q, scale, zero = w
    if w_q.ndim != 2 or w_q.dtype not in EIGHT_BIT:
        return f"the weight is {w_q.dtype}{list(w_q.shape)}, not a 2-D 8-bit matrix"
    if scale.size not in (1, w_q.shape[1]) or zero.size not in (1, w_q.shape[1]):
        return f"the weight scale has {scale.size} values: per tensor or per output column only ({w_q.shape[1]})"
    if (reason := vector_reason("the bias", _bias(m), w_q.shape[1], "the weight's column count")):
        return reason
    if "y_scale" in m.consts:
        if "y_zero_point" not in m.consts and m.node("y_q").attrs.get("output_dtype"):
            return "the output type is set by output_dtype, which the fused form does not carry"
        if m.const("y_scale").size != 1 or ("y_zero_point" in m.consts and m.const("y_zero_point").size != 1):
            return "the output is quantized per channel, not per tensor"
        if _dtype(m, "y_zero_point", np.uint8) not in EIGHT_BIT:
            return f"the output is quantized to {_dtype(m, 'y_zero_point')}, not 8 bits"
    n = last_dim(m.node("matmul").outputs[0])
    if n is not None and n != w_q.shape[1]:
        return f"the MatMul has {n} columns, the weight {w_q.shape[1]}"
    return None


def _weight(m):
    """(W_q as [K, N], scale, zero point), the scale and zero point along N or per tensor;
    or why not."""
    dq = m.node("w_dq")
    cache = m.state.memo(__name__, IdentityMap)  # by the weight's DequantizeLinear: every variant, then rewrite, evaluate once
    if dq in cache:
        return cache[dq]
    scale = np.asarray(m.const("w_scale"))
    axis = dq.attrs.get("axis", 1)
    if "w_q" in m.consts:
        w_q = np.asarray(m.const("w_q"))
    else:
        q = m.node("w_q_node")
        values = {"w": m.const("w"), "s": m.const("wq_scale")}
        if "wq_zero_point" in m.consts:
            values["z"] = m.const("wq_zero_point")
        w_q = evaluate([helper.make_node("QuantizeLinear", list(values), ["w_q"], **q.attrs)], values, "w_q",
                       _dtype(m, "wq_zero_point", np.uint8), m.state.opset)
    zero = np.asarray(m.const("w_zero_point")) if "w_zero_point" in m.consts else np.zeros((), w_q.dtype)
    if w_q.ndim == 2 and (m.took("transposed") or m.took("fake_quantized_transposed")):
        w_q, axis = w_q.T, 1 - axis % 2
    result = f"the weight is {w_q.dtype}{list(w_q.shape)}, not a 2-D matrix"
    if w_q.ndim == 2 and scale.size > 1 and axis % 2 == 0:
        result = "the weight is quantized per row (along K): no INT8 MatMul kernel takes that scale"
    elif w_q.ndim == 2:
        result = (np.ascontiguousarray(w_q), scale.reshape(-1) if scale.size > 1 else scale.reshape(()),
                  zero.reshape(-1) if zero.size > 1 else zero.reshape(()).astype(w_q.dtype))
    cache[dq] = result
    return result


def _bias(m) -> np.ndarray:
    if "bias" in m.consts:
        return np.asarray(m.const("bias"))
    zero = m.const("bias_zero_point").astype(np.int64) if "bias_zero_point" in m.consts else 0
    return ((m.const("bias_q").astype(np.int64) - zero).astype(np.float32) * m.const("bias_scale")).astype(np.float32)


def block_function(gelu: str | None, quantized: bool, opset: int) -> onnx.FunctionProto:
    """The fused op's body. ``gelu``: None, ``"erf"`` (decomposed), ``"onnx"`` (Gelu-20) or ``"ms"``."""
    n = helper.make_node
    nodes = [n("DequantizeLinear", ["x_q", "x_scale", "x_zero_point"], ["x"]),
             n("DequantizeLinear", ["w_q", "w_scale", "w_zero_point"], ["w"], axis=1),
             n("MatMul", ["x", "w"], ["xw"]),
             n("Add", ["xw", "bias"], ["y" if gelu is None else "z"])]
    if gelu == "erf":
        nodes += [n("Constant", [], ["sqrt2"], value=numpy_helper.from_array(np.array(SQRT2, np.float32))),
                  n("Div", ["z", "sqrt2"], ["z_scaled"]), n("Erf", ["z_scaled"], ["erf"]),
                  n("Constant", [], ["one"], value=numpy_helper.from_array(np.array(1.0, np.float32))),
                  n("Add", ["erf", "one"], ["one_plus_erf"]), n("Mul", ["z", "one_plus_erf"], ["z_gated"]),
                  n("Constant", [], ["half"], value=numpy_helper.from_array(np.array(0.5, np.float32))),
                  n("Mul", ["z_gated", "half"], ["y"])]
    elif gelu is not None:
        nodes.append(n("Gelu", ["z"], ["y"], domain=MS if gelu == "ms" else ""))
    inputs = ["x_q", "x_scale", "x_zero_point", "w_q", "w_scale", "w_zero_point", "bias"]
    if quantized:
        nodes.append(n("QuantizeLinear", ["y", "y_scale", "y_zero_point"], ["y_q"]))
        inputs += ["y_scale", "y_zero_point"]
    name = "QuantizedLinear" + ("Gelu" if gelu else "") + ("" if quantized else "ToFloat")
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(MS, 1)] if gelu == "ms" else [])
    return helper.make_function(DOMAIN, name, inputs, ["y_q" if quantized else "y"], nodes, imports,
                                doc_string="y = Q(gelu(DQ(x_q) · DQ(w_q) + bias)); GELU and Q as the name says")


def _gelu_form(m, target: str, opset: int) -> str | None:
    if not m.variant.name.startswith("gelu"):
        return None
    if target == "ort":
        return "ms"
    return "onnx" if opset >= 20 else "erf"


def rewrite(m, _, emit):
    requantizations = sum(n.op == "QuantizeLinear" for n in m.nodes) - ("y_q" in m.named) - ("w_q_node" in m.named)
    if requantizations:
        emit.note("QuantizedLinear dropped {count} requantization pairs inside fused blocks: one rounding each "
                  "fewer, so each block's output may move by a step (verification compares in steps)", requantizations)
    w_q, w_scale, w_zero = _weight(m)
    x_type = _input_type(m)
    inputs = [m["x_q"], m["x_scale"],
              m["x_zero_point"] if "x_zero_point" in m.consts else emit.small(np.zeros((), x_type)),
              emit.const("weight_quantized", w_q), emit.const("weight_scale", w_scale),
              emit.const("weight_zero_point", w_zero),
              m["bias"] if "bias" in m.consts else emit.const("bias", _bias(m))]
    quantized = "y_scale" in m.consts
    if quantized:
        inputs += [m["y_scale"], m["y_zero_point"] if "y_zero_point" in m.consts else emit.small(np.zeros((), np.uint8))]
    gelu = _gelu_form(m, emit.target, emit.opset)
    function = block_function(gelu, quantized, emit.opset)
    if emit.target == "onnx":
        return emit.call(function, *inputs)
    if emit.target == "ort" and x_type == np.uint8:
        # ONNX Runtime's fastest INT8 form: its integer MatMul with the bias, then Gelu and Q
        x_q, x_scale, x_zero, w_q, w_scale, w_zero, b = inputs[:7]
        y = emit.MatMulIntegerToFloat(x_q, w_q, x_scale, w_scale, x_zero, w_zero, b, _domain=MS)
        y = emit.Gelu(y, _domain=MS) if gelu else y
        return emit.QuantizeLinear(y, *inputs[7:]) if quantized else y
    return emit.inline(function, *inputs)


def _variants():
    gelu = "ONNX Runtime quantize_static (QDQ; MatMul only or all ops), PyTorch QAT"
    return [
        Variant("gelu_quantized", quantized_output(activation), f"the FFN up-projection: {gelu}"),
        Variant("quantized", quantized_output(dense), "Q/K/V and output projections with a quantized output (all ops)"),
        Variant("gelu", activation, "the FFN up-projection feeding a float consumer"),
        Variant("float", dense, "Q/K/V and output projections feeding Reshape or the residual Add"),
    ]


FUSION = Fusion(
    name="QuantizedLinear",
    variants=_variants(),
    check=check,
    rewrite=rewrite,
    signature=frozenset({"MatMul+DequantizeLinear"}),  # a near miss: a MatMul reading something quantized
    # a dynamically quantized block is DynamicQuantizedLinear's: taken first, it is no near miss here
    after=("FakeQuantize", "Gelu", "DynamicQuantizedLinear"),
    reads=("x_dq",),
)
