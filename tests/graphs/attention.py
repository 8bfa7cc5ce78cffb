"""One self-attention layer, written from elementary ONNX ops in the mask, bias and scale
forms exporters emit. These are the inputs for the attention rule tests.

``attention(mask=…, scale=…)`` returns an ``onnx.ModelProto`` with inputs ``x``
[batch, seq, 16] (float) and ``attention_mask`` [batch, seq] (int64, 1 = keep), plus
``input_ids`` [batch, seq] when a form reads token values, and output ``y``
[batch, seq, 16]: 2 heads of 8.
"""
import numpy as np
from onnx import TensorProto

from .variants import Graph

HIDDEN, HEADS, SIZE = 16, 2, 8

MASKS = ("add", "where", "where_small_fill", "where_keeps", "none", "zero_constant", "bias_and_mask",
         "ones_computed", "constant_bias", "bias_from_ids", "shifted", "keras_select", "keras_remask", "select_fill_at_kept_keys",
         "remask_only", "where_reads_scores", "bias_from_sep_ids")
SCALES = ("scores_mul", "scores_div", "q_div", "q_head_mul")


def _heads(g, x, name, seed, tf, bias_shape=None):
    """x·W + b split into heads [B, S, N, h]; with ``bias_shape`` the bias is added after the
    split, as Keras' EinsumDense does once canonicalized (its bias is [N, h])."""
    rng = np.random.default_rng(seed)
    w = g.const(f"{name}_weight", rng.normal(0, 0.3, (HIDDEN, HIDDEN)))
    if bias_shape is None:
        b = g.const(f"{name}_bias", rng.normal(0, 0.1, HIDDEN))
        return _split(g, g.op("Add", g.op("MatMul", x, w), b), tf)
    b = g.const(f"{name}_bias", rng.normal(0, 0.1, bias_shape))
    return g.op("Add", _split(g, g.op("MatMul", x, w), tf), b)


def _target(g, entries, tf):
    """A reshape target: a constant with 0 for "keep", or as tf2onnx writes one — the batch
    size sliced off an int32 Shape, concatenated in int32 and cast back to int64."""
    if not tf:
        return g.const("target_" + "_".join(map(str, entries)), [0, *entries], np.int64)
    shape = g.op("Cast", g.op("Shape", "x"), to=TensorProto.INT32)
    batch = g.op("Slice", shape, g.const("start0", [0], np.int32), g.const("end1", [1], np.int32),
                 g.const("axes0", [0], np.int32))
    rest = g.const("rest_" + "_".join(map(str, entries)), entries, np.int32)
    return g.op("Cast", g.op("Concat", batch, rest, axis=0), to=TensorProto.INT64)


def _split(g, t, tf=False):
    return g.op("Reshape", t, _target(g, [0, HEADS, SIZE] if not tf else [-1, HEADS, SIZE], tf))


def _key_mask(g, keep_value):
    """The 0/1 mask as [B, 1, 1, S] floats."""
    keys = g.op("Unsqueeze", "attention_mask", g.const("mask_axes", [1, 2], np.int64))
    return g.op("Cast", keys, to=TensorProto.FLOAT) if keep_value else keys


def _position_bias(g):
    """A relative position bias [1, N, S, S]: (k − q) times a per-head slope."""
    seq = g.op("Gather", g.op("Shape", "x"), g.const("one", 1, np.int64), axis=0)
    positions = g.op("Cast", g.op("Range", g.const("zero", 0, np.int64), seq, g.const("one", 1, np.int64)),
                     to=TensorProto.FLOAT)
    rows = g.op("Unsqueeze", positions, g.const("axis1", [1], np.int64))
    cols = g.op("Unsqueeze", positions, g.const("axis0", [0], np.int64))
    distance = g.op("Unsqueeze", g.op("Sub", cols, rows), g.const("axis00", [0, 1], np.int64))  # [1, 1, S, S]
    return g.op("Mul", distance, g.const("slopes", np.array([-0.5, 0.25]).reshape(1, HEADS, 1, 1)))


def _keras_keep(g, scores):
    """Keras' boolean mask broadcast to the scores: And(ones_like(scores), mask[:, None, None, :])."""
    ones = g.op("Expand", g.const("true", True, np.bool_), g.op("Shape", scores))
    return g.op("And", ones, g.op("Cast", _key_mask(g, False), to=TensorProto.BOOL))


def _masked(g, scores, mask):
    if mask in ("keras_select", "keras_remask", "select_fill_at_kept_keys"):
        # SelectV2(keep, scores, -big) as tf2onnx lowers it
        keep = _keras_keep(g, scores)
        fill_where = keep if mask == "select_fill_at_kept_keys" else g.op("Not", keep)
        selected = g.op("Mul", g.op("Cast", keep, to=TensorProto.FLOAT), scores)
        fill = g.op("Mul", g.const("big_negative", -2.3726709e38), g.op("Cast", fill_where, to=TensorProto.FLOAT))
        return g.op("Add", selected, fill)
    if mask == "remask_only":
        return scores
    if mask == "add":
        padded = g.op("Sub", g.const("one_f", 1.0), _key_mask(g, True))
        return g.op("Add", scores, g.op("Mul", padded, g.const("fill", -10000.0)))
    if mask == "shifted":  # HF-TF: 9.99e-10 at kept keys, −1e30 below it at padded ones
        padded = g.op("Mul", g.const("big", 1e30), g.op("Sub", g.const("one_f", 1.0), _key_mask(g, True)))
        return g.op("Add", scores, g.op("Sub", g.const("shift", 9.99e-10), padded))
    if mask in ("where", "where_small_fill"):  # masked_fill(mask == 0, fill)
        padded = g.op("Equal", _key_mask(g, False), g.const("zero", 0, np.int64))
        fill = float(np.finfo(np.float32).min) if mask == "where" else -1.0
        return g.op("Where", padded, g.const("fill", fill), scores)
    if mask == "where_reads_scores":  # the condition depends on the scores' values: not a mask
        padded = g.op("Equal", _key_mask(g, False), g.const("zero", 0, np.int64))
        large = g.op("Greater", scores, g.const("limit", 5.0))
        return g.op("Where", g.op("Or", padded, large), g.const("fill", float(np.finfo(np.float32).min)), scores)
    if mask == "where_keeps":  # the condition is true at kept keys: not a masked_fill of padded ones
        kept = g.op("Equal", _key_mask(g, False), g.const("one_i", 1, np.int64))
        return g.op("Where", kept, g.const("fill", float(np.finfo(np.float32).min)), scores)
    if mask == "none":
        return scores
    if mask == "zero_constant":  # ONNX Runtime's test graphs: every key attends
        return g.op("Add", scores, g.const("mask", np.zeros((1, 1, 1, 1))))
    if mask == "ones_computed":  # … or a constant 0/1 mask of ones turned additive in the graph
        ones = g.op("Cast", g.const("ones", np.ones((1, 1, 1, 1), np.int64), np.int64), to=TensorProto.FLOAT)
        return g.op("Add", scores, g.op("Mul", g.op("Sub", g.const("one_f", 1.0), ones), g.const("fill", -10000.0)))
    if mask == "constant_bias":  # a fixed [1, N, S, S] bias: the model runs at one length
        rng = np.random.default_rng(7)
        return g.op("Add", scores, g.const("bias", rng.normal(0, 1, (1, HEADS, 6, 6))))
    if mask == "bias_and_mask":  # MPNet: the relative position bias, then the mask
        with_bias = g.op("Add", scores, _position_bias(g))
        padded = g.op("Sub", g.const("one_f", 1.0), _key_mask(g, True))
        return g.op("Add", with_bias, g.op("Mul", padded, g.const("fill", -10000.0)))
    if mask == "bias_from_sep_ids":  # depends on whether a token is id 7 (an ids that also index a 10-row table)
        lookup = g.op("Gather", g.const("table", np.zeros((10, 1))), "input_ids", axis=0)  # [B, S, 1] zeros
        sep = g.op("Cast", g.op("Equal", "input_ids", g.const("sep", 7, np.int64)), to=TensorProto.FLOAT)
        flag = g.op("Add", g.op("Unsqueeze", sep, g.const("axes2", [2], np.int64)), lookup)  # [B, S, 1]
        rows = g.op("Unsqueeze", flag, g.const("axis1", [1], np.int64))  # [B, 1, S, 1]
        cols = g.op("Unsqueeze", g.op("Squeeze", flag, g.const("axis2", [2], np.int64)),
                    g.const("axes12", [1, 2], np.int64))  # [B, 1, 1, S]
        return g.op("Add", scores, g.op("Mul", rows, cols))
    if mask == "bias_from_ids":  # depends on token values: no position bias
        ids = g.op("Cast", "input_ids", to=TensorProto.FLOAT)
        rows = g.op("Unsqueeze", ids, g.const("axes13", [1, 3], np.int64))
        cols = g.op("Unsqueeze", ids, g.const("axes12", [1, 2], np.int64))
        return g.op("Add", scores, g.op("Mul", rows, cols))
    raise ValueError(mask)


def attention(mask="add", scale="scores_mul", opset=14, tf_shapes=False, bias_shape=None):
    """``tf_shapes``: the head split and merge targets computed as tf2onnx writes them;
    ``bias_shape``: the Q/K/V biases added after the head split, of that shape."""
    g = Graph(f"attention_{mask}_{scale}", opset)
    seq = 6 if mask == "constant_bias" else "seq"
    x = g.input("x", ["batch", seq, HIDDEN])
    if mask != "none":
        g.input("attention_mask", ["batch", seq], TensorProto.INT64)
    if mask in ("bias_from_ids", "bias_from_sep_ids"):
        g.input("input_ids", ["batch", seq], TensorProto.INT64)
    g.output("y", ["batch", seq, HIDDEN])
    root = np.float32(1 / np.sqrt(SIZE))
    q_split = _heads(g, x, "q", 0, tf_shapes, bias_shape)
    if scale == "q_head_mul":  # HF-TF DistilBERT: Q scaled between the head split and the transpose
        q_split = g.op("Mul", q_split, g.const("q_scale", root))
    q = g.op("Transpose", q_split, perm=[0, 2, 1, 3])
    k_t = g.op("Transpose", _heads(g, x, "k", 1, tf_shapes, bias_shape), perm=[0, 2, 3, 1])
    v = g.op("Transpose", _heads(g, x, "v", 2, tf_shapes, bias_shape), perm=[0, 2, 1, 3])
    if scale == "q_div":  # transformers 4 DistilBERT: Q divided by √h after its transpose
        q = g.op("Div", q, g.const("q_divisor", np.sqrt(SIZE)))
    scores = g.op("MatMul", q, k_t)
    if scale == "scores_mul":
        scores = g.op("Mul", scores, g.const("scale", root))
    elif scale == "scores_div":
        scores = g.op("Div", scores, g.const("divisor", np.sqrt(SIZE)))
    probs = g.op("Softmax", _masked(g, scores, mask), axis=-1)
    if mask in ("keras_remask", "remask_only"):  # Keras 3: the probabilities masked once more
        probs = g.op("Mul", probs, g.op("Cast", _keras_keep(g, scores), to=TensorProto.FLOAT))
    context = g.op("Transpose", g.op("MatMul", probs, v), perm=[0, 2, 1, 3])
    g.op("Reshape", context, _target(g, [0, HIDDEN] if not tf_shapes else [-1, HIDDEN], tf_shapes), out="y")
    return g.model()
