"""EmbedLayerNormalization: the embedding lookups, their sum and the LayerNorm in one op.

    y = LayerNorm(word[input_ids] + position[position_ids] (+ segment[token_type_ids]))

bert, electra, albert — TorchScript and dynamo exporters::

    input_ids ──────► Gather(word) ─────┐
    token_type_ids ─► Gather(segment) ─► Add ─┐
    positions ──────► Gather(position) ──────► Add ─► LayerNormalization ─► y

distilbert has no segment term; roberta computes its position ids from the input ids
(padding-aware cumulative sum) and its single token type row through GatherElements.

positions — the position term proven to be rows 0..S-1 of a table, whatever computes it::

    input_ids ──────► Gather(word) ─────┐
    token_type_ids ─► Gather(segment) ─► Add ─┐
    P ───────────────────────────────────────► Add ─► LayerNormalization ─► y

P is a Gather of position ids that count 0..S-1 (BERT's sliced buffer, a Range, ids
read off ``Shape`` of the word lookup as DistilBERT's TorchScript and transformers-4
exports and tf2onnx at opset 18 do), TF's ``Slice(table, 0, S) → Expand``, or a
constant [S, H] / [B, S, H] table (ONNX Runtime's tests). The chain is proven by
running it on probe ids (``engine.probe.position_rows``), then dropped: the fused op
takes the table and no position ids, which it counts 0..S-1 itself.

lookups — any other position scheme: the position and segment indices are handed to
the op as they are computed in the graph (cast to int32), never re-derived, so every
family's scheme is exact (RoBERTa's padding offset).

Checks: Gathers along axis 0 from constant tables of one width; the word ids are a
2-D integer model input; a segment index provably has the model's (batch, sequence)
shape and a position index at most broadcasts over batch; a constant position term
has the model's fixed sequence length; the LayerNorm normalizes the last axis. Only
``ort`` has this op.
"""
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs
from onnx import TensorProto, helper

from fusekit.engine.graph import attr, const_value, rank
from fusekit.engine.pattern import Const, Fusion, Var, Variant, either, op
from fusekit.engine.probe import position_rows
from fusekit.engine.rewrite import MS
from fusekit.engine.shapes import spans_batch_and_sequence
from fusekit.engine.state import IdentityMap, IdentitySet

from .._common import (constant, dequantize, dropped_pairs, evaluate, has_constant, last_axis_attr, per_channel_pair,
                       requantized, statistics_reason, stored, vector_reason)

gamma = Const("gamma", label="γ")
beta = Const("beta", label="β")
TERMS = ("a", "b", "c")
# read only to prove what it is: the fused op takes its table, so its chain dies with the match
positions = Var("positions", "the position term", shape_only=True)


def lookup(name: str):
    # ONNX Runtime's quantizer (all ops) stores the tables quantized and rounds each lookup and sum;
    # quantize_dynamic with Gather quantized (Optimum's avx512_vnni) looks the stored integers up and
    # dequantizes the rows
    ids = Var(f"{name}_ids", "the ids")
    table = stored(f"{name}_table", "an embedding table")
    rows = dequantize(op.Gather(Const(f"{name}_rows_q", label="an embedding table, stored quantized"), ids, axis=0),
                      f"{name}_rows", "looked-up rows'", bind=f"{name}_rows_dq")
    return either(requantized(op.Gather(table, ids, axis=0)), rows)


def normalized(total):
    return op.LayerNormalization(requantized(total), gamma, beta, axis=last_axis_attr)


def sum_of(a, b):
    return requantized(op.Add(a, b))


def _has(m, term: str) -> bool:
    return has_constant(m, f"{term}_table") or f"{term}_rows_q" in m.consts


def _table(m, term: str) -> np.ndarray:
    """The float table the lookup reads, as the graph dequantizes it (ONNX Runtime evaluates the
    DequantizeLinear): a per-tensor DequantizeLinear after the Gather dequantizes the rows it is given
    as it would the whole table, bit for bit."""
    if f"{term}_rows_q" not in m.consts:
        return constant(m, f"{term}_table")
    dq = m.node(f"{term}_rows_dq")
    cache = m.state.memo(__name__ + ".rows", IdentityMap)
    if dq not in cache:
        names = ("table", "scale", "zero_point")[:len(dq.inputs)]
        values = dict(zip(names, [m.const(f"{term}_rows_q"), *(const_value(t) for t in dq.inputs[1:])]))
        node = helper.make_node("DequantizeLinear", list(names), ["rows"])
        cache[dq] = evaluate([node], values, "rows", values["scale"].dtype, m.state.opset)
    return cache[dq]


def _rows_reason(m) -> str | None:
    """Why a lookup dequantized after its Gather cannot be read as a float table: its scale is not one
    for the whole table."""
    for t in TERMS:
        if f"{t}_rows_q" in m.consts and np.asarray(m.const(f"{t}_rows_scale")).size != 1:
            return f"the rows looked up in '{m[f'{t}_rows_q'].name}' are dequantized per channel: only a " \
                   "per-tensor scale dequantizes every row alike"
    return None


@dataclass(frozen=True)
class EmbedLayerNormFacts:
    """What check proved, for rewrite."""

    roles: dict[str, str]  # "word", "segment", "position" -> the term ("a", "b", "c") that is that lookup
    expand_segment: bool = False  # the segment ids are a model input of their own shape, expanded to the words'
    # the positions variant: rows 0..S-1 of this table are the position term (no position lookup in roles)
    position_table: np.ndarray | gs.Tensor | None = None


def _roles(m) -> tuple[dict[str, str], bool] | str:
    """Which term is the word, segment and position lookup, and whether the segment ids are expanded."""
    terms = [t for t in TERMS if _has(m, t)]
    inputs = IdentitySet(m.graph.inputs)
    words = [t for t in terms if m[f"{t}_ids"] in inputs and rank(m[f"{t}_ids"]) == 2]
    if not words:
        return "no lookup is indexed by a 2-D model input (the token ids)"
    word = max(words, key=lambda t: _table(m, t).shape[0])  # the vocabulary is the largest table
    rest = [t for t in terms if t != word]
    full = [t for t in rest if _segment_form(m, t, word)]
    roles, expand = {"word": word}, False
    if len(rest) == 2:
        if not full:
            return "neither the segment nor the position ids are provably (batch, sequence) or a model input"
        segment = min(full, key=lambda t: _table(m, t).shape[0])  # token types: the smallest table
        roles["segment"] = segment
        expand = _segment_form(m, segment, word) == "expand"
        rest = [t for t in rest if t != segment]
    roles["position"] = rest[0]
    return roles, expand


def _segment_form(m, term: str, word: str) -> str | None:
    """How the segment ids of ``term`` meet the word ids' (of ``word``) shape, which the fused
    op requires: "same" where that is proven; "expand" for a 2-D integer model input declared with
    dimensions of its own (tf2onnx names every input's apart), which the rewrite expands to the
    word ids' shape, as the embedding sum broadcasts it; None otherwise."""
    ids, words = m[f"{term}_ids"], m[f"{word}_ids"]
    if spans_batch_and_sequence(m.graph, ids, IdentityMap(), words):
        return "same"
    if ids in IdentitySet(m.graph.inputs) and rank(ids) == 2 and np.issubdtype(np.dtype(ids.dtype), np.integer):
        return "expand"
    return None


def _lookups_reason(m) -> str | None:
    """What every variant checks: the statistics, the tables, γ and β, integer ids."""
    reason = statistics_reason(m.graph, m.anchor) or per_channel_pair(m) or _rows_reason(m)
    if reason:
        return reason
    tables = [_table(m, t) for t in TERMS if _has(m, t)]
    if any(t.ndim != 2 for t in tables) or len({t.shape[1] for t in tables}) != 1:
        return f"the embedding tables are not matrices of one width: {[list(t.shape) for t in tables]}"
    width = tables[0].shape[1]
    for name, label in (("gamma", "γ"), ("beta", "β")):
        reason = vector_reason(label, m.const(name), width, "the embedding width")
        if reason:
            return reason
    for t in TERMS:
        if f"{t}_ids" in m.values and not np.issubdtype(np.dtype(m[f"{t}_ids"].dtype or np.float32), np.integer):
            return f"the ids '{m[f'{t}_ids'].name}' are not integers"
    return None


def check(m) -> EmbedLayerNormFacts | str:
    reason = _lookups_reason(m)
    if reason:
        return reason
    if "positions" in m.values:
        return _check_positions(m)
    found = _roles(m)
    if isinstance(found, str):
        return found
    roles, expand = found
    position = m[f"{roles['position']}_ids"]
    if rank(position) != 2:
        return f"the position ids '{position.name}' are not 2-D"
    return EmbedLayerNormFacts(roles, expand)


def _check_positions(m) -> EmbedLayerNormFacts | str:
    """The positions variant: word (and segment) lookups, and a position term proven to be table rows."""
    terms = [t for t in TERMS if _has(m, t)]
    inputs = IdentitySet(m.graph.inputs)
    words = [t for t in terms if m[f"{t}_ids"] in inputs and rank(m[f"{t}_ids"]) == 2]
    if not words:
        return "no lookup is indexed by a 2-D model input (the token ids)"
    word = max(words, key=lambda t: _table(m, t).shape[0])
    roles, expand = {"word": word}, False
    for t in terms:
        if t != word:
            form = _segment_form(m, t, word)
            if form is None:
                return f"the segment ids '{m[f'{t}_ids'].name}' are neither provably (batch, sequence) nor a model input"
            roles["segment"] = t
            expand = form == "expand"
    ids, vocabulary = m[f"{word}_ids"], _table(m, word).shape[0]
    width = _table(m, word).shape[1]
    value = const_value(m["positions"])
    if value is not None:
        table = _constant_rows(value, ids, width)
    else:
        table = position_rows(m.graph, m["positions"], ids, vocabulary, width, m.state.memo(__name__, dict))
    if isinstance(table, str):
        return table
    dtype = (table if isinstance(table, np.ndarray) else const_value(table)).dtype
    if dtype != _table(m, word).dtype:
        return f"the position table is {dtype}, the word table {_table(m, word).dtype}"
    return EmbedLayerNormFacts(roles, expand, table)


def _constant_rows(value: np.ndarray, ids, width: int) -> np.ndarray | str:
    """The [S, H] table a constant position term holds (ONNX Runtime's tests write [B, S, H]):
    its rows must be one per position of the model's fixed sequence length, the same for every batch."""
    batch = value.shape[0] if value.ndim == 3 else 1
    if value.ndim == 3 and np.array_equal(value, np.broadcast_to(value[:1], value.shape)):
        value = value[0]
    if value.ndim != 2 or value.shape[1] != width:
        return f"the constant position term has shape {list(value.shape)}, not [sequence, {width}] (the same for every batch)"
    seq, fixed_batch = ids.shape[1], ids.shape[0]
    if not isinstance(seq, (int, np.integer)) or seq != value.shape[0]:
        return f"the constant position term has {value.shape[0]} rows, but the sequence length is {seq!r}"
    if batch > 1 and batch != fixed_batch:
        return f"the constant position term is for batch {batch}, but the batch is {fixed_batch!r}"
    return value


def rewrite(m, facts: EmbedLayerNormFacts, emit):
    roles = facts.roles

    def ids(role):
        t = m[f"{roles[role]}_ids"]
        t = t if np.dtype(t.dtype) == np.int32 else emit.shared("Cast", t, to=TensorProto.INT32)
        if role == "segment" and facts.expand_segment:
            # exact wherever the sum broadcasts the segment term over the words; where it would
            # instead broadcast the words (more token types than tokens) the op refuses to run
            t = emit.Expand(t, emit.shared("Shape", m[f"{roles['word']}_ids"]))
        return t

    def table(role):  # a table stored quantized goes to the op as the graph dequantizes it: exact
        name = f"{roles[role]}_table"
        return m[name] if name in m.consts else emit.const(name, _table(m, roles[role]))

    segment = "segment" in roles
    if "position" in roles:
        position_table, position_ids = table("position"), ids("position")
    else:  # proven rows 0..S-1: the op counts the positions itself
        position_table, position_ids = facts.position_table, None
        if isinstance(position_table, np.ndarray):
            position_table = emit.const("position_table", position_table)
    if (pairs := dropped_pairs(m, [f"{t}_table" for t in TERMS])):
        emit.note("EmbedLayerNorm dropped {count} requantization pairs on embedding lookups and sums: the op "
                  "adds unrounded, so its output may move by a step (verification compares in steps)", pairs)
    eps = attr(m.anchor, "epsilon")
    # ONNX Runtime's type inference needs the mask_index output declared, even unused
    out, _ = emit.EmbedLayerNormalization(
        ids("word"), ids("segment") if segment else None, table("word"), position_table,
        table("segment") if segment else None, m["gamma"], m["beta"], None, position_ids,
        _domain=MS, epsilon=float(1e-5 if eps is None else eps), _outputs=(0, 1))
    return out


FUSION = Fusion(
    name="EmbedLayerNorm",
    variants=[Variant("positions", normalized(either(op.Add(sum_of(lookup("a"), lookup("b")), positions),
                                                     op.Add(sum_of(lookup("a"), positions), lookup("b")),
                                                     op.Add(lookup("a"), positions), tag="terms",
                                                     labels=("", "", "no_segment"))),
                      "BERT, DistilBERT, ALBERT, ELECTRA embeddings (TorchScript, dynamo, tf2onnx), ORT's tests"),
              Variant("lookups", normalized(either(op.Add(sum_of(lookup("a"), lookup("b")), lookup("c")),
                                                   op.Add(lookup("a"), lookup("b")), tag="terms",
                                                   labels=("", "no_segment"))),
                      "RoBERTa's padding-offset positions, any position ids not proven to count 0..S-1")],
    check=check,
    rewrite=rewrite,
    signature=frozenset({"Gather"}),
    after=("LayerNorm",),
    targets=("ort",),
)
