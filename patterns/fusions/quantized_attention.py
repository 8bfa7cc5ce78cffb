"""Attention in a quantized model: the attention core on the dequantized Q, K and V, its
requantization pairs dropped, as the target's attention op.

    out = merge_heads(softmax(scale · Q·Kᵀ + mask) · V)     Q, K, V: [B, S, H], the projections' outputs

The projections are INT8 dense blocks of their own (``QuantizedLinear``, which keeps them in
INT8); what this fuses is the core between them, where a quantizer rounds every value
through a Q→DQ pair. ``⟨q⟩`` below is an optional QuantizeLinear→DequantizeLinear pair:

all_ops — ONNX Runtime's ``quantize_static`` (QDQ), every op type quantized::

    Q ─► Reshape ─⟨q⟩─► Transpose(0,2,1,3) ─⟨q⟩─┐
    K ─► Reshape ─⟨q⟩─► Transpose(0,2,3,1) ─⟨q⟩─► MatMul ─⟨q⟩─► Mul(⟨q⟩ scale) ─⟨q⟩─► Add(mask) ─⟨q⟩─► Softmax ─⟨q⟩─┐
    V ─► Reshape ─⟨q⟩─► Transpose(0,2,1,3) ─⟨q⟩──────────────────────────────────────────────────────────────────► MatMul ─⟨q⟩─┐
                                                                  out ◄─ Reshape ◄─⟨q⟩─ Transpose(0,2,1,3) ◄───────────────┘

dynamic — ``quantize_dynamic`` with the attention's MatMuls quantized (Optimum's ``avx512_vnni``
config), as ``DequantizedAsMatMulInteger`` reads its integer Q·Kᵀ and P·V: each of their operands
rounded at run time, ``⟨d⟩`` = DynamicQuantizeLinear→DequantizeLinear (its own scale and zero
point), where the all_ops picture has ⟨q⟩ on the head splits and the probabilities; the scores
and the context float.

matmul_only — ``quantize_static`` with MatMul quantized (pairs on the inputs and outputs of
Q·Kᵀ and P·V only), and QAT exports whose projections are INT8 blocks and whose core is
float (no pair at all): the same pattern with the pairs absent.

merged_integers — NNCF's default preset quantizes P·V before the head merge, and
``DequantizeAfterMove`` moves that DQ after the merge, into the output projection's INT8 block:
the merge moves the integers, and the match ends there::

    … ─► MatMul(P, V) ─► Q ─► Transpose(0,2,1,3) ─► Reshape ─► (DQ ─► the output projection's block)

The fused core's output is quantized by that same Q (per tensor: merging only moves values, so
quantizing after it is the same), and the block reads DQ of it as before: that pair stays.

The pair on Q, K and V themselves (before the head split) and the one on the merged output
are the boundary: they stay, read and written by the INT8 blocks around. Every pair inside
is dropped: the fused op computes the core unrounded. That is not bit-exact — each dropped
pair is one rounding fewer, to its own step, so the output moves towards the float core by
at most a few of its steps — and it is the same decision ``QuantizedLinear`` makes for the
pairs inside a dense block: ``fusekit verify`` compares quantized models in steps of each
output's quantization, within the reference's own activation quantization noise (the
reference against itself with every activation pair removed), which bounds exactly this.
The scale is carried as the graph computes it (a scale rounded through a pair is evaluated).

A run-time pair ⟨d⟩ is dropped the same way, for every target: its step is the operand's range
/ 255 at each call, and the verification measures it as it measures a dense block's dynamic
input (the reference's integer MatMuls fed their operands unrounded).

Checks: as ``Attention`` (heads and head size from the head split, which Q, K and V share;
the merge gives back [B, S, H]; a scalar scale; the mask proven a key padding mask by
probing) and: Q, K and V are 3-D values of one width; every dropped pair is per tensor (a
per-channel pair on an activation is refused, its rounding not a uniform step), a run-time
one dequantized by its own quantizer's scale and zero point; the core holds a pair or reads an
INT8 block (a float attention is the ``Attention`` fusion's); a mask dequantized by an infinite
scale (NaN at every key: the scores as written are NaN) is refused.

Forms: ``ort`` com.microsoft MultiHeadAttention on Q, K, V and the raw 2-D mask; ``onnx`` ONNX Attention (opset 23) on Q, K, V; ``openvino`` the core
as float ops with the pairs on the scores alone dropped: the operands of Q·Kᵀ and P·V keep
theirs, as do the values after P·V, so its CPU plugin builds one attention kernel on the
quantized operands and leaves no standalone FakeQuantize (``_openvino_core``). So on
OpenVINO only the scores' pairs (Q·Kᵀ, scaled, masked) are dropped; the verification in
steps covers them as above.
"""
import itertools

import numpy as np
from onnx import TensorProto

from fusekit.engine.graph import const_value, producer, rank
from fusekit.engine.pattern import Const, Fusion, Var, Variant, either, maybe, op
from fusekit.engine.rewrite import MS

from .._common import (c, constant, dropped_pairs, has_constant, last_dim, per_channel_pair, quantize,
                      requantized, stored)
from .attention import (LOWEST, SCALES, AttentionFacts, _additive_mask, _masking, _merge_reason, _noop_reason,
                        agreed_heads, softmax_axis)

SCALE_NAMES = tuple(SCALES)
_dynamic_ids = itertools.count()


def step(p):
    """``p``, or ``p`` rounded through a Q→DQ pair (``requantized``) or through one computed at run
    time, DQ(DynamicQuantizeLinear(p)) (``quantize_dynamic``)."""
    n = next(_dynamic_ids)  # each pair its own scale and zero point
    dynamic = op.DequantizeLinear(op.DynamicQuantizeLinear(p), Var(f"dynamic{n}_scale", shape_only=True),
                                  Var(f"dynamic{n}_zero_point", shape_only=True))
    return either(requantized(p), dynamic)


def _is_dynamic_pair(node) -> bool:
    """A DequantizeLinear of a DynamicQuantizeLinear's integers, or that DynamicQuantizeLinear."""
    if node.op == "DynamicQuantizeLinear":
        return True
    quantizer = producer(node.inputs[0]) if node.op == "DequantizeLinear" else None
    return quantizer is not None and quantizer.op == "DynamicQuantizeLinear"


def _dynamic_pair_reason(m) -> str | None:
    for node in m.nodes:
        quantizer = producer(node.inputs[0]) if node.op == "DequantizeLinear" else None
        if quantizer is not None and quantizer.op == "DynamicQuantizeLinear" \
                and list(node.inputs[1:]) != list(quantizer.outputs[1:len(node.inputs)]):
            return f"'{node.name}' dequantizes with a scale or zero point its DynamicQuantizeLinear did not compute"
    return None


def heads(name: str, perm: list[int], bind: str | None = None):
    split = op.Reshape(Var(f"{name}_states", f"the {name.upper()} projection"),
                       Var(f"{name}_shape", f"the {name.upper()} head split", shape_only=True), _bind=f"{name}_split")
    return step(op.Transpose(step(split), perm=perm, _bind=bind))


q = heads("q", [0, 2, 1, 3], "q")
v = heads("v", [0, 2, 1, 3], "v")
k_t = either(heads("k", [0, 2, 3, 1]), step(op.Transpose(heads("k", [0, 2, 1, 3], "k"), perm=[0, 1, 3, 2])),
             tag="k_transpose", labels=("", "k_double_transpose"))
product = step(op.MatMul(q, k_t, _bind="qk"))
# the sdpa export's √scale on Q and on Kᵀ, each rounded through a pair of its own (NNCF)
sqrt_scaled = op.MatMul(step(op.Mul(q, Const("q_scale", label="the Q scale"))),
                        step(op.Mul(k_t, Const("k_scale", label="the K scale"))), _bind="scores")
scores = step(either(op.Mul(product, stored("scale", "the attention scale"), _bind="scores"),
                     op.Div(product, stored("scale_divisor", "the attention scale divisor"), _bind="scores"),
                     sqrt_scaled, op.MatMul(q, k_t, _bind="scores"),
                     tag="scale", labels=("", "div_scale", "sqrt_scale_qk", "unscaled")))
masked = step(either(op.Add(scores, Var("mask", "the attention mask")), scores, tag="mask", labels=("", "no_mask")))
remasked = maybe(lambda p: op.Mul(p, Var("kept_probs", "the probabilities' mask", shape_only=True), _bind="remask"),
                 op.Softmax(masked, axis=softmax_axis, _bind="softmax"), tag="remask", present="remasked")
probs = step(maybe(lambda p: op.Where(op.IsNaN(p), c(0.0, "the NaN guard's 0"), p, _bind="nan_guard"),
                   remasked, tag="nan_guard", present="nan_guard"))
context = maybe(lambda t: op.Reshape(t, Var("unsplit_shape", "the no-op reshape", shape_only=True), _bind="noop"),
                step(op.MatMul(probs, v, _bind="context")), tag="noop_reshape", present="noop_reshape")
merged = op.Reshape(step(op.Transpose(context, perm=[0, 2, 1, 3])),
                    Var("merge_shape", "the head merge", shape_only=True), _bind="merge")
# NNCF's default preset quantizes P·V before the head merge; DequantizeAfterMove moved its DQ after
# the merge (into the output projection's INT8 block), so the merge moves the integers
merged_integers = op.Reshape(
    op.Transpose(quantize(op.MatMul(probs, v, _bind="context"), "context", "P·V", bind="context_q"), perm=[0, 2, 1, 3]),
    Var("merge_shape", "the head merge", shape_only=True), _bind="merge")

# INT8 blocks' outputs, as each target's form of QuantizedLinear writes them
INT8_OUTPUTS = {"DequantizeLinear", "MatMulIntegerToFloat", "QuantizedLinearToFloat", "QuantizedLinear"}


def _int8_projection(tensor) -> bool:
    """An INT8 block's output, fused or not yet: x·W (+ b) with x or W dequantized, the product
    maybe requantized (Intel Neural Compressor: DQ(Q(DQ(x) · DQ(W))) + b; a QAT export:
    DQ(x) · Transpose(DQ(Q(W))) + b)."""
    node = producer(tensor)
    if node is not None and node.op == "Add":
        node = next((p for t in node.inputs if (p := producer(t)) is not None and p.op != "Constant"), None)
    if node is not None and node.op == "DequantizeLinear" and (q := producer(node.inputs[0])) is not None \
            and q.op == "QuantizeLinear":
        node = producer(q.inputs[0])
    if node is None or node.op != "MatMul":
        return node is not None and node.op in INT8_OUTPUTS

    def dequantized(t):
        p = producer(t)
        p = producer(p.inputs[0]) if p is not None and p.op == "Transpose" else p
        return p is not None and p.op == "DequantizeLinear"
    return any(dequantized(t) for t in node.inputs)


def _scale(m, names=SCALE_NAMES) -> float | str:
    """The product of the scales among ``names`` the match found (a divisor counts as its reciprocal)."""
    found = [(name, constant(m, name)) for name in names if has_constant(m, name)]
    if any(value.size != 1 for _, value in found):
        return "the attention scale is not a scalar, so it cannot be carried into a fused attention"
    return float(np.prod([np.asarray(v, np.float64).item() ** SCALES[n] for n, v in found]))


def check(m) -> AttentionFacts | str:
    states = [m[f"{n}_states"] for n in "qkv"]
    widths = {last_dim(t) for t in states}
    if any(rank(t) not in (3, None) for t in states) or len(widths) != 1 or None in widths:
        return f"Q, K and V are not [batch, sequence, hidden] values of one known width: " \
               f"{[t.shape for t in states]}"
    width = widths.pop()
    if not dropped_pairs(m, SCALE_NAMES) and not any(_int8_projection(t) for t in states):
        return "no quantization pair inside and no INT8 projection: a float attention (the Attention fusion's)"
    reason = per_channel_pair(m) or _dynamic_pair_reason(m)
    if reason:
        return reason
    split = agreed_heads(m, width)
    if isinstance(split, str):
        return split
    heads_, size = split
    reason = _merge_reason(m, width) or (m.has("noop_reshape") and _noop_reason(m, heads_, size)) or None
    if reason:
        return reason
    scale = _scale(m)
    if isinstance(scale, str):
        return scale
    masking = _nan_mask(m) or _masking(m, heads_)
    if isinstance(masking, str):
        return masking
    mask, bias = masking
    if bias is not None:
        return "a position bias is added to the scores: the quantized form does not carry one yet"
    return AttentionFacts(heads_, size, scale, mask)


def _nan_mask(m) -> str | None:
    """A mask dequantized by an infinite scale is NaN at every key ((q − z)·inf, 0·inf where q = z):
    the scores as written are NaN, which no fused attention computes."""
    node = producer(m["mask"]) if "mask" in m.values else None
    scale = const_value(node.inputs[1]) if node is not None and node.op == "DequantizeLinear" else None
    if scale is None or np.isfinite(scale).all():
        return None
    return (f"the mask's DequantizeLinear '{node.name}' has scale {scale.reshape(-1)[0]}: it reads NaN at every key, "
            "so the scores as written are NaN (a quantizer calibrated on the mask's fill, −3.4e38)")


def _reemit(emit, tensor, start, value, shapes=(), skip=None):
    """The matched chain from ``start`` to ``tensor`` (each node reading the one before and
    constants) emitted again on ``value``; and how many Q/DQ pairs it holds. ``shapes``: (reshape,
    target) pairs, the targets it proved (its own may read the shape of a value the match
    replaces); ``skip``: a no-op reshape, left out for that reason."""
    chain = []
    while tensor is not start:
        node = producer(tensor)
        index = next(i for i, t in enumerate(node.inputs) if const_value(t) is None)
        if node is not skip and not _is_dynamic_pair(node):  # a run-time pair is dropped: OpenVINO runs none in INT8
            chain.append((node, index))
        tensor = node.inputs[index]
    for node, index in reversed(chain):
        inputs = list(node.inputs)
        inputs[index] = value
        inputs[1:] = [next((target for reshape, target in shapes if reshape is node), t) if i == 0 else t
                      for i, t in enumerate(inputs[1:])] if node.op == "Reshape" else inputs[1:]
        value = getattr(emit, node.op)(*inputs, **dict(node.attrs))
    return value, sum(node.op == "QuantizeLinear" for node, _ in chain)


def _openvino_core(m, facts: AttentionFacts, emit):
    """The core for OpenVINO: the operands of Q·Kᵀ and P·V (the head splits, transposes, the
    probabilities and the Q/DQ pairs on them) and P·V to the merge (with its pairs) as matched;
    the scores between them as float ops without pairs. OpenVINO's CPU plugin turns that into
    one attention kernel on the quantized operands (on i8 where they are symmetric int8) and
    folds the pairs after P·V into it; with the pairs on the scores left in, asymmetric uint8
    models run Q·Kᵀ and P·V as separate f32 MatMuls beside standalone FakeQuantize layers, and
    without the pair on the probabilities P·V loses its int8 operand. An sdpa export's NaN guard on
    the probabilities (fully masked rows) moves past P·V where no pair lies between them: before it,
    it splits the kernel into MatMul, Softmax, MatMul."""
    qk = m.node("qk") if "qk" in m.named else m.node("scores")
    context, merge = m.node("context"), m.node("merge")
    split = emit.small(np.array([0, 0, facts.heads, facts.size], np.int64))  # as check proved each head split
    shapes = [(m.node(f"{n}_split"), split) for n in "qkv"]
    operands = [_reemit(emit, t, m[f"{n}_states"], m[f"{n}_states"], shapes)  # Q and Kᵀ with their √scale, if any
                for t, n in ((qk.inputs[0], "q"), (qk.inputs[1], "k"), (context.inputs[1], "v"))]
    scores = emit.MatMul(operands[0][0], operands[1][0])
    scale = _scale(m, ("scale", "scale_divisor"))  # the one on the scores
    if scale != 1.0:
        scores = emit.Mul(scores, emit.const("scale", np.float32(scale)))
    if "mask" in m.values:
        scores = emit.Add(scores, m["mask"])
    probs, start = emit.Softmax(scores, axis=-1), m.node("softmax").outputs[0]
    if m.has("remask"):
        probs, start = emit.Mul(probs, m["kept_probs"]), m.node("remask").outputs[0]
    guarded = m.has("nan_guard")
    if guarded:
        start = m.node("nan_guard").outputs[0]
    # the guard moves past P·V, where OpenVINO's attention kernel no longer stops at it: a softmax row
    # is all NaN (every key masked by −inf) or has none, so zeroing the NaN rows of P·V gives the same
    # zero context wherever V is finite; a pair kept on the probabilities would round the NaN first
    moved = guarded and not _kept_between(context.inputs[0], start)
    if guarded and not moved:
        probs = emit.Where(emit.IsNaN(probs), emit.small(np.float32(0.0)), probs)
    operands.append(_reemit(emit, context.inputs[0], start, probs))
    context_value = emit.MatMul(operands[3][0], operands[2][0])
    if moved:
        context_value = emit.Where(emit.IsNaN(context_value), emit.small(np.float32(0.0)), context_value)
    noop = m.node("noop") if m.has("noop_reshape") else None
    merged, kept = _reemit(emit, merge.inputs[0], context.outputs[0], context_value, skip=noop)
    if not kept and (pair := _next_quantizer(m)) is not None:
        # the next block's input quantizer, copied onto P·V: a second pair of the same per-tensor
        # step changes nothing (DQ's values are on its grid), and OpenVINO folds the first into its
        # attention kernel and the one after the head merge into it (a QAT export's merge quantizer
        # would stay standalone)
        q, dq = pair
        merged, _ = _reemit(emit, merge.inputs[0], context.outputs[0],
                            emit.DequantizeLinear(emit.QuantizeLinear(context_value, *q.inputs[1:], **dict(q.attrs)),
                                                  *dq.inputs[1:], **dict(dq.attrs)), skip=noop)
    # the merge as check proved it: (batch, sequence) kept, the heads' width
    width = emit.small(np.array([0, 0, facts.heads * facts.size], np.int64))
    merged = emit.Reshape(merged, width)
    emit.lowered()  # Q·Kᵀ reads as a dense block to QuantizedLinear (Kᵀ's quantizer on a Mul): no near miss
    return merged, kept + sum(k for _, k in operands)


def _kept_between(tensor, start) -> bool:
    """Whether the matched chain from ``start`` to ``tensor`` holds a node ``_reemit`` emits again."""
    while tensor is not start:
        node = producer(tensor)
        if not _is_dynamic_pair(node):
            return True
        tensor = node.inputs[0]
    return False


def _next_quantizer(m):
    """The per-tensor Q→DQ pair that is the merged output's one reader, where it is one."""
    users = m.anchor.outputs[0].outputs
    q = users[0] if len(users) == 1 and users[0].op == "QuantizeLinear" else None
    if q is None or len(q.outputs[0].outputs) != 1 or q.outputs[0].outputs[0].op != "DequantizeLinear":
        return None
    scale, dq = const_value(q.inputs[1]), q.outputs[0].outputs[0]
    same = all(a is b for a, b in zip(q.inputs[1:], dq.inputs[1:])) and len(q.inputs) == len(dq.inputs)
    if scale is None or scale.size != 1 or not same or q.attrs.get("axis", 1) != dq.attrs.get("axis", 1):
        return None
    return q, dq


def rewrite(m, facts: AttentionFacts, emit):
    kept = 0
    if emit.target == "openvino":
        result, kept = _openvino_core(m, facts, emit)
    elif "context_q" in m.named:
        kept = 1  # P·V's quantizer, per tensor: the same after the merge, which only moves values
    if (pairs := dropped_pairs(m, SCALE_NAMES) - kept):
        emit.note("QuantizedAttention dropped {count} requantization pairs inside fused attention: the core is "
                  "computed unrounded, so its output may move by a step (verification compares in steps)", pairs)
    if emit.target == "openvino":
        return result
    q_, k_, v_ = (m[f"{n}_states"] for n in "qkv")
    if emit.target == "onnx":
        mask = [_additive_mask(emit, facts.mask)] if facts.mask is not None else []
        return _requantized(m, emit.Attention(q_, k_, v_, *mask, q_num_heads=facts.heads, kv_num_heads=facts.heads,
                                              scale=facts.scale), emit)
    inputs = [q_, k_, v_]
    attrs = {"num_heads": facts.heads, "scale": facts.scale}
    if facts.mask is not None:
        mask_input = facts.mask.input
        if np.dtype(mask_input.dtype) != np.int32:
            mask_input = emit.shared("Cast", mask_input, to=TensorProto.INT32)
        inputs += [None, mask_input]  # no packed bias; the raw [B, S] key padding mask
        attrs["mask_filter_value"] = max(facts.mask.fill, LOWEST)
    return _requantized(m, emit.MultiHeadAttention(*inputs, _domain=MS, **attrs), emit)


def _requantized(m, merged, emit):
    """Where the match ends in the merged integers (``merged_integers``), the fused output
    quantized by P·V's quantizer: the output projection's INT8 block reads them."""
    if "context_q" not in m.named:
        return merged
    q = m.node("context_q")
    y = emit.QuantizeLinear(merged, *q.inputs[1:], **dict(q.attrs))
    y.dtype, y.shape = m.anchor.outputs[0].dtype, m.anchor.outputs[0].shape
    return y


FUSION = Fusion(
    name="QuantizedAttention",
    variants=[Variant("qdq", merged, "ONNX Runtime quantize_static (QDQ; all ops or MatMul only), QAT exports "
                                     "whose projections are INT8 blocks; quantize_dynamic (Optimum avx512_vnni)"),
              Variant("merged_integers", merged_integers, "NNCF's default preset (P·V quantized before the head "
                                                          "merge, its DQ moved after it by DequantizeAfterMove)")],
    check=check,
    rewrite=rewrite,
    # a float attention the Attention fusion missed is its miss
    signature=frozenset({"Softmax+QuantizeLinear", "Softmax+DynamicQuantizeLinear"}),
    after=("FakeQuantize", "Attention"),  # and before EmbedLayerNorm, whose op the mask probe cannot run
    min_opset={"onnx": 23},
    # a stored scale's dequantizer (and quantizer) may serve every layer: Intel Neural Compressor's
    # QOperator model, read as Q/DQ, keeps one DQ of the scale for all twelve
    reads=tuple(f"{name}_{node}" for name in ("scale", "scale_divisor") for node in ("dq", "quantize")),
)
