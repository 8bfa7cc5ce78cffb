"""Which MatMul / Gemm of a quantized model will run in INT8, and why the others won't.

``analyze(model, target)`` reads the graph only (onnx + numpy, no runtime) and returns
one record per MatMul/Gemm: how each input is quantized (a QuantizeLinear→
DequantizeLinear pair, a DequantizeLinear of stored integers, or OpenVINO's
``FakeQuantize`` op, possibly through Reshape/Transpose/Squeeze/Unsqueeze/Flatten/
Identity), whether the weight scale is a constant, whether the zero points suit the
kernels, whether the output is re-quantized — and a verdict for each backend:

- ``"ort"``: ONNX Runtime's CPU execution provider (QDQ selector/action transformer),
- ``"openvino"``: OpenVINO's CPU plugin (ONNX frontend → FakeQuantize, low-precision
  transformations (LPT), FullyConnected/MatMul kernels),

each ``"int8"``, ``"fp32"`` or ``"error"`` (the session fails), with reasons. The
record's overall ``verdict`` is ``"int8"`` only when every targeted backend runs the
node in INT8 (``target="ort"``, ``"openvino"``, or ``"both"``/``"onnx"`` for both).

What forces FP32 (or an error), and where that comes from
---------------------------------------------------------

ONNX Runtime 1.31 and 1.32 (CPU EP). Source: ``onnxruntime/core/optimizer/qdq_transformer/
selectors_actions/qdq_selectors.{h,cc}`` (``MatMulNodeGroupSelector``,
``GemmNodeGroupSelector``, ``NodeGroupSelector::CheckQDQNodes``),
``qdq_selector_action_transformer.cc`` (``MatMulQDQRules``: QLinearMatMul when a Q
follows, MatMulIntegerToFloat when none does), ``qdq_actions.cc``
(``MatMulReplaceWithQLinear``), ``matmul_add_fusion.cc`` (runs at level 1, before the
QDQ rules), the kernels ``core/providers/cpu/quantization/quantize_linear_matmul.cc``
and ``contrib_ops/cpu/quantization/dynamic_quantize_matmul.cc``
(``IsScalarOr1ElementVector`` / ``IsBQuantParamSupported``) — each rule below was also
observed on onnxruntime 1.31.1 and 1.32.0 with single-MatMul graphs (see
``tests/test_int8_report.py``):

- both inputs must come from a DequantizeLinear (a FakeQuantize op is not an ONNX op:
  ORT cannot load the model at all); 8-bit types only (16-bit is not enabled for the
  CPU MatMul selector);
- the output: a QuantizeLinear that is its *only* consumer gives QLinearMatMul; a Q
  next to other consumers (or a MatMul that is also a graph output with a Q) fails
  ``CheckQDQNodes`` → FP32; no Q at all gives MatMulIntegerToFloat (still INT8) —
  except MatMul → Add(1-D bias) with a static or 2-D input: MatMulAddFusion first turns
  it into a Gemm, which becomes QGemm only when a Q follows the Add, else stays FP32;
- scale constness and weight zero points do **not** matter (uint8 asymmetric weights
  run in INT8: U8U8 QLinearMatMul);
- int8 activations: ``QDQIsInt8Allowed()`` is false off ARM
  (``qdq_selector_action_transformer.h``), so the MatMul rule refuses int8 inputs unless
  ``QDQS8ToU8Transformer`` (``qdq_s8_to_u8.cc``) first rewrote the Q→DQ pair to uint8 —
  which it does only for a Q feeding a single DQ with constant scalar int8 zero points.
  It runs after EnsureUniqueDQForNodeUnit, so an activation DQ shared by several
  consumers (Q/K/V after a LayerNorm, plus the residual Add) stays int8 → FP32; the
  output Q must end up with the same type as the input;
- a per-channel activation scale, or a weight scale per row (along K): where no Q
  follows, MatMulIntegerToFloat is still selected and fails at run time (``IsBQuantParam
  Supported`` / ``input zero point must be a scalar``) → ``"error"``; where a Q follows,
  ONNX Runtime up to 1.31 selects QLinearMatMul and the kernel fails the same way
  (``weight zero point must be a scalar, 1D tensor of size 1, or last to second
  dimension is 1``) → ``"error"``, while 1.32 leaves the MatMul unselected → FP32
  (observed on 1.31.1 and 1.32.0; ``OrtRules`` keys the rule by release); a Q after
  MatMulAddFusion's Add (QGemm, ``GemmNodeGroupSelector``) is refused → FP32 on both.

The rules follow the installed ONNX Runtime (``OrtRules.installed()``); releases other
than the ones above get the rules of the nearest tested one.

OpenVINO 2026.4 (CPU). Source: ``src/common/low_precision_transformations/src/
mat_mul.cpp`` (``MatMulTransformation::canBeTransformed``), ``fake_quantize_
decomposition.cpp``, ``docs/low_precision_transformations`` (FakeQuantize
decomposition, quantization scheme), and the CPU plugin's LPT precision restrictions
(MatMul: input 0 u8/i8, input 1 i8) — again each observed on openvino 2026.4.1 by
reading the runtime graph (a FullyConnected computes in INT8 when its data input is
u8/i8 and its primitive is ``*_I8``):

- the activation (input 0) needs a FakeQuantize (a Q→DQ pair becomes one); without
  it, a quantized constant weight is kept compressed and decompressed to f32
  (FullyConnected ``brgemm_avx512_f32`` reporting runtimePrecision i8 — FP32 compute);
- activation scales per column (along K) cannot be moved past the MatMul → FP32 (with a
  dynamic shape the CPU FakeQuantize node, per-channel only along axis 1, does not even
  compile → ``"error"``);
- constant weights must be int8 with zero point 0 (symmetric; uint8 or asymmetric
  weights → FP32), their scale must be a constant (a runtime scale leaves a
  FakeQuantize + f32 MatMul), per-tensor or per output channel (per row → FP32); a
  FakeQuantize on weights must have a range with an integer-aligned zero
  (levels 256: [-128·s, 127·s]; levels 255: [-127·s, 127·s]);
- two activations (Q·Kᵀ, P·V): both need FakeQuantize and zero point 0 on both —
  LPT refuses an asymmetric first input when the second is not a constant
  (``(!isConstantPath(input 1)) && dequantization1.subtract``) → FP32;
- re-quantizing the output is not needed (OpenVINO fuses the dequantization and any
  following FakeQuantize into the FullyConnected's post-ops).

The attention MatMuls end up inside OpenVINO's MHA "snippets" Subgraph layer; the LPT
rule above predicts its precision (i8 inputs for symmetric int8 Q/DQ, f32 for uint8
with zero point 128) on every model tried. Not modelled: graph-level compile failures
(the all-ops QDQ model's ``MultiplyPartialTransformation`` error, see
``tests/test_int8_models.py``), GPU/NPU plugins and execution providers other than CPU.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from importlib import metadata

import numpy as np
import onnx
from onnx import numpy_helper

from .dataflow import proto_constant

PASS_THROUGH = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity"}
MATMULS = {"MatMul", "Gemm"}
BACKENDS = ("ort", "openvino")
LABEL = {"ort": "ONNX Runtime", "openvino": "OpenVINO"}
TARGETS = {"ort": ("ort",), "openvino": ("openvino",), "both": BACKENDS, "onnx": BACKENDS, None: BACKENDS}
LAYER_IN_NAME = re.compile(r"(?:^|[/.:_ ])(?:layers?|blocks?)[._](\d+)(?=$|[/.:_ ])")
NP_BITS = {np.dtype(t): np.dtype(t).itemsize * 8 for t in (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32)}

# The ONNX Runtime releases the "ort" rules were observed on.
TESTED_ORT = ((1, 31), (1, 32))

R_NO_ACT = "no FakeQuantize (Q/DQ pair or FakeQuantize op) on the activation input"
R_NO_WEIGHT = "the weight is not quantized"
R_NO_SECOND = "no FakeQuantize (Q/DQ pair or FakeQuantize op) on the second input, an activation (activation × activation MatMul)"


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
    backends: dict[str, dict]      # {"ort": {"verdict", "kernel", "reasons"}, "openvino": {…}}
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
                out[f"{b}_{v}"] = sum(r.backends[b]["verdict"] == v for r in self.records)
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
                kernels = " · ".join(f"{LABEL[b]} {r.backends[b]['kernel']}" for b in targets)
                head = f"  {r.verdict:<4}  {_short(r.node):<{width}}  {r.role:<12}"
                if r.verdict == "int8":
                    lines.append(f"{head}  {kernels}")
                else:
                    lines.append(f"{head}  " + "; ".join(r.reasons))
        return "\n".join(lines)


def _short(name: str) -> str:
    return re.sub(r"^/?(encoder/)?(layer\.\d+/)?", "", name) or name


# --------------------------------------------------------------------------- graph facts

class _Graph:
    def __init__(self, model: onnx.ModelProto):
        g = model.graph
        self.model = model
        self.graph_inputs = {i.name for i in g.input}
        self.inits = {t.name: t for t in g.initializer if t.name not in self.graph_inputs}
        self.overridable = {t.name for t in g.initializer if t.name in self.graph_inputs}
        self.outputs = {o.name for o in g.output}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in g.node:
            for o in n.output:
                if o:
                    self.producer[o] = n
            for i in n.input:
                if i:
                    self.consumers.setdefault(i, []).append(n)
        self.by_name = {n.name: n for n in g.node if n.name}
        self._const: dict[str, bool] = {}
        self._shapes: dict[str, list] | None = None
        self.domains = {n.domain for n in g.node}

    def value(self, name: str) -> np.ndarray | None:
        return proto_constant(name, self.inits, self.producer.get)

    def dtype(self, name: str) -> np.dtype | None:
        v = self.value(name)
        if v is not None:
            return v.dtype
        if name in self.overridable:
            return numpy_helper.to_array(next(t for t in self.model.graph.initializer if t.name == name)).dtype
        for vi in list(self.model.graph.value_info) + list(self.model.graph.input) + list(self.model.graph.output):
            if vi.name == name and vi.type.tensor_type.elem_type:
                return onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        return None

    def is_constant(self, name: str, depth: int = 0) -> bool:
        """An initializer (not overridable), a Constant, or computed only from those."""
        if name in self._const:
            return self._const[name]
        if name in self.inits:
            result = True
        elif name in self.graph_inputs or name not in self.producer or depth > 64:
            result = False
        else:
            node = self.producer[name]
            if node.op_type == "Constant":
                result = True
            elif node.op_type.startswith("Random") or not [i for i in node.input if i]:
                result = False
            else:
                result = all(self.is_constant(i, depth + 1) for i in node.input if i)
        self._const[name] = result
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


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


# --------------------------------------------------------------------------- quantization of an input

def _trace(g: _Graph, tensor: str) -> Quant | None:
    """The quantization feeding `tensor`, following data-movement ops upwards."""
    via, perm_chain = [], []
    name = tensor
    for _ in range(8):
        node = g.producer.get(name)
        if node is None:
            return None
        if node.op_type == "DequantizeLinear":
            return _from_dq(g, node, via, perm_chain)
        if node.op_type == "FakeQuantize":
            return _from_fq(g, node, via, perm_chain)
        if node.op_type in PASS_THROUGH and not node.domain:
            via.append(node.op_type)
            perm_chain.append(_attr(node, "perm") if node.op_type == "Transpose" else node.op_type)
            name = node.input[0]
            continue
        return None
    return None


def _map_axis(axis: int | None, src_rank: int | None, perm_chain: list) -> int | None:
    """Where a channel axis of the quantized tensor lands in the tensor the MatMul reads."""
    if axis is None or src_rank is None:
        return None
    axis %= src_rank
    for step in reversed(perm_chain):      # perm_chain is MatMul-side first
        if isinstance(step, list):
            axis = step.index(axis)
        elif step != "Identity":
            return None                    # a reshape-like op: the axis is not tracked
    return axis


def _uniform(scale: np.ndarray | None, zp: np.ndarray | None) -> bool:
    if scale is None:
        return False
    s = np.asarray(scale).ravel()
    z = np.zeros(1) if zp is None else np.asarray(zp).ravel()
    return bool(np.all(s == s[0]) and np.all(z == z[0]))


def _from_dq(g: _Graph, dq: onnx.NodeProto, via, perm_chain) -> Quant:
    src = dq.input[0]
    q = g.producer.get(src)
    pair = q is not None and q.op_type == "QuantizeLinear"
    scale_name = dq.input[1]
    zp_name = dq.input[2] if len(dq.input) > 2 and dq.input[2] else ""
    scale = g.value(scale_name)
    zp = g.value(zp_name) if zp_name else None
    scale_constant = g.is_constant(scale_name) and (not zp_name or g.is_constant(zp_name))
    if pair:
        scale_constant = scale_constant and g.is_constant(q.input[1]) and (
            len(q.input) < 3 or not q.input[2] or g.is_constant(q.input[2]))
    dt = None
    if zp is not None:
        dt = zp.dtype
    elif zp_name:
        dt = g.dtype(zp_name)
    if dt is None and not pair:
        dt = g.dtype(src)
    if dt is None and pair:
        out_dt = _attr(q, "output_dtype")
        dt = onnx.helper.tensor_dtype_to_np_dtype(out_dt) if out_dt else np.dtype(np.uint8)
    dt = np.dtype(dt) if dt is not None else np.dtype(np.uint8)
    data = q.input[0] if pair else src
    scale_shape = list(np.shape(scale)) if scale is not None else (g.shape(scale_name) or [])
    n_scale = int(np.prod(scale_shape)) if scale_shape else 1
    per_channel = n_scale > 1
    uniform = per_channel and _uniform(scale, zp)
    axis = None
    if per_channel and not uniform:  # shapes (shape inference) only when needed
        src_rank = g.rank(data) if g.rank(data) is not None else g.rank(dq.output[0])
        axis = _map_axis(_attr(dq, "axis", 1), src_rank, perm_chain)
    zp_val = None if (zp_name and zp is None) else (0.0 if zp is None else float(np.abs(zp.astype(np.int64)).max()))
    return Quant(kind="qdq" if pair else "dq", node=dq.name, dtype=dt.name, bits=NP_BITS.get(dt, dt.itemsize * 8),
                 scale_constant=bool(scale_constant), scale_shape=[int(d) if isinstance(d, (int, np.integer)) else -1 for d in scale_shape],
                 per_channel=per_channel, uniform=uniform, axis=axis, zero_point=zp_val,
                 symmetric=None if zp_val is None else zp_val == 0.0,
                 data_constant=g.is_constant(data), via=via)


def _from_fq(g: _Graph, fq: onnx.NodeProto, via, perm_chain) -> Quant:
    levels = int(_attr(fq, "levels", 256))
    names = list(fq.input[1:5])
    vals = [g.value(n) for n in names]
    constant = all(g.is_constant(n) for n in names)
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
            src_rank = max(g.rank(fq.input[0]) or len(shape), len(shape))
            big = [i for i, d in enumerate(shape) if d > 1]
            if len(big) == 1:  # ranges broadcast from the right against the data
                axis = _map_axis(big[0] + src_rank - len(shape), src_rank, perm_chain)
    return Quant(kind="fakequantize", node=fq.name, dtype=dtype, bits=bits, scale_constant=constant,
                 scale_shape=shape, per_channel=per_channel, uniform=uniform, axis=axis, zero_point=zp_val,
                 symmetric=symmetric, data_constant=g.is_constant(fq.input[0]), via=via)


# --------------------------------------------------------------------------- per-backend rules

def _output_use(g: _Graph, node: onnx.NodeProto) -> tuple[list[onnx.NodeProto], bool]:
    out = node.output[0]
    return g.consumers.get(out, []), out in g.outputs


def _is_q(node: onnx.NodeProto) -> bool:
    return node.op_type in ("QuantizeLinear", "FakeQuantize")


def _k_axis(node, rank_a):
    if node.op_type == "Gemm":
        return 0 if _attr(node, "transA", 0) else 1
    return None if rank_a is None else rank_a - 1


def _n_axis(node, rank_b):
    if node.op_type == "Gemm":
        return 0 if _attr(node, "transB", 0) else 1
    return None if rank_b is None else rank_b - 1


def _s8_to_u8(g: _Graph, q: onnx.NodeProto | None, dq: onnx.NodeProto | None) -> bool:
    """Whether ORT's QDQS8ToU8Transformer rewrites this int8 Q→DQ pair to uint8.

    It converts a QuantizeLinear whose only consumer is one DequantizeLinear, both with
    constant scalar int8 zero points. It runs after EnsureUniqueDQForNodeUnit, which
    gives every consumer of a shared DequantizeLinear its own copy — so a DQ used by
    several nodes (Q/K/V projections, a residual Add, Shape) leaves the Q with several
    DQs and the pair stays int8.
    """
    if q is None or dq is None or q.op_type != "QuantizeLinear" or dq.op_type != "DequantizeLinear":
        return False
    if [c.name for c in g.consumers.get(q.output[0], [])] != [dq.name] or q.output[0] in g.outputs:
        return False
    if len(g.consumers.get(dq.output[0], [])) != 1 or dq.output[0] in g.outputs:
        return False
    for n in (q, dq):
        if len(n.input) < 3 or not n.input[2]:
            return False
        zp = g.value(n.input[2])
        if zp is None or zp.dtype != np.int8 or zp.size != 1:
            return False
    return True


def _ort_dtype(g: _Graph, quant: Quant | None, int8_allowed: bool) -> str | None:
    """The activation type ORT's MatMul selector sees, after the s8→u8 rewrite."""
    if quant is None:
        return None
    if quant.dtype != "int8" or int8_allowed or quant.kind != "qdq":
        return quant.dtype
    dq = g.by_name.get(quant.node)
    q = g.producer.get(dq.input[0]) if dq is not None else None
    return "uint8" if _s8_to_u8(g, q, dq) else "int8"


def _weight_constant(g: _Graph, node, b: Quant | None) -> bool:
    """The second input is a weight: constant data (its quantization parameters may not be)."""
    return b.data_constant if b is not None else g.is_constant(node.input[1])


@dataclass(frozen=True)
class OrtRules:
    """The ONNX Runtime whose choices the ``"ort"`` verdicts describe.

    ``version``: the (major, minor) release; rules that changed between releases are keyed
    by it. ``int8_allowed``: ``QDQIsInt8Allowed()`` — False on x86, True on ARM.
    """

    version: tuple[int, int] = TESTED_ORT[-1]
    int8_allowed: bool = False

    @staticmethod
    def installed(int8_allowed: bool = False) -> "OrtRules":
        """The rules of the installed onnxruntime (of the newest tested release if none is installed)."""
        for dist in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"):
            try:
                major, minor = metadata.version(dist).split(".")[:2]
                return OrtRules((int(major), int(minor)), int8_allowed)
            except (metadata.PackageNotFoundError, ValueError):
                continue
        return OrtRules(TESTED_ORT[-1], int8_allowed)

    @property
    def qlinear_checks_quant_params(self) -> bool:
        """From 1.32 the QDQ MatMul rule leaves a MatMul whose activation zero point is not a scalar, or whose
        weight is quantized per row, unselected (FP32) instead of making a QLinearMatMul that fails at run time."""
        return self.version >= (1, 32)


def _ort(g: _Graph, node, a: Quant | None, b: Quant | None, rules: OrtRules = OrtRules()) -> dict:
    int8_allowed = rules.int8_allowed
    reasons: list[str] = []
    if "org.openvinotoolkit" in g.domains or any(q and q.kind == "fakequantize" for q in (a, b)):
        return {"verdict": "error", "kernel": "-",
                "reasons": [("the model uses OpenVINO's FakeQuantize op (domain org.openvinotoolkit), "
                             "which ONNX Runtime cannot load")]}
    weight_const = _weight_constant(g, node, b)
    if a is None:
        reasons.append(R_NO_ACT)
    if b is None:
        reasons.append(R_NO_WEIGHT if weight_const else R_NO_SECOND)
    for q, what in ((a, "activation"), (b, "weight" if weight_const else "second input")):
        if q is not None and q.bits != 8:
            reasons.append(f"the {what} is {q.dtype}: ONNX Runtime's CPU QDQ MatMul rule takes 8-bit types only")
    if reasons:
        return {"verdict": "fp32", "kernel": node.op_type, "reasons": reasons}

    # kernel-level parameter checks (selected anyway, then the kernel refuses at run time)
    # (what, how the kernel fails at run time where the QDQ rule selects it anyway)
    unsupported: list[tuple[str, str]] = []
    if a.per_channel:
        unsupported.append(("the activation scale/zero point is not per-tensor",
                            "ONNX Runtime selects the MatMul anyway and the INT8 kernel fails at run time "
                            "('input zero point must be a scalar')"))
    n_axis = _n_axis(node, g.rank(node.input[1])) if b.per_channel else None
    if b.per_channel and (b.axis is None or n_axis is None or b.axis != n_axis):
        where = "per row (along K)" if b.axis is not None else "per channel along an axis fusekit cannot place"
        unsupported.append((f"the weight is quantized {where}",
                            "the INT8 kernel accepts per-tensor or per output column only and fails at run time "
                            "('weight zero point must be … last to second dimension is 1')"))

    consumers, is_output = _output_use(g, node)
    qs = [c for c in consumers if c.op_type == "QuantizeLinear"]
    kernel = None
    dt_in = _ort_dtype(g, a, int8_allowed)
    if dt_in == "int8" and not int8_allowed:
        dq = g.by_name.get(a.node)
        users = len(g.consumers.get(dq.output[0], [])) if dq is not None else 0
        why = (f"its DequantizeLinear is shared by {users} consumers" if users > 1 else
               "it is not a Q→DQ pair with constant scalar int8 zero points used once")
        reasons.append("int8 activation on x86: ONNX Runtime's MatMul rule takes int8 inputs only on ARM and "
                       f"the QDQS8ToU8Transformer rewrite to uint8 skips this pair ({why})")
    if qs:
        if len(consumers) == 1 and not is_output:
            kernel = "QGemm" if node.op_type == "Gemm" else "QLinearMatMul"
            q_out = qs[0]
            dq_out = (g.consumers.get(q_out.output[0]) or [None])[0]
            zp = g.value(q_out.input[2]) if len(q_out.input) > 2 and q_out.input[2] else None
            dt_out = "uint8" if zp is None else zp.dtype.name
            if dt_out == "int8" and not int8_allowed and _s8_to_u8(g, q_out, dq_out):
                dt_out = "uint8"
            if node.op_type == "MatMul" and dt_in is not None and dt_out != dt_in and not reasons:
                reasons.append(f"the activation reaches the MatMul as {dt_in} but the output QuantizeLinear is "
                               f"{dt_out} (after ORT's s8→u8 rewrite): QLinearMatMul needs the same type")
        else:
            reasons.append("the output feeds a QuantizeLinear and other nodes (or is a graph output): the QDQ "
                           "rule needs the Q to be the only consumer")
    elif node.op_type == "Gemm":
        has_c = len(node.input) > 2 and node.input[2]
        c_dq = has_c and g.producer.get(node.input[2]) is not None and g.producer[node.input[2]].op_type == "DequantizeLinear"
        if has_c and not c_dq:
            reasons.append("Gemm with a float bias and no QuantizeLinear after it: the QDQ Gemm rule needs a Q "
                           "on the output (or a DequantizeLinear on the bias)")
        else:
            kernel = "QGemm"
    else:
        add = _matmul_add_fusion(g, node, consumers, is_output)
        if add is not None:
            add_cons, add_out = g.consumers.get(add.output[0], []), add.output[0] in g.outputs
            if len(add_cons) == 1 and add_cons[0].op_type == "QuantizeLinear" and not add_out:
                kernel = "QGemm"
            else:
                reasons.append("MatMul → Add(bias) with a static input shape and no QuantizeLinear after the Add: "
                               "ONNX Runtime's MatMulAddFusion makes it a Gemm before the QDQ rules run, and the "
                               "Gemm stays FP32 without a Q on its output")
        else:
            kernel = "MatMulIntegerToFloat"
    if unsupported and not reasons and (kernel == "QGemm" and node.op_type == "MatMul"
                                        or kernel == "QLinearMatMul" and rules.qlinear_checks_quant_params):
        # the QDQ rule checks these parameters itself and leaves the node in FP32
        rule = ("QDQ Gemm rule (after MatMulAddFusion)" if kernel == "QGemm"
                else f"{rules.version[0]}.{rules.version[1]} QDQ MatMul rule")
        return {"verdict": "fp32", "kernel": "Gemm" if kernel == "QGemm" else node.op_type,
                "reasons": [f"{what}: ONNX Runtime's {rule} leaves it in FP32" for what, _ in unsupported]}
    if reasons:
        return {"verdict": "fp32", "kernel": "Gemm" if "MatMulAddFusion" in reasons[-1] else node.op_type,
                "reasons": reasons}
    if unsupported:
        return {"verdict": "error", "kernel": kernel, "reasons": [f"{what}: {fails}" for what, fails in unsupported]}
    return {"verdict": "int8", "kernel": kernel, "reasons": []}


def _matmul_add_fusion(g: _Graph, node, consumers, is_output) -> onnx.NodeProto | None:
    """The Add that ORT's MatMulAddFusion would fold into a Gemm with this MatMul, if any."""
    if node.op_type != "MatMul" or len(consumers) != 1 or is_output or consumers[0].op_type != "Add":
        return None
    add = consumers[0]
    bias = add.input[1] if add.input[0] == node.output[0] else add.input[0]
    shape_b = g.shape(node.input[1])
    shape_a = g.shape(node.input[0])
    bias_shape = g.shape(bias)
    if shape_b is None or len(shape_b) != 2 or shape_a is None or bias_shape is None:
        return None
    if len(bias_shape) != 1 or bias_shape[0] != shape_b[1]:
        return None
    if len(shape_a) != 2 and not all(isinstance(d, int) and d > 0 for d in shape_a):
        return None  # dynamic N-D input: MatMulAddFusion needs concrete shapes to reshape
    return add


def _ov(g: _Graph, node, a: Quant | None, b: Quant | None) -> dict:
    reasons: list[str] = []
    weight_const = _weight_constant(g, node, b)
    kernel = "FullyConnected" if weight_const else "MatMul"
    if a is None:
        reasons.append(R_NO_ACT)
        if b is not None and weight_const:
            reasons.append("(OpenVINO keeps the quantized weight compressed and decompresses it to f32: "
                           "weight-only, FP32 compute)")
    if b is None:
        reasons.append(R_NO_WEIGHT if weight_const else R_NO_SECOND)
    if a is not None:
        if a.bits != 8:
            reasons.append(f"the activation is {a.dtype}, not 8-bit")
        if not a.scale_constant:
            reasons.append("the activation scale is not a constant")
        k_axis = _k_axis(node, g.rank(node.input[0])) if a.per_channel and not a.uniform else None
        if a.per_channel and not a.uniform and (a.axis is None or a.axis == k_axis):
            shape = g.shape(node.input[0])
            if a.axis not in (None, 1) and not (shape and all(isinstance(d, int) and d > 0 for d in shape)):
                return {"verdict": "error", "kernel": kernel, "reasons": [(
                    "the activation is quantized per channel along K with a dynamic shape: the CPU plugin's "
                    "FakeQuantize takes per-channel ranges only along axis 1 and the model fails to compile")]}
            reasons.append("the activation is quantized per channel along K (the reduction axis): LPT cannot "
                           "move such scales past the MatMul")
    if b is not None:
        what = "weight" if weight_const else "second input"
        if b.bits != 8:
            reasons.append(f"the {what} is {b.dtype}, not 8-bit")
        if not b.scale_constant:
            reasons.append(f"the {what} scale is not a constant")
        if weight_const:
            if b.zero_point is None:
                reasons.append("the weight zero point is not a constant")
            elif b.symmetric is False:
                reasons.append("zero point of the weight is not 0: OpenVINO's INT8 MatMul needs symmetric int8 "
                               "weights (asymmetric weights stay compressed, f32 compute); ONNX Runtime accepts them")
            elif b.dtype.startswith("uint"):
                reasons.append("the weight is uint8: OpenVINO's INT8 MatMul takes int8 weights only")
            n_axis = _n_axis(node, g.rank(node.input[1])) if b.per_channel and not b.uniform else None
            if b.per_channel and not b.uniform and (b.axis is None or b.axis != n_axis):
                reasons.append("the weight is quantized per row (along K): LPT cannot move such scales past "
                               "the MatMul")
        else:
            if a is not None and a.symmetric is False:
                reasons.append("the first input has a nonzero zero point and the second input is not a constant: "
                               "LPT's MatMul transformation refuses an asymmetric first input then")
            if b.symmetric is False:
                reasons.append("the second input has a nonzero zero point: LPT needs it to be 0")
    if reasons:
        return {"verdict": "fp32", "kernel": kernel, "reasons": reasons}
    return {"verdict": "int8", "kernel": kernel, "reasons": []}


# --------------------------------------------------------------------------- naming

ROLE_WORDS = [("query", "query"), ("key", "key"), ("value", "value"), ("attention/output", "attn output"),
              ("attention.output", "attn output"), ("intermediate", "intermediate"), ("output/dense", "output"),
              ("output.dense", "output"), ("pooler", "pooler"), ("q_proj", "query"), ("k_proj", "key"),
              ("v_proj", "value"), ("out_proj", "attn output"), ("fc1", "intermediate"), ("fc2", "output"),
              ("q_lin", "query"), ("k_lin", "key"), ("v_lin", "value"), ("out_lin", "attn output"),
              ("lin1", "intermediate"), ("lin2", "output"), ("ffn", "ffn")]


def _layer(node: onnx.NodeProto, g: _Graph) -> int | None:
    texts = [node.name] + [p.value for p in node.metadata_props if p.key == "namespace"]
    for t in texts + [i for i in node.input]:
        m = LAYER_IN_NAME.search(t)
        if m:
            return int(m.group(1))
    return None


def _upstream_has(g: _Graph, tensor: str, op: str, hops: int = 5) -> bool:
    name = tensor
    for _ in range(hops):
        n = g.producer.get(name)
        if n is None:
            return False
        if n.op_type == op:
            return True
        if not n.input:
            return False
        name = n.input[0]
    return False


def _role(node: onnx.NodeProto, g: _Graph, weight_const: bool) -> str:
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
    g = _Graph(model)
    records = []
    for node in model.graph.node:
        if node.op_type == "MatMulIntegerToFloat" and node.domain == "com.microsoft":
            records.append(_integer_matmul(g, node))
            continue
        if node.op_type not in MATMULS or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        a = _trace(g, node.input[0])
        b = _trace(g, node.input[1])
        weight_const = _weight_constant(g, node, b)
        backends = {"ort": _ort(g, node, a, b, ort_rules), "openvino": _ov(g, node, a, b)}
        bad = [t for t in targets if backends[t]["verdict"] != "int8"]
        reasons: list[str] = []
        for t in bad:
            for r in backends[t]["reasons"]:
                shared = all(r in backends[o]["reasons"] for o in bad)
                text = r if shared and len(bad) == len(targets) else f"{LABEL[t]}: {r}"
                if text not in reasons:
                    reasons.append(text)
        consumers, is_output = _output_use(g, node)
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


def _integer_matmul(g: _Graph, node: onnx.NodeProto) -> MatMulRecord:
    """ONNX Runtime's MatMulIntegerToFloat (what ``--target ort`` makes of a fused INT8 block):
    integer inputs by construction; OpenVINO's reader turns it into an INT8 FullyConnected."""
    backends = {"ort": {"verdict": "int8", "kernel": "MatMulIntegerToFloat", "reasons": []},
                "openvino": {"verdict": "int8", "kernel": "FullyConnected (integer inputs)", "reasons": []}}
    consumers, is_output = _output_use(g, node)
    return MatMulRecord(
        node=node.name, op_type=node.op_type, layer=_layer(node, g), role=_role(node, g, True),
        input_quantized=True, weight_quantized=True, weight_constant=g.is_constant(node.input[1]),
        weight_scale_constant=g.is_constant(node.input[3]), zero_point_ok=None,
        output_requantized=len(consumers) == 1 and _is_q(consumers[0]) and not is_output,
        verdict="int8", reasons=[], backends=backends)


__all__ = ["Int8Report", "MatMulRecord", "OrtRules", "Quant", "analyze"]
