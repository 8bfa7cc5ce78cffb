"""LayerNormalization from primitives.

    y = (x - mean(x)) / sqrt(mean((x - mean(x))²) + ε) · γ + β      (mean over the last axis)

pytorch — the TorchScript exporter below opset 17, the dynamo exporter's decomposition,
hand-written models::

    x ─┬──────────────► Sub ─┬─► Pow(2) ─► ReduceMean ─► Add(ε) ─► Sqrt ─┐
       └─► ReduceMean ─►─┘   └──────────────────────────────────────────► Div ─► Mul(γ) ─► Add(β) ─► y

  the same pattern also takes, each recorded as a tag of the match:
    Mul(d, d) in place of Pow(d, 2)                     mul_square
    d · Reciprocal(std) in place of d / std             reciprocal
    Cast(x → float32) … Cast(back) around the statistics  cast   (mixed-precision exports)
    x - mean computed by two Sub nodes                  (no label: both must compute x - mean)
    no Mul(γ), or no Add(β) (but not neither)           no_gamma / no_beta

keras — tf2onnx / keras2onnx::

    x ─┬─► ReduceMean = m ─► Sub(x, m) = d ─► Mul(d, d) ─► ReduceMean ─► Add(ε) ─► Sqrt ─► Reciprocal ─► Mul(γ) = g
       ├──────────────────────────────────────────────────────────────────────────► Mul(x, g) ─────────────┐
       └─► m ─► Mul(m, g) ─► Sub(β, ·) ─────────────────────────────────────────────────────────────────────► Add ─► y

Checks: both reductions over the last axis with keepdims; ε a scalar constant ≥ 0,
carried over exactly; γ and β of the normalized size, 1-D or [1, …, 1, H] of no higher
rank than the input (Keras 3), which broadcasts alike; a float input.
"""
import numpy as np
from onnx import TensorProto

from fusekit.engine.graph import rank
from fusekit.engine.pattern import Const, Fusion, Var, Variant, either, maybe, op

from ._common import exactly, is_float, last_axis, last_dim, onnx_dtype, vector_reason

x = Var("x", "the input")
epsilon = Const("epsilon", label="ε")
gamma = Const("gamma", label="γ")
beta = Const("beta", label="β")


def mean(v):
    return op.ReduceMean(v, axes=last_axis, keepdims=1)


def _pytorch():
    xs = maybe(lambda v: op.Cast(v, to=TensorProto.FLOAT), x, tag="cast", present="cast")
    mu = mean(xs)

    def centered():  # a new object each time: exporters may compute x - mean twice
        return op.Sub(xs, mu)

    d = centered()
    variance = mean(either(op.Pow(centered(), exactly(2.0)), op.Mul(d, d), tag="square", labels=("", "mul_square")))
    std = op.Sqrt(op.Add(variance, epsilon))
    normalized = either(op.Div(centered(), std), op.Mul(centered(), op.Reciprocal(std)),
                        tag="reciprocal", labels=("", "reciprocal"))
    normalized = maybe(lambda v: op.Cast(v, _bind="cast_back"), normalized, tag="cast", present="cast")
    scaled = maybe(lambda v: op.Mul(v, gamma), normalized, tag="gamma", absent="no_gamma")
    return either(op.Add(scaled, beta), op.Mul(normalized, gamma), tag="beta", labels=("", "no_beta"))


def _keras():
    mu = mean(x)
    d = op.Sub(x, mu)
    g = op.Mul(op.Reciprocal(op.Sqrt(op.Add(mean(op.Mul(d, d)), epsilon))), gamma)
    return op.Add(op.Mul(x, g), op.Sub(beta, op.Mul(mu, g)))


def check(m):
    h = last_dim(m["x"])
    if not is_float(m["x"]):
        return f"the input has type {m['x'].dtype}, not a floating type"
    eps = m.const("epsilon")
    if eps.size != 1:
        return f"ε must be a scalar, but has shape {list(eps.shape)}"
    if not eps.item() >= 0:
        return f"ε is {eps.item()}, not a non-negative number"
    for name in ("gamma", "beta"):
        if name in m.consts:
            value = m.const(name)
            if value.ndim > 1 and value.ndim <= (rank(m["x"]) or 0) and all(d == 1 for d in value.shape[:-1]):
                value = value.reshape(-1)  # [1, 1, H] (Keras 3) broadcasts as [H] does over a rank-3 input
            reason = vector_reason({"gamma": "γ", "beta": "β"}[name], value, h)
            if reason:
                return reason
    if m.has("cast") and m.node("cast_back").attrs.get("to") != onnx_dtype(m["x"]):
        return "the Cast after the statistics does not return to the input's type"
    return None


def _vector(m, emit, name):
    """γ or β as the [H] vector LayerNormalization takes (Keras 3 stores them as [1, 1, H])."""
    value = m.const(name)
    return m[name] if value.ndim == 1 else emit.const(name, value.reshape(-1))


def rewrite(m, emit):
    x_ = m["x"]
    h = last_dim(x_)
    g = _vector(m, emit, "gamma") if "gamma" in m.values else emit.const("ones", np.ones(h, dtype=x_.dtype))
    inputs = [x_, g] + ([_vector(m, emit, "beta")] if "beta" in m.values else [])
    # Statistics in float32 (as the Cast variant computes them), or double for double inputs.
    stash = TensorProto.DOUBLE if onnx_dtype(x_) == TensorProto.DOUBLE else TensorProto.FLOAT
    return emit.LayerNormalization(*inputs, axis=-1, epsilon=float(m.const("epsilon").item()), stash_type=stash)


FUSION = Fusion(
    name="LayerNorm",
    variants=[
        Variant("pytorch", _pytorch(), "TorchScript exporter (opset < 17), dynamo decompositions, hand-written"),
        Variant("keras", _keras(), "tf2onnx, keras2onnx"),
    ],
    check=check,
    rewrite=rewrite,
    signature=frozenset({"ReduceMean"}),
    min_opset={"ort": 17, "onnx": 17, "openvino": 17},
)
