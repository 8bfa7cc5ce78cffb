"""GELU, tanh approximation.

    y = 0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 · x³)))

pytorch — ``F.gelu(approximate="tanh")`` (x³ as Pow(x, 3) or Mul·Mul), GPT-2/BERT
"gelu_new" code, tf2onnx::

    x ─┬─► Pow(3) ─► Mul(0.044715) ─► Add(x) ─► Mul(√(2/π)) ─► Tanh ─► Add(1) ─┐
       └─► Mul(0.5) ─────────────────────────────────────────────────────────► Mul ─► y

factored — Megatron/OpenAI code, x·(1 + 0.044715·x²); ONNX Runtime's own tests and
GPT-2-style exports multiply the square as x·(x·0.044715)::

    x ─┬─► Mul(x) ─► Mul(0.044715) ─► Add(1) ─┐          or  x ─► Mul(0.044715) ─► Mul(x) ─► Add(1)
       ├─► Mul(√(2/π)) ──────────────────────► Mul ─► Tanh ─► Add(1) ─┐
       └─► Mul(0.5) ──────────────────────────────────────────────────► Mul ─► y

Every order of the products matches; constants must agree to a relative 1e-4, or be the
constant's own float16 rounding of the value.

Forms: ``ort`` com.microsoft FastGelu; ``onnx`` and ``openvino`` ONNX Gelu(approximate="tanh") (opset 20).
"""
from fusekit.engine.pattern import Fusion, Var, Variant, either, op
from fusekit.engine.rewrite import MS

from .._common import SQRT_2_OVER_PI, c, exactly, is_float, product3

x = Var("x", "the input")
k = c(SQRT_2_OVER_PI, "√(2/π)")
a = c(0.044715, "the cubic coefficient 0.044715")
one = c(1.0, "the 1 of 1 + tanh")
square = either(op.Mul(x, x), op.Pow(x, exactly(2.0)), tag="square", labels=("", "pow2"))
# x·(x·a) first: where a is off, the search then stops at a, not at a mismatched x
a_square = either(op.Mul(x, op.Mul(x, a)), op.Mul(square, a), tag="a_square", labels=("x_xa", ""))
cube = either(op.Pow(x, exactly(3.0)), op.Mul(op.Mul(x, x), x), tag="cube", labels=("pow3", "mul_cube"))


def _tanh_gelu(inner):
    return either(*product3(x, c(0.5, "the 0.5 of GELU"), op.Add(op.Tanh(inner), one)), tag="order",
                  labels=("half_first", "half_after", "half_inner"))


def check(m) -> str | None:
    return None if is_float(m["x"]) else f"the input has type {m['x'].dtype}, not a floating type"


def rewrite(m, _, emit):
    if emit.target == "ort":
        return emit.FastGelu(m["x"], _domain=MS)
    return emit.Gelu(m["x"], approximate="tanh")


FUSION = Fusion(
    name="FastGelu",
    variants=[
        Variant("tanh", _tanh_gelu(op.Mul(op.Add(x, op.Mul(cube, a)), k)), "F.gelu(approximate='tanh'), gelu_new, tf2onnx"),
        Variant("tanh_factored", _tanh_gelu(either(*product3(x, k, op.Add(a_square, one)), tag="inner",
                                                    labels=("xk_first", "xpoly_first", "kpoly_first"))),
                "Megatron / OpenAI x·(1 + 0.044715·x²)"),
    ],
    check=check,
    rewrite=rewrite,
    signature=frozenset({"Tanh"}),
    min_opset={"onnx": 20, "openvino": 20},
)
