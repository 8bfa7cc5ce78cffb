"""GlobalAveragePool over a rank-3 tensor is the mean over its last axis.

tf2onnx at opsets ≤ 17 writes every ``ReduceMean(axes=[-1], keepdims=1)`` of a rank-3
tensor (a LayerNorm's mean and variance) as ``GlobalAveragePool``::

    x [N, C, D] ─► GlobalAveragePool ─► [N, C, 1]     ⇒     x ─► ReduceMean(axes=[-1], keepdims=1)

Exact: GlobalAveragePool averages over every axis after the first two, so on a rank-3
input Y[n, c, 0] = (1/D)·Σ_d X[n, c, d], which is ReduceMean over axis 2 = −1 with the
axis kept. On a rank-4 input it averages over two axes, and with the rank unknown
nothing says which: both are near misses. The rank is the one shape inference gives
the input, after whatever Transposes tf2onnx put before it.
"""
import numpy as np

from fusekit.engine.graph import rank
from fusekit.engine.pattern import Rule, Var, Variant, op

from .._common import is_float


def check(m) -> str | None:
    r = rank(m["x"])
    if r is None:
        return "the input's rank is unknown, so the axes it averages over are unknown"
    if r != 3:
        return f"the input has rank {r}: it averages over axes 2…{r - 1}, not only the last axis"
    if not is_float(m["x"]):
        return f"the input has type {m['x'].dtype}, not a floating type"
    return None


def rewrite(m, _, emit):
    if emit.opset >= 18:  # ReduceMean's axes became an input
        return emit.ReduceMean(m["x"], emit.small(np.array([-1], np.int64)), keepdims=1)
    return emit.ReduceMean(m["x"], axes=[-1], keepdims=1)


RULE = Rule(
    name="MeanAsGlobalAveragePool",
    variants=[Variant("rank3", op.GlobalAveragePool(Var("x", "the input")), "tf2onnx, opsets ≤ 17")],
    check=check,
    rewrite=rewrite,
    signature=frozenset({"GlobalAveragePool"}),
)
