"""Which MatMul / Gemm of a quantized model will run in INT8, and why the others won't.

``analyze(model, target)`` reads the graph only (onnx + numpy, no runtime) and returns
one record per MatMul/Gemm: how each input is quantized (one of the ``FORMS`` table:
a QuantizeLinear→DequantizeLinear pair, a DequantizeLinear of stored integers, or
OpenVINO's ``FakeQuantize`` op, possibly through the Reshape/Transpose/Squeeze/Unsqueeze/
Flatten/Identity of ``MOVES``), whether the weight scale is a constant, whether the zero points suit the
kernels, whether the output is re-quantized — and a verdict for each backend:

- ``"ort"``: ONNX Runtime's CPU execution provider (QDQ selector/action transformer),
- ``"openvino"``: OpenVINO's CPU plugin (ONNX frontend → FakeQuantize, low-precision
  transformations (LPT), FullyConnected/MatMul kernels),

each ``"int8"``, ``"fp32"`` or ``"error"`` (the session fails), with reasons. The
record's overall ``verdict`` is ``"int8"`` only when every targeted backend runs the
node in INT8 (``target="ort"``, ``"openvino"``, or ``"both"``/``"onnx"`` for both).

The rules, one table per runtime with the runtime source each comes from, are in
``int8_rules``; what they rest on, in short:

- ONNX Runtime's CPU QDQ rules need a DequantizeLinear on both inputs, 8-bit; a
  QuantizeLinear that is the output's *only* consumer gives QLinearMatMul (a Q next to
  other consumers → FP32), no Q gives MatMulIntegerToFloat (still INT8), except where
  MatMulAddFusion first makes MatMul → Add a Gemm, which needs a Q after the Add. Int8
  activations take INT8 only on ARM unless rewritten to uint8 (``QDQS8ToU8Transformer``).
  Scale constness and weight zero points do not matter. A per-channel activation or a
  per-row weight fails at run time (``"error"``), or since 1.32 stays FP32 where a Q
  follows. The rules follow the installed release (``OrtRules.installed()``).
- OpenVINO's low-precision transformations need a FakeQuantize (a Q→DQ pair becomes one)
  on the activation, constant symmetric int8 weights quantized per tensor or per output
  channel with constant scales, and for two activations (Q·Kᵀ, P·V) zero points of 0.

The attention MatMuls end up inside OpenVINO's MHA "snippets" Subgraph layer; the LPT
rules predict its precision (i8 inputs for symmetric int8 Q/DQ, f32 for uint8
with zero point 128) on every model tried. Not modelled: graph-level compile failures
(the all-ops QDQ model's ``MultiplyPartialTransformation`` error, see
``tests/test_int8_models.py``), GPU/NPU plugins and execution providers other than CPU.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import onnx
from onnx import numpy_helper

from .dataflow import Dataflow, attribute, proto_constant
from .int8_rules import (OPERATOR_FORMS, R_NO_ACT, R_NO_SECOND, R_NO_WEIGHT, TESTED_ORT, OrtRules, Site, Verdict,
                         ort_verdict, ov_verdict)

MATMULS = {"MatMul", "Gemm"}
BACKENDS = ("ort", "openvino")
LABEL = {"ort": "ONNX Runtime", "openvino": "OpenVINO"}
TARGETS = {"ort": ("ort",), "openvino": ("openvino",), "both": BACKENDS, "onnx": BACKENDS, None: BACKENDS}
LAYER_IN_NAME = re.compile(r"(?:^|[/.:_ ])(?:layers?|blocks?)[._](\d+)(?=$|[/.:_ ])")
NP_BITS = {np.dtype(t): np.dtype(t).itemsize * 8 for t in (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32)}

@dataclass
class Quant:
    """How one MatMul input is quantized."""

    kind: str                 # "qdq" (Q→DQ pair), "dq" (DQ of stored integers), "fakequantize"
    node: str                 # the DequantizeLinear / FakeQuantize node
    dtype: str                # "uint8", "int8", "int16", … (for FakeQuantize: what its range maps to)
    bits: int
    scale_constant: bool
    scale_shape: list[int]
    per_channel: bool         # the scale has more than one element
    uniform: bool             # … and they are all equal (with equal zero points): per-tensor in effect
    axis: int | None          # the channel axis in the layout the MatMul reads (None: per-tensor or unknown)
    zero_point: float | None  # the zero point (the largest magnitude when per-channel); None if not constant
    symmetric: bool | None    # zero point is 0
    data_constant: bool       # the quantized data is a constant (a weight)
    via: list[str] = field(default_factory=list)  # data-movement ops between quantization and the MatMul


@dataclass
class MatMulRecord:
    node: str
    op_type: str
    layer: int | None
    role: str
    input_quantized: bool
    weight_quantized: bool
    weight_constant: bool
    weight_scale_constant: bool | None
    zero_point_ok: bool | None     # zero points as OpenVINO's INT8 MatMul needs them (weights: 0)
    output_requantized: bool       # the output's only consumer is a QuantizeLinear / FakeQuantize
    verdict: str                   # "int8" | "fp32" for the targeted backends
    reasons: list[str]
    backends: dict[str, Verdict]   # {"ort": Verdict, "openvino": Verdict}
    activation: Quant | None = None
    weight: Quant | None = None


class Int8Report:
    def __init__(self, records: list[MatMulRecord], target: str):
        self.records = records
        self.target = target

    def __iter__(self):
        return iter(self.records)

    def __len__(self):
        return len(self.records)

    def __getitem__(self, node_name: str) -> MatMulRecord:
        for r in self.records:
            if r.node == node_name:
                return r
        raise KeyError(node_name)

    def counts(self) -> dict[str, int]:
        out = {"total": len(self.records), "int8": sum(r.verdict == "int8" for r in self.records)}
        out["fp32"] = out["total"] - out["int8"]
        for b in BACKENDS:
            for v in ("int8", "fp32", "error"):
                out[f"{b}_{v}"] = sum(r.backends[b].verdict == v for r in self.records)
        return out

    def by_layer(self) -> dict[int | None, list[MatMulRecord]]:
        groups: dict[int | None, list[MatMulRecord]] = {}
        for r in self.records:
            groups.setdefault(r.layer, []).append(r)
        return groups

    def to_dict(self) -> dict:
        return {"target": self.target, "counts": self.counts(),
                "records": [asdict(r) for r in self.records]}

    def summary(self) -> str:
        targets = TARGETS.get(self.target, BACKENDS)
        c = self.counts()
        lines = [f"INT8 analysis for {' + '.join(LABEL[b] for b in targets)}: "
                 f"{c['int8']}/{c['total']} MatMul/Gemm in INT8"
                 + "".join(f"; {LABEL[b]} {c[f'{b}_int8']} int8, {c[f'{b}_fp32']} fp32"
                           + (f", {c[f'{b}_error']} error" if c[f'{b}_error'] else "") for b in targets)]
        width = max((len(_short(r.node)) for r in self.records), default=10)
        groups = self.by_layer()
        for layer in sorted(groups, key=lambda k: (k is None, k if k is not None else 0)):
            lines.append(f"layer {layer}" if layer is not None else "outside the layers")
            for r in groups[layer]:
                kernels = " · ".join(f"{LABEL[b]} {r.backends[b].kernel}" for b in targets)
                head = f"  {r.verdict:<4}  {_short(r.node):<{width}}  {r.role:<12}"
                if r.verdict == "int8":
                    lines.append(f"{head}  {kernels}")
                else:
                    lines.append(f"{head}  " + "; ".join(r.reasons))
        return "\n".join(lines)


def _short(name: str) -> str:
    return re.sub(r"^/?(encoder/)?(layer\.\d+/)?", "", name) or name


# --------------------------------------------------------------------------- graph facts

class Int8Graph(Dataflow):
    """The dataflow index with what the INT8 analysis asks of it: constant values and
    types (an initializer a graph input may override is not a constant), inferred shapes."""

    def __init__(self, model: onnx.ModelProto):
        super().__init__(model.graph)
        self.model = model
        self.graph_inputs = {i.name for i in model.graph.input}
        self.inits = {name: t for name, t in self.initializers.items() if name not in self.graph_inputs}
        self.overridable = {name for name in self.initializers if name in self.graph_inputs}
        self.by_name = {n.name: n for n in self.nodes if n.name}
        self.domains = {n.domain for n in self.nodes}
        self._folds: dict[str, bool] = {}
        self._shapes: dict[str, list] | None = None

    def consumers_of(self, value: str) -> list[onnx.NodeProto]:
        return [self.nodes[i] for i in self.consumers.get(value, ())]

    def node_named(self, name: str) -> onnx.NodeProto | None:
        return self.by_name.get(name)

    def value(self, name: str) -> np.ndarray | None:
        return proto_constant(name, self.inits, self.producer_node)

    def dtype(self, name: str) -> np.dtype | None:
        v = self.value(name)
        if v is not None:
            return v.dtype
        if name in self.overridable:
            return numpy_helper.to_array(self.initializers[name]).dtype
        for vi in list(self.model.graph.value_info) + list(self.model.graph.input) + list(self.model.graph.output):
            if vi.name == name and vi.type.tensor_type.elem_type:
                return onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        return None

    def folds_to_constant(self, name: str, depth: int = 0) -> bool:
        """An initializer (not overridable), a Constant, or computed only from those."""
        if name in self._folds:
            return self._folds[name]
        node = self.producer_node(name)
        if name in self.inits:
            result = True
        elif name in self.graph_inputs or node is None or depth > 64:
            result = False
        elif node.op_type == "Constant":
            result = True
        elif node.op_type.startswith("Random") or not [i for i in node.input if i]:
            result = False
        else:
            result = all(self.folds_to_constant(i, depth + 1) for i in node.input if i)
        self._folds[name] = result
        return result

    def shape(self, name: str) -> list | None:
        """Inferred shape (ints for static dims, strings/None for dynamic ones)."""
        if self._shapes is None:
            self._shapes = {}
            try:
                inferred = onnx.shape_inference.infer_shapes(self.model, strict_mode=False)
                infos = list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
            except Exception:  # noqa: BLE001 - custom domains etc.: no shapes
                infos = list(self.model.graph.value_info) + list(self.model.graph.input)
            for vi in infos:
                t = vi.type.tensor_type
                if t.HasField("shape"):
                    self._shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                             for d in t.shape.dim]
            for name_, t in self.inits.items():
                self._shapes[name_] = list(t.dims)
        return self._shapes.get(name)

    def rank(self, name: str) -> int | None:
        if name in self.inits:
            return len(self.inits[name].dims)
        s = self.shape(name)
        return None if s is None else len(s)



# --------------------------------------------------------------------------- quantization of an input

@dataclass(frozen=True)
class Form:
    """One way a quantizer writes a quantized tensor: a row of ``FORMS``.

    ``ops``: op types read upwards from the MatMul, each fed (input 0) by the next; the first
    holds the parameters the MatMul's input is dequantized with, the last reads the data.
    ``read``: what those parameters say, as a ``Quant``. ``stored``: the integer type where
    no zero point gives it.
    """

    kind: str  # Quant.kind
    ops: tuple[str, ...]
    read: Callable[[Int8Graph, Chain], Quant]
    stored: Callable[[Int8Graph, list[onnx.NodeProto]], np.dtype | None] = lambda g, ops: None


@dataclass
class Chain:
    """One quantized MatMul input as found: a form's ops and the data-movement ops after them."""

    form: Form
    ops: list[onnx.NodeProto]  # the form's ops, MatMul side first
    moves: list[onnx.NodeProto]  # the ops of MOVES between the form and the MatMul, MatMul side first

    @property
    def data(self) -> str:
        """The tensor that is quantized."""
        return self.ops[-1].input[0]

    @property
    def via(self) -> list[str]:
        return [m.op_type for m in self.moves]

    def parameters_constant(self, g: Int8Graph) -> bool:
        """Every op's quantization parameters (its inputs after the data) fold to constants."""
        return all(g.folds_to_constant(p) for op in self.ops for p in op.input[1:] if p)

    def axis(self, axis: int | None, rank: int | None) -> int | None:
        """Where channel axis ``axis`` of the quantized tensor (rank ``rank``) lands in what the MatMul reads."""
        if axis is None or rank is None:
            return None
        axis %= rank
        for move in reversed(self.moves):
            axis = MOVES[move.op_type](move, axis)
            if axis is None:
                return None
        return axis


def _transposed(node: onnx.NodeProto, axis: int) -> int | None:
    perm = attribute(node, "perm")
    return perm.index(axis) if perm is not None else None


# The data-movement ops (default domain) a quantized tensor may pass on its way to the MatMul, and where each
# puts a channel axis: None where the axis is not followed (a reshape may regroup the axes).
MOVES: dict[str, Callable[[onnx.NodeProto, int], int | None]] = {
    "Transpose": _transposed,
    "Identity": lambda node, axis: axis,
    "Reshape": lambda node, axis: None,
    "Squeeze": lambda node, axis: None,
    "Unsqueeze": lambda node, axis: None,
    "Flatten": lambda node, axis: None,
}


def _uniform(scale: np.ndarray | None, zp: np.ndarray | None) -> bool:
    if scale is None:
        return False
    s = np.asarray(scale).ravel()
    z = np.zeros(1) if zp is None else np.asarray(zp).ravel()
    return bool(np.all(s == s[0]) and np.all(z == z[0]))


def _linear(g: Int8Graph, c: Chain) -> Quant:
    """A scale and a zero point, as the DequantizeLinear nearest the MatMul applies them."""
    dq = c.ops[0]
    scale_name = dq.input[1]
    zp_name = dq.input[2] if len(dq.input) > 2 else ""
    scale = g.value(scale_name)
    zp = g.value(zp_name) if zp_name else None
    scale_constant = c.parameters_constant(g)
    dt = zp.dtype if zp is not None else g.dtype(zp_name) if zp_name else None
    if dt is None:
        dt = c.form.stored(g, c.ops)
    dt = np.dtype(dt) if dt is not None else np.dtype(np.uint8)
    scale_shape = list(np.shape(scale)) if scale is not None else (g.shape(scale_name) or [])
    n_scale = int(np.prod(scale_shape)) if scale_shape else 1
    per_channel = n_scale > 1
    uniform = per_channel and _uniform(scale, zp)
    axis = None
    if per_channel and not uniform:  # shapes (shape inference) only when needed
        rank = g.rank(c.data)
        axis = c.axis(attribute(dq, "axis", 1), rank if rank is not None else g.rank(dq.output[0]))
    zp_val = None if (zp_name and zp is None) else (0.0 if zp is None else float(np.abs(zp.astype(np.int64)).max()))
    return Quant(kind=c.form.kind, node=dq.name, dtype=dt.name, bits=NP_BITS.get(dt, dt.itemsize * 8),
                 scale_constant=scale_constant,
                 scale_shape=[int(d) if isinstance(d, (int, np.integer)) else -1 for d in scale_shape],
                 per_channel=per_channel, uniform=uniform, axis=axis, zero_point=zp_val,
                 symmetric=None if zp_val is None else zp_val == 0.0,
                 data_constant=g.folds_to_constant(c.data), via=c.via)


def _ranges(g: Int8Graph, c: Chain) -> Quant:
    """FakeQuantize's input and output ranges, as OpenVINO's LPT reads them (the output range gives the zero point)."""
    fq = c.ops[0]
    levels = int(attribute(fq, "levels", 256))
    vals = [g.value(n) for n in fq.input[1:5]]
    constant = c.parameters_constant(g)
    ol, oh = vals[2], vals[3]
    bits = int(np.ceil(np.log2(levels))) if levels > 1 else 0
    dtype, zp_val, symmetric, per_channel, uniform, axis, shape = "uint8", None, None, False, False, None, []
    if ol is not None and oh is not None:
        ol, oh = np.asarray(ol, np.float64), np.asarray(oh, np.float64)
        shape = list(np.broadcast_shapes(ol.shape, oh.shape))
        per_channel = int(np.prod(shape)) > 1 if shape else False
        step = (oh - ol) / max(levels - 1, 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            q0 = np.where(step > 0, -ol / np.where(step > 0, step, 1), 0.0)
        if np.all(ol >= 0):
            dtype, zp = "uint8", q0
        else:
            dtype, zp = "int8", q0 - levels // 2
            if not np.all(np.abs(zp) < 1e-3):
                dtype = "uint8"  # asymmetric: LPT maps it to u8 with a zero point (q0)
                zp = q0
        zp_val = float(np.abs(zp).max())
        symmetric = zp_val < 1e-3
        if symmetric:
            zp_val = 0.0
        uniform = per_channel and bool(np.all(ol == ol.ravel()[0]) and np.all(oh == oh.ravel()[0]))
        if per_channel and not uniform:
            src_rank = max(g.rank(c.data) or len(shape), len(shape))
            big = [i for i, d in enumerate(shape) if d > 1]
            if len(big) == 1:  # ranges broadcast from the right against the data
                axis = c.axis(big[0] + src_rank - len(shape), src_rank)
    return Quant(kind=c.form.kind, node=fq.name, dtype=dtype, bits=bits, scale_constant=constant,
                 scale_shape=shape, per_channel=per_channel, uniform=uniform, axis=axis, zero_point=zp_val,
                 symmetric=symmetric, data_constant=g.folds_to_constant(c.data), via=c.via)


def _q_output_type(q: onnx.NodeProto) -> np.dtype:
    out = attribute(q, "output_dtype")
    return onnx.helper.tensor_dtype_to_np_dtype(out) if out else np.dtype(np.uint8)  # QuantizeLinear's default


# The quantized forms recognised, the longer first where one begins with another (a Q→DQ pair is also a DQ).
# A new quantizer form is a row here, with a reader of its parameters.
FORMS = (
    # QuantizeLinear → DequantizeLinear on a float tensor (ORT's quantizer on activations; QAT exports on
    # weights too): the type Q quantizes to
    Form("qdq", ("DequantizeLinear", "QuantizeLinear"), _linear, stored=lambda g, ops: _q_output_type(ops[1])),
    # DequantizeLinear of stored integers (ORT's quantizer on weights): the type they are stored in
    Form("dq", ("DequantizeLinear",), _linear, stored=lambda g, ops: g.dtype(ops[0].input[0])),
    # OpenVINO's FakeQuantize op (domain org.openvinotoolkit): input and output ranges instead of a scale
    Form("fakequantize", ("FakeQuantize",), _ranges),
)


def _trace(g: Int8Graph, tensor: str) -> Quant | None:
    """The quantization feeding ``tensor``: a form of ``FORMS``, reached through at most seven ``MOVES``."""
    moves: list[onnx.NodeProto] = []
    node = g.producer_node(tensor)
    while node is not None and len(moves) < 8:
        for form in FORMS:
            ops = _matching(g, node, form.ops)
            if ops:
                return form.read(g, Chain(form, ops, moves))
        if node.op_type not in MOVES or node.domain:
            return None
        moves.append(node)
        node = g.producer_node(node.input[0])
    return None


def _matching(g: Int8Graph, node: onnx.NodeProto, op_types: tuple[str, ...]) -> list[onnx.NodeProto] | None:
    """``node`` and the producers above it if they are ``op_types``, each feeding the one before through its input 0."""
    ops: list[onnx.NodeProto] = []
    for op_type in op_types:
        if ops:
            node = g.producer_node(ops[-1].input[0])
        if node is None or node.op_type != op_type:
            return None
        ops.append(node)
    return ops


# --------------------------------------------------------------------------- how the output is used

def _output_use(g: Int8Graph, node: onnx.NodeProto) -> tuple[list[onnx.NodeProto], bool]:
    out = node.output[0]
    return g.consumers_of(out), out in g.outputs


def _is_q(node: onnx.NodeProto) -> bool:
    return node.op_type in ("QuantizeLinear", "FakeQuantize")


def _weight_constant(g: Int8Graph, node, b: Quant | None) -> bool:
    """The second input is a weight: constant data (its quantization parameters may not be)."""
    return b.data_constant if b is not None else g.folds_to_constant(node.input[1])


# --------------------------------------------------------------------------- naming

ROLE_WORDS = [("query", "query"), ("key", "key"), ("value", "value"), ("attention/output", "attn output"),
              ("attention.output", "attn output"), ("intermediate", "intermediate"), ("output/dense", "output"),
              ("output.dense", "output"), ("pooler", "pooler"), ("q_proj", "query"), ("k_proj", "key"),
              ("v_proj", "value"), ("out_proj", "attn output"), ("fc1", "intermediate"), ("fc2", "output"),
              ("q_lin", "query"), ("k_lin", "key"), ("v_lin", "value"), ("out_lin", "attn output"),
              ("lin1", "intermediate"), ("lin2", "output"), ("ffn", "ffn")]


def _layer(node: onnx.NodeProto, g: Int8Graph) -> int | None:
    texts = [node.name] + [p.value for p in node.metadata_props if p.key == "namespace"]
    for t in texts + [i for i in node.input]:
        m = LAYER_IN_NAME.search(t)
        if m:
            return int(m.group(1))
    return None


def _upstream_has(g: Int8Graph, tensor: str, op: str, hops: int = 5) -> bool:
    name = tensor
    for _ in range(hops):
        n = g.producer_node(name)
        if n is None:
            return False
        if n.op_type in (op, f"QLinear{op}"):  # the QOperator format's QLinearSoftmax too
            return True
        if not n.input:
            return False
        name = n.input[0]
    return False


def _role(node: onnx.NodeProto, g: Int8Graph, weight_const: bool) -> str:
    if not weight_const:
        return "P·V" if _upstream_has(g, node.input[0], "Softmax") else "Q·Kᵀ"
    # dynamo's namespace "…/encoder.layer.0.attention.self.query: Linear/linear: aten.linear": the deepest module path
    scope = [max((seg.split(":")[0].strip() for seg in p.value.split("/")), key=len)
             for p in node.metadata_props if p.key == "namespace"]
    for text in [node.name.lower()] + [t.lower() for t in scope] + [" ".join(node.input[1:]).lower()]:
        for word, role in ROLE_WORDS:
            if word in text:
                return role
    return "linear"


# --------------------------------------------------------------------------- entry point

def analyze(model: onnx.ModelProto | str, target: str | None = "both", *,
            ort_int8_allowed: bool = False, ort_version: tuple[int, int] | None = None) -> Int8Report:
    """One record per MatMul/Gemm (graph order). ``target``: "ort", "openvino", "both"/"onnx".

    ``ort_int8_allowed``: ONNX Runtime's ``QDQIsInt8Allowed()`` — False on x86 (the
    default), True on ARM; when False, int8 activations only run in INT8 once ORT has
    rewritten their Q/DQ pair to uint8 (``QDQS8ToU8Transformer``).
    ``ort_version``: the (major, minor) ONNX Runtime release to judge for; the installed one by default.
    """
    ort_rules = (OrtRules(ort_version, ort_int8_allowed) if ort_version is not None
                 else OrtRules.installed(ort_int8_allowed))
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    if target not in TARGETS:
        raise ValueError(f"target must be one of ort, openvino, both, onnx; not {target!r}")
    targets = TARGETS[target]
    if model.functions:  # fused INT8 blocks (--target onnx): judged as the runtimes run them, inlined
        model = _inline_calls(model)
    g = Int8Graph(model)
    records = []
    for node in model.graph.node:
        if node.op_type == "MatMulIntegerToFloat" and node.domain == "com.microsoft":
            records.append(_integer_matmul(g, node))
            continue
        if (node.op_type, node.domain) in OPERATOR_FORMS:
            records.append(_operator_matmul(g, node, targets))
            continue
        if node.op_type not in MATMULS or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        a = _trace(g, node.input[0])
        b = _trace(g, node.input[1])
        weight_const = _weight_constant(g, node, b)
        consumers, is_output = _output_use(g, node)
        site = Site(g, node, a, b, weight_const, consumers, is_output)
        backends = {"ort": ort_verdict(site, ort_rules), "openvino": ov_verdict(site)}
        bad = [t for t in targets if backends[t].verdict != "int8"]
        reasons: list[str] = []
        for t in bad:
            for r in backends[t].reasons:
                shared = all(r in backends[o].reasons for o in bad)
                text = r if shared and len(bad) == len(targets) else f"{LABEL[t]}: {r}"
                if text not in reasons:
                    reasons.append(text)
        zp_ok = None
        if b is not None:
            zp_ok = bool(b.symmetric) and (weight_const or a is None or a.symmetric is not False)
        records.append(MatMulRecord(
            node=node.name, op_type=node.op_type, layer=_layer(node, g), role=_role(node, g, weight_const),
            input_quantized=a is not None, weight_quantized=b is not None, weight_constant=weight_const,
            weight_scale_constant=None if b is None else b.scale_constant, zero_point_ok=zp_ok,
            output_requantized=len(consumers) == 1 and _is_q(consumers[0]) and not is_output,
            verdict="int8" if not bad else "fp32", reasons=reasons, backends=backends, activation=a, weight=b))
    return Int8Report(records, target or "both")


def _inline_calls(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with each call of a model-local function replaced by its body, the body's
    nodes named ``<call>/<op>`` so records keep the call's layer and role."""
    bodies = {(f.domain, f.name): f for f in model.functions}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    for call in model.graph.node:
        body = bodies.get((call.domain, call.op_type))
        if body is None:
            out.graph.node.append(call)
            continue
        names = dict(zip(body.input, call.input)) | dict(zip(body.output, call.output))
        for n in body.node:
            inner = onnx.NodeProto()
            inner.CopyFrom(n)
            inner.name = f"{call.name}/{n.op_type}"
            for field_ in (inner.input, inner.output):
                field_[:] = [names.setdefault(t, f"{call.name}/{t}") if t else t for t in field_]
            out.graph.node.append(inner)
    return out


def _integer_matmul(g: Int8Graph, node: onnx.NodeProto) -> MatMulRecord:
    """ONNX Runtime's MatMulIntegerToFloat (what ``--target ort`` makes of a fused INT8 block):
    integer inputs by construction; OpenVINO's reader turns it into an INT8 FullyConnected."""
    backends = {"ort": Verdict("int8", "MatMulIntegerToFloat"), "openvino": Verdict("int8", "FullyConnected (integer inputs)")}
    consumers, is_output = _output_use(g, node)
    return MatMulRecord(
        node=node.name, op_type=node.op_type, layer=_layer(node, g), role=_role(node, g, True),
        input_quantized=True, weight_quantized=True, weight_constant=g.folds_to_constant(node.input[1]),
        weight_scale_constant=g.folds_to_constant(node.input[3]), zero_point_ok=None,
        output_requantized=len(consumers) == 1 and _is_q(consumers[0]) and not is_output,
        verdict="int8", reasons=[], backends=backends)


def _operator_matmul(g: Int8Graph, node: onnx.NodeProto, targets) -> MatMulRecord:
    """A quantizer's own integer op (QLinearMatMul, QGemm, MatMulInteger): judged by ``OPERATOR_FORMS``."""
    ort, openvino = OPERATOR_FORMS[(node.op_type, node.domain)]
    backends = {"ort": ort, "openvino": openvino}
    bad = [t for t in targets if backends[t].verdict != "int8"]
    reasons = [f"{LABEL[t]}: {r}" for t in bad for r in backends[t].reasons]
    consumers, is_output = _output_use(g, node)
    weight = node.input[3] if node.op_type in ("QLinearMatMul", "QGemm") else node.input[1]
    constant = g.folds_to_constant(weight)
    return MatMulRecord(
        node=node.name, op_type=node.op_type, layer=_layer(node, g), role=_role(node, g, constant),
        input_quantized=True, weight_quantized=True, weight_constant=constant,
        weight_scale_constant=None, zero_point_ok=None,
        output_requantized=len(consumers) == 1 and _is_q(consumers[0]) and not is_output,
        verdict="int8" if not bad else "fp32", reasons=reasons, backends=backends)


__all__ = ["Int8Report", "MatMulRecord", "OrtRules", "Quant", "Verdict", "analyze", "R_NO_ACT", "R_NO_SECOND",
           "R_NO_WEIGHT", "TESTED_ORT"]
