"""GELU, exact (erf) form.

    y = x · 0.5 · (1 + erf(x / √2))

pytorch — TorchScript and dynamo exporters (``nn.GELU()``, ``F.gelu``)::

    x ─┬─► Div(√2) ─► Erf ─► Add(1) ─┐
       └────────────────────────────► Mul ─► Mul(0.5) ─► y        0.5 applied after
       x ─► Mul(0.5) ───────────────► Mul ─► y                    0.5 applied first

tf — tf2onnx, keras2onnx::

    x ─┬─► Mul(1/√2) ─► Erf ─► Add(1) ─► Mul(0.5) ─┐
       └──────────────────────────────────────────► Mul ─► y

All three orders of the product x · 0.5 · (1 + erf) match, with Div(√2) or Mul(1/√2).
Constants must agree to a relative 1e-4, or be the constant's own float16 rounding of
the value (fp16's √2 is 1.4140625).

Forms: ``ort`` com.microsoft Gelu (any opset); ``onnx`` and ``openvino`` ONNX Gelu (opset 20).
"""
from fusekit.engine.pattern import Fusion, Var, Variant, either, op
from fusekit.engine.rewrite import MS

from .._common import SQRT2, c, is_float, product3

x = Var("x", "the input")


def erf_gelu(x, step=lambda p: p):
    """x · 0.5 · (1 + erf(x / √2)) in every order; ``step`` wraps each inner value (the
    INT8 block reads a GELU whose every op was re-quantized)."""
    scaled = either(step(op.Div(x, step(c(SQRT2, "√2")))), step(op.Mul(x, step(c(1 / SQRT2, "1/√2")))),
                    tag="scale", labels=("div_sqrt2", "mul_inv_sqrt2"))
    one_plus_erf = step(op.Add(step(op.Erf(scaled)), step(c(1.0, "the 1 of 1 + erf"))))
    half = step(c(0.5, "the 0.5 of GELU"))
    return either(*product3(x, half, one_plus_erf, step), tag="order", labels=("half_first", "half_after", "half_inner"))


def check(m) -> str | None:
    return None if is_float(m["x"]) else f"the input has type {m['x'].dtype}, not a floating type"


def rewrite(m, _, emit):
    if emit.target == "ort":
        return emit.Gelu(m["x"], _domain=MS)
    return emit.Gelu(m["x"])


FUSION = Fusion(
    name="Gelu",
    variants=[Variant("erf", erf_gelu(x), "TorchScript, dynamo, tf2onnx, keras2onnx")],
    check=check,
    rewrite=rewrite,
    signature=frozenset({"Erf"}),
    min_opset={"onnx": 20, "openvino": 20},
)
