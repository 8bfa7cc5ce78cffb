"""LayerNormalization from primitives.

    y = (x - mean(x)) / sqrt(mean((x - mean(x))²) + ε) · γ + β      (mean over the last axis)

pytorch — the TorchScript exporter below opset 17, the dynamo exporter's decomposition,
hand-written models::

    x ─┬──────────────► Sub ─┬─► Pow(2) ─► ReduceMean ─► Add(ε) ─► Sqrt ─┐
       └─► ReduceMean ─►─┘   └──────────────────────────────────────────► Div ─► Mul(γ) ─► Add(β) ─► y

  the same pattern also takes, each recorded as a tag of the match:
    Mul(d, d) in place of Pow(d, 2)                     mul_square
    d · Reciprocal(std) in place of d / std             reciprocal
    Cast(x → float32) before the statistics             cast          (mixed-precision exports)
    Cast(x − mean → float32), mean and Sub in float16   cast_centered (ONNX Runtime's float16 tests)
    Cast(back) after the normalization, before γ, β     cast_back     (with either, or alone after
                                                                       float32 statistics)
    Cast(2 → float16) as the Pow exponent               cast_exponent
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
from onnx import TensorProto, helper

from fusekit.engine.graph import rank
from fusekit.engine.pattern import Fusion, Var, Variant, either, maybe, op

from .._common import (constant, dropped_pairs, exactly, has_constant, is_float, last_axis, last_dim, onnx_dtype,
                       per_channel_pair, requantized, stored, vector_reason)

x = Var("x", "the input")
# ONNX Runtime's quantizer (all ops) stores γ and β quantized and rounds ε through a Q→DQ pair
epsilon = stored("epsilon", "ε")
gamma = stored("gamma", "γ")
beta = stored("beta", "β")
CONSTANTS = ("epsilon", "gamma", "beta")
# ... and rounds the variance, ε + variance, the normalized value and its product with γ (every
# value an op it quantizes computes) through a Q→DQ pair: any inner value may be requantized
step = requantized


def mean(v):
    return op.ReduceMean(v, axes=last_axis, keepdims=1)


def _pytorch():
    xs = maybe(lambda v: op.Cast(v, to=TensorProto.FLOAT), x, tag="cast", present="cast")
    mu = step(mean(xs))

    def centered():  # a new object each time: exporters may compute x - mean twice
        return maybe(lambda v: op.Cast(v, to=TensorProto.FLOAT), step(op.Sub(xs, mu)), tag="cast_centered",
                     present="cast_centered")

    d = centered()
    two = either(exactly(2.0), op.Cast(exactly(2.0)), tag="two", labels=("", "cast_exponent"))
    square = step(either(op.Pow(centered(), two), op.Mul(d, d), tag="square", labels=("", "mul_square")))
    std = step(op.Sqrt(step(op.Add(step(mean(square)), epsilon))))
    normalized = step(either(op.Div(centered(), std), op.Mul(centered(), step(op.Reciprocal(std))),
                             tag="reciprocal", labels=("", "reciprocal")))
    normalized = maybe(lambda v: op.Cast(v, _bind="cast_back"), normalized, tag="cast_back", present="cast_back")
    scaled = maybe(lambda v: step(op.Mul(v, gamma)), normalized, tag="gamma", absent="no_gamma")
    return either(op.Add(scaled, beta), op.Mul(normalized, gamma), tag="beta", labels=("", "no_beta"))


def _keras():
    mu = mean(x)
    d = op.Sub(x, mu)
    g = op.Mul(op.Reciprocal(op.Sqrt(op.Add(mean(op.Mul(d, d)), epsilon))), gamma)
    return op.Add(op.Mul(x, g), op.Sub(beta, op.Mul(mu, g)))


def check(m) -> str | None:
    h = last_dim(m["x"])
    if not is_float(m["x"]):
        return f"the input has type {m['x'].dtype}, not a floating type"
    eps = constant(m, "epsilon")
    if eps.size != 1:
        return f"ε must be a scalar, but has shape {list(eps.shape)}"
    if not eps.item() >= 0:
        return f"ε is {eps.item()}, not a non-negative number"
    for name in ("gamma", "beta"):
        if has_constant(m, name):
            value = constant(m, name)
            if value.ndim > 1 and value.ndim <= (rank(m["x"]) or 0) and all(d == 1 for d in value.shape[:-1]):
                value = value.reshape(-1)  # [1, 1, H] (Keras 3) broadcasts as [H] does over a rank-3 input
            reason = vector_reason({"gamma": "γ", "beta": "β"}[name], value, h)
            if reason:
                return reason
    return per_channel_pair(m) or _types_reason(m)


def _types(m) -> tuple[int, int]:
    """The element type the fused LayerNormalization runs in (its X, γ and β), and the type of
    the result the chain hands on (a Cast after it, if any, gives that)."""
    x_type = onnx_dtype(m["x"])
    run = TensorProto.FLOAT if m.has("cast") and not m.has("cast_back") else x_type
    out = m.node("cast_back").attrs.get("to") if m.has("cast_back") else run
    return run, out


def _types_reason(m) -> str | None:
    """Why the Casts around the statistics cannot be carried by one LayerNormalization (None when they can).

    The forms taken (float16 x): statistics in float32 after a Cast of x or of x − mean, and a
    Cast back to float16 before γ and β — LayerNormalization computes its statistics in float32
    (stash_type) and rounds once, to the output type; a float32 chain with a Cast to float16
    before float16 γ and β — LayerNormalization in float32 with γ and β widened exactly, then
    the Cast. Nothing fused may round γ or β to a narrower type.
    """
    x_type = onnx_dtype(m["x"])
    if m.has("cast_centered") and not (m.has("cast_back") and m.node("cast_back").attrs.get("to") == x_type):
        return "x − mean is cast to float32 but the normalized value is not cast back to the input's type"
    if m.has("cast") and m.has("cast_back") and m.node("cast_back").attrs.get("to") != x_type:
        return "the Cast after the statistics does not return to the input's type"
    run, out = _types(m)
    if not np.issubdtype(helper.tensor_dtype_to_np_dtype(out), np.floating):
        return f"the Cast after the statistics is to {helper.tensor_dtype_to_string(out)}, not a floating type"
    width = np.dtype(helper.tensor_dtype_to_np_dtype(run)).itemsize
    for name, label in (("gamma", "γ"), ("beta", "β")):
        if has_constant(m, name) and constant(m, name).dtype.itemsize > width:
            return (f"{label} is {constant(m, name).dtype} where the normalization runs in "
                    f"{helper.tensor_dtype_to_string(run)}: LayerNormalization wants one type for X, γ and β, "
                    f"and rounding {label} to it is not exact")
    return None


def _vector(m, emit, name, dtype):
    """γ or β as the [H] vector LayerNormalization takes, in its type (widened exactly where the
    chain kept it narrower; Keras 3 stores it as [1, 1, H])."""
    value = constant(m, name)
    if value.ndim == 1 and value.dtype == dtype and name in m.consts:
        return m[name]
    return emit.const(name, value.reshape(-1).astype(dtype))


def rewrite(m, _, emit):
    x_ = m["x"]
    h = last_dim(x_)
    run, out = _types(m)
    dtype = helper.tensor_dtype_to_np_dtype(run)
    if run != onnx_dtype(x_):
        x_ = emit.Cast(x_, to=run)  # x cast to float32 and never back: the whole normalization runs in float32
    g = _vector(m, emit, "gamma", dtype) if has_constant(m, "gamma") else emit.const("ones", np.ones(h, dtype=dtype))
    inputs = [x_, g] + ([_vector(m, emit, "beta", dtype)] if has_constant(m, "beta") else [])
    # Statistics in float32 (as the Cast variant computes them), or double for double inputs.
    stash = TensorProto.DOUBLE if run == TensorProto.DOUBLE else TensorProto.FLOAT
    y = emit.LayerNormalization(*inputs, axis=-1, epsilon=float(constant(m, "epsilon").item()), stash_type=stash)
    if (pairs := dropped_pairs(m, CONSTANTS)):
        emit.note("LayerNorm dropped {count} requantization pairs inside fused LayerNorms: the normalization is "
                  "computed unrounded, so its output may move by a step (verification compares in steps)", pairs)
    return y if out == run else emit.Cast(y, to=out)


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
