"""A Keras EinsumDense projection into heads, as tf2onnx decomposes it, is a MatMul and a head split.

tf2onnx writes ``EinsumDense("abc,cde->abde")`` (the Q, K and V projections of Keras'
MultiHeadAttention) on x [B, S, K] as::

    x ─► Unsqueeze(axes ≥ 2) ─► Reshape([-1, K]) ─► Gemm(W [N, K], transB=1)
      ─► Reshape([dim0, dim1 of the Unsqueeze, heads, size, 1]) ─► Squeeze(the trailing 1) ─► [B, S, heads, size]

    ⇒   x ─► MatMul(Wᵀ [K, N]) ─► Reshape([0, 0, heads, size])

(the bias, [heads, size], is added after it either way). Exact: the Unsqueeze only inserts
size-1 axes after batch and sequence, so the flatten's rows are the (b, s) positions; Gemm
with transB and α = 1 multiplies each by Wᵀ as MatMul does; the unflatten puts each back at
(b, s), and a Reshape to ``[0, 0, heads, size]`` (0 copies the dimension) is the unflatten
and the Squeeze in one.
"""
from dataclasses import dataclass

import numpy as np

from fusekit.engine.graph import attr
from fusekit.engine.pattern import Const, Rule, Var, Variant, op

from .._common import flattened_dense, is_dim


def _after_sequence(axes, node):
    if not axes or any(a < 2 for a in axes):
        return f"inserts axes {axes}, not only after batch and sequence"
    return None


def _plain_gemm(value, node):
    if attr(node, "alpha") not in (None, 1.0) or attr(node, "transA") not in (None, 0):
        return "scales or transposes its input"
    return None


x = Var("x", "the input")
raised = op.Unsqueeze(x, axes=_after_sequence, _bind="unsqueeze")
flat = op.Reshape(raised, Var("flat_shape", "the flatten's shape", shape_only=True), _bind="flat")
product = op.Gemm(flat, Const("weight", label="the weight"), transB=1, alpha=_plain_gemm)
heads = op.Squeeze(op.Reshape(product, Var("shape", "the unflatten's shape", shape_only=True)), _bind="squeeze")


@dataclass(frozen=True)
class HeadsAsEinsumDenseFacts:
    """What check proved, for rewrite."""

    sizes: tuple[int, ...]  # the head split's sizes after batch and sequence, the squeezed 1s left out


def check(m) -> HeadsAsEinsumDenseFacts | str:
    found = flattened_dense(m, "NK")
    if isinstance(found, str):
        return found
    _, n, shape = found
    u = m.node("unsqueeze").outputs[0]
    if shape is None or len(shape) < 3 or not (is_dim(shape[0], u, 0) and is_dim(shape[1], u, 1)) \
            or not all(isinstance(e, int) and e > 0 for e in shape[2:]) or int(np.prod(shape[2:])) != n:
        return f"the unflatten's shape {shape} is not the input's batch and sequence and sizes making {n}"
    squeezed = sorted(a % len(shape) for a in attr(m.node("squeeze"), "axes") or [])
    if not squeezed or any(a < 2 or shape[a] != 1 for a in squeezed):
        return f"the Squeeze removes axes {squeezed}, not only size-1 axes after batch and sequence"
    return HeadsAsEinsumDenseFacts(tuple(e for i, e in enumerate(shape) if i >= 2 and i not in squeezed))


def rewrite(m, facts: HeadsAsEinsumDenseFacts, emit):
    weight = emit.const("weight", np.ascontiguousarray(m.const("weight").T))
    return emit.Reshape(emit.MatMul(m["x"], weight), emit.small(np.array([0, 0, *facts.sizes], np.int64)))


RULE = Rule(
    name="HeadsAsEinsumDense",
    variants=[Variant("einsum_dense", heads, "tf2onnx (Keras EinsumDense, MultiHeadAttention's Q, K, V)")],
    check=check,
    rewrite=rewrite,
    # an Unsqueeze → Squeeze pair elsewhere is no projection: only a refused complete match is a near miss
    near_miss=lambda miss: miss.complete,
    reads=("unsqueeze", "flat"),  # shared by the Q, K and V projections: each dies with the last of them
)
