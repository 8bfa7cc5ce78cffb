"""Self-attention with rotary positions from one packed projection (ModernBERT), global or local.

    Q, K, V = unbind(x·Wqkv as [B, S, 3, N, h])                    each moved to [B, N, S, h]
    rope(t) = t·cos + rotate_half(t)·sin,  rotate_half(t) = [-t[…, h/2:], t[…, :h/2]]
    out = merge_heads(softmax(scale · rope(Q)·rope(K)ᵀ + mask) · V)

cos and sin are [1, 1, S, h] tables, cos(p·f) ++ cos(p·f) for positions p = 0..S-1 (each layer
kind may have its own frequencies f: ModernBERT's global layers a larger θ). A global layer's
mask is the key padding mask; a local layer's is the key padding mask AND a sliding-window
band |i - j| <= w::

    x ─► MatMul(Wqkv) ─► Reshape([B, S, 3, N, h]) ─► heads
    Q = rope(Transpose(Squeeze(Slice(heads, 0:1, axis 2)), 0,2,1,3))
    K = rope(Transpose(Squeeze(Slice(heads, 1:2, axis 2)), 0,2,1,3))
    V =      Transpose(Squeeze(Slice(heads, 2:3, axis 2)), 0,2,1,3)
    Q ─► MatMul(·, Transpose(K, 0,1,3,2)) ─► Mul(scale) ─► Add(mask) ─► Softmax ─► MatMul(V)
      ─► Transpose(0,2,1,3) ─► Reshape([B, S, H]) ─► out

    rope(t):   t ─────────────────────────────────────────────► Mul(cos) ─┐
               t ─► Slice(h/2:) ─► Neg ─► Concat(·, Slice(t, :h/2)) ─► Mul(sin) ─► Add

eager — TorchScript (opset 17) and dynamo (opset 18) exporters, ``attn_implementation="eager"``:
as drawn; the mask's fill is the lowest float32.
sdpa — TorchScript: √scale multiplies rope(Q) and rope(K)ᵀ each, the mask's fill is -∞, a NaN
guard ``Where(IsNaN(p), 0, p)`` follows the Softmax and a no-op Reshape precedes the merge.
TorchScript unbinds Q, K, V with a Split into pieces of one, dynamo with Slices: the canonical
rule ``SlicesAsSplit`` makes both the Slices drawn above. Casts that change nothing are gone
(``NoOpCast``), the rotate-half bounds computed from ``Shape`` folded (``ShapeFact``).

Checks:
- Wqkv is a constant [H_in, 3·N·h] matrix; the head split is [B, S, 3, N, h] (one of N, h may be
  -1) keeping batch and sequence; Q, K, V are its pieces 0, 1, 2; the merge gives back [B, S, N·h];
- rotate_half splits the last axis at h/2, and Q and K are rotated by the same cos and sin;
- **the tables are proven by running them** (``probe.rotary_table``): on several lengths and
  feeds they are [1, 1, S, h], the same two halves, and cos/sin(p·f) for p = 0..S-1, one f per
  pair of features; nothing depends on token values; a constant cache sliced to S
  (``cos_cached[:, :, :S]``) is proven on the rows it has where a probe is longer (past them the
  original cannot run, nor can the fused ops);
- **the mask is proven by running it** (``probe.windowed_mask``): on right, left, holed and full
  padding at lengths up to 1030 it is 0 exactly where a key is kept by the 2-D mask input and
  lies within |i - j| <= w of the query (w the same at every length; no band: a global layer),
  and one large negative fill (or -∞) elsewhere;
- the scale is a scalar constant (or the product of two), carried exactly.

Forms. The tables are carried as the graph computes them (their first half, [S, h/2]): exact
at every length, no cache size to outgrow. A mask with one value per key ([B, 1, 1, S]) becomes
the 2-D key padding mask, as the Attention fusion gives it. A mask computed per query
([B, 1, S, S], as transformers 5 builds even a global layer's) is carried as the graph computes
it: the band needs no rebuilding, and a band wider than the longest probe, which no probe could
tell from a global layer, stays exact. What differs between the forms is then only a query row
that keeps no key (a padded token far from every real one): eager's softmax of a row all at the
lowest float is uniform (the mean of V), sdpa's NaN guard gives 0; where the fused op does
otherwise, a ``Mul``/``Where`` on such rows puts it right.
``ort``: com.microsoft RotaryEmbedding (position offset 0) on Q and K, MultiHeadAttention with
the raw 2-D mask, or the per-query mask as ``attention_bias`` (its -∞ raised to the lowest
float: the op turns a row of -∞ into NaN). ``onnx``: opset-23 RotaryEmbedding and Attention with a
float mask. ``openvino``: left as exported; its CPU plugin fuses the rotary chain (RoPE) itself
(see README, "Choice of forms per target").
"""
from dataclasses import dataclass

import numpy as np
from onnx import TensorProto

from fusekit.engine import shapes
from fusekit.engine.graph import attr
from fusekit.engine.pattern import Const, Fusion, Var, Variant, either, maybe, op
from fusekit.engine.probe import (LARGE_NEGATIVE, KeyPaddingMask, RotaryTable, WindowedMask, rotary_table,
                                  windowed_mask)
from fusekit.engine.rewrite import MS

from .._common import c
from .attention import (LOWEST, _additive_mask, _keeps_batch_and_sequence, _merge_reason, _noop_reason, _scale,
                        softmax_axis)

x = Var("x", "the hidden states")
cos = Var("cos", "the rotary cos table")
sin = Var("sin", "the rotary sin table")


def sliced(t, name: str):
    """t[start:end] along one axis: a Slice with or without its steps."""
    bounds = [Const(f"{name}_start", label=f"the {name} start"), Const(f"{name}_end", label=f"the {name} end"),
              Const(f"{name}_axis", label=f"the {name} axis")]
    return either(op.Slice(t, *bounds), op.Slice(t, *bounds, Const(f"{name}_step", label=f"the {name} step")))


heads = op.Reshape(op.MatMul(x, Const("w_qkv", label="the packed QKV weight")),
                   Var("qkv_shape", "the head split", shape_only=True), _bind="qkv_split")


def piece(name: str):
    """Q, K or V: one piece of the unbound head split, moved to [B, N, S, h]."""
    return op.Transpose(op.Squeeze(sliced(heads, name), _bind=f"{name}_squeeze"), perm=[0, 2, 1, 3],
                        _bind=f"{name}_heads")


def rope(t, name: str):
    """t·cos + rotate_half(t)·sin."""
    rotated = op.Concat(op.Neg(sliced(t, f"{name}_hi")), sliced(t, f"{name}_lo"), axis=lambda a, n: (
        None if a in (-1, 3) else f"concatenates along axis {a}, not the head's features"))
    return op.Add(op.Mul(t, cos), op.Mul(rotated, sin), _bind=name)


q, k, v = rope(piece("q"), "q"), rope(piece("k"), "k"), op.Transpose(
    op.Squeeze(sliced(heads, "v"), _bind="v_squeeze"), perm=[0, 2, 1, 3], _bind="v")
k_t = op.Transpose(k, perm=[0, 1, 3, 2])
scores = either(
    op.Mul(op.MatMul(q, k_t), Const("scale", label="the attention scale"), _bind="scores"),
    op.MatMul(op.Mul(q, Const("q_scale", label="the Q scale")), op.Mul(k_t, Const("k_scale", label="the K scale")),
              _bind="scores"),
    op.MatMul(q, k_t, _bind="scores"),
    tag="scale", labels=("", "sqrt_scale_qk", "unscaled"))
probs = maybe(lambda p: op.Where(op.IsNaN(p), c(0.0, "the NaN guard's 0"), p),
              op.Softmax(op.Add(scores, Var("mask", "the attention mask")), axis=softmax_axis),
              tag="nan_guard", present="nan_guard")
context = maybe(lambda t: op.Reshape(t, Var("unsplit_shape", "the no-op reshape", shape_only=True)),
                op.MatMul(probs, v, _bind="context"), tag="noop_reshape", present="noop_reshape")
merged = op.Reshape(op.Transpose(context, perm=[0, 2, 1, 3]), Var("merge_shape", "the head merge", shape_only=True),
                    _bind="merge")


@dataclass(frozen=True)
class RotaryAttentionFacts:
    """What check proved, for rewrite."""

    heads: int
    size: int  # of each head
    scale: float
    table: RotaryTable  # cos/sin, rows 0..S-1
    mask: WindowedMask  # the key padding mask, with a band on a local layer
    nan_guard: bool  # sdpa: a query row that keeps no key gives 0, not the mean of V


def _bounds(m, name: str) -> tuple[int, int, int] | str:
    """(start, end, axis) of the Slice named ``name``; its step must be 1."""
    found = [m.const(f"{name}_{part}") for part in ("start", "end", "axis")]
    step = m.const(f"{name}_step") if f"{name}_step" in m.consts else np.array([1])
    if any(np.asarray(v).size != 1 for v in found + [step]) or int(np.asarray(step).item()) != 1:
        return f"the {name} slice is not one range with step 1"
    return tuple(int(np.asarray(v).item()) for v in found)


def _heads(m, width: int) -> tuple[int, int] | str:
    """(N, h) from the head split [B, S, 3, N, h] of a [B, S, 3·N·h] projection."""
    entries = shapes.entries(m["qkv_shape"])
    if entries is None or len(entries) != 5:
        return "the head split is not a 5-D shape fusekit can read"
    if not _keeps_batch_and_sequence(entries, m.node("qkv_split").inputs[0]):
        return f"the head split {entries} does not keep batch and sequence in place"
    three, n, h = entries[2:]
    if three != 3 or not isinstance(n, int) or not isinstance(h, int) or (n, h).count(-1) > 1 \
            or width % 3 or entries[1] == -1:
        return f"the head split {entries} is not [B, S, 3, heads, size] of a packed Q, K, V"
    n = width // 3 // h if n == -1 and h > 0 else n
    h = width // 3 // n if h == -1 and n > 0 else h
    if n <= 0 or h <= 0 or 3 * n * h != width:
        return f"the head split gives 3 × {n} heads of {h}, which does not make the projection width {width}"
    return n, h


def _layout_reason(m, size: int) -> str | None:
    """Q, K, V are pieces 0, 1, 2 of axis 2 of the split; rotate_half halves the last axis."""
    for i, name in enumerate("qkv"):
        bounds = _bounds(m, name)
        if isinstance(bounds, str):
            return bounds
        start, end, axis = bounds
        squeezed = attr(m.node(f"{name}_squeeze"), "axes")
        if (start, end) != (i, i + 1) or axis % 5 != 2 or squeezed is None or [a % 5 for a in squeezed] != [2]:
            return f"{name.upper()} is not piece {i} of the head split's axis 2 (slice {start}:{end} of axis {axis})"
    half = size // 2
    for name in ("q", "k"):
        lo, hi = _bounds(m, f"{name}_lo"), _bounds(m, f"{name}_hi")
        for found in (lo, hi):
            if isinstance(found, str):
                return found
        if lo[2] % 4 != 3 or hi[2] % 4 != 3 or lo[:2] != (0, half) or hi[0] != half or hi[1] < size:
            return f"rotate_half of {name.upper()} does not split the {size} features at {half} " \
                   f"(slices {lo[0]}:{lo[1]} and {hi[0]}:{hi[1]})"
    return None


def check(m) -> RotaryAttentionFacts | str:
    w = m.const("w_qkv")
    if w.ndim != 2:
        return f"the packed QKV weight is not a matrix: {list(w.shape)}"
    found = _heads(m, w.shape[1])
    if isinstance(found, str):
        return found
    n, h = found
    reason = _layout_reason(m, h) or _merge_reason(m, n * h) or (m.has("noop_reshape") and _noop_reason(m, n, h)) \
        or None
    if reason:
        return reason
    scale = _scale(m)
    if isinstance(scale, str):
        return scale
    table = rotary_table(m.graph, m["cos"], m["sin"], h, m.state.probes)
    if isinstance(table, str):
        return table
    mask = windowed_mask(m.graph, m["mask"], m.state.probes, m.node("scores").outputs[0], n)
    if isinstance(mask, str):
        return mask
    return RotaryAttentionFacts(n, h, scale, table, mask, m.has("nan_guard"))


def _cache(emit, table, size: int):
    """The [S, h/2] cache a RotaryEmbedding reads, the first half of the [1, 1, S, h] table."""
    rows = emit.shared("Reshape", table, emit.small(np.array([-1, size], np.int64)))
    return emit.shared("Slice", rows, emit.small(np.array([0], np.int64)), emit.small(np.array([size // 2], np.int64)),
                       emit.small(np.array([1], np.int64)))


def _live_rows(emit, mask, facts: RotaryAttentionFacts):
    """[B, S, 1]: whether a query row keeps any key (ReduceMax of the mask over heads and keys),
    shaped as the 2-D mask input [B, S] (the proof found the mask [B, 1, S, S]), so that the
    shape facts read the batch and sequence of whatever it multiplies."""
    axes = np.array([1, 3], np.int64)
    top = emit.shared("ReduceMax", mask, emit.small(axes), keepdims=1) if emit.opset >= 18 \
        else emit.shared("ReduceMax", mask, axes=[1, 3], keepdims=1)
    live = emit.shared("Greater", top, emit.small(np.float32(LARGE_NEGATIVE)))
    rows = emit.shared("Concat", emit.shared("Shape", facts.mask.input), emit.small(np.array([1], np.int64)), axis=0)
    live = emit.shared("Reshape", live, rows)
    live.shape, live.dtype = [None, None, 1], np.bool_
    return live


def _key_mask(facts: RotaryAttentionFacts) -> KeyPaddingMask:
    """A global layer's mask as the 2-D key padding mask it was proven to be."""
    return KeyPaddingMask(facts.mask.input, max(facts.mask.fill - facts.mask.kept, LOWEST))


def rewrite(m, facts: RotaryAttentionFacts, emit):
    w, width = m.const("w_qkv"), facts.heads * facts.size
    q3, k3, v3 = (emit.MatMul(m["x"], emit.const(f"w_{name}", w[:, i * width:(i + 1) * width]))
                  for i, name in enumerate("qkv"))
    cos_cache, sin_cache = _cache(emit, m["cos"], facts.size), _cache(emit, m["sin"], facts.size)
    # a mask computed per query is carried as computed: a band may hide beyond the longest probe
    mask, per_query = m["mask"], facts.mask.rows
    if emit.target == "ort":
        offset = emit.small(np.array([0], np.int64))  # positions 0..S-1 of the cache
        q3, k3 = (emit.RotaryEmbedding(t, offset, cos_cache, sin_cache, num_heads=facts.heads, _domain=MS)
                  for t in (q3, k3))
        attrs = {"num_heads": facts.heads, "scale": facts.scale}
        if not per_query:  # one value per key: the raw 2-D mask, as the Attention fusion gives it
            keys = _key_mask(facts)
            raw = keys.input if np.dtype(keys.input.dtype) == np.int32 else \
                emit.shared("Cast", keys.input, to=TensorProto.INT32)
            return emit.MultiHeadAttention(q3, k3, v3, None, raw, mask_filter_value=keys.fill, _domain=MS, **attrs)
        if not np.isfinite(facts.mask.fill):  # the op turns a row of -inf into NaN; the lowest float gives 0 below
            mask = emit.shared("Max", mask, emit.small(np.float32(LOWEST)))
        out = emit.MultiHeadAttention(q3, k3, v3, None, None, mask, _domain=MS, **attrs)
        if facts.nan_guard:  # sdpa: a row that keeps no key is 0 (the op averages V there)
            out.shape, out.dtype = m.anchor.outputs[0].shape, m.anchor.outputs[0].dtype  # as the merge it replaces
            live = emit.shared("Cast", _live_rows(emit, m["mask"], facts), to=TensorProto.FLOAT)
            live.shape, live.dtype = [None, None, 1], np.float32
            out = emit.Mul(out, live)
        return out
    shape = emit.shared("Shape", facts.mask.input)
    length = emit.shared("Gather", shape, emit.small(np.int64(1)), axis=0)
    positions = emit.shared("Expand", emit.shared("Range", emit.small(np.int64(0)), length, emit.small(np.int64(1))),
                            shape)
    q3, k3 = (emit.RotaryEmbedding(t, cos_cache, sin_cache, positions, num_heads=facts.heads) for t in (q3, k3))
    if not per_query:  # the full [B, 1, S, S] float mask ONNX Runtime's kernel wants, shared with the other layers
        mask = _additive_mask(emit, _key_mask(facts))
    out = emit.Attention(q3, k3, v3, mask, q_num_heads=facts.heads, kv_num_heads=facts.heads, scale=facts.scale)
    if per_query and not facts.nan_guard:  # eager: a row that keeps no key is the mean of V (the op gives 0)
        mean = emit.ReduceMean(v3, emit.small(np.array([1], np.int64)), keepdims=1)
        out = emit.Where(_live_rows(emit, m["mask"], facts), out, mean)
    return out


FUSION = Fusion(
    name="RotaryAttention",
    variants=[Variant("packed_rotary", merged, "transformers 5 ModernBERT: TorchScript eager and sdpa, dynamo eager")],
    check=check,
    rewrite=rewrite,
    signature=frozenset({"Softmax+Neg"}),
    targets=("ort", "onnx"),
    min_opset={"onnx": 23},
)
