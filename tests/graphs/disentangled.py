"""DeBERTa's disentangled attention, as transformers 5 writes it and both torch exporters emit it.

Q, K and V are split into heads and folded into the batch, [B·N, S, h]; the scores are
Q·(Kᵀ / √(3h)) plus a bias computed from Q and K themselves (DeBERTa's c2p and p2c terms, here
Q·Rᵀ and (K·Rᵀ)ᵀ of a relative table R cut to the length, each divided by √(3h)); unfolded to
[B, N, S, S], masked_fill with the lowest float where the query or the key is padded, Softmax,
folded again, ·V, unfolded and merged.
"""
import numpy as np
from onnx import TensorProto

from .variants import Graph

HIDDEN, HEADS, SIZE, TABLE = 16, 2, 8, 128
LOWEST = float(np.finfo(np.float32).min)
MASKS = ("pairs", "keys", "none", "per_head")  # mask_i·mask_j, mask_j alone, no masked_fill, [B, N, S, S]


def disentangled(mask="pairs", fill=LOWEST, refill=False, opset=17, bias_rank=3, flat=(-1, "S", SIZE),
                 divisor=None):
    """``refill``: transformers 4's XSoftmax, the probabilities of masked cells set to 0 again;
    ``bias_rank="broadcast"``: a [1, S, S] bias, broadcast over batch and heads.
    Near misses: ``fill`` (one that does not absorb the scores), ``bias_rank`` 4 (a bias that would
    enlarge the scores), ``flat`` (the Q heads folded into another layout), ``mask="per_head"`` with
    ``refill``."""
    g = Graph(f"disentangled_{mask}", opset)
    x = g.input("x", ["batch", "seq", HIDDEN])
    g.input("attention_mask", ["batch", "seq"], TensorProto.INT64)
    g.output("y", ["batch", "seq", HIDDEN])
    rng = np.random.default_rng(0)
    seq = g.op("Slice", g.op("Shape", x), g.const("one", [1], np.int64), g.const("two", [2], np.int64))

    def folded(name):
        w, b = rng.normal(0, 0.3, (HIDDEN, HIDDEN)), rng.normal(0, 0.3, HIDDEN)
        proj = g.op("Add", g.op("MatMul", x, g.const(f"w_{name}", w)), g.const(f"b_{name}", b))
        heads = g.op("Transpose", g.op("Reshape", proj, g.const("split", [0, 0, HEADS, SIZE], np.int64)),
                     perm=[0, 2, 1, 3])
        target = g.op("Concat", *[seq if e == "S" else g.const(f"flat_{i}", [e], np.int64) for i, e in enumerate(flat)],
                      axis=0) if name != "v" else g.op("Concat", g.const("minus_one", [-1], np.int64), seq,
                                                         g.const("size", [SIZE], np.int64), axis=0)
        return g.op("Reshape", heads, target)

    q, k, v = folded("q"), folded("k"), folded("v")
    d = g.const("divisor", np.sqrt(3 * SIZE) if divisor is None else divisor)
    scores = g.op("MatMul", q, g.op("Div", g.op("Transpose", k, perm=[0, 2, 1]), d))
    table = g.op("Slice", g.const("table", rng.normal(0, 0.5, (TABLE, SIZE))), g.const("zero", [0], np.int64), seq)
    c2p = g.op("Div", g.op("MatMul", q, g.op("Transpose", table, perm=[1, 0])), d)
    p2c = g.op("Div", g.op("Transpose", g.op("MatMul", k, g.op("Transpose", table, perm=[1, 0])), perm=[0, 2, 1]), d)
    bias = g.op("Add", c2p, p2c)
    if bias_rank == "broadcast":  # one [1, S, S] bias for every batch row and head
        bias = g.mean(bias, axes=(0,))
    if bias_rank == 4:
        bias = g.op("Unsqueeze", bias, g.const("axis0", [0], np.int64))
    unfold = g.op("Concat", g.const("minus_one", [-1], np.int64), g.const("heads", [HEADS], np.int64), seq, seq, axis=0)
    scores = g.op("Reshape", g.op("Add", scores, bias), unfold)
    if mask != "none":
        m = g.op("Cast", "attention_mask", to=TensorProto.FLOAT)
        keys = g.op("Unsqueeze", m, g.const("keys_axes", [1, 2], np.int64))  # [B, 1, 1, S]
        cells = keys
        if mask in ("pairs", "per_head"):
            cells = g.op("Mul", keys, g.op("Unsqueeze", m, g.const("query_axes", [1, 3], np.int64)))
        if mask == "per_head":
            cells = g.op("Expand", cells, g.op("Concat", g.const("one_", [1], np.int64),
                                               g.const("heads", [HEADS], np.int64), seq, seq, axis=0))
        masked = g.op("Not", g.op("Cast", cells, to=TensorProto.BOOL))
        scores = g.op("Where", masked, g.const("fill", fill), scores)
    probs = g.op("Softmax", scores, axis=-1)
    if refill:
        probs = g.op("Where", masked, g.const("zero_p", 0.0), probs)
    fold = g.op("Concat", g.const("minus_one", [-1], np.int64), seq, seq, axis=0)
    context = g.op("MatMul", g.op("Reshape", probs, fold), v)
    unfold_v = g.op("Concat", g.const("minus_one", [-1], np.int64), g.const("heads", [HEADS], np.int64), seq,
                    g.const("size", [SIZE], np.int64), axis=0)
    context = g.op("Transpose", g.op("Reshape", context, unfold_v), perm=[0, 2, 1, 3])
    g.op("Reshape", context, g.const("merge", [0, 0, HIDDEN], np.int64), out="y")
    return g.model()
