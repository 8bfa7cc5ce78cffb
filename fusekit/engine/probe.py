"""What a subgraph computes, found by running it: an attention mask, a position term.

Exporters build the additive attention mask from the model's 0/1 mask input through
long, version-specific chains (transformers 5 alone vmaps a padding function into
Range/Flatten/Gather/And/Expand/Where). Rather than pattern-match every chain,
fusekit extracts the subgraph that computes the mask — it depends only on model
inputs, never on weights — and evaluates it on probe masks: right and left padding,
holes, all ones, several batch sizes and lengths. The subgraph is accepted as a key
padding mask only when, on every probe, it equals

    M[b, 0, q, k] = 0 where mask[b, k] != 0, and one constant fill value elsewhere

(broadcast over q), which is exactly what a fused attention's 2-D mask input means.
Any dependence on the query position (a causal mask), on other inputs' values, or
on the padding side shows up as a mismatch and the attention is left unfused.

An embedding sum's position term is read the same way (``position_rows``): whatever
chain computes it from the token ids (a position-id buffer sliced to the sequence
length, a Range, TF's Slice of the table then Expand), it is accepted as rows 0..S-1
of a constant table only when it equals exactly those rows on probe ids of several
shapes and values. The fused op then needs no position ids at all.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort

from .graph import const_value, producer
from .state import IdentityMap, IdentitySet

PROBE_SHAPES = [(2, 6), (3, 9), (1, 5)]


@dataclass(frozen=True)
class KeyPaddingMask:
    input: gs.Tensor  # the model's 2-D mask input, (batch, sequence)
    fill: float  # the value the mask adds at padded keys


def _ancestry(graph: gs.Graph, value: gs.Tensor, what: str = "the mask") -> tuple[list[gs.Node], list[gs.Tensor]] | str:
    """The nodes computing ``value`` and the model inputs they read (``what`` names the value in reasons)."""
    graph_inputs = IdentitySet(graph.inputs)
    nodes, inputs, seen, stack = IdentitySet(), IdentitySet(), IdentitySet(), [value]
    while stack:
        t = stack.pop()
        if t in seen or isinstance(t, gs.Constant) or not t.name:
            continue
        seen.add(t)
        node = producer(t)
        if node is None:
            if t not in graph_inputs:
                return f"{what} depends on '{t.name}', which is neither computed nor a model input"
            inputs.add(t)
            continue
        if node.op in ("If", "Loop", "Scan") or node.domain:
            return f"{what} is computed through {node.op} '{node.name}', which fusekit does not evaluate"
        nodes.add(node)
        stack.extend(node.inputs)
    order = IdentityMap((n, i) for i, n in enumerate(graph.nodes))
    return sorted(nodes, key=lambda n: order.get(n, 0)), list(inputs)


def _session(graph: gs.Graph, nodes, inputs, value) -> ort.InferenceSession:
    sub = gs.Graph(nodes=nodes, inputs=inputs, outputs=[value], opset=graph.opset)
    model = gs.export_onnx(sub, do_type_check=False)
    model.ir_version = onnx.helper.find_min_ir_version_for(list(model.opset_import))
    for o in model.graph.output:  # the mask's type may be unknown to shape inference
        o.type.tensor_type.elem_type = o.type.tensor_type.elem_type or onnx.TensorProto.FLOAT
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


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


def key_padding_mask(graph: gs.Graph, value: gs.Tensor, cache: dict) -> KeyPaddingMask | str:
    """Read ``value`` (an additive attention mask) as a key padding mask, or say why not."""
    if value.name in cache:
        return cache[value.name]
    cache[value.name] = result = _key_padding_mask(graph, value)
    return result


def _key_padding_mask(graph: gs.Graph, value: gs.Tensor) -> KeyPaddingMask | str:
    found = _ancestry(graph, value)
    if isinstance(found, str):
        return found
    nodes, inputs = found
    candidates = [t for t in inputs if t.shape is not None and len(t.shape) == 2]
    candidates.sort(key=lambda t: "mask" not in t.name.lower())
    if not candidates:
        return "the mask does not come from a 2-D model input"
    if any(t.shape is None or len(t.shape) != 2 for t in inputs):
        return "the mask also reads a model input that is not (batch, sequence)"
    try:
        session = _session(graph, nodes, inputs, value)
    except Exception as e:  # a subgraph ORT refuses is one fusekit cannot vouch for
        return f"the mask subgraph cannot be evaluated ({str(e).splitlines()[0][:120]})"
    rng = np.random.default_rng(0)
    reason = None
    for mask_input in candidates:
        fill, reason = _probe(session, inputs, mask_input, rng)
        if reason is None:
            return KeyPaddingMask(mask_input, fill)
    return reason


def _probe(session, inputs, mask_input, rng) -> tuple[float | None, str | None]:
    fills = set()
    for batch, seq in PROBE_SHAPES:
        for mask in _probe_masks(rng, batch, seq):
            feeds = {}
            for t in inputs:
                dtype = np.dtype(t.dtype) if t.dtype is not None else np.int64
                feeds[t.name] = (mask if t is mask_input else np.zeros((batch, seq), np.int64)).astype(dtype)
            try:
                (m,) = session.run(None, feeds)
            except Exception as e:
                return None, f"the mask subgraph fails on a probe ({str(e).splitlines()[0][:120]})"
            if m.ndim != 4 or m.shape[0] not in (1, batch) or m.shape[1] != 1 or m.shape[2] not in (1, seq) \
                    or m.shape[3] != seq or (m.shape[0] == 1 and batch > 1):
                return None, f"the mask has shape {list(m.shape)} for a {batch}×{seq} input, not (batch, 1, 1|seq, seq)"
            keep = np.broadcast_to(mask[:, None, None, :] != 0, (batch, 1, m.shape[2], seq))
            m = np.broadcast_to(m, keep.shape)
            if np.any(m[keep] != 0):
                return None, f"the mask is not 0 at unpadded keys of input '{mask_input.name}'"
            fills.update(np.unique(m[~keep]).tolist())
            if len(fills) > 1:
                return None, f"the mask's padded keys take several values ({sorted(fills)[:3]}), not one fill value"
    if not fills:
        return None, "the probes left no padded key"
    (fill,) = fills
    if not fill <= -1e4:
        return None, f"the mask's fill value {fill} is not a large negative number"
    return float(fill), None


def position_rows(graph: gs.Graph, value: gs.Tensor, ids: gs.Tensor, vocabulary: int, width: int,
                  cache: dict) -> gs.Tensor | str:
    """The constant table whose rows 0..S-1 ``value`` is, broadcast over the batch, S being
    the sequence length of the token ids ``ids``; or why that is not proven."""
    key = (value.name, ids.name)
    if key not in cache:
        cache[key] = _position_rows(graph, value, ids, vocabulary, width)
    return cache[key]


def _position_rows(graph, value, ids, vocabulary, width) -> gs.Tensor | str:
    found = _ancestry(graph, value, "the position term")
    if isinstance(found, str):
        return found
    nodes, inputs = found
    if not nodes:
        return f"the position term '{value.name}' is a model input"
    if any(t.dtype is None or not np.issubdtype(np.dtype(t.dtype), np.integer) or t.shape is None
           or len(t.shape) != 2 for t in inputs):
        return "the position term reads a model input that is not 2-D integer ids"
    tables = [n.inputs[0] for n in nodes if n.op in ("Gather", "Slice") and n.inputs]
    tables = [t for t in tables if (v := const_value(t)) is not None and v.ndim == 2 and v.shape[1] == width
              and np.issubdtype(v.dtype, np.floating)]
    if not tables:
        return f"the position term reads no constant table of width {width}"
    try:
        session = _session(graph, nodes, inputs, value)
    except Exception as e:  # a subgraph ORT refuses is one fusekit cannot vouch for
        return f"the position term cannot be evaluated ({str(e).splitlines()[0][:120]})"
    rows = min(const_value(t).shape[0] for t in tables)
    sizes = _sizes(ids, rows)
    if len(sizes) < 2 and not all(isinstance(d, (int, np.integer)) and d > 0 for d in ids.shape):
        return f"the position table has {rows} rows, too few to prove positions on probes of several lengths"
    rng = np.random.default_rng(0)
    outputs = []
    for batch, seq in sizes:
        for draw in ("random", "zeros", "ones"):
            feeds = {}
            for t in inputs:
                high = vocabulary if t is ids else 2
                data = {"random": rng.integers(0, high, (batch, seq)), "zeros": np.zeros((batch, seq)),
                        "ones": np.ones((batch, seq))}[draw]
                feeds[t.name] = data.astype(np.dtype(t.dtype))
            try:
                (out,) = session.run(None, feeds)
            except Exception as e:
                return f"the position term fails on a probe ({str(e).splitlines()[0][:120]})"
            outputs.append((batch, seq, out))
    for table in tables:
        rows_of = const_value(table)
        if all(_is_rows(out, rows_of, batch, seq) for batch, seq, out in outputs):
            return table
    return "the position term is not rows 0..S-1 of a position table on the probes (positions that depend on the ids or start elsewhere)"


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
