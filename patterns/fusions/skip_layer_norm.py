"""SkipLayerNorm: the residual Add, and the bias Add before it, written as ONNX Runtime runs them fastest.

    y = LayerNorm(input + bias + skip)          (runs after the LayerNorm fusion)

becomes ``LayerNormalization(skip − (−bias − input))``, or ``LayerNormalization(Sum(input, skip))``
where there is no bias. ONNX Runtime turns an Add + LayerNormalization into its
SkipLayerNormalization at load, and on CPU that kernel runs 3–5× slower than the
LayerNormalization kernel on the same sum (``benchmarks/skip_layer_norm_forms.py``); its fusion
matches Add only, so these spellings keep the fast kernel. Both are exact whatever the shapes
(negation is exact, and Sub and Sum broadcast as Add does), so nothing about the addends needs
proving. The respelled sum takes over the Add's value: the LayerNormalization, a Q→DQ pair on the
sum (ONNX Runtime's quantizer, all ops) and later readers of the sum (pre-LayerNorm models) stay
as they are. On a GPU, where ONNX Runtime's kernel is the fast one, ``--disable SkipLayerNorm``
leaves the Add for ONNX Runtime to fuse itself.

bias — every BERT sublayer output (TorchScript, dynamo)::

    h ─► MatMul(W) ─► Add(bias) ─► Add(skip) ─► LayerNormalization ─► y

plain — a residual without a bias to fold::

    input ─► Add(skip) ─► LayerNormalization ─► y

contrib — ONNX Runtime's own ``SkipLayerNormalization`` (its transformers optimizer's output,
Optimum's O2 and above), unfused the same way::

    SkipLayerNormalization(input, skip, γ[, β[, bias]])  ⇒  LayerNormalization(skip − (−bias − input), γ[, β])

with the op's own ε (1e-12 where it has none), and its fourth output, the sum, where it is read;
its mean and inverse-deviation outputs are training-only, and a model that reads them is a near
miss. The contrib op adds in its own order, so this one is equivalent up to float rounding, as
every fused op is, rather than bit for bit.

The first two variants take a LayerNormalization without β (``no_beta``: ModernBERT's
``LayerNorm(bias=False)`` as the dynamo exporter writes it)::

    input ─► Add(skip) ─► LayerNormalization(γ) ─► y

Only ``ort`` takes it: OpenVINO and the ``onnx`` form read the Add as it is.
"""

from fusekit.engine.graph import attr, is_graph_output
from fusekit.engine.pattern import Const, Fusion, Var, Variant, either, op
from fusekit.engine.rewrite import MS

from .._common import dequantize, last_axis_attr, quantize

gamma = Const("gamma", label="γ")
beta = Const("beta", label="β")


def normalized(total):
    # ONNX Runtime's quantizer (all ops) rounds the sum through a Q→DQ pair, which stays
    total = either(dequantize(quantize(total, what="requantization", bind="sum_q"), what="requantization", bind="sum_dq"),
                   total)
    return either(op.LayerNormalization(total, gamma, beta, _bind="norm"), op.LayerNormalization(total, gamma, _bind="norm"),
                  tag="beta", labels=("", "no_beta"))


def residual(inner):
    return op.Add(inner, Var("skip", "the residual"), _bind="sum")


def contrib(*optional):
    return op.SkipLayerNormalization(Var("input", "the sublayer output"), Var("skip", "the residual"), gamma, *optional,
                                     _domain=MS)


def check(m) -> str | None:
    if m.anchor.op == "SkipLayerNormalization":
        used = [t.name for t in m.anchor.outputs[1:3] if t.outputs or is_graph_output(m.graph, t)]
        return f"its statistics output '{used[0]}' is read: a training-time output this rewrite does not carry" \
            if used else None
    norm = m.node("norm")
    reason = last_axis_attr(attr(norm, "axis"), norm)
    if reason:
        return (f"the LayerNormalization {reason}: not the hidden-vector norm ONNX Runtime fuses with the sum, "
                "so there is nothing to respell")
    return None


def rewrite(m, _, emit):
    if m.anchor.op != "SkipLayerNormalization":
        return [(m.node("sum").outputs[0], residual_sum(m, emit))]
    node, summed = m.anchor, residual_sum(m, emit)
    beta = [m["beta"]] if "beta" in m.values and m["beta"].name else []  # an omitted β: ""
    eps = attr(node, "epsilon")
    y = emit.LayerNormalization(summed, m["gamma"], *beta, axis=-1, epsilon=float(1e-12 if eps is None else eps))
    total = node.outputs[3] if len(node.outputs) > 3 else None
    read = total is not None and (total.outputs or is_graph_output(m.graph, total))
    return [(node.outputs[0], y)] + ([(total, summed)] if read else [])


def residual_sum(m, emit):
    """input + bias + skip as ``skip − (−bias − input)`` (one pass each, as the two Adds), or
    ``Sum(input, skip)`` without a bias: spellings ONNX Runtime's SkipLayerNorm fusion leaves alone."""
    if "bias" not in m.values:
        return emit.Sum(m["input"], m["skip"])
    negated = emit.Sub(emit.const("negated_bias", -m.const("bias")), m["input"])
    return emit.Sub(m["skip"], negated)


FUSION = Fusion(
    name="SkipLayerNorm",
    variants=[
        Variant("bias", normalized(residual(op.Add(Var("input", "the sublayer output"), Const("bias", label="the bias")))),
                "MatMul + bias + residual before every BERT LayerNorm"),
        Variant("plain", normalized(residual(Var("input", "the sublayer output"))), "a residual without bias"),
        Variant("contrib_bias", contrib(Var("beta", "β or nothing"), Const("bias", label="the bias")),
                "ONNX Runtime's transformers optimizer, Optimum O2+: the op with the sublayer's bias"),
        Variant("contrib", contrib(beta), "the same, no bias"),
        Variant("contrib_no_beta", contrib(), "the same, no β"),
    ],
    check=check,
    rewrite=rewrite,
    signature=frozenset({"Add", "SkipLayerNormalization"}),  # a LayerNorm alone is no candidate
    exports=("sum",),
    reads=("norm", "sum_q", "sum_dq"),  # the LayerNormalization and the sum's rounding stay as they are
    after=("LayerNorm",),
    targets=("ort",),
    min_opset={"ort": 17},  # the contrib op becomes a LayerNormalization
)
