"""What an attention mask subgraph computes, found by running it.

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
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort

from .graph import producer
from .state import IdentityMap, IdentitySet

PROBE_SHAPES = [(2, 6), (3, 9), (1, 5)]


@dataclass(frozen=True)
class KeyPaddingMask:
    input: gs.Tensor  # the model's 2-D mask input, (batch, sequence)
    fill: float  # the value the mask adds at padded keys


def _ancestry(graph: gs.Graph, value: gs.Tensor) -> tuple[list[gs.Node], list[gs.Tensor]] | str:
    """The nodes computing ``value`` and the model inputs they read."""
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
                return f"the mask depends on '{t.name}', which is neither computed nor a model input"
            inputs.add(t)
            continue
        if node.op in ("If", "Loop", "Scan") or node.domain:
            return f"the mask is computed through {node.op} '{node.name}', which fusekit does not evaluate"
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
