"""`fusekit inspect MODEL`: what a model is.

Opsets, inputs and outputs, the op histogram, the parameters, the exporter it most
likely came from, the fused ops it already contains, and its architecture.

The architecture is read from the graph itself, so it comes out the same for an
unfused export and for a fused model: fusekit fuses a copy in memory (nothing
verified, nothing written), then reads the heads off the fused attention's
attribute, the hidden size off the LayerNorm weights inside the layers, the
intermediate size off the weight of the MatMul feeding the activation, the
activation off which GELU form fused, ε off the LayerNorms, the vocabulary and
position table sizes off the embedding lookup, and the layer count from
``fusekit.reports.layers``.

The exporter is told by its fingerprints: the producer name, TorchScript's
module-path node names (``/encoder/layer.0/attention/self/MatMul``) and ``onnx::``
values, dynamo's ``node_*``/``val_*`` names and ``pkg.torch.*``/``namespace``
metadata, tf2onnx's producer and ``:0`` value names. Tools that rewrote the graph
afterwards (fusekit, ONNX Runtime's transformers optimizer, the onnxscript
rewriter) are listed apart.

JSON (``--json``), schema ``fusekit.inspect/1``::

    {"schema": "fusekit.inspect/1", "model": str, "file_bytes": int | null,
     "ir_version": int, "opsets": {domain: version},
     "producer": {"name": str, "version": str},
     "exporter": {"name": str, "evidence": [str]}, "rewritten_by": [{"name": str, "evidence": str}],
     "inputs": [{"name": str, "dtype": str, "shape": [int | str]}], "outputs": [same],
     "nodes": int, "ops": {op: count},
     "parameters": {"count": int, "bytes": int, "tensors": int},
     "architecture": {"kind": str | null, "layers": int, "layers_from": str, "hidden": int | null,
                      "heads": int | null, "head_size": int | null, "intermediate": int | null,
                      "activation": "gelu" | "gelu_tanh" | "quick_gelu" | "relu" | null,
                      "layer_norm_epsilon": float | null, "epsilons": [float],
                      "embedding_size": int | null, "vocab_size": int | null,
                      "max_positions": int | null, "type_vocab_size": int | null},
     "fused_ops": {op: count},          # fused ops already in the model
     "fusible": {fusion: count},        # what `fusekit optimize` would fuse now
     "near_misses": int,
     "layers": [{"layer": int | null, "nodes": int, "ops": {op: count}, "fusible": {fusion: count}}],
     "notes": [str],
     "warnings": [str]}                 # what the model computes wrongly on some inputs

Op names carry their domain when it is not the default (``com.microsoft.Attention``).
Sizes the graph does not state are null.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from ..compat import input_warnings
from .dataflow import Dataflow, attribute, load_to_read, op_histogram, parameter_count, readable_size, stored_bytes
from ..errors import FusekitError
from ..inputs import PASS_THROUGH, input_role
from .layers import assign
from ..provenance import PROVENANCE_KEY, TARGET_KEY
from ..report import Report
from ..engine.rewrite import MS, Fused

SCHEMA = "fusekit.inspect/1"
# Ops that are themselves fusions of elementary ones.
FUSED_OPS = {"LayerNormalization", "Gelu", "Attention", "RMSNormalization", "SkipLayerNormalization",
             "EmbedLayerNormalization", "BiasGelu", "FastGelu", "QuickGelu", "MultiHeadAttention",
             "SkipSimplifiedLayerNormalization", "SimplifiedLayerNormalization", "BiasSoftmax", "FusedMatMul",
             "GroupQueryAttention", "RotaryEmbedding"}
LAYER_NORMS = {"LayerNormalization": 1, "SkipLayerNormalization": 2}  # op -> index of γ
# ε when the attribute is absent: ONNX's LayerNormalization, ONNX Runtime's contrib ops.
EPSILON_DEFAULTS = {"LayerNormalization": 1e-5, "SkipLayerNormalization": 1e-12, "EmbedLayerNormalization": 1e-12}
ACTIVATIONS = {"BiasGelu": "gelu", "FastGelu": "gelu_tanh", "QuickGelu": "quick_gelu", "Relu": "relu", "Gelu": "gelu"}


@dataclass
class Architecture:
    kind: str | None = None
    layers: int = 0
    layers_from: str = "none"
    hidden: int | None = None
    heads: int | None = None
    head_size: int | None = None
    intermediate: int | None = None
    activation: str | None = None
    layer_norm_epsilon: float | None = None
    epsilons: list[float] = field(default_factory=list)
    embedding_size: int | None = None
    vocab_size: int | None = None
    max_positions: int | None = None
    type_vocab_size: int | None = None


@dataclass
class Inspection:
    model: str
    file_bytes: int | None
    ir_version: int
    opsets: dict[str, int]
    producer: dict[str, str]
    exporter: dict
    rewritten_by: list[dict]
    inputs: list[dict]
    outputs: list[dict]
    nodes: int
    ops: dict[str, int]
    parameters: dict[str, int]
    architecture: Architecture
    fused_ops: dict[str, int]
    fusible: dict[str, int]
    near_misses: int
    layers: list[dict]
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # for the HTML pictures, not the JSON: the graphs and one fused record of each kind
    original_flow: Dataflow | None = field(default=None, repr=False)
    fused_flow: Dataflow | None = field(default=None, repr=False)
    examples: list[Fused] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        hidden = {"original_flow", "fused_flow", "examples"}
        return {"schema": SCHEMA, **{f.name: getattr(self, f.name) for f in fields(self) if f.name not in hidden},
                "architecture": asdict(self.architecture)}

    def summary(self) -> str:
        a = self.architecture
        size = f" ({readable_size(self.file_bytes)})" if self.file_bytes else ""
        lines = [f"{self.model}{size}",
                 f"exporter: {self.exporter['name']} — {'; '.join(self.exporter['evidence'])}"]
        lines += [f"rewritten by: {r['name']} ({r['evidence']})" for r in self.rewritten_by]
        opsets = ", ".join(f"{d} {v}" for d, v in self.opsets.items())
        lines.append(f"opsets: {opsets}; IR version {self.ir_version}")
        lines.append("inputs:  " + "; ".join(_value(v) for v in self.inputs))
        lines.append("outputs: " + "; ".join(_value(v) for v in self.outputs))
        p = self.parameters
        lines.append(f"nodes: {self.nodes}; parameters: {p['count']:,} "
                     f"({readable_size(p['bytes'])} in {p['tensors']} tensors)")
        lines.append(f"architecture: {a.kind or 'not recognised (no attention found)'}")
        if a.layers:
            heads = f"{a.heads} × {a.head_size}" if a.heads and a.head_size else _known(a.heads)
            eps = _known(a.layer_norm_epsilon) + (f" (also {', '.join(map(str, a.epsilons[1:]))})"
                                                  if len(a.epsilons) > 1 else "")
            lines.append(f"  layers {a.layers} (from {'node names' if a.layers_from == 'names' else 'the data flow'}), "
                         f"hidden {_known(a.hidden)}, heads {heads}, intermediate {_known(a.intermediate)}, "
                         f"activation {_known(a.activation)}, LayerNorm ε {eps}")
        if a.vocab_size:
            lines.append(f"  embeddings: vocabulary {a.vocab_size}, width {_known(a.embedding_size)}, "
                         f"positions {_known(a.max_positions)}, token types {_known(a.type_vocab_size)}")
        lines.append("fused ops present: " + (_counts(self.fused_ops) or "none"))
        lines.append("fusekit would fuse: " + (_counts(self.fusible) or "nothing")
                     + f"; near misses {self.near_misses}" + (" (see fusekit explain)" if self.near_misses else ""))
        lines.append("ops: " + _counts(self.ops))
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _known(v) -> str:
    return "?" if v is None else str(v)


def _counts(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def _value(v: dict) -> str:
    return f"{v['name']} {v['dtype']} [{', '.join(map(str, v['shape']))}]"


def inspect_model(model_or_path, *, optimize: Callable[..., tuple[onnx.ModelProto, Report]]) -> Inspection:
    """Describe a model (a path or a ModelProto), what ``optimize`` would fuse in it included (the
    pipeline's, which ``fusekit.inspect_model`` passes in: a report never imports the pipeline);
    raises FusekitError on bad input."""
    model, notes = load_to_read(model_or_path)
    path = None if isinstance(model_or_path, onnx.ModelProto) else Path(model_or_path)
    flow = Dataflow(model.graph)
    records = []
    try:
        fused, report = optimize(model, target="ort", verify=False)
        fusible, near, records = dict(sorted(report.counts.items())), len(report.misses), report.fused
    except FusekitError as e:  # the architecture is then read off the graph as it is
        fused, fusible, near = model, {}, 0
        notes.append(f"could not fuse a copy to read the architecture: {e}")
    fused_flow = Dataflow(fused.graph)
    count, size, tensors = parameter_count(model.graph)
    ops = op_histogram(model.graph)
    return Inspection(
        model=str(path) if path else "<model>",
        file_bytes=stored_bytes(path, model) if path else None,
        ir_version=model.ir_version,
        opsets={o.domain or "ai.onnx": o.version for o in model.opset_import},
        producer={"name": model.producer_name, "version": model.producer_version},
        exporter=exporter(model, flow),
        rewritten_by=rewritten_by(model, flow),
        inputs=[_describe(v) for v in model.graph.input if v.name not in flow.initializers],
        outputs=[_describe(v) for v in model.graph.output],
        nodes=len(flow.nodes), ops=ops,
        parameters={"count": count, "bytes": size, "tensors": tensors},
        architecture=architecture(fused_flow, flow),
        fused_ops={op: n for op, n in ops.items() if op.startswith(MS + ".") or op in FUSED_OPS},
        fusible=fusible, near_misses=near, layers=_per_layer(flow, fused_flow, records), notes=notes,
        warnings=input_warnings(model),
        original_flow=flow, fused_flow=fused_flow,
        examples=list({(r.fusion, r.variant, tuple(r.steps)): r for r in reversed(records)}.values())[::-1])


def _per_layer(original: Dataflow, fused: Dataflow, records: list[Fused]) -> list[dict]:
    """Per encoder layer: the original nodes and ops, and what fusekit would fuse there."""
    layers = assign(original)
    if not layers.count:
        return []
    where = assign(fused).by_name()
    rows: dict = {}
    for i, layer in enumerate(layers.of):
        row = rows.setdefault(layer, {"layer": layer, "nodes": 0, "ops": Counter(), "fusible": Counter()})
        row["nodes"] += 1
        row["ops"][original.op(i)] += 1
    for r in records:
        layer = where.get(r.node)
        rows.setdefault(layer, {"layer": layer, "nodes": 0, "ops": Counter(), "fusible": Counter()})
        rows[layer]["fusible"].update(r.steps)
    ordered = sorted(rows.values(), key=lambda r: (r["layer"] is None, r["layer"] or 0))
    return [{**r, "ops": dict(r["ops"].most_common()), "fusible": dict(sorted(r["fusible"].items()))} for r in ordered]


def _describe(v: onnx.ValueInfoProto) -> dict:
    t = v.type.tensor_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name if t.elem_type else "?"
    shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
    return {"name": v.name, "dtype": dtype, "shape": shape}


# --------------------------------------------------------------------------- architecture

def architecture(fused: Dataflow, original: Dataflow) -> Architecture:
    """The encoder's dimensions, read from a (fused) graph; ``original`` for the token-id input."""
    layers = assign(fused)
    a = Architecture(layers=layers.count, layers_from=layers.method)
    inside = [i for i in range(len(fused.nodes)) if layers.of[i] is not None]
    heads = [_heads(fused.nodes[i]) for i in inside if fused.nodes[i].op_type in ("Attention", "MultiHeadAttention")]
    a.heads = _most_common(h for h in heads if h)
    a.hidden = _most_common(_gamma_width(fused, fused.nodes[i]) for i in inside)
    if a.hidden and a.heads:
        a.head_size = a.hidden // a.heads
    activations = [i for i in inside if _activation(fused.nodes[i])]
    a.activation = _most_common(_activation(fused.nodes[i]) for i in activations)
    a.intermediate = _most_common(_ffn_width(fused, i) for i in activations)
    epsilons = Counter(_epsilon(n) for n in fused.nodes if n.op_type in EPSILON_DEFAULTS)
    a.epsilons = [e for e, _ in epsilons.most_common()]
    a.layer_norm_epsilon = a.epsilons[0] if a.epsilons else None
    _embeddings(fused, original, a)
    has_ids = any(v["dtype"].startswith("int") and len(v["shape"]) == 2
                  for v in (_describe(i) for i in original.graph.input if i.name not in original.initializers))
    if layers.count:
        a.kind = "BERT-like encoder" if has_ids and a.epsilons else "attention model (not BERT-like)"
    return a


def _most_common(values):
    found = Counter(v for v in values if v is not None)
    return found.most_common(1)[0][0] if found else None


def _heads(node: onnx.NodeProto) -> int | None:
    # com.microsoft Attention and MultiHeadAttention say num_heads; ONNX Attention (23) q_num_heads
    return attribute(node, "num_heads") or attribute(node, "q_num_heads")


def _gamma_width(flow: Dataflow, node: onnx.NodeProto) -> int | None:
    """The hidden size a LayerNorm normalizes: the length of its γ."""
    k = LAYER_NORMS.get(node.op_type)
    shape = flow.shape_of(node.input[k]) if k is not None and len(node.input) > k else None
    return shape[0] if shape and len(shape) == 1 else None


def _activation(node: onnx.NodeProto) -> str | None:
    if node.op_type == "Gelu" and attribute(node, "approximate", b"none") in (b"tanh", "tanh"):
        return "gelu_tanh"
    return ACTIVATIONS.get(node.op_type)


def _ffn_width(flow: Dataflow, i: int) -> int | None:
    """The intermediate size: the width of the weight of the MatMul feeding an activation (through its bias Add)."""
    value = flow.nodes[i].input[0]
    for _ in range(2):
        p = flow.producer.get(value)
        if p is None:
            return None
        node = flow.nodes[p]
        if node.op_type in ("MatMul", "Gemm"):
            shape = flow.shape_of(node.input[1])
            if not shape or len(shape) != 2:
                return None
            return shape[0] if node.op_type == "Gemm" and attribute(node, "transB", 0) else shape[1]
        if node.op_type != "Add":
            return None
        value = next((t for t in node.input if not flow.is_constant(t)), None)
    return None


def _epsilon(node: onnx.NodeProto) -> float:
    eps = attribute(node, "epsilon", EPSILON_DEFAULTS[node.op_type])
    return float(f"{eps:.6g}")  # 1e-12 stored as float32 reads 9.99999996e-13


def _embeddings(fused: Dataflow, original: Dataflow, a: Architecture):
    """Vocabulary, positions and token types off the embedding tables (fused or not)."""
    found = _tables(fused) or _tables(original)
    if found:
        (a.vocab_size, a.embedding_size), a.max_positions, a.type_vocab_size = found


def _tables(flow: Dataflow) -> tuple[list[int], int | None, int | None] | None:
    """The word table's shape and the position and token-type tables' row counts.

    Each lookup is known by the input that indexes it, not by where it sits (TF exports
    look up the token types first): the word table is the largest one the token ids
    index, token type and position ids are inputs so named. Tables indexed by values the
    graph computes (a Range, a slice of a buffer) go by size: a position table has more
    rows than a token-type table (RoBERTa's single type row is the smaller one either way).
    A fused EmbedLayerNormalization's tables are told apart by size alone.
    """
    for node in flow.nodes:
        if node.op_type == "EmbedLayerNormalization":
            shapes = [flow.shape_of(node.input[k]) if len(node.input) > k and node.input[k] else None
                      for k in (2, 3, 4)]
            return shapes[0], *_by_size([s[0] for s in shapes[1:] if s])
    lookups = [n for n in flow.nodes if n.op_type == "Gather" and flow.is_constant(n.input[0])
               and len(flow.shape_of(n.input[0]) or []) == 2]
    role = {n.input[0]: _index_role(flow, n.input[1]) for n in lookups}
    words = [t for t, r in role.items() if r == "ids"]  # indexed by the token ids themselves
    if not words:
        return None
    word = max(words, key=lambda t: flow.shape_of(t)[0])
    width = flow.shape_of(word)[1]
    rows = {r: flow.shape_of(t)[0] for t, r in role.items() if r in ("position", "token_type")}
    rest = [flow.shape_of(t)[0] for t, r in role.items() if t != word and r not in rows
            and flow.shape_of(t)[1] == width]
    rows.update(zip([r for r in ("position", "token_type") if r not in rows], sorted(rest, reverse=True)))
    return flow.shape_of(word), rows.get("position"), rows.get("token_type")


def _by_size(rows: list[int]) -> tuple[int | None, int | None]:
    """Positions and token types from row counts alone: the larger table holds the positions."""
    rows = sorted(rows, reverse=True)
    return (rows[0] if rows else None), (rows[1] if len(rows) > 1 else None)


def _index_role(flow: Dataflow, value: str) -> str | None:
    """What a lookup's indices are, by the graph input they come from (through casts and
    reshapes); None for indices computed in the graph (a Range, a slice of a buffer)."""
    while value not in flow.inputs:
        node = flow.producer_node(value)
        if node is None or node.op_type not in PASS_THROUGH:
            return None
        value = node.input[0]
    vi = next(v for v in flow.graph.input if v.name == value)
    elem = vi.type.tensor_type.elem_type
    return input_role(value, onnx.helper.tensor_dtype_to_np_dtype(elem) if elem else np.dtype(np.float32))


# --------------------------------------------------------------------------- exporter

def exporter(model: onnx.ModelProto, flow: Dataflow) -> dict:
    """The tool that most likely wrote the graph, with the evidence."""
    producer = f"{model.producer_name} {model.producer_version}".strip()
    evidence = [f"producer '{producer}'"] if producer else ["no producer recorded"]
    names = [n.name for n in flow.nodes]
    values = [t for n in flow.nodes for t in n.output]
    module_paths = [n for n in names if n.startswith("/")]
    dynamo_names = [n for n in names if n.startswith("node_")]
    torch_meta = any(p.key.startswith("pkg.torch") for v in [*model.graph.input, *model.graph.initializer]
                     for p in v.metadata_props) \
        or any(p.key == "namespace" for n in flow.nodes for p in n.metadata_props)
    tf_values = [v for v in values if v.endswith(":0")]
    if model.producer_name == "tf2onnx" or len(tf_values) > len(values) / 2:
        name = "tf2onnx"
        if tf_values:
            evidence.append(f"TensorFlow value names like '{tf_values[0]}'")
    elif model.producer_name == "keras2onnx":
        name = "keras2onnx"
    elif torch_meta or len(dynamo_names) > len(names) / 2:
        name = "torch.onnx (dynamo)"
        if dynamo_names:
            evidence.append(f"{len(dynamo_names)} of {len(names)} node names like '{dynamo_names[0]}'")
        if torch_meta:
            evidence.append("pkg.torch / namespace metadata")
    elif module_paths or any(v.startswith("onnx::") for v in values):
        name = "torch.onnx (TorchScript)"
        example = next((n for n in module_paths if n.count("/") > 2), module_paths[0] if module_paths else "")
        if module_paths:
            evidence.append(f"{len(module_paths)} of {len(names)} node names are module paths like '{example}'")
        if any(v.startswith("onnx::") for v in values):
            evidence.append("values named 'onnx::…'")
    elif model.producer_name == "pytorch":
        name = "torch.onnx"
    else:
        name = model.producer_name or "unknown"
    return {"name": name, "evidence": evidence}


def rewritten_by(model: onnx.ModelProto, flow: Dataflow) -> list[dict]:
    found = []
    props = {p.key: p.value for p in model.metadata_props}
    if PROVENANCE_KEY in props:
        target = props.get(TARGET_KEY, "?")
        found.append({"name": "fusekit", "evidence": f"{PROVENANCE_KEY} metadata, target {target}"})
    if model.producer_name == "onnxruntime.transformers":
        found.append({"name": "onnxruntime.transformers optimizer",
                      "evidence": f"producer, new nodes like {_ort_example(flow)}"})
    rules = Counter(p.value for n in flow.nodes for p in n.metadata_props
                    if p.key == "pkg.onnxscript.rewriter.rule_name")
    if rules:
        found.append({"name": "onnxscript rewriter", "evidence": "rules " + ", ".join(sorted(rules))})
    return found


def _ort_example(flow: Dataflow) -> str:
    pattern = re.compile(r"^(Attention|SkipLayerNorm|EmbedLayerNormalization|Gelu|FastGelu|LayerNorm)\w*_\d+$")
    found = [n for n in flow.names if pattern.match(n)]
    return ", ".join(f"'{n}'" for n in found[:2]) or "none"


__all__ = ["SCHEMA", "Architecture", "Inspection", "architecture", "exporter", "inspect_model"]
