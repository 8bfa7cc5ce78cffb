"""One self-attention layer, written from elementary ONNX ops in the mask, bias, scale and
Kᵀ forms exporters emit, and in the near misses the fusion must refuse. These are the inputs
for the attention fusion tests (tests/fusions/test_attention.py).

``attention(mask=…, scale=…, k_transpose=…)`` returns an ``onnx.ModelProto`` with inputs
``x`` [batch, seq, 16] (float) and ``attention_mask`` [batch, seq] (int64, 1 = keep), plus
``input_ids`` [batch, seq] when a form reads token values, and output ``y``
[batch, seq, 16]: 2 heads of 8.
"""
import numpy as np
from onnx import TensorProto, numpy_helper

from .variants import Graph

HIDDEN, HEADS, SIZE = 16, 2, 8

MASKS = ("add", "where", "where_small_fill", "where_keeps", "none", "zero_constant", "bias_and_mask",
         "ones_computed", "constant_bias", "bias_from_ids", "shifted", "keras_select", "keras_remask", "select_fill_at_kept_keys",
         "remask_only", "where_reads_scores", "bias_from_sep_ids", "causal", "mask_twice")
SCALES = ("scores_mul", "scores_div", "q_div", "q_head_mul", "sqrt_qk", "q_mul", "none")
K_TRANSPOSES = ("direct", "double", "3d", "3d_mixed")


def _heads(g, x, name, seed, tf, bias_shape=None, split=(HEADS, SIZE), weight_input=False):
    """x·W + b split into heads [B, S, N, h]; with ``bias_shape`` the bias is added after the
    split, as Keras' EinsumDense does once canonicalized (its bias is [N, h]). ``split``: the
    (heads, size) the head split states; ``weight_input``: W is a graph input, not a constant."""
    rng = np.random.default_rng(seed)
    weight = rng.normal(0, 0.3, (HIDDEN, HIDDEN))
    w = g.input(f"{name}_weight", [HIDDEN, HIDDEN]) if weight_input else g.const(f"{name}_weight", weight)
    if bias_shape is None:
        b = g.const(f"{name}_bias", rng.normal(0, 0.1, HIDDEN))
        return _split(g, g.op("Add", g.op("MatMul", x, w), b), tf, split)
    b = g.const(f"{name}_bias", rng.normal(0, 0.1, bias_shape))
    return g.op("Add", _split(g, g.op("MatMul", x, w), tf, split), b)


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


def _split(g, t, tf=False, split=(HEADS, SIZE)):
    return g.op("Reshape", t, _target(g, [0, *split] if not tf else [-1, *split], tf))


def _dim(g, t, axis):
    """Dimension ``axis`` of ``t`` read at run time, as a 1-element vector (TorchScript's
    Shape → Gather → Unsqueeze)."""
    size = g.op("Gather", g.op("Shape", t), g.const(f"axis_{axis}", axis, np.int64), axis=0)
    return g.op("Unsqueeze", size, g.const("unsqueeze_axes0", [0], np.int64))


def _k_transposed(g, k_split, form):
    """Kᵀ [B, N, h, S] from the split K [B, S, N, h], as each exporter spells it."""
    if form == "direct":  # TorchScript
        return g.op("Transpose", k_split, perm=[0, 2, 3, 1])
    k = g.op("Transpose", k_split, perm=[0, 2, 1, 3])
    if form == "double":
        return g.op("Transpose", k, perm=[0, 1, 3, 2])
    # dynamo: swap the last two axes through a 3-D view, its shapes sliced off Shape(K)
    shape = g.op("Shape", k)
    size = g.op("Slice", shape, g.const("start_m1", [-1], np.int64), g.const("end_max", [2 ** 63 - 1], np.int64))
    seq = g.op("Slice", shape, g.const("start_m2", [-2], np.int64), g.const("end_m1", [-1], np.int64))
    lead = g.op("Slice", shape, g.const("start_min", [-2 ** 63], np.int64), g.const("end_m2", [-2], np.int64))
    minus1 = g.const("minus1", [-1], np.int64)
    # 3d_mixed reads the head size where the sequence belongs: a reshape, not a transpose
    flat = g.op("Concat", minus1, *((seq, size) if form == "3d" else (size, seq)), axis=0)
    swapped = g.op("Transpose", g.op("Reshape", k, flat), perm=[0, 2, 1])
    return g.op("Reshape", swapped, g.op("Concat", lead, size, seq, axis=0))


def _unsplit(g, context, q, v, form):
    """sdpa's reshape after ·V: [B, -1, S, h] read off the tensors themselves, a no-op; or,
    for ``not_noop``, a target that swaps the head count and the head size."""
    batch, minus1 = _dim(g, context, 0), g.const("minus1", [-1], np.int64)
    if form == "sdpa":
        return g.op("Reshape", context, g.op("Concat", batch, minus1, _dim(g, q, 2), _dim(g, v, 3), axis=0))
    return g.op("Reshape", context, g.op("Concat", batch, g.const("size", [SIZE], np.int64), minus1,
                                         g.const("heads", [HEADS], np.int64), axis=0))


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
    if mask == "mask_twice":  # the key padding mask added twice: no term is a position bias
        padded = g.op("Mul", g.op("Sub", g.const("one_f", 1.0), _key_mask(g, True)), g.const("fill", -10000.0))
        return g.op("Add", g.op("Add", scores, padded), padded)
    if mask == "causal":  # the padding mask plus a causal triangle: it depends on the query position too
        padded = g.op("Sub", g.const("one_f", 1.0), _key_mask(g, True))
        seq = g.op("Slice", g.op("Shape", "attention_mask"), g.const("start_m1", [-1], np.int64),
                   g.const("end_max", [2 ** 63 - 1], np.int64))
        zero = g.const("start0_64", [0], np.int64)
        triangle = g.const("causal", np.triu(np.full((64, 64), -1e9), k=1))
        rows = g.op("Slice", triangle, zero, seq, g.const("slice_axis0", [0], np.int64))
        causal = g.op("Slice", rows, zero, seq, g.const("slice_axis1", [1], np.int64))
        return g.op("Add", scores, g.op("Add", g.op("Mul", padded, g.const("fill", -10000.0)), causal))
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


def attention(mask="add", scale="scores_mul", opset=14, tf_shapes=False, bias_shape=None, k_transpose="direct",
              nan_guard=False, noop_reshape=None, scale_value=None, q_weight_input=False, probs_output=False,
              k_split=(HEADS, SIZE), softmax_axis=-1):
    """``tf_shapes``: the head split and merge targets computed as tf2onnx writes them;
    ``bias_shape``: the Q/K/V biases added after the head split, of that shape;
    ``k_transpose``: one of K_TRANSPOSES; ``nan_guard``: sdpa's Where(IsNaN(p), 0, p) after the
    Softmax; ``noop_reshape``: "sdpa" for its reshape after ·V, "not_noop" for one that moves data;
    ``scale_value``: what the scale multiplies by (1/√h by default; an array for one per head).
    Near misses: ``q_weight_input`` (the Q weight a graph input), ``probs_output`` (the
    probabilities a graph output ``probs``), ``k_split`` (the K head split's (heads, size)),
    ``softmax_axis``."""
    g = Graph(f"attention_{mask}_{scale}", opset)
    seq = 6 if mask == "constant_bias" else "seq"
    x = g.input("x", ["batch", seq, HIDDEN])
    if mask != "none":
        g.input("attention_mask", ["batch", seq], TensorProto.INT64)
    if mask in ("bias_from_ids", "bias_from_sep_ids"):
        g.input("input_ids", ["batch", seq], TensorProto.INT64)
    g.output("y", ["batch", seq, HIDDEN])
    if probs_output:  # like output_attentions=True
        g.output("probs", ["batch", HEADS, seq, seq])
    root = np.float32(1 / np.sqrt(SIZE)) if scale_value is None else np.asarray(scale_value, np.float32)
    divisor = np.sqrt(SIZE) if scale_value is None else 1 / root
    q_split = _heads(g, x, "q", 0, tf_shapes, bias_shape, weight_input=q_weight_input)
    if scale == "q_head_mul":  # HF-TF DistilBERT: Q scaled between the head split and the transpose
        q_split = g.op("Mul", q_split, g.const("q_scale", root))
    q = g.op("Transpose", q_split, perm=[0, 2, 1, 3])
    k_t = _k_transposed(g, _heads(g, x, "k", 1, tf_shapes, bias_shape, split=k_split), k_transpose)
    v = g.op("Transpose", _heads(g, x, "v", 2, tf_shapes, bias_shape), perm=[0, 2, 1, 3])
    q_heads = q
    if scale == "q_div":  # transformers 4 DistilBERT: Q divided by √h after its transpose
        q = g.op("Div", q, g.const("q_divisor", divisor))
    elif scale == "q_mul":  # Q alone multiplied by the scale after its transpose
        q = g.op("Mul", q, g.const("q_scale", root))
    elif scale == "sqrt_qk":  # sdpa: √scale on Q and on Kᵀ each
        q = g.op("Mul", q, g.const("sqrt_scale", np.sqrt(root)))
        k_t = g.op("Mul", k_t, g.const("sqrt_scale", np.sqrt(root)))
    scores = g.op("MatMul", q, k_t)
    if scale == "scores_mul":
        scores = g.op("Mul", scores, g.const("scale", root))
    elif scale == "scores_div":
        scores = g.op("Div", scores, g.const("divisor", divisor))
    probs = g.op("Softmax", _masked(g, scores, mask), axis=softmax_axis, out="probs" if probs_output else None)
    if mask in ("keras_remask", "remask_only"):  # Keras 3: the probabilities masked once more
        probs = g.op("Mul", probs, g.op("Cast", _keras_keep(g, scores), to=TensorProto.FLOAT))
    if nan_guard:  # sdpa: a fully masked row's NaNs become 0
        probs = g.op("Where", g.op("IsNaN", probs), g.const("nan_zero", 0.0), probs)
    context = g.op("MatMul", probs, v)
    if noop_reshape:
        context = _unsplit(g, context, q_heads, v, noop_reshape)
    context = g.op("Transpose", context, perm=[0, 2, 1, 3])
    g.op("Reshape", context, _target(g, [0, HIDDEN] if not tf_shapes else [-1, HIDDEN], tf_shapes), out="y")
    return g.model()


def folded_heads(g, x, unfold_heads=4, cut_end=None, out=None):
    """A fragment of ``g`` reading ``x`` [B, S, 8], as DeBERTa's TorchScript attention computes:
    [B, S, 4, 2] → [B, 4, S, 2] → [4B, S, 2] (the heads folded into the batch), softmax(q·qᵀ)·q,
    unfolded by ``[-1, unfold_heads, S, 2]``, back to [B, S, 4, 2] and [dim0, dim1, -1]; returns
    the output's name. x is first cut by a Slice of the sequence axis from 0 to ``cut_end`` (its
    end where None) and expanded to its own sizes as TorchScript writes ``expand``; the heads are
    split by that value's dimensions."""
    def ints(name, value):
        return g.const(name, value, np.int64)

    def dims(t, *axes):
        shape = g.op("Shape", t)
        return [g.op("Unsqueeze", g.op("Gather", shape, ints(f"axis{a}_{t}", np.array(a))),
                     ints(f"zero_{a}_{t}", np.array([0]))) for a in axes]

    ends = dims(x, 1) if cut_end is None else [ints("cut", np.array([cut_end]))]
    cut = g.op("Slice", x, ints("starts", np.array([0])), *ends, ints("cut_axes", np.array([1])))
    sizes = g.op("Reshape", g.op("Concat", *dims(cut, 0, 1, 2), axis=0), ints("flat", np.array([-1])))
    ones = g.op("ConstantOfShape", g.op("Shape", sizes), value=numpy_helper.from_array(np.array([1])))
    minus = g.op("Mul", g.op("ConstantOfShape", g.op("Shape", sizes), value=numpy_helper.from_array(np.array([1]))),
                 ints("minus_one", np.array(-1)))
    expanded = g.op("Expand", cut, g.op("Where", g.op("Equal", sizes, minus), ones, sizes))
    split = g.op("Reshape", expanded, g.op("Concat", *dims(expanded, 0, 1), ints("heads", np.array([4, -1])), axis=0))
    heads = g.op("Transpose", split, perm=[0, 2, 1, 3])
    folded = g.op("Reshape", heads, g.op("Concat", ints("minus", np.array([-1])), *dims(heads, 2, 3), axis=0))
    scores = g.op("Softmax", g.op("MatMul", folded, g.op("Transpose", folded, perm=[0, 2, 1])), axis=-1)
    context = g.op("MatMul", scores, folded)
    unfolded = g.op("Reshape", context, g.op("Concat", ints("unfold", np.array([-1, unfold_heads])),
                                             *dims(context, 1, 2), axis=0))
    merged = g.op("Transpose", unfolded, perm=[0, 2, 1, 3])
    return g.op("Reshape", merged, g.op("Concat", *dims(merged, 0, 1), ints("rest", np.array([-1])), axis=0), out=out)
