"""A product with a negated factor, added, is a subtraction: ``(−m)·g + b`` ⇒ ``b − m·g``.

Keras 3's LayerNorm writes its shift as ``−mean·g + β`` where tf_keras writes
``β − mean·g``, the form the LayerNorm fusion reads::

    m ─► Neg ─► Mul(g) ─► Add(b)      ⇒      m ─► Mul(g) ─► Sub(b, ·)

Exact in IEEE arithmetic: negation is exact, (−m)·g rounds to −(m·g) because rounding
is symmetric, and −p + b is the same operation as b − p. The Neg and the Mul must
serve this sum alone.
"""
from fusekit.engine.pattern import Rule, Var, Variant, op

from .._common import is_float

negated = op.Add(op.Mul(op.Neg(Var("m", "the negated value")), Var("g", "the factor")), Var("b", "the addend"))


def check(m) -> str | None:
    if not is_float(m["m"]):
        return f"the negated value has type {m['m'].dtype}, not a floating type (−x·g + b wraps otherwise)"
    return None


def rewrite(m, _, emit):
    return emit.Sub(m["b"], emit.Mul(m["m"], m["g"]))


RULE = Rule(
    name="SubAsNegatedProduct",
    variants=[Variant("neg_mul_add", negated, "tf2onnx from Keras 3 (LayerNorm's shift)")],
    check=check,
    rewrite=rewrite,
    signature=frozenset({"Neg"}),
)
