"""SkipLayerNormalization: the residual Add, and the bias Add before it, folded into the LayerNorm.

    y = LayerNorm(input + bias + skip)          (runs after the LayerNorm fusion)

bias — every BERT sublayer output (TorchScript, dynamo)::

    h ─► MatMul(W) ─► Add(bias) ─► Add(skip) ─► LayerNormalization ─► y

plain — a residual without a bias to fold::

    input ─► Add(skip) ─► LayerNormalization ─► y

Where the sum input + bias + skip is also used later (pre-LayerNorm models), it
becomes the op's fourth output instead of blocking the fusion.

Either variant takes a LayerNormalization without β (``no_beta``: ModernBERT's
``LayerNorm(bias=False)`` as the dynamo exporter writes it, two inputs; the TorchScript
exporter writes a zero β constant instead, which is a β like any other)::

    input ─► Add(skip) ─► LayerNormalization(γ) ─► y

Checks: the LayerNorm normalizes the last axis; γ, β (if any) and the bias are constant [H]
vectors; input and skip are computed values whose batch and sequence dimensions
are one value's (the residual stream each was computed from, read back through ops
that keep them) or trace back to the model's inputs (so neither broadcasts, as the
embedding sum's [1, S, H] position term would); ε is the
LayerNorm's own (ONNX's default 1e-5 when it has none). Only ``ort`` has this op.
"""

from fusekit.engine.graph import attr, const_value, is_graph_output
from fusekit.engine.pattern import Const, Fusion, Var, Variant, either, op
from fusekit.engine.rewrite import MS
from fusekit.engine.shapes import leading_origin, rank_through, spans_batch_and_sequence

from .._common import dropped_pairs, last_axis_attr, last_dim, per_channel_pair, requantized, statistics_reason, vector_reason

gamma = Const("gamma", label="γ")
beta = Const("beta", label="β")


def normalized(total):
    total = requantized(total)  # ONNX Runtime's quantizer (all ops) rounds the sum through a Q→DQ pair
    return either(op.LayerNormalization(total, gamma, beta, axis=last_axis_attr),
                  op.LayerNormalization(total, gamma, axis=last_axis_attr), tag="beta", labels=("", "no_beta"))


def residual(inner):
    return op.Add(inner, Var("skip", "the residual"), _bind="sum")


def check(m) -> str | None:
    reason = statistics_reason(m.graph, m.anchor) or per_channel_pair(m)
    if reason:
        return reason
    h = last_dim(m["input"]) or last_dim(m["skip"])
    for name, label in (("gamma", "γ"), ("beta", "β"), ("bias", "the bias")):
        if name in m.consts:
            reason = vector_reason(label, m.const(name), h)
            if reason:
                return reason
    same_origin = leading_origin(m["input"]) is leading_origin(m["skip"])
    for name in ("input", "skip"):
        t = m[name]
        if const_value(t) is not None:
            return f"the {name} is a constant, not a computed value"
        if rank_through(t) != 3:  # an inlined INT8 block's product has no shape of its own
            return f"the {name} '{t.name}' is not known to be a 3-D [batch, sequence, hidden] value"
        if not same_origin and not spans_batch_and_sequence(m.graph, t, m.state.spans):
            return (f"the {name} '{t.name}' may broadcast over batch or sequence; "
                    "SkipLayerNormalization adds two [batch, sequence, hidden] values")
    return None


def rewrite(m, _, emit):
    ln = m.anchor
    eps = attr(ln, "epsilon")
    beta = None if m.took("no_beta") else m["beta"]  # an omitted β, as LayerNormalization's
    inputs = [m["input"], m["skip"], m["gamma"], beta, m["bias"] if "bias" in m.values else None]
    while inputs[-1] is None:
        inputs.pop()
    if (pairs := dropped_pairs(m)):
        emit.note("SkipLayerNorm dropped {count} requantization pairs on residual sums: the op adds and "
                  "normalizes unrounded, so its output may move by a step (verification compares in steps)", pairs)
    total = m.node("sum").outputs[0]
    keep_sum = any(u is not ln for u in total.outputs) or is_graph_output(m.graph, total)
    outs = emit.SkipLayerNormalization(*inputs, _domain=MS, epsilon=float(1e-5 if eps is None else eps),
                                       _outputs=(0, 3) if keep_sum else (0,))
    if keep_sum:
        return [(ln.outputs[0], outs[0]), (total, outs[1])]
    return outs


FUSION = Fusion(
    name="SkipLayerNorm",
    variants=[
        Variant("bias", normalized(residual(op.Add(Var("input", "the sublayer output"), Const("bias", label="the bias")))),
                "MatMul + bias + residual before every BERT LayerNorm"),
        Variant("plain", normalized(residual(Var("input", "the sublayer output"))), "a residual without bias"),
    ],
    check=check,
    rewrite=rewrite,
    signature=frozenset({"Add"}),
    exports=("sum",),
    after=("LayerNorm",),
    targets=("ort",),
)
