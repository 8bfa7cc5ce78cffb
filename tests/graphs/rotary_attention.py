"""One ModernBERT attention layer, written the way transformers 5 exports it (already in
canonical form: Casts that change nothing gone, the rotate-half bounds constant).

    x [batch, seq, 16] ─► MatMul(Wqkv) ─► Reshape([0, 0, 3, 2, 8]) ─► Slice ×3 ─► Squeeze, Transpose
    rope(Q), rope(K) with cos/sin(p · f) ++ the same, p = Range(0, S) read off the mask's shape
    softmax(scale · Q·Kᵀ + mask) · V ─► Transpose ─► Reshape([0, 0, 16]) ─► y

``form``: "eager" (the scores times 1/√h, the lowest float as fill) or "sdpa" (√scale on Q and
Kᵀ, -inf as fill, a NaN guard after the Softmax). ``window``: None for a global layer (the key
padding mask), or w for a local one (and |i - j| <= w). ``unbind``: "slice" (dynamo) or "split"
(TorchScript's Split into pieces of one). ``table`` "cached": constant [1, 1, ``rows``, h] tables
sliced to the sequence (a ``cos_cached[:, :, :S]`` buffer, as exports of a fixed-length cache
write it). Near misses: ``positions`` "shifted" counts from 1; ``table`` "halves" puts different
frequencies in the two halves, "fixed" is the cache not sliced (an export traced at one length);
``band`` "counted" measures the band in positions counted over the real tokens (it moves with
the padding).
"""
import numpy as np
from onnx import TensorProto, helper

from graphs.variants import Graph

HIDDEN, HEADS, SIZE = 16, 2, 8
LOWEST = float(np.finfo(np.float32).min)
INV_FREQ = (1.0 / 10000 ** (np.arange(0, SIZE, 2) / SIZE)).astype(np.float32)


def _weights(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((HIDDEN, 3 * HIDDEN)) * 0.3).astype(np.float32)


def rotary_attention(form="eager", window=None, unbind="slice", positions="range", table="rotary", band="sizes",
                     opset=17, rows=64):
    g = Graph("rope", opset)
    x = g.input("x", shape=["batch", "seq", HIDDEN])
    mask = g.input("attention_mask", shape=["batch", "seq"], elem=TensorProto.INT64)
    g.output("y", shape=["batch", "seq", HIDDEN])
    i64 = lambda name, v: g.const(name, v, np.int64)  # noqa: E731

    # positions and the rotary tables [1, 1, S, h]
    length = g.op("Gather", g.op("Shape", mask), i64("one", 1), axis=0)
    start = i64("start", 1 if positions == "shifted" else 0)
    stop = g.op("Add", length, start)
    p = g.op("Range", start, stop, i64("step", 1))
    angles = g.op("Mul", g.op("Unsqueeze", g.op("Cast", p, to=TensorProto.FLOAT), i64("axes_02", [0, 2])),
                  g.const("inv_freq", INV_FREQ))  # [1, S, h/2]
    other = angles if table == "rotary" else g.op("Mul", angles, g.const("two", 2.0))
    freqs = g.op("Concat", angles, other, axis=-1)
    cos = g.op("Unsqueeze", g.op("Cos", freqs), i64("axes_1", [1]))
    sin = g.op("Unsqueeze", g.op("Sin", freqs), i64("axes_1", [1]))
    if table in ("cached", "fixed"):
        angles = np.arange(rows)[:, None] * INV_FREQ[None, :]
        full = np.concatenate([angles, angles], axis=-1)[None, None]
        ends = g.op("Slice", g.op("Shape", mask), i64("one_v", [1]), i64("two_v", [2]))
        cos, sin = (g.const(f"{name}_cached", fn(full)) for name, fn in (("cos", np.cos), ("sin", np.sin)))
        if table == "cached":
            cos, sin = (g.op("Slice", t, i64("zero_v", [0]), ends, i64("axis_2", [2])) for t in (cos, sin))

    # the additive mask [B, 1, S, S]
    keep = g.op("Unsqueeze", g.op("Cast", mask, to=TensorProto.BOOL), i64("axes_12", [1, 2]))  # [B, 1, 1, S]
    if window is not None:
        if band == "counted":  # positions counted over the real tokens: the band moves with the padding
            counted = g.op("CumSum", mask, i64("axis_1", 1))
            rows, cols = (g.op("Unsqueeze", counted, i64(f"band_{a}", a)) for a in ([1, 3], [1, 2]))
        else:
            rows, cols = (g.op("Unsqueeze", p, i64(f"band_{a}", a)) for a in ([1], [0]))
        near = g.op("LessOrEqual", g.op("Abs", g.op("Sub", rows, cols)), i64("window", window))
        keep = g.op("And", keep, near)
    fill = -np.inf if form == "sdpa" else LOWEST
    added = g.op("Where", keep, g.const("zero", 0.0), g.const("fill", fill))

    # the packed projection and its unbinding
    heads = g.op("Reshape", g.op("MatMul", x, g.const("w_qkv", _weights())),
                 i64("split_shape", [0, 0, 3, HEADS, SIZE]))
    if unbind == "split":
        pieces = [f"rope/split_{i}" for i in range(3)]
        g.nodes.append(helper.make_node("Split", [heads, i64("ones", [1, 1, 1])], pieces, name="rope/Split", axis=2))
    else:
        pieces = [g.op("Slice", heads, i64(f"s{i}", [i]), i64(f"e{i}", [i + 1]), i64("axis_2", [2])) for i in range(3)]
    q, k, v = (g.op("Transpose", g.op("Squeeze", t, i64("axis_2", [2])), perm=[0, 2, 1, 3]) for t in pieces)

    def rope(t):
        lo = g.op("Slice", t, i64("zero_i", [0]), i64("half", [SIZE // 2]), i64("axis_3", [3]), i64("unit", [1]))
        hi = g.op("Slice", t, i64("half", [SIZE // 2]), i64("end", [2 ** 63 - 1]), i64("axis_3", [3]), i64("unit", [1]))
        rotated = g.op("Concat", g.op("Neg", hi), lo, axis=-1)
        return g.op("Add", g.op("Mul", t, cos), g.op("Mul", rotated, sin))

    q, k_t = rope(q), g.op("Transpose", rope(k), perm=[0, 1, 3, 2])
    if form == "sdpa":
        root = g.const("root_scale", SIZE ** -0.25)
        scores = g.op("MatMul", g.op("Mul", q, root), g.op("Mul", k_t, root))
    else:
        scores = g.op("Mul", g.op("MatMul", q, k_t), g.const("scale", SIZE ** -0.5))
    probs = g.op("Softmax", g.op("Add", scores, added), axis=-1)
    if form == "sdpa":
        probs = g.op("Where", g.op("IsNaN", probs), g.const("zero", 0.0), probs)
    context = g.op("Transpose", g.op("MatMul", probs, v), perm=[0, 2, 1, 3])
    g.op("Reshape", context, i64("merge_shape", [0, 0, HIDDEN]), out="y")
    return g.model()
