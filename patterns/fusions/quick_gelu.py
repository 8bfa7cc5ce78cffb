"""QuickGelu: the sigmoid approximation of GELU, kept as its own op.

    y = x · sigmoid(α · x)          α = 1.702 in CLIP and some MiniLM ports

    x ─┬─► Mul(α) ─► Sigmoid ─┐
       └─────────────────────► Mul ─► y

It is not GELU: it is fused into com.microsoft QuickGelu with α carried exactly,
never into Gelu or FastGelu. No standard ONNX op computes it, so only ``ort`` fuses it.
"""
from fusekit.engine.pattern import Const, Fusion, Var, Variant, op
from fusekit.engine.rewrite import MS

from .._common import is_float

x = Var("x", "the input")


def check(m) -> str | None:
    if not is_float(m["x"]):
        return f"the input has type {m['x'].dtype}, not a floating type"
    alpha = m.const("alpha")
    return None if alpha.size == 1 else f"α must be a scalar, but has shape {list(alpha.shape)}"


def rewrite(m, _, emit):
    return emit.QuickGelu(m["x"], alpha=float(m.const("alpha").item()), _domain=MS)


FUSION = Fusion(
    name="QuickGelu",
    variants=[Variant("sigmoid", op.Mul(x, op.Sigmoid(op.Mul(x, Const("alpha", label="α")))), "CLIP, OpenAI-style code")],
    check=check,
    rewrite=rewrite,
    signature=frozenset({"Sigmoid"}),
    targets=("ort",),
)
