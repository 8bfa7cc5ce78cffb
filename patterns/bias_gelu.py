"""A bias Add folded into the GELU that follows it (runs after Gelu/FastGelu fusion).

    x ─► Add(bias) ─► Gelu       ⇒   BiasGelu(x, bias)
    x ─► Add(bias) ─► FastGelu   ⇒   FastGelu(x, bias)

The bias must be a 1-D constant of the last dimension's size, which is what both
com.microsoft ops broadcast. Only ``ort`` has these ops.
"""
from fusekit.engine.pattern import Fusion, Var, Variant, op
from fusekit.engine.rewrite import MS

from ._common import bias, last_dim, vector_reason

x = Var("x", "the input")


def check(m):
    return vector_reason("the bias", m.const("bias"), last_dim(m["x"]))


def rewrite(m, emit):
    if m.variant.name == "gelu":
        return emit.BiasGelu(m["x"], m["bias"], _domain=MS)
    return emit.FastGelu(m["x"], m["bias"], _domain=MS)


FUSION = Fusion(
    name="BiasGelu",
    variants=[
        Variant("gelu", op.Gelu(op.Add(x, bias()), _domain=MS), "MatMul + bias before GELU (every BERT FFN)"),
        Variant("fast_gelu", op.FastGelu(op.Add(x, bias()), _domain=MS), "MatMul + bias before tanh GELU"),
    ],
    check=check,
    rewrite=rewrite,
    signature=frozenset({"Add"}),
    after=("Gelu", "FastGelu"),
    targets=("ort",),
)
