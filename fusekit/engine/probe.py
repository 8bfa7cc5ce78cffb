"""What a subgraph computes, found by running it: an attention mask or bias, a position term.

Exporters build the additive attention mask from the model's 0/1 mask input through
long, version-specific chains (transformers 5 alone vmaps a padding function into
Range/Flatten/Gather/And/Expand/Where). Rather than pattern-match every chain,
fusekit extracts the subgraph that computes the mask — it depends only on model
inputs, never on weights — and evaluates it on probe masks: right and left padding,
holes, all ones, several batch sizes and lengths. Two facts come out of it:

- :func:`key_pattern`: the value holds one constant at every kept key of a 2-D mask
  input and another at every padded key, broadcast over heads and queries,

      V[b, ·, q, k] = kept where mask[b, k] != 0, padded elsewhere

  whichever side the padding is on. An additive key padding mask
  (:func:`key_padding_mask`) is such a value with a large negative step from kept to
  padded, which is exactly what a fused attention's 2-D mask input means; a
  ``masked_fill`` condition is one that is true at padded keys.
- :func:`position_bias`: the value depends on the sizes of the inputs but on none of
  their values (a relative position bias, a constant): evaluated on several different
  feeds of one size, it never changes.

Any dependence on the query position (a causal mask), on other inputs' values, or on
the padding side shows up as a mismatch, and the attention is left unfused.

A subgraph may read the shape of the attention scores (``Expand(cond, Shape(scores))``):
the scores are then fed as zeros of their shape [B, N, S, S]; one that reads their values
is refused. A position bias may likewise read the shape of the hidden states [B, S, H]
(MPNet's relative positions count up to ``Shape(hidden)[1]``), given as :class:`ShapeOnly`
where they come from ops fusekit does not evaluate (a fused embedding).

An embedding sum's position term is read the same way (``position_rows``): whatever
chain computes it from the token ids (a position-id buffer sliced to the sequence
length, a Range, TF's Slice of the table then Expand), it is accepted as rows 0..S-1
of a constant table only when it equals exactly those rows on probe ids of several
shapes and values. The fused op then needs no position ids at all.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .graph import const_value, producer
from .state import IdentityMap, IdentitySet

if TYPE_CHECKING:
    import onnxruntime as ort

PROBE_SHAPES = [(2, 6), (3, 9), (1, 5)]
# probe token ids stay below this; a vocabulary only they index is cut to it (_cut_tables)
PROBE_ROWS = 256
# a key padding mask must push padded keys this far below kept ones: every float32
# exp() of a score that low underflows to 0 next to a kept key's
LARGE_NEGATIVE = -1e4
# a constant added at every kept key shifts each row of scores alike, which the softmax does
# not see; a small one (HF-TF adds 9.99e-10) rounds the scores by no more than an ulp
MAX_SHIFT = 1e-3


@dataclass(frozen=True)
class KeyPattern:
    input: gs.Tensor  # the model's 2-D mask input, (batch, sequence)
    kept: float  # the value at keys the mask keeps
    padded: float  # the value at padded keys


@dataclass(frozen=True)
class KeyPaddingMask:
    input: gs.Tensor  # the model's 2-D mask input, (batch, sequence)
    fill: float  # what the mask adds at padded keys, relative to kept ones


@dataclass(frozen=True)
class PositionBias:
    value: gs.Tensor  # the bias the scores get, [1|B, 1|N, S, S]
    zero: bool  # it is 0 everywhere: nothing to carry


@dataclass(frozen=True)
class ShapeOnly:
    """A value a subgraph may read the shape of but not the values: probes feed it zeros."""

    value: gs.Tensor
    what: str  # how reasons name it: "the scores"
    shape: Callable[[int, int], tuple]  # its shape on a (batch, sequence) probe


@dataclass(frozen=True)
class _Subgraph:
    session: ort.InferenceSession | None  # None: the value is a constant
    inputs: list[gs.Tensor]  # the model inputs it reads
    shaped: list[ShapeOnly] = field(default_factory=list)  # the values it reads the shape of alone
    rows: dict[str, int] = field(default_factory=dict)  # integer inputs: the rows of the tables they index


def _ancestry(graph: gs.Graph, value: gs.Tensor, given: Sequence[ShapeOnly] = (),
              what: str = "the mask") -> tuple[list[gs.Node], list[gs.Tensor]] | str:
    """The nodes computing ``value`` from model inputs and the ``given`` values (of which it may
    read only the shape: they are fed zeros), and those it reads (``what`` names the value in reasons)."""
    named = IdentityMap((g.value, g.what) for g in given)
    graph_inputs = IdentitySet(graph.inputs)
    nodes, inputs, seen, stack = IdentitySet(), IdentitySet(), IdentitySet(), [value]
    while stack:
        t = stack.pop()
        if t in seen or isinstance(t, gs.Constant) or not t.name:
            continue
        seen.add(t)
        node = producer(t)
        if t in named:
            inputs.add(t)
            continue
        if node is None:
            if t not in graph_inputs:
                return f"{what} depends on '{t.name}', which is neither computed nor a model input"
            inputs.add(t)
            continue
        if node.op in ("If", "Loop", "Scan") or node.domain:
            return f"{what} is computed through {node.op} '{node.name}', which fusekit does not evaluate"
        read = next((i for i in node.inputs if i in named), None) if node.op != "Shape" else None
        if read is not None:
            return f"{what} reads the values of {named[read]} ({node.op} '{node.name}'), not only their shape"
        nodes.add(node)
        stack.extend(node.inputs)
    order = IdentityMap((n, i) for i, n in enumerate(graph.nodes))
    return sorted(nodes, key=lambda n: order.get(n, 0)), list(inputs)


def _session(graph: gs.Graph, nodes, inputs, value) -> ort.InferenceSession:
    import onnxruntime as ort  # only where a probe runs: fusing a model without one needs no runtime
    sub = gs.Graph(nodes=nodes, inputs=inputs, outputs=[value], opset=graph.opset)
    with _cut_tables(nodes, inputs):
        model = gs.export_onnx(sub, do_type_check=False)
    model.ir_version = onnx.helper.find_min_ir_version_for(list(model.opset_import))
    for o in model.graph.output:  # the mask's type may be unknown to shape inference
        o.type.tensor_type.elem_type = o.type.tensor_type.elem_type or onnx.TensorProto.FLOAT
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


@contextmanager
def _cut_tables(nodes, inputs):
    """Tables that only model inputs index (token ids into a vocabulary) cut to their first
    ``PROBE_ROWS`` rows while a probe is built. Probe ids stay below that, so every lookup
    reads the rows it would read in the model, and the probe does not carry (serialize,
    load) a vocabulary of which it reads a few rows, often only to take a ``Shape``."""
    fed, inside = IdentitySet(inputs), IdentitySet(nodes)
    cut = []
    for table in {id(n.inputs[0]): n.inputs[0] for n in nodes if n.op == "Gather" and n.inputs}.values():
        readers = [u for u in table.outputs if u in inside]
        if isinstance(table, gs.Constant) and table.shape and table.shape[0] > PROBE_ROWS and all(
                u.op == "Gather" and u.attrs.get("axis", 0) == 0 and u.inputs[0] is table and u.inputs[1] in fed
                for u in readers):
            # its values loaded once and kept: the probe's row count, and the matches, read them again
            cut.append((table, table.values))
    try:
        for table, values in cut:
            table._values = np.ascontiguousarray(values[:PROBE_ROWS])
        yield
    finally:
        for table, values in cut:
            table._values = values


def _subgraph(graph: gs.Graph, value: gs.Tensor, given: Sequence[ShapeOnly] = ()) -> _Subgraph | str:
    found = _ancestry(graph, value, given)
    if isinstance(found, str):
        return found
    nodes, inputs = found
    if not nodes and inputs:
        return f"the mask is the model input '{inputs[0].name}' itself, which fusekit does not carry"
    if not nodes:
        return _Subgraph(None, [])
    read = IdentitySet(inputs)
    shaped = [g for g in given if g.value in read]
    fed_zeros = IdentitySet(g.value for g in shaped)
    inputs = [t for t in inputs if t not in fed_zeros]
    if any(_sized(t, 1, 1) is None for t in inputs):
        return "the mask also reads a model input that is not (batch, sequence, fixed sizes…)"
    try:
        session = _session(graph, nodes, inputs + [g.value for g in shaped], value)
    except Exception as e:  # a subgraph ORT refuses is one fusekit cannot vouch for
        return f"the mask subgraph cannot be evaluated ({str(e).splitlines()[0][:120]})"
    return _Subgraph(session, inputs, shaped, _table_rows(nodes, inputs))


def _table_rows(nodes, inputs) -> dict[str, int]:
    """For each input that indexes constant tables (token ids into embeddings), the fewest rows
    one has: ids below it are valid everywhere."""
    rows = {}
    for node in nodes:
        table = const_value(node.inputs[0]) if node.op == "Gather" and node.attrs.get("axis", 0) == 0 else None
        index = node.inputs[1] if node.op == "Gather" else None
        if table is not None and table.ndim >= 1 and any(index is t for t in inputs):
            rows[index.name] = min(rows.get(index.name, PROBE_ROWS), table.shape[0])
    return rows


def _cached(cache: dict, key, compute):
    if key not in cache:
        cache[key] = compute()
    return cache[key]


def _run(sub: _Subgraph, feeds: dict, batch: int, seq: int) -> np.ndarray | str:
    for given in sub.shaped:
        dtype = np.dtype(given.value.dtype) if given.value.dtype is not None else np.float32
        feeds = {**feeds, given.value.name: np.zeros(given.shape(batch, seq), dtype)}
    try:
        (out,) = sub.session.run(None, feeds)
    except Exception as e:
        return f"the mask subgraph fails on a probe ({str(e).splitlines()[0][:120]})"
    return out


def _sized(t: gs.Tensor, batch: int, seq: int) -> tuple | None:
    """The shape to feed a model input (batch, sequence, its fixed sizes…) with, if it has one."""
    rest = list(t.shape[2:]) if t.shape is not None and len(t.shape) >= 2 else None
    if rest is None or not all(isinstance(d, (int, np.integer)) and d > 0 for d in rest):
        return None
    return (batch, seq, *rest)


def _probe_shapes(inputs: list[gs.Tensor]) -> list[tuple[int, int]]:
    """``PROBE_SHAPES``, with the batch size or length the inputs fix where they fix one."""
    def fixed(axis):
        return next((t.shape[axis] for t in inputs if isinstance(t.shape[axis], (int, np.integer))
                     and t.shape[axis] > 0), None)
    batch, seq = fixed(0), fixed(1)
    return list(dict.fromkeys((batch or b, seq or s) for b, s in PROBE_SHAPES))


def _dtype(t: gs.Tensor):
    return np.dtype(t.dtype) if t.dtype is not None else np.dtype(np.int64)


def _probe_masks(rng: np.random.Generator, batch: int, seq: int) -> list[np.ndarray]:
    right = np.ones((batch, seq), np.int64)
    left = np.ones((batch, seq), np.int64)
    for b in range(batch):
        keep = 1 + (b * 3 + 1) % seq
        right[b, keep:] = 0
        left[b, : seq - keep] = 0
    holes = (rng.random((batch, seq)) < 0.6).astype(np.int64)
    holes[:, 0] = 1
    return [right, left, holes, np.ones((batch, seq), np.int64)]


def key_pattern(graph: gs.Graph, value: gs.Tensor, cache: dict, scores: gs.Tensor | None = None,
                heads: int = 1) -> KeyPattern | str:
    """Read ``value`` as one constant at kept keys and one at padded keys of a 2-D mask
    input, or say why not. ``scores`` is the attention's scores, [B, ``heads``, S, S]."""
    return _cached(cache, ("keys", value.name, heads), lambda: _key_pattern(graph, value, scores, heads))


def _key_pattern(graph: gs.Graph, value: gs.Tensor, scores, heads: int) -> KeyPattern | str:
    given = [ShapeOnly(scores, "the scores", lambda batch, seq: (batch, heads, seq, seq))] if scores is not None else []
    sub = _subgraph(graph, value, given)
    if isinstance(sub, str):
        return sub
    candidates = sorted((t for t in sub.inputs if len(t.shape) == 2), key=lambda t: "mask" not in t.name.lower())
    if not candidates:
        return "the mask does not come from a 2-D model input"
    rng = np.random.default_rng(0)
    reasons = []
    for mask_input in candidates:
        found = _probe_keys(sub, mask_input, rng, heads)
        if isinstance(found, KeyPattern):
            return found
        reasons.append(found)
    return reasons[0]  # the likeliest mask input's


def _probe_keys(sub: _Subgraph, mask_input: gs.Tensor, rng, heads: int) -> KeyPattern | str:
    kept, padded = set(), set()
    for batch, seq in _probe_shapes(sub.inputs):
        for mask in _probe_masks(rng, batch, seq):
            feeds = {t.name: (mask if t is mask_input else np.zeros(_sized(t, batch, seq))).astype(_dtype(t))
                     for t in sub.inputs}
            m = _run(sub, feeds, batch, seq)
            if isinstance(m, str):
                return m
            if m.ndim != 4 or m.shape[0] not in (1, batch) or m.shape[1] not in (1, heads) \
                    or m.shape[2] not in (1, seq) or m.shape[3] != seq or (m.shape[0] == 1 and batch > 1):
                return f"the mask has shape {list(m.shape)} for a {batch}×{seq} input, not (batch, 1, 1|seq, seq)"
            keep = np.broadcast_to(mask[:, None, None, :] != 0, (batch,) + m.shape[1:3] + (seq,))
            m = np.broadcast_to(m, keep.shape).astype(np.float64)
            kept.update(np.unique(m[keep]).tolist())
            padded.update(np.unique(m[~keep]).tolist())
            if len(kept) > 1:
                return f"the mask is not one value at the unpadded keys of input '{mask_input.name}' " \
                       f"({sorted(kept)[:3]})"
            if len(padded) > 1:
                return f"the mask's padded keys take several values ({sorted(padded)[:3]}), not one fill value"
    if not padded:
        return "the probes left no padded key"
    if kept == padded:
        return f"the mask does not tell the kept keys of input '{mask_input.name}' from the padded ones"
    return KeyPattern(mask_input, kept.pop(), padded.pop())


def key_padding_mask(graph: gs.Graph, value: gs.Tensor, cache: dict, scores: gs.Tensor | None = None,
                     heads: int = 1) -> KeyPaddingMask | str:
    """Read ``value``, added to the scores, as a key padding mask, or say why not: what
    matters is the step from kept keys (0, or a small shift) down to the padded ones."""
    found = key_pattern(graph, value, cache, scores, heads)
    if isinstance(found, str):
        return found
    if not abs(found.kept) <= MAX_SHIFT:
        return f"the mask adds {found.kept:g} at unpadded keys of input '{found.input.name}', not 0"
    fill = found.padded - found.kept
    if not fill <= LARGE_NEGATIVE:
        return f"the mask's fill value {fill:g} is not a large negative number"
    return KeyPaddingMask(found.input, float(fill))


def position_bias(graph: gs.Graph, value: gs.Tensor, cache: dict, heads: int,
                  given: Sequence[ShapeOnly] = ()) -> PositionBias | str:
    """Show that ``value`` depends on no input's values, only on the sizes (of the inputs
    and of the ``given`` values), and is shaped as a bias on [B, ``heads``, S, S] scores;
    or say why not."""
    return _cached(cache, ("bias", value.name, heads), lambda: _position_bias(graph, value, heads, given))


def _position_bias(graph: gs.Graph, value: gs.Tensor, heads: int, given: Sequence[ShapeOnly]) -> PositionBias | str:
    sub = _subgraph(graph, value, given)
    if isinstance(sub, str):
        return sub
    if sub.session is None:
        constant = const_value(value)
        if constant is None:
            return f"'{value.name}' is neither computed nor a constant"
        return _constant_bias(value, np.asarray(constant), heads)
    if not sub.inputs and not sub.shaped:  # computed from constants alone (ONNX Runtime's test graphs)
        constant = _run(sub, {}, 1, 1)
        return constant if isinstance(constant, str) else _constant_bias(value, constant, heads)
    rng = np.random.default_rng(1)
    zero = True
    for batch, seq in _probe_shapes(sub.inputs):
        first = None
        for trial in range(4):
            feeds = {t.name: _token_values(rng, t, batch, seq, trial, sub.rows.get(t.name, 2)) for t in sub.inputs}
            b = _run(sub, feeds, batch, seq)
            if isinstance(b, str):
                return b
            if first is None:
                first = b
                if b.ndim != 4 or b.shape[0] not in (1, batch) or b.shape[1] not in (1, heads) \
                        or b.shape[2:] != (seq, seq):
                    return f"the bias has shape {list(b.shape)} for a {batch}×{seq} input, " \
                           "not (1|batch, 1|heads, seq, seq)"
                if not np.all(np.isfinite(b)):
                    return "the bias is not finite everywhere"
            elif b.shape != first.shape or not np.array_equal(b, first):
                names = ", ".join(f"'{t.name}'" for t in sub.inputs)
                return f"the bias changes with the values of {names}, not only with their sizes"
        zero = zero and not np.any(first)
    return PositionBias(value, zero)


def _token_values(rng, t: gs.Tensor, batch: int, seq: int, trial: int, rows: int) -> np.ndarray:
    """A feed for probing a bias: all ones, random 0/1 (a mask, or the usual padding ids), then
    random ids below ``rows`` (inside every table they index); or random floats. Each row
    keeps its first token."""
    dtype, shape = _dtype(t), _sized(t, batch, seq)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    values = np.ones(shape, np.int64) if trial == 0 else rng.integers(0, 2 if trial < 3 else max(rows, 2), shape)
    values[:, 0] = 1
    return values.astype(dtype)


def _constant_bias(value: gs.Tensor, constant: np.ndarray, heads: int) -> PositionBias | str:
    if not np.any(constant):
        return PositionBias(value, True)
    shape = constant.shape
    # a full query × key block: broadcasting against the scores makes it their size
    if constant.ndim != 4 or shape[0] != 1 or shape[1] not in (1, heads) or shape[2] < 2 or shape[2] != shape[3]:
        return f"the constant bias has shape {list(shape)}, not (1, 1|heads, seq, seq)"
    if not np.all(np.isfinite(constant)):
        return "the bias is not finite everywhere"
    return PositionBias(value, False)


# ----------------------------------------------------------------------------- rotary tables and local bands

# lengths a band is looked for at: a window of up to ±LONGEST_PROBE tokens shows up in the probes
BAND_SHAPES = [(2, 6), (3, 9), (1, 5), (2, 40), (1, 300), (1, 1030)]
LONGEST_PROBE = BAND_SHAPES[-1][1] - 1


@dataclass(frozen=True)
class WindowedMask:
    """A key padding mask, or one combined with a sliding-window band ``|i - j| <= window``:

        V[b, ·, i, j] = kept   where mask[b, j] != 0 and |i - j| <= window
                        fill   elsewhere
    """

    input: gs.Tensor  # the model's 2-D mask input, (batch, sequence)
    kept: float  # the value where a key is kept (0)
    fill: float  # the value elsewhere (a large negative number, or -inf)
    window: int | None  # None: no band (every key in reach, up to the longest probe)
    rows: bool  # computed per query, [.., S, S]: a band wider than the probes could hide in it


def windowed_mask(graph: gs.Graph, value: gs.Tensor, cache: dict, scores: gs.Tensor | None = None,
                  heads: int = 1) -> WindowedMask | str:
    """Read ``value``, added to the scores [B, ``heads``, S, S], as "key padding mask AND band",
    or say why not. The band is found on an all-ones mask and must be ``|i - j| <= w``, the same
    ``w`` at every length; every other probe mask must give exactly the band AND its kept keys."""
    return _cached(cache, ("window", value.name, heads), lambda: _windowed_mask(graph, value, scores, heads))


def _band_shapes(inputs: list[gs.Tensor]) -> list[tuple[int, int]]:
    fixed = [next((t.shape[axis] for t in inputs if isinstance(t.shape[axis], (int, np.integer))
                   and t.shape[axis] > 0), None) for axis in (0, 1)]
    return list(dict.fromkeys((fixed[0] or b, fixed[1] or s) for b, s in BAND_SHAPES))


def _windowed_mask(graph: gs.Graph, value: gs.Tensor, scores, heads: int) -> WindowedMask | str:
    given = [ShapeOnly(scores, "the scores", lambda batch, seq: (batch, heads, seq, seq))] if scores is not None else []
    sub = _subgraph(graph, value, given)
    if isinstance(sub, str):
        return sub
    candidates = [t for t in sub.inputs if len(t.shape) == 2 and "mask" in t.name.lower()] or \
        [t for t in sub.inputs if len(t.shape) == 2]
    if len(candidates) != 1:
        return "the mask does not come from one 2-D model input"
    mask_input, rng = candidates[0], np.random.default_rng(0)
    window, values, rows = None, set(), False
    for batch, seq in _band_shapes(sub.inputs):
        masks = _probe_masks(rng, batch, seq)
        outs = []
        for mask in [masks[-1]] + masks[:-1]:  # all ones first: it shows the band
            feeds = {t.name: (mask if t is mask_input else np.ones(_sized(t, batch, seq))).astype(_dtype(t))
                     for t in sub.inputs}
            m = _run(sub, feeds, batch, seq)
            if isinstance(m, str):
                return m
            if m.ndim != 4 or m.shape[0] not in (1, batch) or (m.shape[0] == 1 and batch > 1) \
                    or m.shape[1] not in (1, heads) or m.shape[2] not in (1, seq) or m.shape[3] != seq:
                return f"the mask has shape {list(m.shape)} for a {batch}×{seq} input, not (batch, 1, 1|seq, seq)"
            rows = rows or (m.shape[2] == seq > 1)
            outs.append((mask, np.broadcast_to(m, m.shape[:2] + (seq, seq))))
        ones = outs[0][1]
        kept = np.unique(ones[:, :, 0, 0])
        if kept.size != 1:
            return "the mask differs between rows of an all-ones input"
        band = np.broadcast_to(ones == kept[0], ones.shape)
        reach = np.abs(np.arange(seq)[:, None] - np.arange(seq)[None, :])
        w = int(reach[0][band[0, 0, 0]].max())
        if not np.array_equal(band, np.broadcast_to(reach <= w, band.shape)):
            return f"the keys an all-ones {batch}×{seq} input keeps are not a band |i - j| <= w around the diagonal"
        if w < seq - 1:
            if window is not None and window != w:
                return f"the band is ±{window} tokens at one length and ±{w} at another"
            window = w
        elif window is not None:
            return f"the band of ±{window} tokens covers every key at length {seq}"
        for mask, m in outs:
            keep = (mask[:, None, None, :] != 0) & (reach <= w)[None, None]
            keep = np.broadcast_to(keep, (batch,) + m.shape[1:])
            full = np.broadcast_to(m, keep.shape)
            if np.unique(full[keep]).size > 1 or (full[keep].size and full[keep][0] != kept[0]):
                return f"the mask is not one value at the kept keys of input '{mask_input.name}' inside the band"
            values.update(np.unique(full[~keep]).tolist())
            if len(values) > 1:
                return f"the mask's padded and out-of-band keys take several values ({sorted(values)[:3]})"
    if not values:
        return "the probes left no padded key"
    fill, kept = values.pop(), float(kept[0])
    if kept != 0.0 or not fill <= LARGE_NEGATIVE:
        return f"the mask adds {kept:g} at kept keys and {fill:g} elsewhere, not 0 and a large negative number"
    return WindowedMask(mask_input, kept, float(fill), window, rows)


@dataclass(frozen=True)
class RotaryTable:
    """cos/sin tables of a rotary embedding in the rotate-half layout, one row per position:

        cos[0, 0, p, :] = cos(p · f) ++ cos(p · f),  sin[0, 0, p, :] = sin(p · f) ++ sin(p · f),  p = 0..S-1
    """

    inv_freq: tuple[float, ...]  # f, one per pair of rotated features


def rotary_table(graph: gs.Graph, cos: gs.Tensor, sin: gs.Tensor, size: int, cache: dict) -> RotaryTable | str:
    """Prove that ``cos`` and ``sin``, multiplied into [B, N, S, ``size``] heads, are the rows
    0..S-1 of one rotary table, the same for every batch row and head; or say why not."""
    return _cached(cache, ("rotary", cos.name, sin.name, size), lambda: _rotary_table(graph, cos, sin, size))


def _rotary_table(graph: gs.Graph, cos: gs.Tensor, sin: gs.Tensor, size: int) -> RotaryTable | str:
    subs = [_subgraph(graph, t) for t in (cos, sin)]
    for sub in subs:
        if isinstance(sub, str):
            return sub.replace("the mask", "the rotary table")
    if size % 2:
        return f"the head size {size} is odd: it has no halves to rotate"
    half, rng = size // 2, np.random.default_rng(2)
    inv_freq = None
    for batch, seq in [(2, 6), (3, 9), (1, 33)]:
        tables = []
        for table, sub in zip((cos, sin), subs):
            first = None
            for trial in range(3):  # ones, 0/1, ids: a table reads no value
                feeds = {t.name: _token_values(rng, t, batch, seq, trial, sub.rows.get(t.name, 2)) for t in sub.inputs}
                out = _run(sub, feeds, batch, seq) if sub.session is not None else const_value(table)
                if isinstance(out, str):
                    return out.replace("the mask", "the rotary table")
                if first is None:
                    first = np.asarray(out)
                elif not np.array_equal(out, first):
                    return "the rotary table changes with the values of the inputs, not only with their sizes"
            if first.shape != (1, 1, seq, size):
                return f"the rotary table has shape {list(first.shape)} for a {batch}×{seq} input, " \
                       f"not (1, 1, {seq}, {size}): one row per position, the same for every batch row and head"
            if not np.array_equal(first[..., :half], first[..., half:]):
                return "the rotary table's two halves differ: not the rotate-half layout"
            tables.append(first[0, 0, :, :half].astype(np.float64))
        c, s = tables
        if seq < 2:
            continue
        f = np.arctan2(s[1], c[1]) if inv_freq is None else inv_freq
        angles = np.arange(seq)[:, None] * f[None, :]
        tolerance = 1e-6 * seq + 1e-6  # float32 positions × frequencies, then cos and sin in float32
        if not (np.allclose(c, np.cos(angles), rtol=0, atol=tolerance)
                and np.allclose(s, np.sin(angles), rtol=0, atol=tolerance)):
            return "the rotary table is not cos/sin(p · f) for positions p = 0..S-1"
        inv_freq = f
    return RotaryTable(tuple(float(v) for v in inv_freq))


def position_rows(graph: gs.Graph, value: gs.Tensor, ids: gs.Tensor, vocabulary: int, width: int,
                  cache: dict) -> gs.Tensor | str:
    """The constant table whose rows 0..S-1 ``value`` is, broadcast over the batch, S being
    the sequence length of the token ids ``ids``; or why that is not proven."""
    return _cached(cache, ("positions", value.name, ids.name),
                   lambda: _position_rows(graph, value, ids, vocabulary, width))


def _position_rows(graph, value, ids, vocabulary, width) -> gs.Tensor | str:
    found = _ancestry(graph, value, what="the position term")
    if isinstance(found, str):
        return found
    nodes, inputs = found
    if not nodes:
        return f"the position term '{value.name}' is a model input"
    if any(t.dtype is None or not np.issubdtype(np.dtype(t.dtype), np.integer) or t.shape is None
           or len(t.shape) != 2 for t in inputs):
        return "the position term reads a model input that is not 2-D integer ids"
    tables = [found for n in nodes if n.op in ("Gather", "Slice") and n.inputs
              and (found := _table_read(n, width, IdentitySet(nodes))) is not None]
    if not tables:
        return f"the position term reads no constant table of width {width}"
    try:
        session = _session(graph, nodes, inputs, value)
    except Exception as e:  # a subgraph ORT refuses is one fusekit cannot vouch for
        return f"the position term cannot be evaluated ({str(e).splitlines()[0][:120]})"
    rows = min(rows_of.shape[0] for rows_of, _ in tables)
    sizes = _sizes(ids, rows)
    if len(sizes) < 2 and not all(isinstance(d, (int, np.integer)) and d > 0 for d in ids.shape):
        return f"the position table has {rows} rows, too few to prove positions on probes of several lengths"
    rng = np.random.default_rng(0)
    outputs = []
    for batch, seq in sizes:
        for draw in ("random", "zeros", "ones"):
            feeds = {}
            for t in inputs:
                high = min(vocabulary, PROBE_ROWS) if t is ids else 2
                data = {"random": rng.integers(0, high, (batch, seq)), "zeros": np.zeros((batch, seq)),
                        "ones": np.ones((batch, seq))}[draw]
                feeds[t.name] = data.astype(np.dtype(t.dtype))
            try:
                (out,) = session.run(None, feeds)
            except Exception as e:
                return f"the position term fails on a probe ({str(e).splitlines()[0][:120]})"
            outputs.append((batch, seq, out))
    for rows_of, table in tables:
        if all(_is_rows(out, rows_of, batch, seq) for batch, seq, out in outputs):
            return table
    return "the position term is not rows 0..S-1 of a position table on the probes (positions that depend on the ids or start elsewhere)"


def _table_read(node: gs.Node, width: int, inside) -> tuple[np.ndarray, gs.Tensor | np.ndarray] | None:
    """The float [rows, width] table a Gather or Slice reads, as (its values, what stands for it): a
    constant float table itself; or 8-bit stored integers whose rows one per-tensor DequantizeLinear
    reads next (``quantize_dynamic`` with Gather quantized), the table dequantized as it does, bit for bit."""
    v = const_value(node.inputs[0])
    if v is None or v.ndim != 2 or v.shape[1] != width:
        return None
    if np.issubdtype(v.dtype, np.floating):
        return v, node.inputs[0]
    readers = node.outputs[0].outputs
    dq = readers[0] if len(readers) == 1 and readers[0].op == "DequantizeLinear" and readers[0] in inside else None
    if dq is None or v.dtype.type not in (np.int8, np.uint8):
        return None
    scale = const_value(dq.inputs[1])
    zero = const_value(dq.inputs[2]) if len(dq.inputs) > 2 and dq.inputs[2].name else np.zeros((), v.dtype)
    if scale is None or zero is None or scale.size != 1 or zero.size != 1 or scale.dtype != np.float32:
        return None
    table = (v.astype(np.int32) - zero.astype(np.int32).reshape(())).astype(np.float32) * scale.reshape(())
    return table, table


def _sizes(ids: gs.Tensor, rows: int) -> list[tuple[int, int]]:
    """Probe (batch, sequence) sizes: the declared ones where fixed, else several, each
    within the table (a longer sequence has no rows to compare; too short a one proves little)."""
    fixed = [d if isinstance(d, (int, np.integer)) and d > 0 else None for d in ids.shape]
    sizes = {(fixed[0] or batch, fixed[1] or seq) for batch, seq in PROBE_SHAPES}
    return sorted((batch, seq) for batch, seq in sizes if seq <= rows)


def _is_rows(out: np.ndarray, table: np.ndarray, batch: int, seq: int) -> bool:
    """Whether ``out`` is ``table[:seq]``, alone or repeated over the batch."""
    rows = table[:seq]
    if out.ndim not in (2, 3) or out.shape[-2:] != rows.shape or (out.ndim == 3 and out.shape[0] not in (1, batch)):
        return False
    return bool(np.array_equal(out.reshape(-1, *rows.shape), np.broadcast_to(rows, (out.size // rows.size, *rows.shape))))
