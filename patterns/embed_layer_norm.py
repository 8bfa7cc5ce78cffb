"""EmbedLayerNormalization: the embedding lookups, their sum and the LayerNorm in one op.

    y = LayerNorm(word[input_ids] + position[position_ids] (+ segment[token_type_ids]))

bert, electra, albert — TorchScript and dynamo exporters::

    input_ids ──────► Gather(word) ─────┐
    token_type_ids ─► Gather(segment) ─► Add ─┐
    positions ──────► Gather(position) ──────► Add ─► LayerNormalization ─► y

distilbert has no segment term; roberta computes its position ids from the input ids
(padding-aware cumulative sum) and its single token type row through GatherElements.

The position and segment indices are handed to the op as they are computed in the
graph (cast to int32), never re-derived, so every family's position scheme is exact:
BERT's [1, S] slice of a position buffer, RoBERTa's padding offset, a Range.

Checks: three (or two) Gathers along axis 0 from constant tables of one width; the
word ids are a 2-D integer model input; a second index (segment) provably has the
model's (batch, sequence) shape and the last one (position) at most broadcasts over
batch; the LayerNorm normalizes the last axis. Only ``ort`` has this op.
"""
import numpy as np
from onnx import TensorProto

from fusekit.engine.graph import attr, rank, spans_batch_and_sequence
from fusekit.engine.pattern import Const, Fusion, Var, Variant, either, op
from fusekit.engine.rewrite import MS
from fusekit.engine.state import IdentitySet

from ._common import last_axis_attr, statistics_reason, vector_reason

gamma = Const("gamma", label="γ")
beta = Const("beta", label="β")
TERMS = ("a", "b", "c")


def lookup(name: str):
    return op.Gather(Const(f"{name}_table", label="an embedding table"), Var(f"{name}_ids", "the ids"), axis=0)


def normalized(total):
    return op.LayerNormalization(total, gamma, beta, axis=last_axis_attr)


def _roles(m) -> dict[str, str] | str:
    """Which term is the word, segment and position lookup."""
    terms = [t for t in TERMS if f"{t}_table" in m.consts]
    inputs = IdentitySet(m.graph.inputs)
    words = [t for t in terms if m[f"{t}_ids"] in inputs and rank(m[f"{t}_ids"]) == 2]
    if not words:
        return "no lookup is indexed by a 2-D model input (the token ids)"
    word = max(words, key=lambda t: m.const(f"{t}_table").shape[0])  # the vocabulary is the largest table
    rest = [t for t in terms if t != word]
    full = [t for t in rest if spans_batch_and_sequence(m.graph, m[f"{t}_ids"], m.state.spans)]
    roles = {"word": word}
    if len(rest) == 2:
        if not full:
            return "neither the segment nor the position ids are provably (batch, sequence)"
        segment = min(full, key=lambda t: m.const(f"{t}_table").shape[0])  # token types: the smallest table
        roles["segment"] = segment
        rest = [t for t in rest if t != segment]
    roles["position"] = rest[0]
    return roles


def check(m):
    reason = statistics_reason(m.graph, m.anchor)
    if reason:
        return reason
    tables = [m.const(f"{t}_table") for t in TERMS if f"{t}_table" in m.consts]
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
    roles = _roles(m)
    if isinstance(roles, str):
        return roles
    position = m[f"{roles['position']}_ids"]
    if rank(position) != 2:
        return f"the position ids '{position.name}' are not 2-D"
    m.facts["roles"] = roles
    return None


def rewrite(m, emit):
    roles = m.facts["roles"]

    def ids(role):
        t = m[f"{roles[role]}_ids"]
        return t if np.dtype(t.dtype) == np.int32 else emit.shared("Cast", t, to=TensorProto.INT32)

    def table(role):
        return m[f"{roles[role]}_table"]

    segment = "segment" in roles
    eps = attr(m.anchor, "epsilon")
    # ONNX Runtime's type inference needs the mask_index output declared, even unused
    out, _ = emit.EmbedLayerNormalization(
        ids("word"), ids("segment") if segment else None, table("word"), table("position"),
        table("segment") if segment else None, m["gamma"], m["beta"], None, ids("position"),
        _domain=MS, epsilon=float(1e-5 if eps is None else eps), _outputs=(0, 1))
    return out


FUSION = Fusion(
    name="EmbedLayerNorm",
    variants=[Variant("lookups", normalized(either(op.Add(op.Add(lookup("a"), lookup("b")), lookup("c")),
                                                   op.Add(lookup("a"), lookup("b")), tag="terms",
                                                   labels=("", "no_segment"))),
                      "BERT, DistilBERT, RoBERTa, ALBERT, ELECTRA embeddings")],
    check=check,
    rewrite=rewrite,
    signature=frozenset({"Gather"}),
    after=("LayerNorm",),
    targets=("ort",),
)
