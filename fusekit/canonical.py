"""Placement clean-ups of quantized graphs that a target's compiler needs, outside any fusion.

``share_quantization``: a value quantized by one QuantizeLinear→DequantizeLinear pair
but also read directly, in float, by other nodes (a QAT export's LayerNorm output:
the next Linear's input quantizer and the residual Add) makes OpenVINO keep the pair
as a standalone FakeQuantize layer, because the producer cannot hand one output to
both. Reading the pair's output everywhere — one shared Q→DQ per tensor, as ONNX
Runtime's quantizer places them — lets OpenVINO fold it into the producer. The float
readers then see the value rounded to the pair's step (half a step at most), which
the INT8 verification measures.
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from .graph import const_value, is_graph_output


def _grid(node: gs.Node) -> tuple | None:
    """A Q or DQ node's (scale, zero point) as bytes, when constant."""
    values = [const_value(t) for t in node.inputs[1:3]]
    if any(v is None for v in values):
        return None
    return tuple(v.tobytes() for v in values) + (node.attrs.get("axis", 1),)


def share_quantization(graph: gs.Graph) -> list[str]:
    """Point float readers of a value quantized on one grid at its DequantizeLinear; the values changed."""
    changed = []
    for x in [t for t in graph.tensors().values() if isinstance(t, gs.Variable)]:
        quantizers = [n for n in x.outputs if n.op == "QuantizeLinear"]
        readers = [n for n in x.outputs if n.op != "QuantizeLinear"]
        if not quantizers or not readers or is_graph_output(graph, x) or const_value(x) is not None:
            continue
        q = quantizers[0]
        dequantizers = [n for n in q.outputs[0].outputs if n.op == "DequantizeLinear"]
        grids = {_grid(n) for n in quantizers + dequantizers}
        if not dequantizers or len(grids) != 1 or None in grids:
            continue  # pairs on different grids, or a computed scale: not one FakeQuantize
        shared = dequantizers[0].outputs[0]
        for reader in readers:
            for i, t in enumerate(list(reader.inputs)):
                if t is x:
                    reader.inputs[i] = shared
        if readers:
            changed.append(x.name)
    return changed
