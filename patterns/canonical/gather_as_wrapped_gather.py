"""A lookup that wraps negative indices itself reads as a plain lookup: ``T[i < 0 ? i + n : i]`` ⇒ ``T[i]``.

Keras 3 (``ops.take``, keras-hub's embeddings) wraps negative token ids before its
lookup; tf2onnx writes the select on integers as ``c·a + (1−c)·b``::

    ids ─► Cast ─► Less(0) ─┬─► Cast ──────► Mul(ids + n) ─┐
                            └─► Not ─► Cast ─► Mul(ids) ───► Add ─► Gather(T)     ⇒     ids ─► Gather(T)

ONNX's Gather already reads an index i in [−n, 0) as i + n, n being the length of the
gathered axis, so wrapping first changes nothing for every index Gather accepts,
[−n, n). An index below −n, which the wrap would wrap twice, becomes an error like
any other out-of-range index, as it is in the model the exporter read (TensorFlow's
gather refuses it). The wrap must add exactly that axis' length, the sign test must
be exact (a Cast to a floating type keeps every sign), and the table's length must
be known.
"""
import numpy as np

from fusekit.engine.graph import attr
from fusekit.engine.pattern import Const, Rule, Var, Variant, either, maybe, op

from .._common import is_float

ids = Var("ids", "the indices")
negative = op.Less(maybe(lambda v: op.Cast(v, _bind="sign_cast"), ids, tag="compared"), Const(value=0))
wrapped = op.Add(ids, Const("n", label="the wrap length"))
lookup = op.Gather(Var("table", "the table"),
                   either(op.Where(negative, wrapped, ids),
                          # tf2onnx's SelectV2 on integers: c·(ids + n) + (1 − c)·ids
                          op.Add(op.Mul(op.Cast(negative), wrapped), op.Mul(ids, op.Cast(op.Not(negative)))),
                          tag="select", labels=("where", "tf2onnx")))


def check(m) -> str | None:
    if m["ids"].dtype is None or not np.issubdtype(np.dtype(m["ids"].dtype), np.integer):
        return f"the indices '{m['ids'].name}' are not integers"
    if m.has("compared") and not is_float(m.node("sign_cast").outputs[0]):
        return "the sign test compares the indices cast to an integer type, which may wrap"
    n = m.const("n")
    axis = attr(m.anchor, "axis") or 0
    shape = m["table"].shape
    length = shape[axis] if shape is not None and -len(shape) <= axis < len(shape) else None
    if not isinstance(length, (int, np.integer)):
        return "the table's length along the gathered axis is unknown"
    if n.size != 1 or int(n.reshape(-1)[0]) != length:
        return f"the wrap adds {n.reshape(-1).tolist()}, but the table has {length} entries along axis {axis}"
    return None


def rewrite(m, _, emit):
    return emit.Gather(m["table"], m["ids"], axis=attr(m.anchor, "axis") or 0)


RULE = Rule(
    name="GatherAsWrappedGather",
    variants=[Variant("wrapped", lookup, "tf2onnx from Keras 3 / keras-hub (negative token ids wrapped)")],
    check=check,
    rewrite=rewrite,
    signature=frozenset({"Less+Gather"}),
)
