"""A size-1 axis inserted, moved and removed again is a Transpose of the other axes.

tf2onnx's einsum decompositions bring 4-D operands to 5-D and back; once the batched
MatMul between them is 4-D (``MatMulAsFlattenedBatch``), what is left is::

    x ─► Unsqueeze([a]) ─► Transpose(perm) ─► Squeeze([b])     (perm[b] = a: the new axis lands at b)
        ⇒   x ─► Transpose(perm without a, renumbered)           (nothing at all where that is the identity)
    x ─► Unsqueeze([a]) ─► Squeeze([a])     ⇒   x

Exact: the inserted axis has size 1, so moving it changes no element's place among the
others, and the Squeeze removes exactly it. Where nothing is left, the Squeeze's output
must not be a graph output (its name would go).
"""
from fusekit.engine.graph import attr, is_graph_output
from fusekit.engine.pattern import Rule, Var, Variant, either, op

from .._common import Permutation, as_transpose

x = Var("x", "the input")
raised = op.Unsqueeze(x, _bind="unsqueeze")
lowered = either(op.Squeeze(op.Transpose(raised, _bind="transpose")), op.Squeeze(raised),
                 tag="moved", labels=("transposed", "in_place"))


def _one_axis(node, size: int):
    axes = attr(node, "axes")
    return None if axes is None or len(axes) != 1 else axes[0] % size


def check(m) -> Permutation | str:
    inserted = m.node("unsqueeze")
    size = len(inserted.outputs[0].shape) if inserted.outputs[0].shape is not None else None
    a = _one_axis(inserted, size) if size else None
    b = _one_axis(m.anchor, size) if size else None
    if a is None or b is None:
        return "the Unsqueeze and the Squeeze do not each move one axis of a known rank"
    perm = list(attr(m.node("transpose"), "perm") or []) if m.took("transposed") else list(range(size))
    if sorted(perm) != list(range(size)) or perm[b] != a:
        return f"the Squeeze removes axis {b}, not the inserted axis {a} (perm {perm})"
    rest = [p - (p > a) for p in perm if p != a]
    if rest == sorted(rest) and is_graph_output(m.graph, m.anchor.outputs[0]):
        return f"its output '{m.anchor.outputs[0].name}' is a graph output"
    return Permutation(tuple(rest))


RULE = Rule(
    name="TransposeAsUnitAxis",
    variants=[Variant("unit_axis", lowered, "tf2onnx (einsum decompositions)")],
    check=check,
    rewrite=as_transpose,
    near_miss=lambda miss: miss.complete,
)
