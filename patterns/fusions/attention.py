"""Multi-head self-attention, with the head count read from the graph.

    Q, K, V = x·Wq + bq, x·Wk + bk, x·Wv + bv            split into N heads of size h
    out = merge_heads(softmax(scale · Q·Kᵀ + mask) · V)

eager — TorchScript exporter, ``attn_implementation="eager"`` (transformers 5 multiplies
by the scale, transformers 4 and TF divide by √h)::

    x ─► MatMul(Wq) ─► Add(bq) ─► Reshape ─► Transpose(0,2,1,3) ──┐
    x ─► MatMul(Wk) ─► Add(bk) ─► Reshape ─► Transpose(0,2,3,1) ──► MatMul ─► Mul(scale) ─► Add(mask) ─► Softmax ─┐
    x ─► MatMul(Wv) ─► Add(bv) ─► Reshape ─► Transpose(0,2,1,3) ─────────────────────────────────────────────────► MatMul ─┐
                                                                   out ◄─ Reshape ◄─ Transpose(0,2,1,3) ◄────────────────┘

sdpa — TorchScript exporter, ``attn_implementation="sdpa"``: √scale multiplies Q and Kᵀ
each, a NaN guard follows the Softmax, and a no-op Reshape precedes the merge::

    Q ─► Mul(√scale) ─┐
    Kᵀ ─► Mul(√scale) ─► MatMul ─► Add(mask) ─► Softmax ─► Where(IsNaN(p), 0, p) ─► MatMul(V) ─► Reshape ─► Transpose ─► Reshape

dynamo — ``torch.onnx.export(dynamo=True)``: as sdpa, but Kᵀ is built through a 3-D view,
Reshape([-1, S, h]) ─► Transpose(0,2,1) ─► Reshape([B, N, h, S]), with no no-op reshape.

Kᵀ may also be Transpose(0,2,1,3) followed by Transpose(0,1,3,2).

Where the scale sits — real math, so variants here — transformers 4 DistilBERT divides Q
alone by √h after its transpose, HF-TF DistilBERT multiplies Q between the head split and
the transpose (and leaves K unscaled)::

    Q ─► Div(√h) ─► MatMul(Kᵀ) ─► …
    Reshape ─► Mul(1/√h) ─► Transpose(0,2,1,3) ─► MatMul(Kᵀ) ─► …

What reaches the Softmax, each term proven by probing (``fusekit.engine.probe``)::

    scores ─► Add(mask) ─► Softmax                          a key padding mask (or a position bias)
    scores ─► Add(bias) ─► Add(mask) ─► Softmax             MPNet: a relative position bias, then the mask
    Where(padded keys, fill, scores) ─► Softmax             transformers 4 DistilBERT: masked_fill
    Add(Mul(keep, scores), fill at padded keys) ─► Softmax  Keras' SelectV2, as tf2onnx lowers it
    scores ─► Softmax                                       no mask

and Keras may multiply the probabilities by the mask once more, Mul(Softmax(…), keep).

disentangled — DeBERTa-v2/v3 (transformers 5, TorchScript and dynamo): the heads folded into the
batch for bmm, Kᵀ divided by √(3h), and a bias computed from Q and K themselves (c2p + p2c, from
the relative position embeddings) added to the scores in that layout; the masked_fill fills the
query×key cells of mask_i·mask_j (transformers 4's XSoftmax fills the probabilities with 0 again)::

    x ─► MatMul(Wq) ─► Add(bq) ─► Reshape ─► Transpose(0,2,1,3) ─► Reshape([-1, S, h]) ─┬──────────► (the bias)
    x ─► MatMul(Wk) ─► Add(bk) ─► Reshape ─► Transpose(0,2,1,3) ─► Reshape([-1, S, h]) ─┼─► Transpose(0,2,1) ─► Div(√(3h)) ─┐
                                                                                         └─► MatMul ◄──────────────────────┘
    MatMul ─► Add(bias) ─► Reshape([-1, N, S, S]) ─► Where(masked, fill, ·) ─► Softmax ─► [Where(masked, 0, ·)]
           ─► Reshape([-1, S, S]) ─► MatMul(V [B·N, S, h]) ─► Reshape([-1, N, S, h]) ─► Transpose(0,2,1,3) ─► Reshape

The Q and K chains stay (the bias reads them): the fused op reads the projections through.

Checks:
- the Q/K/V weights are constant [H_in, H] matrices and the biases constant [H] vectors, or
  [N, h] ones added after the head split (Keras' EinsumDense);
- the number of heads N and head size h come from the Reshape targets (``[0, 0, N, h]``,
  ``[B, S, -1, h]`` …) and the weights' width H = N·h, and Q, K and V agree;
- the reshapes keep batch and sequence in place, and the merge gives back [B, S, H];
- the scale is a scalar constant (or the product of several), carried exactly — usually 1/√h;
- the mask, evaluated on probe masks, is a key padding mask built from a 2-D model input:
  one value at kept keys (0, or a shift the softmax does not see) and one large negative
  fill value below it at padded ones, whichever side the padding is on; a masked_fill
  condition or a Keras selector is true (1) exactly at the kept or padded keys it should
  be. The fused op gets that 2-D mask itself, never a right-padding-only mask index;
- a mask on the probabilities is 1 at kept and 0 at padded keys of the same input that
  masks the scores: the probabilities it zeroes are 0 already;
- a term added to the scores that is not a mask must be a position bias: it changes with
  no input's values, only with their sizes, and is shaped [1|B, 1|N, S, S]. It is carried
  exactly; a bias of zeros (a constant mask where every key attends) is dropped;
- disentangled: the bias reads no value the op replaces and is at most 3-D (it cannot enlarge
  the scores), and goes to the op as Reshape(Expand(bias, [B·N, S, S]), [B, N, S, S]); each fold
  of the heads is [-1, S, h], [-1, N, S, S], [-1, S, S] or [-1, N, S, h]; the masked_fill condition
  broadcasts into the scores and its fill absorbs any score (≤ −1e30), so Where(masked, fill, bias)
  in the op's additive term is the masked_fill itself, padded queries' rows included.

Forms: ``ort`` com.microsoft Attention with packed QKV weights, the raw 2-D mask and the
bias as ``attention_bias`` (0.58–0.88× the unfused time on ORT CPU); ``onnx`` ONNX
Attention (opset 23) on one packed projection, the bias added to its float mask;
``openvino`` none: its CPU plugin fuses the unfused chain itself. Disentangled: ``ort``
com.microsoft MultiHeadAttention on the Q projection and the K and V heads [B, N, S, h] the
graph computes anyway (0.95× the time of 3-D K and V), the bias as ``attention_bias``;
``onnx`` ONNX Attention on them, the bias as its float mask; ``openvino`` none (no measured gain).
"""
from dataclasses import dataclass

import numpy as np
from onnx import TensorProto

from fusekit.engine import shapes
from fusekit.engine.graph import producer
from fusekit.engine.pattern import Const, Fusion, Var, Variant, either, maybe, op
from fusekit.engine.probe import (LARGE_NEGATIVE, KeyPaddingMask, KeyPattern, PositionBias, key_padding_mask,
                                  key_pattern, position_bias)
from fusekit.engine.rewrite import MS
from fusekit.engine.shapes import DimOf
from fusekit.engine.state import IdentityMap, IdentitySet

from .._common import c, last_dim

x = Var("x", "the hidden states")
LOWEST = float(np.finfo(np.float32).min)


def split_heads(name: str):
    """x·W + b split into heads; Keras' EinsumDense (canonicalized) adds its [N, h] bias after the split."""
    product = op.MatMul(x, Const(f"w_{name}", label=f"the {name.upper()} weight"))
    bias = Const(f"b_{name}", label=f"the {name.upper()} bias")
    target = Var(f"{name}_shape", f"the {name.upper()} head split", shape_only=True)
    return either(op.Reshape(op.Add(product, bias), target, _bind=f"{name}_split"),
                  op.Add(op.Reshape(product, target, _bind=f"{name}_split"), bias),
                  tag=f"{name}_bias", labels=("", "bias_after_split"))


def softmax_axis(axis, node):
    return None if axis in (-1, 3) else f"normalizes over axis {axis}, not the key axis"


q = either(op.Transpose(split_heads("q"), perm=[0, 2, 1, 3], _bind="q"),
           # HF-TF DistilBERT scales Q between the head split and the transpose
           op.Transpose(op.Mul(split_heads("q"), Const("q_head_scale", label="the Q scale")), perm=[0, 2, 1, 3],
                        _bind="q"),
           tag="q_head_scale", labels=("", "q_scaled_before_transpose"))
v = op.Transpose(split_heads("v"), perm=[0, 2, 1, 3], _bind="v")
k_heads = op.Transpose(split_heads("k"), perm=[0, 2, 1, 3], _bind="k")
k_t = either(op.Transpose(split_heads("k"), perm=[0, 2, 3, 1]),
             op.Transpose(k_heads, perm=[0, 1, 3, 2]),
             # dynamo: swap the last two axes through a 3-D view
             op.Reshape(op.Transpose(op.Reshape(k_heads, Var("k_flat", "the Kᵀ flattening", shape_only=True)), perm=[0, 2, 1]),
                        Var("k_unflat", "the Kᵀ unflattening", shape_only=True)),
             tag="k_transpose", labels=("", "k_double_transpose", "k_transpose_3d"))
scores = either(
    op.Mul(op.MatMul(q, k_t), Const("scale", label="the attention scale"), _bind="scores"),
    op.Div(op.MatMul(q, k_t), Const("scale_divisor", label="the attention scale divisor"), _bind="scores"),
    op.MatMul(op.Mul(q, Const("q_scale", label="the Q scale")), op.Mul(k_t, Const("k_scale", label="the K scale")),
              _bind="scores"),
    op.MatMul(op.Mul(q, Const("q_scale", label="the Q scale")), k_t, _bind="scores"),
    op.MatMul(op.Div(q, Const("q_divisor", label="the Q scale divisor")), k_t, _bind="scores"),
    op.MatMul(q, k_t, _bind="scores"),  # unscaled, or Q scaled before its transpose
    tag="scale", labels=("", "div_scale", "sqrt_scale_qk", "q_scale", "q_div_scale", "unscaled"))
# What is added to the scores — a key padding mask, a position bias — is proven by probing
# (fusekit.engine.probe), whichever term is which; masked_fill selects a fill value instead.
masked = either(
    op.Add(op.Add(scores, Var("bias", "the attention bias")), Var("mask", "the attention mask")),
    op.Add(scores, Var("mask", "the attention mask")),
    op.Where(Var("padded_keys", "the masked_fill condition", shape_only=True),
             Const("fill", label="the masked_fill value"), scores),
    # Keras' SelectV2 as tf2onnx lowers it: Cast(keep)·scores + Cast(Not keep)·fill
    op.Add(op.Mul(Var("kept_keys", "the kept keys' selector", shape_only=True), scores),
           Var("padded_fill", "the padded keys' fill", shape_only=True)),
    scores,
    tag="mask", labels=("mask_and_bias", "", "masked_fill", "select", "no_mask"))
# Keras multiplies the probabilities by the mask once more
remasked = maybe(lambda p: op.Mul(p, Var("kept_probs", "the probabilities' mask", shape_only=True)),
                 op.Softmax(masked, axis=softmax_axis), tag="remask", present="remasked")
probs = maybe(lambda p: op.Where(op.IsNaN(p), c(0.0, "the NaN guard's 0"), p),
              remasked, tag="nan_guard", present="nan_guard")
context = maybe(lambda t: op.Reshape(t, Var("unsplit_shape", "the no-op reshape", shape_only=True)),
                op.MatMul(probs, v, _bind="context"), tag="noop_reshape", present="noop_reshape")
merged = op.Reshape(op.Transpose(context, perm=[0, 2, 1, 3]), Var("merge_shape", "the head merge", shape_only=True),
                    _bind="merge")


# DeBERTa-v2/v3 (transformers 5, both torch exporters): heads folded into the batch for bmm,
# [B·N, S, h], Kᵀ divided by √(3h), a disentangled bias added in that layout; every node of the
# Q and K chains is bound, because the bias reads Q and K too: the fused op reads them through.
def flat_heads(name: str):
    """x·W + b split into heads, the heads folded into the batch: [B·N, S, h]."""
    product = op.MatMul(x, Const(f"w_{name}", label=f"the {name.upper()} weight"), _bind=f"{name}_matmul")
    projection = op.Add(product, Const(f"b_{name}", label=f"the {name.upper()} bias"), _bind=f"{name}_proj")
    split = op.Reshape(projection, Var(f"{name}_shape", f"the {name.upper()} head split", shape_only=True),
                       _bind=f"{name}_split")
    return op.Reshape(op.Transpose(split, perm=[0, 2, 1, 3], _bind=name),
                      Var(f"{name}_flat", f"the {name.upper()} heads folded into the batch", shape_only=True),
                      _bind=f"{name}_3d")


q_3d = flat_heads("q")
flat_scores = op.MatMul(q_3d, op.Div(op.Transpose(flat_heads("k"), perm=[0, 2, 1]),
                                     Const("kt_divisor", label="the Kᵀ scale divisor")), _bind="scores")
biased = op.Reshape(op.Add(flat_scores, Var("bias", "the disentangled attention bias"), _bind="biased"),
                    Var("scores_unflat", "the scores unfolded into heads", shape_only=True), _bind="scores_4d")
masked_cell = Var("masked", "the masked_fill condition")
filled = either(op.Where(masked_cell, Const("fill", label="the masked_fill value"), biased, _bind="filled"), biased,
                tag="fill", labels=("masked_fill", "unmasked"))
# transformers 4's XSoftmax fills the probabilities of masked cells with 0 once more
refilled = maybe(lambda p: op.Where(masked_cell, c(0.0, "the probabilities' fill"), p, _bind="refilled"),
                 op.Softmax(filled, axis=softmax_axis, _bind="probs"), tag="refill", present="refilled")
flat_context = op.MatMul(op.Reshape(refilled, Var("probs_flat", "the probabilities folded", shape_only=True)),
                         flat_heads("v"), _bind="context")
disentangled = op.Reshape(
    op.Transpose(op.Reshape(flat_context, Var("context_unflat", "the context unfolded", shape_only=True),
                            _bind="context_4d"), perm=[0, 2, 1, 3]),
    Var("merge_shape", "the head merge", shape_only=True), _bind="merge")
# the Q and K chains stay for the bias; V's heads stay for the fused op to read (on ort, as K's)
READ_THROUGH = tuple(f"{n}{part}" for n in "qk" for part in ("_matmul", "_proj", "_split", "", "_3d")) \
    + ("v_matmul", "v_proj", "v_split", "v")


def _keeps_batch_and_sequence(entries, source) -> bool:
    """The first two entries of a reshape target keep ``source``'s (batch, sequence) where they
    are: 0 (copy), the dimension read at run time, or the static size it has."""
    dims = source.shape or []

    def same(entry, axis):
        if isinstance(entry, DimOf):
            return entry.index == axis
        return entry == 0 or (len(dims) > axis and isinstance(dims[axis], int) and 0 < dims[axis] == entry)
    return same(entries[0], 0) and (same(entries[1], 1) or entries[1] == -1)


def heads_of(m, name: str, width: int) -> tuple[int, int] | str:
    entries = shapes.entries(m[f"{name}_shape"])
    what = f"the {name.upper()} head split"
    if entries is None or len(entries) != 4:
        return f"{what} is not a 4-D shape fusekit can read"
    if not _keeps_batch_and_sequence(entries, m.node(f"{name}_split").inputs[0]):
        return f"{what} {entries} does not keep batch and sequence in place"
    heads, size = entries[2], entries[3]
    if not isinstance(heads, int) or not isinstance(size, int) or [entries[1], heads, size].count(-1) > 1:
        return f"{what} {entries} does not state the number of heads or the head size"
    heads = width // size if heads == -1 and size > 0 else heads
    size = width // heads if size == -1 and heads > 0 else size
    if heads <= 0 or size <= 0 or heads * size != width:
        return f"{what} gives {heads} heads of {size}, which does not make the projection width {width}"
    return heads, size


def _merge_reason(m, width: int) -> str | None:
    entries = shapes.entries(m["merge_shape"])
    if entries is None or len(entries) != 3 or not _keeps_batch_and_sequence(entries, m.node("merge").inputs[0]):
        return f"the head merge {entries} is not a (batch, sequence, {width}) reshape fusekit can read"
    if entries[2] not in (width, -1) or (entries[2] == -1 and entries[1] == -1):
        return f"the head merge {entries} does not give the width {width}"
    return None


def _noop_reason(m, heads: int, size: int) -> str | None:
    """The sdpa export's Reshape between ·V and the merge must change nothing."""
    entries = shapes.entries(m["unsplit_shape"])
    same_shape = IdentitySet(m.node(n).outputs[0] for n in ("q", "v", "context"))
    if entries is None or len(entries) != 4:
        return "the reshape after ·V is not a 4-D shape fusekit can read"
    for axis, entry in enumerate(entries):
        known = {1: heads, 3: size}.get(axis)
        if not (entry == -1 or (known is not None and entry == known)
                or (isinstance(entry, DimOf) and entry.index == axis and entry.tensor in same_shape)):
            return f"the reshape after ·V {entries} may not be a no-op (axis {axis})"
    return None if sum(e == -1 for e in entries) <= 1 else "the reshape after ·V has several -1 entries"


def _same_shape_dim(m, entry, axis: int) -> bool:
    """``entry`` reads dimension ``axis`` of a tensor shaped like the per-head Q/K/V, [B, N, S, h]."""
    heads = IdentitySet(m.node(n).outputs[0] for n in ("q", "v", "k") if n in m.named)
    return isinstance(entry, DimOf) and entry.index == axis and entry.tensor in heads


def _k_transpose_reason(m, heads: int, size: int) -> str | None:
    """The dynamo 3-D detour must be exactly [B·N, S, h] → [B·N, h, S] → [B, N, h, S]."""
    flat, unflat = shapes.entries(m["k_flat"]), shapes.entries(m["k_unflat"])
    ok_flat = flat is not None and len(flat) == 3 and flat[0] == -1 and _same_shape_dim(m, flat[1], 2) \
        and (flat[2] == size or _same_shape_dim(m, flat[2], 3))
    ok_unflat = unflat is not None and len(unflat) == 4 and _same_shape_dim(m, unflat[0], 0) \
        and (unflat[1] == heads or _same_shape_dim(m, unflat[1], 1)) \
        and (unflat[2] == size or _same_shape_dim(m, unflat[2], 3)) and _same_shape_dim(m, unflat[3], 2)
    return None if ok_flat and ok_unflat else f"the Kᵀ reshapes {flat} → {unflat} do not just swap the last two axes"


SCALES = {"scale": 1, "scale_divisor": -1, "q_scale": 1, "k_scale": 1, "q_divisor": -1, "q_head_scale": 1,
          "kt_divisor": -1}


def _scale(m) -> float | str:
    """The product of the scales the match found (a divisor counts as its reciprocal); 1 when none."""
    found = {name: m.const(name) for name in SCALES if name in m.consts}
    if any(np.asarray(v).size != 1 for v in found.values()):
        return "the attention scale is not a scalar, so it cannot be carried into a fused attention"
    return float(np.prod([np.asarray(v, np.float64).item() ** SCALES[n] for n, v in found.items()]))


def _term(m, value, heads: int) -> KeyPaddingMask | PositionBias | str:
    """What one term added to the scores is: a key padding mask or a position bias."""
    scores = m.node("scores").outputs[0]
    mask = key_padding_mask(m.graph, value, m.state.probes, scores, heads)
    if not isinstance(mask, str):
        return mask
    bias = position_bias(m.graph, value, m.state.probes, heads)
    if not isinstance(bias, str):
        return bias
    return f"'{value.name}' added to the scores is neither a key padding mask ({mask}) nor a position bias ({bias})"


def _selector(m, name: str, heads: int, what: str) -> KeyPattern | str:
    """``name`` read as 1 at the kept keys and 0 at the padded ones of a 2-D mask input."""
    found = key_pattern(m.graph, m[name], m.state.probes, m.node("scores").outputs[0], heads)
    if isinstance(found, str):
        return found
    if (found.kept, found.padded) != (1.0, 0.0):
        return f"{what} is not 1 at the kept keys and 0 at the padded keys of input '{found.input.name}'"
    return found


def _selected(m, heads: int) -> KeyPaddingMask | str:
    """A mask that selects a fill value at padded keys instead of adding one: the fused op's
    added fill gives those keys the same probability 0 whenever a row keeps a key."""
    scores = m.node("scores").outputs[0]
    if "padded_keys" in m.values:  # masked_fill: the fill value where the condition holds
        found = key_pattern(m.graph, m["padded_keys"], m.state.probes, scores, heads)
        if isinstance(found, str):
            return found
        if (found.kept, found.padded) != (0.0, 1.0):
            return f"the masked_fill condition is not true exactly at the padded keys of input '{found.input.name}'"
        fill = m.const("fill")
        if fill.size != 1 or not float(fill.item()) <= LARGE_NEGATIVE:
            return f"the masked_fill value {fill.ravel()[:3]} is not one large negative number"
        return KeyPaddingMask(found.input, float(fill.item()))
    keep = _selector(m, "kept_keys", heads, "the selector of the scores")
    if isinstance(keep, str):
        return keep
    fill = key_pattern(m.graph, m["padded_fill"], m.state.probes, scores, heads)
    if isinstance(fill, str):
        return fill
    if fill.input is not keep.input or fill.kept != 0 or not fill.padded <= LARGE_NEGATIVE:
        return f"the fill added beside the selected scores is not 0 at the kept keys of input " \
               f"'{keep.input.name}' and one large negative number at the padded ones"
    return KeyPaddingMask(keep.input, fill.padded)


@dataclass(frozen=True)
class AttentionFacts:
    """What check proved, for rewrite (and for packing, which reads the mask)."""

    heads: int
    size: int  # of each head
    scale: float  # the product of every scale the match found
    mask: KeyPaddingMask | None = None  # the key padding mask, where the scores have one
    bias: PositionBias | None = None  # a position bias the scores get, where it is not all zeros


def _masking(m, heads: int) -> tuple[KeyPaddingMask | None, PositionBias | None] | str:
    """The key padding mask and position bias the fused op carries, proven by probing."""
    mask = bias = None
    if "padded_keys" in m.values or "kept_keys" in m.values:
        mask = _selected(m, heads)
        if isinstance(mask, str):
            return mask
    for name in ("mask", "bias"):
        if name not in m.values:
            continue
        term = _term(m, m[name], heads)
        if isinstance(term, str):
            return term
        is_mask = isinstance(term, KeyPaddingMask)
        if (mask if is_mask else bias) is not None:
            return f"both terms added to the scores are a {'key padding mask' if is_mask else 'position bias'}"
        if is_mask:
            mask = term
        elif not term.zero:  # a bias of zeros (a constant mask where every key attends) is dropped
            bias = term
    if m.has("remask"):  # p·keep changes nothing where the mask already gave padded keys probability 0
        keep = _selector(m, "kept_probs", heads, "the mask on the probabilities")
        if isinstance(keep, str):
            return keep
        if mask is None or mask.input is not keep.input:
            return f"the probabilities are masked by input '{keep.input.name}' after the Softmax, " \
                   f"but the scores are not masked by it before"
    return mask, bias


def agreed_heads(m, width: int) -> tuple[int, int] | str:
    """(heads, head size) of the Q, K and V head splits, which must agree; or why not."""
    split = {}
    for name in "qkv":
        found = heads_of(m, name, width)
        if isinstance(found, str):
            return found
        split[name] = found
    if len(set(split.values())) != 1:
        return "the head count disagrees between Q, K and V: " + ", ".join(
            f"{n.upper()} {h} heads of {s}" for n, (h, s) in split.items())
    return split["q"]


def _projections(m) -> tuple[int, int, int] | str:
    """(heads, head size, width) of the Q, K and V projections, which must agree; or why not."""
    weights = [m.const(f"w_{n}") for n in "qkv"]
    biases = [m.const(f"b_{n}") for n in "qkv"]
    hidden_in = last_dim(m["x"])
    if any(w.ndim != 2 for w in weights) or len({w.shape for w in weights}) != 1:
        return f"the Q/K/V weights are not three matrices of one shape: {[list(w.shape) for w in weights]}"
    width = weights[0].shape[1]
    if hidden_in is not None and weights[0].shape[0] != hidden_in:
        return f"the Q weight has {weights[0].shape[0]} rows but the hidden size is {hidden_in}"
    split = agreed_heads(m, width)
    if isinstance(split, str):
        return split
    heads, size = split
    expected = [(heads, size) if m.took("bias_after_split", tag=f"{n}_bias") else (width,) for n in "qkv"]
    if [b.shape for b in biases] != expected:
        return f"the Q/K/V biases have shapes {[list(b.shape) for b in biases]}, expected {[list(e) for e in expected]}"
    return _merge_reason(m, width) or (heads, size, width)


# A masked_fill value this low absorbs whatever is added to it: float32's spacing there is
# 2^76, so fill + s rounds to fill for every score |s| < 1e22. Added into the bias, it then
# gives each masked cell the fill itself, as the masked_fill did.
ABSORBING = -1e30

# the axes at which the values of a disentangled match hold the sequence
SEQUENCE_AXES = {"q_split": (1,), "k_split": (1,), "v_split": (1,), "q": (2,), "k": (2,), "v": (2,),
                 "q_3d": (1,), "k_3d": (1,), "v_3d": (1,), "scores": (1, 2), "biased": (1, 2),
                 "scores_4d": (2, 3), "filled": (2, 3), "probs": (2, 3), "refilled": (2, 3), "context": (1,),
                 "context_4d": (2,)}


@dataclass(frozen=True)
class DisentangledFacts:
    """What check proved of a disentangled attention (DeBERTa), for rewrite."""

    heads: int
    size: int
    scale: float  # what Q·Kᵀ is multiplied by: 1/√(3h) for DeBERTa-v3
    fill: float | None  # the masked_fill value, which absorbs any score; None: unmasked
    refill: bool  # the probabilities of masked cells are set to 0 after the Softmax
    full: bool = False  # the bias is proven [B·N, S, S], as the scores: it broadcasts nothing


def _model_dims(m):
    """The model's (batch, sequence) as ``shapes.dimension`` names them, where the hidden states
    provably have them; None otherwise."""
    leading = shapes.model_leading(m.graph)
    if leading is None or not shapes.spans_batch_and_sequence(m.graph, m["x"]):
        return None
    return leading


def _is_dim(m, tensor, axis: int, which: int) -> bool:
    """Whether dimension ``axis`` of ``tensor`` is the model's batch (``which`` 0) or sequence (1):
    by the shape facts, or the symbol onnx gives the model input's own dimension."""
    leading = _model_dims(m)
    if leading is None:
        return False
    size = shapes.dimension(tensor, axis, leading, IdentityMap())
    if size == leading.dims[which]:
        return True
    shape, named = tensor.shape or [], leading.inputs[0].shape[which]
    return isinstance(named, str) and axis < len(shape) and shape[axis] == named


def _is_sequence(m, entry) -> bool:
    """A shape entry that is the sequence length: the static length, the model's sequence
    dimension, or a sequence axis of a value of the match."""
    seq = (m["x"].shape or [None, None])[1]
    if isinstance(entry, int):
        return isinstance(seq, int) and entry == seq
    if not isinstance(entry, DimOf):
        return False
    return any(entry.tensor is m.node(name).outputs[0] and entry.index in axes
               for name, axes in SEQUENCE_AXES.items() if name in m.named) \
        or _is_dim(m, entry.tensor, entry.index, 1)


def _fold_reason(m, heads: int, size: int) -> str | None:
    """Each reshape folds or unfolds the heads into the batch and nothing else."""
    seq = lambda e: _is_sequence(m, e)  # noqa: E731
    layouts = {"q_flat": (-1, seq, size), "k_flat": (-1, seq, size), "v_flat": (-1, seq, size),
               "scores_unflat": (-1, heads, seq, seq), "probs_flat": (-1, seq, seq),
               "context_unflat": (-1, heads, seq, size)}
    for name, layout in layouts.items():
        entries = shapes.entries(m[name])
        if entries is None or len(entries) != len(layout) or not all(
                want(e) if callable(want) else e == want for e, want in zip(entries, layout)):
            shown = ", ".join("S" if callable(w) else str(w) for w in layout)
            return f"{VARIABLES[name]} {entries} is not [{shown}]"
    return None


VARIABLES = {"q_flat": "the Q heads folded into the batch", "k_flat": "the K heads folded into the batch",
             "v_flat": "the V heads folded into the batch", "scores_unflat": "the scores unfolded into heads",
             "probs_flat": "the probabilities folded", "context_unflat": "the context unfolded"}


def _reads_the_match(m) -> str | None:
    """The bias must come from outside the match (Q, K, the positions), never from a value
    the fused op replaces: the op would read its own output."""
    replaced = IdentitySet(t for n in m.nodes for t in n.outputs)
    seen, todo = IdentitySet(), [m["bias"]]
    while todo:
        t = todo.pop()
        if t in seen:
            continue
        seen.add(t)
        if t in replaced:
            return f"the bias '{m['bias'].name}' is computed from '{t.name}', which the fused attention replaces"
        node = producer(t)
        todo += list(node.inputs) if node is not None else []
    return None


def _cells_reason(m, heads: int) -> str | None:
    """The masked_fill condition broadcasts into the [B, N, S, S] scores without enlarging them."""
    cond = m["masked"]
    if cond.dtype is not None and np.dtype(cond.dtype) != np.bool_:
        return f"the masked_fill condition '{cond.name}' is not boolean"
    if cond.shape is None or len(cond.shape) != 4:
        return f"the masked_fill condition '{cond.name}' has shape {cond.shape}, not a known 4-D one"
    fits = (lambda a: _is_dim(m, cond, a, 0), lambda a: cond.shape[a] == heads,
            lambda a: _is_dim(m, cond, a, 1), lambda a: _is_dim(m, cond, a, 1))
    if not all(cond.shape[a] == 1 or fits[a](a) for a in range(4)):
        return f"the masked_fill condition '{cond.name}' has shape {cond.shape}, which does not broadcast " \
               f"as [B|1, {heads}|1, S|1, S|1] into the scores"
    if m.has("refill") and cond.shape[1] != 1:
        return "the probabilities are filled with 0 by a per-head condition, which fusekit cannot carry " \
               "past the head merge"
    return None


def _check_disentangled(m) -> DisentangledFacts | str:
    found = _projections(m)
    if isinstance(found, str):
        return found
    heads, size, _ = found
    reason = _fold_reason(m, heads, size)
    if reason:
        return reason
    scale = _scale(m)
    if isinstance(scale, str):
        return scale
    bias = m["bias"]
    if bias.shape is None or len(bias.shape) > 3:
        return f"the bias '{bias.name}' has {'an unknown rank' if bias.shape is None else 'rank ' + str(len(bias.shape))}," \
               " so it could enlarge the [B·N, S, S] scores it is added to"
    reason = _reads_the_match(m)
    if reason:
        return reason
    fill = None
    if m.has("refill") and not m.took("masked_fill"):
        return "the probabilities are filled with 0 where the scores were not masked"
    if m.took("masked_fill"):
        reason = _cells_reason(m, heads)
        if reason:
            return reason
        value = m.const("fill")
        if value.size != 1 or not -np.inf < float(value.item()) <= ABSORBING:
            return f"the masked_fill value {value.ravel()[:3]} does not absorb the scores added to it (it must be " \
                   f"finite and ≤ {ABSORBING:g}): a row whose every key is masked would not stay uniform"
        fill = float(value.item())
    return DisentangledFacts(heads, size, scale, fill, m.has("refill"), _full(m))


def _full(m) -> bool:
    """Whether the shape facts prove the bias [B·N, S, S] already, as the scores are: then it needs no Expand."""
    leading, memo = shapes.model_leading(m.graph), IdentityMap()
    bias, scores = m["bias"], m.node("scores").outputs[0]
    if leading is None or bias.shape is None or len(bias.shape) != 3:
        return False
    dims = [(shapes.dimension(bias, i, leading, memo), shapes.dimension(scores, i, leading, memo)) for i in range(3)]
    return all(a is not None and a == b for a, b in dims)


def check(m) -> AttentionFacts | DisentangledFacts | str:
    if m.variant.name == "disentangled":
        return _check_disentangled(m)
    found = _projections(m)
    if isinstance(found, str):
        return found
    heads, size, width = found
    reason = (m.has("noop_reshape") and _noop_reason(m, heads, size)) \
        or (m.took("k_transpose_3d") and _k_transpose_reason(m, heads, size)) or None
    if reason:
        return reason
    scale = _scale(m)
    if isinstance(scale, str):
        return scale
    masking = _masking(m, heads)
    if isinstance(masking, str):
        return masking
    mask, bias = masking
    return AttentionFacts(heads, size, scale, mask, bias)


def _additive_mask(emit, mask):
    """The [B, 1, S, S] float mask ONNX Attention adds (ONNX Runtime's kernel wants the
    full shape), built once from the 2-D mask and shared by every layer."""
    keep = emit.shared("Cast", mask.input, to=TensorProto.BOOL)
    keys = emit.shared("Unsqueeze", keep, emit.small(np.array([1, 2], np.int64)))  # [B, 1, 1, S]
    added = emit.shared("Where", keys, emit.small(np.float32(0.0)), emit.small(np.float32(max(mask.fill, LOWEST))))
    shape = emit.shared("Shape", mask.input)  # [B, S]
    full = emit.shared("Concat", emit.shared("Slice", shape, emit.small(np.array([0], np.int64)),
                                             emit.small(np.array([1], np.int64))),
                       emit.small(np.array([1], np.int64)),
                       emit.shared("Slice", shape, emit.small(np.array([1], np.int64)),
                                   emit.small(np.array([2], np.int64))),
                       emit.shared("Slice", shape, emit.small(np.array([1], np.int64)),
                                   emit.small(np.array([2], np.int64))), axis=0)
    return emit.shared("Expand", added, full)


def _onnx_attention(m, facts: AttentionFacts, emit):
    """ONNX Attention (opset 23) on the packed projection, split into Q, K and V."""
    w = np.concatenate([m.const(f"w_{n}") for n in "qkv"], axis=1)
    b = np.concatenate([m.const(f"b_{n}").reshape(-1) for n in "qkv"])  # [N, h] biases in head order
    qkv = emit.Add(emit.MatMul(m["x"], emit.const("qkv_weight", w)), emit.const("qkv_bias", b))
    q, k, v = emit.Split(qkv, emit.small(np.full(3, w.shape[1] // 3, np.int64)), axis=-1, _outputs=(0, 1, 2))
    added = [_additive_mask(emit, facts.mask)] if facts.mask is not None else []
    if facts.bias is not None:
        bias = facts.bias.value
        if added and bias.dtype is not None and np.dtype(bias.dtype) != np.float32:
            bias = emit.Cast(bias, to=TensorProto.FLOAT)  # the key padding mask above is float32; exact
        added.append(bias)
    inputs = [q, k, v] + ([emit.Add(*added)] if len(added) == 2 else added)
    return emit.Attention(*inputs, q_num_heads=facts.heads, kv_num_heads=facts.heads, scale=facts.scale)


def _dims(emit, t, start: int, end: int):
    """Dimensions start..end of ``t``, read at run time."""
    return emit.Slice(emit.Shape(t), emit.small(np.array([start], np.int64)), emit.small(np.array([end], np.int64)))


def _disentangled(m, facts: DisentangledFacts, emit):
    """The projections read through, the bias (with the masked cells' fill) as the op's additive term:

        bias₄ = Reshape(Expand(bias, [B·N, S, S]), [B, N, S, S])      the term exactly as the scores got it
                                                                        (no Expand where it is proven that shape)
        term  = Where(masked, fill, bias₄)                              fill + s = fill for every score s
        out   = MultiHeadAttention(Q, K heads, V heads, attention_bias=term)  or  ONNX Attention(Q, K, V, term)
        out   = Where(every key of the row masked, 0, out)              where the probabilities were refilled
    """
    q, k, v = (m.node(f"{n}_proj").outputs[0] for n in "qkv")
    q_3d, k_3d = m.node("q_3d").outputs[0], m.node("k_3d").outputs[0]
    keys = _dims(emit, k_3d, 1, 2)
    full = m["bias"] if facts.full else \
        emit.Expand(m["bias"], emit.Concat(_dims(emit, q_3d, 0, 2), keys, axis=0))  # as the Add broadcast it
    term = emit.Reshape(full, emit.Concat(emit.small(np.array([-1, facts.heads], np.int64)),
                                          _dims(emit, q_3d, 1, 2), keys, axis=0))
    if facts.fill is not None:
        # any fill that absorbs the scores gives the same probabilities: 0 where a row keeps a
        # cell, uniform where it keeps none; ORT's ONNX Attention reads the lowest float itself
        # as "attend nowhere" and zeroes such rows, so the fused op gets one that is not
        term = emit.Where(m["masked"], emit.small(np.float32(ABSORBING)), term)
    if emit.target == "ort":  # K and V as their heads [B, N, S, h], which the graph computes already
        k_heads, v_heads = m.node("k").outputs[0], m.node("v").outputs[0]
        out = emit.MultiHeadAttention(q, k_heads, v_heads, None, None, term, _domain=MS, num_heads=facts.heads,
                                      scale=facts.scale)
    else:
        out = emit.Attention(q, k, v, term, q_num_heads=facts.heads, kv_num_heads=facts.heads, scale=facts.scale)
    if facts.refill:  # rows whose every cell is masked have probabilities 0, hence context 0
        masked = emit.shared("Cast", m["masked"], to=TensorProto.FLOAT)
        axes = np.array([1, 3], np.int64)  # the head axis is 1 (check): [B, S]
        rows = emit.shared("ReduceMin", masked, emit.small(axes), keepdims=0) if emit.opset >= 18 \
            else emit.shared("ReduceMin", masked, axes=axes.tolist(), keepdims=0)
        empty = emit.shared("Cast", emit.shared("Unsqueeze", rows, emit.small(np.array([-1], np.int64))),
                            to=TensorProto.BOOL)
        out = emit.Where(empty, emit.small(np.float32(0.0)), out)
    return out


def rewrite(m, facts: AttentionFacts | DisentangledFacts, emit):
    if isinstance(facts, DisentangledFacts):
        return _disentangled(m, facts, emit)
    if emit.target != "ort":
        return _onnx_attention(m, facts, emit)
    w = np.concatenate([m.const(f"w_{n}") for n in "qkv"], axis=1)
    b = np.concatenate([m.const(f"b_{n}").reshape(-1) for n in "qkv"])  # [N, h] biases in head order
    inputs = [m["x"], emit.const("qkv_weight", w), emit.const("qkv_bias", b)]
    attrs = {"num_heads": facts.heads, "scale": facts.scale}
    mask = facts.mask
    if mask is not None:
        mask_input = mask.input
        if np.dtype(mask_input.dtype) != np.int32:
            mask_input = emit.shared("Cast", mask_input, to=TensorProto.INT32)
        inputs.append(mask_input)
        # -inf cannot be a filter value (0 · -inf is NaN); the lowest float gives the same
        # probabilities whenever a row keeps at least one key
        attrs["mask_filter_value"] = max(mask.fill, LOWEST)
    if facts.bias is not None:  # attention_bias, added to the scaled scores
        inputs += [None] * (5 - len(inputs)) + [facts.bias.value]
    return emit.Attention(*inputs, _domain=MS, **attrs)


FUSION = Fusion(
    name="Attention",
    variants=[Variant("self_attention", merged, "TorchScript eager and sdpa exports (transformers 4 and 5)"),
              Variant("disentangled", disentangled, "DeBERTa-v2/v3, TorchScript and dynamo exports (transformers 5)",
                      reads=READ_THROUGH)],
    check=check,
    rewrite=rewrite,
    signature=frozenset({"Softmax"}),
    # OpenVINO's CPU plugin already turns the unfused chain into one attention kernel,
    # and runs it no slower than any fused form (benchmarks/attention_forms.py)
    targets=("ort", "onnx"),
    min_opset={"onnx": 23},
)
