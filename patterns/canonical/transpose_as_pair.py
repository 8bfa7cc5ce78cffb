"""Two Transposes in a row are one: ``Transpose(Transpose(x, p), q)`` ⇒ ``Transpose(x, p∘q)``.

tf2onnx's einsum decompositions leave V as ``Transpose(0, 2, 3, 1)`` then
``Transpose(0, 1, 3, 2)``, which is the head transpose ``(0, 2, 1, 3)`` the attention
pattern reads. Exact: output axis i of the pair is input axis p[q[i]]; where that is the
identity the pair is bypassed (unless its output is a graph output). A first Transpose
that another node also reads is a near miss: both would stay, so nothing is simplified.
"""
from fusekit.engine.graph import attr, is_graph_output
from fusekit.engine.pattern import Rule, Var, Variant, op

from .._common import Permutation, as_transpose

pair = op.Transpose(op.Transpose(Var("x", "the input"), _bind="first"))


def check(m) -> Permutation | str:
    p, q = attr(m.node("first"), "perm"), attr(m.anchor, "perm")
    if p is None or q is None or len(p) != len(q):
        return "a Transpose without an explicit permutation of the same rank"
    composed = [p[i] for i in q]
    if composed == sorted(composed) and is_graph_output(m.graph, m.anchor.outputs[0]):
        return f"its output '{m.anchor.outputs[0].name}' is a graph output"
    return Permutation(tuple(composed))


RULE = Rule(
    name="TransposeAsPair",
    variants=[Variant("pair", pair, "tf2onnx (einsum decompositions)")],
    check=check,
    rewrite=as_transpose,
    near_miss=lambda miss: miss.complete,
)
