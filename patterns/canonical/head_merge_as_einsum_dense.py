"""Keras attention's output projection, as tf2onnx decomposes it, is a head merge and a MatMul.

tf2onnx writes ``EinsumDense("abcd,cde->abe")`` on the per-head context c [B, N, S, h]
(once ``MatMulAsFlattenedBatch`` has made it 4-D) as::

    c ─► Unsqueeze([a]) ─► Transpose(perm) ─► [B, S, 1, N, h] ─► Reshape([-1, K]) ─► Gemm(W [E, K] given as
      Reshape(constant), transB=1) ─► Reshape(Shape(·)[0, 1] ++ [E, 1, 1]) ─► Squeeze([3, 4]) ─► [B, S, E]

    ⇒   c ─► Transpose(0, 2, 1, 3) ─► Reshape([0, 0, K]) ─► MatMul(Wᵀ [K, E])

Exact wherever the original runs: the Unsqueeze and Transpose put c's axes in the order
(B, S, N, h) with a size-1 axis before N (the permutation is checked), so both flattens
make row (b, s) the [N·h] vector c[b, :, s, :] read row-major; Gemm with transB, α = 1
and no C multiplies each row by Wᵀ as MatMul does; the unflatten puts row (b, s) back
at (b, s). The Gemm needs N·h = K, and so does the ``[0, 0, K]`` Reshape.
"""
from dataclasses import dataclass

import numpy as np

from fusekit.engine import shapes
from fusekit.engine.graph import attr
from fusekit.engine.pattern import Const, Rule, Var, Variant, op
from fusekit.engine.shapes import dim

c = Var("c", "the per-head context")
spread = op.Transpose(op.Unsqueeze(c, _bind="unsqueeze"), _bind="spread")
weight = op.Reshape(Const("w", label="the weight"), Var("w_shape", "the weight's shape", shape_only=True))
product = op.Gemm(op.Reshape(spread, Var("flat", "the flatten", shape_only=True)), weight, transB=1, _bind="gemm")
merged = op.Squeeze(op.Reshape(product, Var("unflat", "the unflatten", shape_only=True)), axes=[3, 4])


@dataclass(frozen=True)
class HeadMergeAsEinsumDenseFacts:
    """What check proved, for rewrite."""

    weight: np.ndarray  # Wᵀ, [K, E]: what the MatMul multiplies by


def check(m) -> HeadMergeAsEinsumDenseFacts | str:
    gemm = m.node("gemm")
    if attr(gemm, "alpha") not in (None, 1.0) or attr(gemm, "transA") not in (None, 0) or len(gemm.inputs) > 2:
        return "the Gemm scales, transposes its input or adds a C"
    axes, perm = attr(m.node("unsqueeze"), "axes"), attr(m.node("spread"), "perm")
    if axes is None or len(axes) != 1 or perm is None or len(perm) != 5:
        return "the Unsqueeze and Transpose do not make one 5-D spread"
    a = axes[0] % 5
    if perm[2] != a or [p - (p > a) for p in perm if p != a] != [0, 2, 1, 3]:
        return f"Unsqueeze([{a}]) → Transpose({list(perm)}) is not [B, S, 1, N, h] from [B, N, S, h]"
    w_shape = shapes.entries(m["w_shape"])
    w = m.const("w")
    if w_shape is None or any(not isinstance(e, int) or e == 0 for e in w_shape) or w_shape.count(-1) > 1:
        return f"the weight's shape {w_shape} is not a constant fusekit can read"
    w = w.reshape(w_shape)
    if w.ndim != 2:
        return f"the weight is {list(w.shape)}, not [E, K]"
    e, k = w.shape
    spread_out = m.node("spread").outputs[0]
    heads_by_size = shapes.product(dim(spread_out, 3), dim(spread_out, 4))
    if shapes.entries(m["flat"]) not in ([-1, k], [-1, heads_by_size]):
        return "the flatten is not (-1, the heads times the head size)"
    if shapes.entries(m["unflat"]) != [dim(spread_out, 0), dim(spread_out, 1), e, 1, 1]:
        return f"the unflatten is not (the batch and sequence, {e}, 1, 1)"
    return HeadMergeAsEinsumDenseFacts(np.ascontiguousarray(w.T))


def rewrite(m, facts: HeadMergeAsEinsumDenseFacts, emit):
    k = facts.weight.shape[0]
    heads = emit.Transpose(m["c"], perm=[0, 2, 1, 3])
    return emit.MatMul(emit.Reshape(heads, emit.small(np.array([0, 0, k], np.int64))),
                       emit.const("weight", facts.weight))


RULE = Rule(
    name="HeadMergeAsEinsumDense",
    variants=[Variant("einsum_dense_out", merged, "tf2onnx (Keras attention's output projection)")],
    check=check,
    rewrite=rewrite,
    near_miss=lambda miss: miss.complete,
)
