"""A float Cast to the type its input already has changes nothing, and is bypassed.

Float16 converters and mixed-precision exports leave ``Cast(to=float)`` on values that
are already float (inside a GELU, around a LayerNorm's statistics)::

    x (float) ─► Cast(to=float) ─► …      ⇒      x ─► …

Exact: a Cast to the same type is the identity. The input's type must be known, and the
Cast's output must not be a graph output (its name would go): that one is a near miss.
"""
from onnx import helper

from fusekit.engine.graph import is_graph_output
from fusekit.engine.pattern import Rule, Var, Variant, op

from .._common import is_float, onnx_dtype


def same_type(to, node):
    """Attribute predicate: the Cast is to its input's own type (known)."""
    x = node.inputs[0]
    if x.dtype is None:
        return "the input's type is unknown"
    have = onnx_dtype(x)
    if have != to:
        return f"casts {helper.tensor_dtype_to_string(have)} to {helper.tensor_dtype_to_string(to)}"
    # integer and bool Casts stay: they build masks and shapes, which other checks read as written
    return None if is_float(x) else f"casts {helper.tensor_dtype_to_string(have)}, not a floating type"


cast = op.Cast(Var("x", "the input"), to=same_type)


def check(m) -> str | None:
    if is_graph_output(m.graph, m.anchor.outputs[0]):
        return f"its output '{m.anchor.outputs[0].name}' is a graph output"
    return None


def rewrite(m, _, emit):
    return m["x"]  # a value already in the graph: the Cast's users read it instead


RULE = Rule(
    name="NoOpCast",
    variants=[Variant("same_type", cast, "float16 converters, mixed-precision exports")],
    check=check,
    rewrite=rewrite,
    # only a Cast to its own type that could not go is a near miss; one that changes the type is what a Cast is for
    near_miss=lambda miss: miss.complete,
)
