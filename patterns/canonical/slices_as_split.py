"""A Split into pieces of one is one Slice per piece.

``torch.unbind`` (ModernBERT's packed Q, K, V heads) reaches ONNX in two spellings: the
TorchScript exporter splits into pieces of 1 and squeezes each, the dynamo exporter slices
each piece out. The fusions read the slices, one node per piece (a pattern follows a
node's first output only)::

    x ─► Split(axis a, sizes [1, 1, …]) ─► pieces    ⇒    x ─► Slice([i], [i + 1], [a]) ─► piece i

Exact: both copy the same elements. The sizes must be constants (an input, or the
attribute below opset 13); a Split into equal pieces by ``num_outputs`` (opset 18) needs
the axis' size known. Other splits (a GeGLU's two halves) are left as they are: no fusion
reads them through a Slice.
"""
from dataclasses import dataclass

import numpy as np

from fusekit.engine.graph import const_value
from fusekit.engine.pattern import Rule, Var, Variant, either, op

x = Var("x", "the input")
split = either(op.Split(x, Var("sizes", "the split sizes", shape_only=True)), op.Split(x),
               tag="sizes", labels=("sizes_input", "sizes_attribute"))


@dataclass(frozen=True)
class Pieces:
    axis: int
    sizes: tuple[int, ...]


def _sizes(m) -> list[int] | str:
    node = m.anchor
    if m.took("sizes_input"):
        value = const_value(m["sizes"])
        return "the split sizes are not constant" if value is None else [int(v) for v in np.atleast_1d(value)]
    if "split" in node.attrs:
        return [int(v) for v in node.attrs["split"]]
    axis, shape = node.attrs.get("axis", 0), m["x"].shape
    dim = shape[axis] if shape is not None and -len(shape) <= axis < len(shape) else None
    count = node.attrs.get("num_outputs", len(node.outputs))
    if not isinstance(dim, (int, np.integer)) or dim <= 0:
        return f"the size of the split axis {axis} is not known"
    if dim % count:
        return f"{dim} does not split into {count} equal pieces"  # ONNX makes the last one smaller; left as is
    return [dim // count] * count


def check(m) -> Pieces | str:
    sizes = _sizes(m)
    if isinstance(sizes, str):
        return sizes
    if len(sizes) != len(m.anchor.outputs) or any(s != 1 for s in sizes):
        return f"the split sizes {sizes} are not pieces of one for its {len(m.anchor.outputs)} outputs"
    return Pieces(int(m.anchor.attrs.get("axis", 0)), tuple(sizes))


def rewrite(m, pieces: Pieces, emit):
    starts = np.concatenate([[0], np.cumsum(pieces.sizes)[:-1]]).astype(np.int64)
    axes = emit.small(np.array([pieces.axis], np.int64))
    return [(out, emit.Slice(m["x"], emit.small(np.array([start], np.int64)),
                             emit.small(np.array([start + size], np.int64)), axes))
            for out, start, size in zip(m.anchor.outputs, starts, pieces.sizes)]


RULE = Rule(
    name="SlicesAsSplit",
    variants=[Variant("split", split, "TorchScript (torch.unbind, torch.split)")],
    check=check,
    rewrite=rewrite,
    # a Split into larger pieces is no candidate: nothing reads it as slices
    near_miss=lambda miss: miss.complete and "pieces of one" not in miss.reason,
)
