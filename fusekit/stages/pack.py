"""Padding-free batches: every token-wise op runs on the batch's valid tokens alone.

A padded batch [B, S, H] whose mask keeps T of its B·S positions computes the other
B·S − T in full, in every projection, LayerNorm and FFN. Only the attention core
(QKᵀ, softmax, ·V) mixes positions, and it already ignores padded keys. So, after the
embeddings, the valid tokens are gathered into one [T, H] sequence; every token-wise
op runs on it; each attention core reads its inputs scattered back to [B, S, ·]
(zeros at padded positions) and its output is gathered again; the hidden states leave
the model scattered to [B, S, H], padded positions 0::

    embeddings ─► pack ─► [T, H] ─► projections ─► unpack ─► attention core ─► pack ─► [T, H] ─► … ─► unpack ─► output
                   ▲                                           ▲
                 mask (a 2-D model input, proven by fusekit.engine.probe to be the key padding mask)

Exact only where every op between the packing points is token-wise: it computes each
position from that position alone and never reads the sequence length as data.
``plan`` walks the graph in order and proves that, or returns the node that breaks it:

- a **token-wise** op (elementwise with constants that do not vary over positions, a
  MatMul by a constant weight, a normalization or softmax over the last axis, a Split
  of the last axis …) on packed values gives packed values;
- an **attention core** (a fused ``com.microsoft.Attention`` or ONNX ``Attention``, or
  the unfused chain the Attention pattern matches) whose mask is proven to be a key
  padding mask from the mask input reads its inputs unpacked; padded keys weigh 0,
  so every valid query comes out exact. A bias added to its scores (MPNet's relative
  positions) must be proven a position bias (``probe.position_bias``): it reads the
  sizes alone, so the packed model computes it as the unpacked one does, [1|B, N, S, S]
  on the unpacked layout;
- **anything else** that reads a packed value (the pooler's Gather of token 0, a Shape)
  reads it unpacked; its result must never flow back into the token stream, and an
  output computed from it is reported as read from the unpacked hidden states.

``optimize`` writes a packed model in the branch form (``fusekit.branches``, ``Forms.branch``): If
the mask has padding, the packed graph, else the graph as fused, so a batch without padding pays
no packing point.

Forms (``benchmarks/pack_forms.py``): pack is Gather(Flatten(x), the mask's nonzero
positions), so the stream has exactly T rows (an unpadded batch's MatMuls keep their
size; a batch without a single token keeps one row, so that there is a row to read).
An attention core's inputs unpack with one Gather, padded positions reading the
stream's first row: the core never weighs a padded key, so any finite value serves, and
what it computes at a padded query is never packed again. Everything else unpacks as
Gather(Pad(x, one zero row), each position's row), padded positions reading 0. (Measured
on a quiet machine, the single Gather takes 2–3% off the packing points' cost against a
Pad before every core; a spare row carried through the stream and ScatterND into zeros
cost more.) ``ort``'s fused Attention projects Q/K/V itself, so its projection moves to the
packed tokens and com.microsoft.MultiHeadAttention, with the 2-D key padding mask (and the
Attention's attention_bias, where it has one), is the core (keeping the fused Attention on
unpacked inputs leaves the projection on every position: 0.62× of the unpacked time where
MultiHeadAttention gives 0.53×).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import onnx_graphsurgeon as gs
from onnx import TensorProto

from ..engine.graph import attr, cleanup, const_value, producer, toposort
from ..engine.matcher import Match, Miss, match_variant
from ..engine.pattern import Fusion
from ..engine.probe import KeyPaddingMask, ShapeOnly, key_padding_mask, position_bias, windowed_mask
from ..engine.rewrite import MS, Emitter, Fused, take_over
from ..engine.state import IdentityMap, IdentitySet, RunState

if TYPE_CHECKING:  # what the Attention pattern proves; the engine imports no pattern
    from ..patterns.fusions.attention import AttentionFacts

FUSION = "Pack"

# position by position, whatever the shape: each output element reads the same element of each input
ELEMENTWISE = {"Abs", "Add", "And", "Cast", "Ceil", "Clip", "Div", "Elu", "Equal", "Erf", "Exp", "Floor", "Gelu",
               "Greater", "GreaterOrEqual", "HardSigmoid", "Identity", "IsInf", "IsNaN", "LeakyRelu", "Less",
               "LessOrEqual", "Log", "Max", "Min", "Mod", "Mul", "Neg", "Not", "Or", "Pow", "PRelu", "Reciprocal",
               "Relu", "Round", "Selu", "Sigmoid", "Sign", "Softplus", "Sqrt", "Sub", "Sum", "Tanh", "Where",
               "BiasGelu", "FastGelu", "QuickGelu", "BiasAdd"}
# over the last axis only (the hidden features of one token)
LAST_AXIS = {"LayerNormalization": ("axis", -1), "Softmax": ("axis", -1), "LogSoftmax": ("axis", -1),
             "Split": ("axis", 0), "QuantizeLinear": ("axis", 1), "DequantizeLinear": ("axis", 1),
             "SkipLayerNormalization": (None, None), "SkipSimplifiedLayerNormalization": (None, None)}
REDUCE = {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceSumSquare", "ReduceL2", "ReduceProd"}
# the first input by a constant matrix: [.., K] · [K, N]
DENSE = {"MatMul", "MatMulIntegerToFloat", "MatMulInteger"}
MS_ATTENTION = "com.microsoft.Attention"  # projects Q/K/V itself: its input is read packed
ATTENTION_BIAS = 5  # the input index of attention_bias, in com.microsoft Attention and MultiHeadAttention
RANK = 3  # the token stream is [B, S, ·]; packed it is [T, ·]


@dataclass(frozen=True)
class Forms:
    """How the packing points are spelled; chosen per target by measurement (benchmarks/pack_forms.py)."""

    # "first": an attention core's inputs Gather(x, index), padded positions reading the stream's
    # first row, and zeros elsewhere as "pad"; "pad": Gather(Pad(x, a zero row), index);
    # "gather": Gather(x, index) from a stream with a spare row, zeros put in by a Where where
    # they are read; "scatter": ScatterND into zeros
    unpack: str = "first"
    ms_core: str = "mha"  # com.microsoft.Attention → "mha": packed projection + MultiHeadAttention;
    #                       "attention": the fused Attention kept, reading the unpacked hidden states
    # the branch form (fusekit.branches): If the batch has padding, the packed graph, else the unpacked one
    branch: bool = True


FORMS = {"ort": Forms(), "onnx": Forms(), "openvino": Forms()}


@dataclass
class Core:
    """An attention core: it mixes positions, but only through keys its mask keeps."""

    name: str  # the node that stands for it in reports
    op: str
    nodes: IdentitySet  # its nodes
    inputs: list[gs.Tensor]  # the token-wise values it reads, [B, S, ·]
    output: gs.Tensor  # its [B, S, H] result
    mask: gs.Tensor | None  # the 2-D model input that masks its keys (None: unmasked)
    reason: str | None = None  # why it cannot run on unpacked inputs with its mask (None: it can)
    bias: gs.Tensor | None = None  # a bias added to its scores, to be proven a position bias (``plan``)
    heads: int = 1


@dataclass
class Plan:
    """Where the packing points go, when packing is exact."""

    mask: gs.Tensor
    start: gs.Tensor  # the hidden states after the embeddings: packed first
    cores: list[Core]
    packed: IdentitySet  # values computed on [T, ·]
    fixes: list = field(default_factory=list)  # attribute and constant changes for [T, ·] (applied by ``apply``)
    readers: IdentityMap = field(default_factory=IdentityMap)  # packed value -> nodes reading it unpacked
    derived: list[str] = field(default_factory=list)  # outputs computed from unpacked values


@dataclass
class PackResult:
    fused: list[Fused] = field(default_factory=list)
    misses: list[Miss] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)  # output name -> "tokens" | "derived"
    mask: str | None = None


def _miss(anchor: gs.Node | None, reason: str, at: gs.Node | None = None) -> Miss:
    node = at or anchor
    return Miss(fusion=FUSION, variant="tokens", anchor=anchor.name if anchor else "", anchor_op=anchor.op if anchor else "",
                matched=0, total=0, at=node.name if node else None, reason=reason, at_op=node.op if node else None,
                complete=True)


# ---------------------------------------------------------------- attention cores

def _mask_input(tensor: gs.Tensor, graph: gs.Graph) -> gs.Tensor | None:
    """The 2-D model input a com.microsoft.Attention mask is, through Casts (fusekit's Attention
    fusion gives it the raw mask it proved)."""
    while producer(tensor) is not None and producer(tensor).op == "Cast":
        tensor = producer(tensor).inputs[0]
    inputs = IdentitySet(graph.inputs)
    return tensor if tensor in inputs and tensor.shape is not None and len(tensor.shape) == 2 else None


def _ms_core(graph: gs.Graph, node: gs.Node) -> Core:
    mask = _mask_input(node.inputs[3], graph) if len(node.inputs) > 3 and node.inputs[3].name else None
    extra = [t for i, t in enumerate(node.inputs[4:], 4) if t.name and i != ATTENTION_BIAS]
    bias = node.inputs[ATTENTION_BIAS] if len(node.inputs) > ATTENTION_BIAS else None
    core = Core(node.name, MS_ATTENTION, IdentitySet([node]), [node.inputs[0]], node.outputs[0], mask,
                bias=bias if bias is not None and bias.name else None, heads=attr(node, "num_heads") or 1)
    if len(node.inputs) > 3 and node.inputs[3].name and mask is None:
        core.reason = "its mask is not a 2-D model input (a mask index assumes right padding)"
    unusual = sorted(set(node.attrs) - {"num_heads", "scale", "mask_filter_value"})
    if extra or unusual:  # past state, a causal mask, rotary positions, uneven Q/K/V widths …
        core.reason = f"it reads {'more inputs' if extra else 'attributes ' + ', '.join(unusual)} that " \
                      "MultiHeadAttention does not take"
    return core


def _reads(value: gs.Tensor, sources: list[gs.Tensor]) -> bool:
    """Whether ``value`` is computed from any of ``sources``."""
    seen, todo, wanted = IdentitySet(), [value], IdentitySet(sources)
    while todo:
        t = todo.pop()
        if t in wanted:
            return True
        if t in seen:
            continue
        seen.add(t)
        node = producer(t)
        todo += [i for i in node.inputs if i.name] if node is not None else []
    return False


# DeBERTa's disentangled bias: computed from Q and K outside the fused op, it relates positions itself
MIXING_BIAS = "it adds a bias computed from its own queries and keys (a disentangled attention bias) by a " \
              "subgraph outside the op that mixes positions, and packing unpacks the attention op alone"


def _mha_core(graph: gs.Graph, node: gs.Node) -> Core:
    """A com.microsoft.MultiHeadAttention fusekit emitted with its bias as attention_bias."""
    q, k, v = node.inputs[:3]
    core = Core(node.name, "MultiHeadAttention", IdentitySet([node]), [q, k, v], node.outputs[0], None,
                heads=attr(node, "num_heads") or 1)
    bias = node.inputs[ATTENTION_BIAS] if len(node.inputs) > ATTENTION_BIAS else None
    core.reason = MIXING_BIAS if bias is not None and bias.name and _reads(bias, [q, k]) \
        else "packing takes the Attention ops fusekit fuses, not yet a MultiHeadAttention (the core of a quantized " \
             "model's attention, or one the input already had)"
    return core


def _onnx_core(graph: gs.Graph, node: gs.Node, masks: dict) -> Core:
    q, k, v = node.inputs[:3]
    split = producer(q)
    whole = split is not None and split.op == "Split" and len(split.outputs) == 3 \
        and all(a is b and len(a.outputs) == 1 for a, b in zip(split.outputs, (q, k, v)))
    nodes = IdentitySet([split, node] if whole else [node])
    core = Core(node.name, "Attention", nodes, [split.inputs[0]] if whole else [q, k, v], node.outputs[0], None,
                heads=attr(node, "q_num_heads") or 1)
    if attr(node, "is_causal") or len([t for t in node.inputs[4:] if t.name]) or len(node.outputs) > 1 \
            and any(t.name for t in node.outputs[1:]):
        core.reason = "it is causal, reads past state or returns more than its output"
    elif len(node.inputs) > 3 and node.inputs[3].name and _reads(node.inputs[3], [q, k]):
        core.reason = MIXING_BIAS
    elif len(node.inputs) > 3 and node.inputs[3].name:
        proof = key_padding_mask(graph, node.inputs[3], masks)
        if isinstance(proof, str):  # the key padding mask plus a bias, as fusekit's onnx form adds them
            core.bias, proof = _mask_and_bias(graph, node.inputs[3], masks) or (None, proof)
        core.mask, core.reason = (proof.input, None) if not isinstance(proof, str) else (None, proof)
    return core


def _mask_and_bias(graph: gs.Graph, added: gs.Tensor, masks: dict) -> tuple[gs.Tensor, KeyPaddingMask] | None:
    """(the bias, the key padding mask) when ``added`` is their sum; the bias is proven by ``plan``."""
    node = producer(added)
    if node is None or node.op != "Add":
        return None
    for mask, bias in (node.inputs, node.inputs[::-1]):
        proof = key_padding_mask(graph, mask, masks)
        if isinstance(proof, KeyPaddingMask):
            return bias, proof
    return None


def _unfused_core(match: Match) -> Core:
    projections = IdentitySet()
    inputs = []
    for name in "qkv":
        add = producer(match.node(f"{name}_split").inputs[0])
        projections.update([add, *(producer(t) for t in add.inputs if producer(t) is not None)])
        inputs.append(add.outputs[0])
    nodes = IdentitySet(n for n in match.nodes if n not in projections)
    if match.variant.name == "disentangled":
        return Core(match.anchor.name, "attention (unfused)", nodes, inputs, match.anchor.outputs[0], None,
                    reason=MIXING_BIAS)
    facts: AttentionFacts = match.proven
    mask = facts.mask
    return Core(match.anchor.name, "attention (unfused)", nodes, inputs, match.anchor.outputs[0],
                mask.input if mask is not None else None)


def _rotary_core(graph: gs.Graph, node: gs.Node, masks: dict) -> Core:
    """MultiHeadAttention or ONNX Attention on Q and K rotated by RotaryEmbedding (fusekit's
    RotaryAttention): the rotations are part of the core, so each token is rotated at its own
    position in the unpacked [B, S, ·] layout, as the original computes it. So is the correction
    of a row that keeps no key (Mul by the live rows, or Where(live, ·, mean of V)): it is only
    ever read at padded queries, which are not packed again."""
    q, k, v = node.inputs[:3]
    rotations = [producer(t) for t in (q, k)]
    nodes = IdentitySet([*rotations, node])
    output = node.outputs[0]
    user = output.outputs[0] if len(output.outputs) == 1 else None
    if user is not None and user.op == "Mul" and producer(user.inputs[1]) is not None \
            and producer(user.inputs[1]).op == "Cast":
        nodes.add(user)
        output = user.outputs[0]
    elif user is not None and user.op == "Where" and user.inputs[1] is output and producer(user.inputs[2]) is not None \
            and producer(user.inputs[2]).op == "ReduceMean" and producer(user.inputs[2]).inputs[0] is v:
        nodes.update([user, producer(user.inputs[2])])
        output = user.outputs[0]
    heads = attr(node, "num_heads") or attr(node, "q_num_heads") or 1
    core = Core(node.name, f"{node.op} (rotary)", nodes, [r.inputs[0] for r in rotations] + [v], output, None,
                heads=heads)
    key_mask = node.inputs[4] if node.domain == MS and len(node.inputs) > 4 and node.inputs[4].name else None
    added = node.inputs[5 if node.domain == MS else 3] if len(node.inputs) > (5 if node.domain == MS else 3) else None
    if key_mask is not None:
        core.mask = _mask_input(key_mask, graph)
        core.reason = None if core.mask is not None else "its key padding mask is not a 2-D model input"
    elif added is not None and added.name:
        proof = windowed_mask(graph, added, masks, None, heads)
        core.mask, core.reason = (proof.input, None) if not isinstance(proof, str) else (None, proof)
    return core


def _unfused_rotary_core(match: Match) -> Core:
    """ModernBERT's unfused layer, as RotaryAttention's pattern matches it (``--target openvino``):
    everything after the packed projection, the rotations included, reads it unpacked."""
    projection = producer(match.node("qkv_split").inputs[0])
    nodes = IdentitySet(n for n in match.nodes if n is not projection)
    return Core(match.anchor.name, "rotary attention (unfused)", nodes, [projection.outputs[0]],
                match.anchor.outputs[0], match.proven.mask.input, heads=match.proven.heads)


def find_cores(graph: gs.Graph, state: RunState, attention: Fusion, rotary: Fusion | None = None) -> list[Core]:
    """Every attention core: fused ones by their op, unfused ones by the Attention pattern (or
    RotaryAttention's)."""
    cores = []
    taken = IdentitySet()
    for node in graph.nodes:
        rotated = node.op in ("Attention", "MultiHeadAttention") and len(node.inputs) > 2 and all(
            producer(t) is not None and producer(t).op == "RotaryEmbedding" for t in node.inputs[:2])
        if rotated:
            cores.append(_rotary_core(graph, node, state.probes))
        elif node.op == "Attention" and node.domain == MS:
            cores.append(_ms_core(graph, node))
        elif node.op == "Attention" and not node.domain:
            cores.append(_onnx_core(graph, node, state.probes))
        elif node.op == "MultiHeadAttention" and node.domain == MS:
            cores.append(_mha_core(graph, node))
    for node in reversed(list(graph.nodes)):
        if node.op != "Reshape" or node in taken:
            continue
        for fusion, variant in [(f, v) for f in (attention, rotary) if f is not None for v in f.variants]:
            found = match_variant(graph, fusion, variant, node, state)
            if isinstance(found, Match):
                cores.append(_unfused_core(found) if fusion is attention else _unfused_rotary_core(found))
                taken.update(found.nodes)
                break
    return cores


# ---------------------------------------------------------------- what is token-wise

def _dynamic(graph: gs.Graph) -> IdentitySet:
    """The values that depend on a model input (the rest are constants, whatever computes them)."""
    dynamic = IdentitySet(graph.inputs)
    for node in graph.nodes:
        if any(t in dynamic for t in node.inputs):
            dynamic.update(node.outputs)
    return dynamic


def _invariant(node: gs.Node, t: gs.Tensor, fixes: list) -> str | None:
    """A constant input of a token-wise op must be the same at every position: every dimension
    but the last is 1. On [T, ·] it must have rank ≤ 2, so a [1, 1, C] constant becomes [C]."""
    shape = t.shape if not isinstance(t, gs.Constant) else t.values.shape
    if shape is None or any(not isinstance(d, int) for d in shape):
        return f"'{node.name}' ({node.op}) reads '{t.name}', whose shape fusekit cannot read"
    if any(d != 1 for d in shape[:-1]):
        return f"'{node.name}' ({node.op}) reads '{t.name}' of shape {list(shape)}, which varies over positions"
    if len(shape) >= RANK:
        fixes.append(("squeeze", node, t))
    return None


def _last_axis(node: gs.Node, name: str, default, fixes: list) -> str | None:
    axis = attr(node, name) if name else None
    axis = default if axis is None else axis
    if name is None or axis in (-1, RANK - 1):
        if axis == RANK - 1:
            fixes.append(("axis", node, name))
        return None
    return f"'{node.name}' ({node.op}) works along axis {axis}, across positions"


def tokenwise(node: gs.Node, packed: IdentitySet, dynamic: IdentitySet, fixes: list, opset: int = 17) -> str | None:
    """None when ``node`` computes each position from that position alone, given which of its
    inputs are packed; else why not. Changes it would need on [T, ·] go into ``fixes``."""
    op = node.op
    others = [t for t in node.inputs if t.name and t not in packed]
    if op in DENSE:
        if node.inputs[0] not in packed or node.inputs[1] in packed:
            return f"'{node.name}' ({op}) multiplies two token streams, mixing positions"
        weight = node.inputs[1]
        if weight in dynamic or weight.shape is None or len(weight.shape) != 2:
            return f"'{node.name}' ({op}) multiplies by '{weight.name}', which is not a constant matrix"
        others = [t for t in others if t is not weight]
    elif op in REDUCE:
        axes = attr(node, "axes")
        if axes is None and len(node.inputs) > 1 and isinstance(node.inputs[1], gs.Constant):
            axes = node.inputs[1].values.tolist()
            others = [t for t in others if t is not node.inputs[1]]
        if axes is None or [a % RANK for a in np.atleast_1d(axes)] != [RANK - 1] or attr(node, "keepdims") == 0:
            return f"'{node.name}' ({op}) reduces over axes {axes}, across positions"
        if [a for a in np.atleast_1d(axes)] != [-1]:
            fixes.append(("axes", node, None))
    elif op == "Slice":  # a GeGLU's halves: constant bounds along the last axis only
        bounds = [const_value(t) for t in node.inputs[1:]]
        axes = bounds[2] if len(bounds) > 2 else None
        if any(b is None for b in bounds) or axes is None or any(a % RANK != RANK - 1 for a in np.atleast_1d(axes)):
            return f"'{node.name}' (Slice) cuts axes {None if axes is None else np.atleast_1d(axes).tolist()}, " \
                   "not only the last"
        if any(a != -1 for a in np.atleast_1d(axes)):
            fixes.append(("slice_axes", node, None))
        others = [t for t in others if t not in node.inputs[1:]]
    elif op in ("QuantizeLinear", "DequantizeLinear") and node.inputs[1].shape is not None \
            and len(node.inputs[1].shape) == 0:
        pass  # per tensor: the axis is not read
    elif op in ("Softmax", "LogSoftmax") and attr(node, "axis") is None and opset < 13:
        return f"'{node.name}' ({op}) flattens from axis 1 (opset {opset}), across positions"
    elif op in LAST_AXIS:
        reason = _last_axis(node, *LAST_AXIS[op], fixes)
        if reason:
            return reason
        if op == "Split" and len(node.inputs) > 1 and node.inputs[1] in others:
            others.remove(node.inputs[1])  # the split sizes
    elif op not in ELEMENTWISE:
        what = "reads the sequence length as data" if op in ("Shape", "Size") else "mixes positions"
        return f"'{node.name}' ({op}) {what}"
    for t in others:
        if t in dynamic:
            return f"'{node.name}' ({op}) reads '{t.name}', a per-position value that is not on the token stream"
        reason = _invariant(node, t, fixes)
        if reason:
            return reason
    return None


def _bias_reason(graph: gs.Graph, core: Core, packed: IdentitySet, state: RunState) -> str | None:
    """Why the bias ``core`` adds to its scores is not a position bias, or None. It may read
    the shape of the hidden states (MPNet counts positions up to their length), never their values."""
    if core.bias is None:
        return None
    hidden = [ShapeOnly(t, "the hidden states", lambda batch, seq, width=width: (batch, seq, width))
              for t in packed if (width := _width(t))]
    proof = position_bias(graph, core.bias, state.probes, core.heads, hidden)
    return f"its bias '{core.bias.name}' is not a position bias ({proof})" if isinstance(proof, str) else None


def _start(core: Core, dynamic: IdentitySet, in_core) -> gs.Tensor:
    """The hidden states the first core's projections read: from its input, back through
    single-use MatMuls and bias Adds to where the stream branches (the residual reads it too)."""
    t = core.inputs[0]
    while True:
        node = producer(t)
        if node is None or node.op not in ("MatMul", "Add") or in_core(node):
            return t
        stream = [i for i in node.inputs if i in dynamic]
        if len(stream) != 1:
            return t
        t = stream[0]
        if len(t.outputs) > 1:
            return t


def plan(graph: gs.Graph, state: RunState, attention: Fusion, rotary: Fusion | None = None) -> Plan | Miss:
    """Where the packing points go, or the miss that says why packing would not be exact."""
    masks = [t for t in graph.inputs if t.shape is not None and len(t.shape) == 2 and "mask" in t.name.lower()]
    cores = find_cores(graph, state, attention, rotary)
    if not cores:
        reason = ("the model has no attention mask input: nothing to pack" if not masks
                  else "no attention core fusekit recognises (a fused Attention, or the chain the Attention "
                       "pattern matches), so it cannot tell where positions mix")
        return _miss(None, reason)
    for core in cores:
        if core.reason or core.mask is None:
            why = core.reason or ("the model has no attention mask input: nothing to pack" if not masks
                                  else "it has no mask, so its keys include padded positions")
            return _miss(next(iter(core.nodes)), f"attention '{core.name}' cannot run on packed tokens: {why}")
    if len({id(c.mask) for c in cores}) > 1:
        return _miss(next(iter(cores[1].nodes)), "the attentions are masked by different inputs")
    core_of = IdentityMap((n, c) for c in cores for n in c.nodes)
    dynamic = _dynamic(graph)
    position = IdentityMap((n, i) for i, n in enumerate(graph.nodes))
    first = min(cores, key=lambda c: min(position[n] for n in c.nodes))
    start = _start(first, dynamic, lambda n: n in core_of)
    if start.shape is None or len(start.shape) != RANK:
        return _miss(next(iter(first.nodes)), f"the hidden states '{start.name}' are not [batch, sequence, hidden]")
    packed = IdentitySet([start])
    fixes, readers = [], IdentityMap()
    tainted = IdentityMap()  # value -> (the node off the stream that computed it, why it is off the stream)
    for node in graph.nodes:
        from_stream = [t for t in node.inputs if t in packed]
        dirty = [t for t in node.inputs if t in tainted]
        core = core_of.get(node)
        if core is not None:
            data = [t for t in dirty if tainted[t][0].op != "Shape"]  # a core may read shapes, not mixed values
            if data:
                source, why = tainted[data[0]]
                return _miss(source, f"{why}, and attention '{core.name}' reads its result", source)
            for t in from_stream if core.op != MS_ATTENTION else ():
                readers.setdefault(t, []).append(node)
            if node is producer(core.output):
                missing = [t for t in core.inputs if t not in packed]
                if missing:
                    return _miss(node, f"attention '{core.name}' reads '{missing[0].name}', which is not computed "
                                       "token-wise from the hidden states", producer(missing[0]))
                why = _bias_reason(graph, core, packed, state)
                if why:
                    return _miss(node, f"attention '{core.name}' cannot run on packed tokens: {why}")
                packed.add(core.output)
            continue
        if not from_stream:
            for t in node.outputs if dirty else ():
                tainted[t] = tainted[dirty[0]]
            continue
        if dirty:  # a value computed off the stream meets the stream again
            source, reason = tainted[dirty[0]]
            return _miss(source, f"{reason}, and its result flows back into the token stream at "
                                 f"'{node.name}' ({node.op})", source)
        node_fixes = []
        why = tokenwise(node, packed, dynamic, node_fixes, state.opset)
        if why is None:
            fixes += node_fixes
            packed.update(node.outputs)
            continue
        for t in from_stream:  # off the stream: it reads the values unpacked
            readers.setdefault(t, []).append(node)
        for t in node.outputs:
            tainted[t] = (node, why)
    result = Plan(first.mask, start, cores, packed, fixes, readers)
    result.derived = [t.name for t in graph.outputs if t in tainted]
    return result


# ---------------------------------------------------------------- the rewrite

class _Points:
    """The pack and unpack nodes, built from the mask once and shared by every layer.

    An attention core never weighs what its padded keys hold; everything else reads padded
    positions as 0. With the "first" form (fusekit's) a core's padded positions read the
    stream's first row, and a batch without any token keeps that one row; with "gather" the
    stream carries one spare row after the T tokens (a copy of the first position, computed
    like any token) that padded positions unpack to.
    """

    def __init__(self, emit: Emitter, mask: gs.Tensor, dtype, forms: Forms):
        self.emit, self.dtype, self.forms = emit, dtype, forms  # dtype: the hidden states' type
        e = emit
        self.mask = mask
        keep = e.Cast(e.Reshape(mask, e.small(np.array([-1], np.int64))), to=TensorProto.BOOL)  # [B·S]
        tokens = e.Squeeze(e.NonZero(keep), e.small(np.array([0], np.int64)))  # [T]: where the tokens are
        first = e.small(np.array([0], np.int64))
        if forms.unpack == "gather":  # a spare row after the tokens
            self.index = e.Concat(tokens, first, axis=0)
        elif forms.unpack == "first":  # at least one row to read, even in a batch without any token
            self.index = e.Slice(e.Concat(tokens, first, axis=0), first,
                                 e.Max(e.Shape(tokens), e.small(np.array([1], np.int64))))
        else:
            self.index = tokens
        count = e.Shape(self.index if forms.unpack == "first" else tokens)  # the row after the stream
        position = e.Sub(e.CumSum(e.Cast(keep, to=TensorProto.INT64), e.small(np.int64(0))),
                         e.small(np.int64(1)))
        self.inverse = e.Where(keep, position, count)  # [B·S]: each position's token row, row T when padded
        self.batch_and_sequence = e.Shape(mask)
        self.shape = e.Concat(self.batch_and_sequence, e.small(np.array([-1], np.int64)), axis=0)  # [B, S, -1]
        self.keep = keep

    def pack(self, value: gs.Tensor) -> gs.Tensor:
        e = self.emit
        return e.Gather(e.Flatten(value, axis=2), self.index, axis=0)

    def unpack(self, value: gs.Tensor, width: int | None = None, zeros: bool = True) -> gs.Tensor:
        """[T, C] → [B, S, C]; padded positions 0, or (``zeros=False``, for an attention core,
        which never weighs them) whatever is cheapest. A known width C is declared on the result:
        ONNX's shape inference of Attention(23) needs it."""
        e = self.emit
        form = self.forms.unpack
        if form == "scatter":
            size = e.shared("Shape", self.keep)  # [B·S]
            width_of = e.Slice(e.Shape(value), e.small(np.array([1], np.int64)), e.small(np.array([2], np.int64)))
            zero = e.small(np.zeros((), np.dtype(value.dtype or self.dtype or np.float32)))
            zeros_ = e.Expand(zero, e.Concat(size, width_of, axis=0))
            rows = e.shared("Unsqueeze", self.index, e.small(np.array([1], np.int64)))
            flat = e.ScatterND(zeros_, rows, value)
        elif form == "first" and not zeros:  # a padded position reads the first row: a finite value, never weighed
            flat = e.Gather(value, e.shared("Where", self.keep, self.inverse, e.small(np.int64(0))), axis=0)
        elif form in ("pad", "first"):
            flat = e.Gather(e.Pad(value, e.small(np.array([0, 0, 1, 0], np.int64))), self.inverse, axis=0)
        else:
            flat = e.Gather(value, self.inverse, axis=0)
            if zeros:
                kept = e.shared("Unsqueeze", self.keep, e.small(np.array([1], np.int64)))
                zero = e.small(np.zeros((), np.dtype(value.dtype or self.dtype or np.float32)))
                flat = e.Where(kept, flat, zero)
        out = e.Reshape(flat, self.shape)
        if isinstance(width, int):
            out.dtype, out.shape = value.dtype or self.dtype, [*self.mask.shape, width]
        return out

    def shape_of(self, value: gs.Tensor) -> gs.Tensor:
        """Shape(unpacked value) without unpacking it: [B, S] from the mask, the width from the value."""
        e = self.emit
        width = e.Slice(e.Shape(value), e.small(np.array([1], np.int64)), e.small(np.array([2], np.int64)))
        return e.Concat(self.batch_and_sequence, width, axis=0)


def _width(t: gs.Tensor, depth: int = 8) -> int | None:
    """The last dimension of a stream value, when the graph states it (a shape, a weight's width)."""
    if t.shape and isinstance(t.shape[-1], int):
        return t.shape[-1]
    node = producer(t)
    if node is None or depth == 0:
        return None
    if node.op in DENSE and isinstance(node.inputs[1], gs.Constant):
        return node.inputs[1].values.shape[-1]
    if node.op in ELEMENTWISE or node.op in LAST_AXIS and node.op != "Split":
        widths = [w for w in (_width(i, depth - 1) for i in node.inputs if i.name) if w and w > 1]
        return max(widths, default=None)
    return None


def _retarget(node: gs.Node, old: gs.Tensor, new: gs.Tensor):
    for i, t in enumerate(node.inputs):
        if t is old:
            node.inputs[i] = new


def _apply_fixes(plan: Plan, emit: Emitter):
    for kind, node, what in plan.fixes:
        if kind == "axis":
            node.attrs[what] = -1
        elif kind == "axes":
            if "axes" in node.attrs:
                node.attrs["axes"] = [-1]
            else:
                node.inputs[1] = emit.small(np.array([-1], np.int64))
        elif kind == "slice_axes":
            node.inputs[3] = emit.small(np.full(np.atleast_1d(const_value(node.inputs[3])).shape, -1, np.int64))
        elif kind == "squeeze":
            if isinstance(what, gs.Constant):
                flat = emit.const("flat", what.values.reshape(what.values.shape[-1:]))
            else:
                flat = emit.Reshape(what, emit.small(np.array([-1], np.int64)))
            _retarget(node, what, flat)


def _ms_attention(core: Core, points: _Points, emit: Emitter) -> gs.Node:
    """com.microsoft.Attention projects Q/K/V itself: its projection moves to the packed tokens,
    and MultiHeadAttention (which takes projected Q, K, V and a 2-D key padding mask) is the core."""
    node = next(iter(core.nodes))
    x, w, b = node.inputs[:3]
    if points.forms.ms_core == "attention":
        _retarget(node, x, points.unpack(x, w.shape[0], zeros=False))
        take_over(core.output, points.pack(_fresh_output(node, emit)))
        return node
    qkv = points.unpack(emit.Add(emit.MatMul(x, w), b), w.shape[1], zeros=False)
    q, k, v = emit.Split(qkv, emit.small(np.full(3, w.shape[1] // 3, np.int64)), axis=-1, _outputs=(0, 1, 2))
    mask = emit.shared("Cast", core.mask, to=TensorProto.INT32)
    attrs = {"num_heads": attr(node, "num_heads")}
    for name in ("scale", "mask_filter_value"):
        if attr(node, name) is not None:
            attrs[name] = attr(node, name)
    bias = [core.bias] if core.bias is not None else []  # attention_bias: the position bias, [1|B, N, S, S]
    out = emit.MultiHeadAttention(q, k, v, None, mask, *bias, _domain=MS, **attrs)
    packed = points.pack(out)
    take_over(core.output, packed)
    node.inputs.clear()
    node.outputs.clear()
    return producer(out)


def _fresh_output(node: gs.Node, emit: Emitter) -> gs.Variable:
    """Give ``node`` a new first output (its old one is about to be taken over) and return it."""
    out = gs.Variable(emit.unique_name(f"{node.outputs[0].name}/unpacked"), node.outputs[0].dtype)
    node.outputs[0] = out
    return out


def apply(graph: gs.Graph, plan: Plan, state: RunState, forms: Forms = Forms()) -> PackResult:
    emit = Emitter(graph, state, "fusekit/pack")
    off_stream = IdentityMap((t, IdentitySet(plan.readers[t])) for t in plan.readers)
    stream_readers = IdentityMap((t, [n for n in t.outputs if n not in off_stream.get(t, ())])
                                 for t in [plan.start, *(c.output for c in plan.cores)])
    points = _Points(emit, plan.mask, plan.start.dtype, forms)
    result = PackResult(mask=plan.mask.name)
    _apply_fixes(plan, emit)

    def record(variant: str, value: gs.Tensor, replaced=()):
        node = producer(value)
        result.fused.append(Fused(FUSION, variant, node.name, node.op, list(replaced)))

    outputs = IdentitySet(graph.outputs)

    def as_output(value: gs.Tensor, unpacked: gs.Tensor, suffix: str):
        """``unpacked`` replaces the output ``value``, keeping its name and its [B, S, ·] shape."""
        name = value.name
        value.name = emit.unique_name(f"{name}/{suffix}")
        unpacked.name, unpacked.dtype, unpacked.shape = name, value.dtype, value.shape
        graph.outputs[graph.outputs.index(value)] = unpacked
        result.outputs[name] = "tokens"

    # the embeddings' output and each core's output are read packed on the stream, as they are off it
    unfused_cores = [c for c in plan.cores if c.op != MS_ATTENTION]
    for value in [plan.start, *(c.output for c in unfused_cores)]:
        packed = points.pack(value)
        record("pack", packed)
        for n in stream_readers[value]:
            _retarget(n, value, packed)
        if value is not plan.start and value in outputs:  # its padded queries read zeros: 0 there, as elsewhere
            unpacked = points.unpack(packed, _width(value))
            record("unpack", unpacked)
            as_output(value, unpacked, "core")
    for core in plan.cores:
        if core.op == MS_ATTENTION:
            made = _ms_attention(core, points, emit)
            record("attention", made.outputs[0], [(core.name, "Attention")])
    # values read off the stream (attention inputs, the pooler, outputs) are unpacked once each
    in_core = IdentitySet(n for c in plan.cores for n in c.nodes)
    kept = IdentitySet([plan.start, *(c.output for c in unfused_cores)])
    for value in list(plan.packed):
        if value in kept:
            continue
        outside = [n for n in off_stream.get(value, ()) if n.inputs]
        shapes = [n for n in outside if n.op == "Shape" and not n.attrs.get("start") and n.attrs.get("end") is None]
        for n in shapes:
            take_over(n.outputs[0], points.shape_of(value))
            n.inputs.clear()
            n.outputs.clear()
        outside = [n for n in outside if n.op != "Shape" or n.inputs]
        attending = [n for n in outside if n in in_core]
        others = [n for n in outside if n not in in_core]
        if attending:
            unpacked = points.unpack(value, _width(value), zeros=False)
            record("unpack", unpacked)
            for n in attending:
                _retarget(n, value, unpacked)
        if not others and value not in outputs:
            continue
        unpacked = points.unpack(value, _width(value))
        record("unpack", unpacked)
        for n in others:
            _retarget(n, value, unpacked)
        if value in outputs:
            as_output(value, unpacked, "packed")
    for value in plan.packed:
        if value not in kept:
            value.shape = None  # [T, ·] now: no stale [B, S, ·] shape in the written model
    for name in plan.derived:
        result.outputs[name] = "derived"
    toposort(cleanup(graph))
    return result


def run(graph: gs.Graph, state: RunState, attention: Fusion, rotary: Fusion | None = None) -> PackResult:
    """Pack the graph's token stream, or leave it as it is and say why (a miss)."""
    found = plan(graph, state, attention, rotary)
    if isinstance(found, Miss):
        return PackResult(misses=[found])
    return apply(graph, found, state, FORMS.get(state.target, Forms()))
