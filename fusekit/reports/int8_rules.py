"""What ONNX Runtime and OpenVINO do with one quantized MatMul/Gemm, as one rule table per runtime.

A table is a list of stages; each stage lists rules, and each rule names the runtime
source it comes from and says why the runtime keeps the node from INT8 (or None). The
first stage with a refusal decides: its verdict (``"fp32"``, or ``"error"`` where the
session fails), the kernel the runtime runs instead, and every refusal of that stage as
the reasons. A node no stage refuses runs in INT8. Every rule was also observed with
single-MatMul graphs (``tests/test_int8_report.py``) on the releases ``TESTED_ORT`` and
OpenVINO 2026.4.1; a rule that differs between releases is keyed by ``OrtRules``.

ONNX Runtime (CPU EP) sources, under ``onnxruntime/``: ``core/optimizer/qdq_transformer/
selectors_actions/qdq_selectors.{h,cc}`` (``MatMulNodeGroupSelector``,
``GemmNodeGroupSelector``, ``NodeGroupSelector::CheckQDQNodes``),
``qdq_selector_action_transformer.{h,cc}`` (``MatMulQDQRules``: QLinearMatMul when a Q
follows, MatMulIntegerToFloat when none does; ``QDQIsInt8Allowed``), ``qdq_actions.cc``,
``core/optimizer/qdq_transformer/qdq_s8_to_u8.cc``, ``core/optimizer/matmul_add_fusion.cc``
(runs at level 1, before the QDQ rules), and the kernels
``core/providers/cpu/quantization/quantize_linear_matmul.cc`` and
``contrib_ops/cpu/quantization/dynamic_quantize_matmul.cc`` (``IsBQuantParamSupported``).

OpenVINO (CPU) sources, under ``src/``: ``common/low_precision_transformations/src/
mat_mul.cpp`` (``MatMulTransformation::canBeTransformed``), ``fake_quantize_
decomposition.cpp``, the LPT docs (``docs/low_precision_transformations``: quantization
scheme) and the CPU plugin's LPT precision restrictions (MatMul: input 0 u8/i8, input 1 i8).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Callable, Generic, TypeVar

import numpy as np
import onnx

from .dataflow import attribute

if TYPE_CHECKING:
    from .int8 import Int8Graph, Quant

# The ONNX Runtime releases the "ort" rules were observed on.
TESTED_ORT = ((1, 31), (1, 32))

R_NO_ACT = "no FakeQuantize (Q/DQ pair or FakeQuantize op) on the activation input"
R_NO_WEIGHT = "the weight is not quantized"
R_NO_SECOND = "no FakeQuantize (Q/DQ pair or FakeQuantize op) on the second input, an activation (activation × activation MatMul)"

ORT_SELECTORS = "qdq_selectors.cc (MatMulNodeGroupSelector)"
ORT_CHECK_QDQ = "qdq_selectors.cc (NodeGroupSelector::CheckQDQNodes)"
ORT_GEMM_SELECTOR = "qdq_selectors.cc (GemmNodeGroupSelector)"
ORT_INT8_ALLOWED = "qdq_selector_action_transformer.h (QDQIsInt8Allowed), qdq_s8_to_u8.cc"
ORT_KERNELS = "quantize_linear_matmul.cc, dynamic_quantize_matmul.cc (IsBQuantParamSupported)"
OV_LPT_MATMUL = "low_precision_transformations/src/mat_mul.cpp (MatMulTransformation::canBeTransformed)"
OV_LPT_FQ = "low_precision_transformations/src/fake_quantize_decomposition.cpp"
OV_CPU_PRECISIONS = "CPU plugin LPT precision restrictions (MatMul: input 0 u8/i8, input 1 i8)"


@dataclass
class Verdict:
    """What one runtime does with one MatMul/Gemm."""

    verdict: str  # "int8", "fp32", or "error" (the session fails)
    kernel: str  # the op the runtime runs it as
    reasons: list[str] = field(default_factory=list)  # why not INT8, empty for "int8"


@dataclass
class Site:
    """One MatMul/Gemm as the rules read it."""

    graph: Int8Graph
    node: onnx.NodeProto
    a: Quant | None  # how input 0 (the activation) is quantized, if it is
    b: Quant | None  # how input 1 is
    weight_constant: bool  # input 1 is constant data, a weight (its quantization parameters may not be)
    consumers: list[onnx.NodeProto]  # who reads the output
    is_output: bool  # the output is also a graph output

    @property
    def second(self) -> str:
        return "weight" if self.weight_constant else "second input"

    def rank(self, i: int) -> int | None:
        return self.graph.rank(self.node.input[i])


S = TypeVar("S")


@dataclass(frozen=True)
class RuntimeRule(Generic[S]):
    """One rule of a runtime's table (not a canonicalization ``Rule``): why it keeps a node from INT8.

    ``refuses(site)`` gives the reason, or None where the rule lets the node be; ``source``
    names the runtime code the rule follows.
    """

    refuses: Callable[[S], str | None]
    source: str


@dataclass(frozen=True)
class Stage(Generic[S]):
    """Rules the runtime applies at one point; the first stage that refuses decides."""

    verdict: str  # "fp32" or "error"
    kernel: Callable[[S], str]  # what the runtime runs the node as when this stage refuses
    rules: tuple[RuntimeRule[S], ...]


def judge(stages: list[Stage[S]], site: S, int8_kernel: str) -> Verdict:
    for stage in stages:
        reasons = [r for rule in stage.rules if (r := rule.refuses(site))]
        if reasons:
            return Verdict(stage.verdict, stage.kernel(site), reasons)
    return Verdict("int8", int8_kernel)


def _k_axis(node: onnx.NodeProto, rank_a: int | None) -> int | None:
    if node.op_type == "Gemm":
        return 0 if attribute(node, "transA", 0) else 1
    return None if rank_a is None else rank_a - 1


def _n_axis(node: onnx.NodeProto, rank_b: int | None) -> int | None:
    if node.op_type == "Gemm":
        return 0 if attribute(node, "transB", 0) else 1
    return None if rank_b is None else rank_b - 1



def _static(shape) -> bool:
    return bool(shape) and all(isinstance(d, int) and d > 0 for d in shape)


# --------------------------------------------------------------------------- ONNX Runtime

@dataclass(frozen=True)
class OrtRules:
    """The ONNX Runtime whose choices the ``"ort"`` verdicts describe.

    ``version``: the (major, minor) release; rules that changed between releases are keyed
    by it, and a release between or beyond the tested ones gets the nearest one's rules.
    ``int8_allowed``: ``QDQIsInt8Allowed()`` — False on x86, True on ARM.
    """

    version: tuple[int, int] = TESTED_ORT[-1]
    int8_allowed: bool = False

    @staticmethod
    def installed(int8_allowed: bool = False) -> OrtRules:
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
        weight is quantized per row, unselected (FP32) instead of making a QLinearMatMul that fails at run time
        (observed on 1.31.1 and 1.32.0)."""
        return self.version >= (1, 32)


@dataclass
class OrtSite:
    """A site with what ONNX Runtime's graph optimizer makes of it."""

    site: Site
    rules: OrtRules
    input_type: str | None  # the activation type the MatMul rule sees, after the s8→u8 rewrite
    output_q: onnx.NodeProto | None  # a QuantizeLinear reading the output
    kernel: str | None  # the INT8 kernel the QDQ rules select, None where they select none
    matmul_add: onnx.NodeProto | None  # the Add that MatMulAddFusion folds into a Gemm first


def _s8_to_u8(g: Int8Graph, q: onnx.NodeProto | None, dq: onnx.NodeProto | None) -> bool:
    """Whether ORT's QDQS8ToU8Transformer rewrites this int8 Q→DQ pair to uint8.

    It converts a QuantizeLinear whose only consumer is one DequantizeLinear, both with
    constant scalar int8 zero points. It runs after EnsureUniqueDQForNodeUnit, which
    gives every consumer of a shared DequantizeLinear its own copy — so a DQ used by
    several nodes (Q/K/V projections, a residual Add, Shape) leaves the Q with several
    DQs and the pair stays int8.
    """
    if q is None or dq is None or q.op_type != "QuantizeLinear" or dq.op_type != "DequantizeLinear":
        return False
    if [c.name for c in g.consumers_of(q.output[0])] != [dq.name] or q.output[0] in g.outputs:
        return False
    if len(g.consumers_of(dq.output[0])) != 1 or dq.output[0] in g.outputs:
        return False
    for n in (q, dq):
        if len(n.input) < 3 or not n.input[2]:
            return False
        zp = g.value(n.input[2])
        if zp is None or zp.dtype != np.int8 or zp.size != 1:
            return False
    return True


def _input_type(g: Int8Graph, quant: Quant | None, int8_allowed: bool) -> str | None:
    """The activation type ORT's MatMul selector sees, after the s8→u8 rewrite."""
    if quant is None:
        return None
    if quant.dtype != "int8" or int8_allowed or quant.kind != "qdq":
        return quant.dtype
    dq = g.node_named(quant.node)
    q = g.producer_node(dq.input[0]) if dq is not None else None
    return "uint8" if _s8_to_u8(g, q, dq) else "int8"


def _matmul_add_fusion(s: Site) -> onnx.NodeProto | None:
    """The Add that ORT's MatMulAddFusion would fold into a Gemm with this MatMul, if any."""
    g, node = s.graph, s.node
    if node.op_type != "MatMul" or len(s.consumers) != 1 or s.is_output or s.consumers[0].op_type != "Add":
        return None
    add = s.consumers[0]
    bias = add.input[1] if add.input[0] == node.output[0] else add.input[0]
    shape_a, shape_b, bias_shape = g.shape(node.input[0]), g.shape(node.input[1]), g.shape(bias)
    if shape_b is None or len(shape_b) != 2 or shape_a is None or bias_shape is None:
        return None
    if len(bias_shape) != 1 or bias_shape[0] != shape_b[1]:
        return None
    if len(shape_a) != 2 and not _static(shape_a):
        return None  # dynamic N-D input: MatMulAddFusion needs concrete shapes to reshape
    return add


def _only_q(g: Int8Graph, value: str, consumers: list[onnx.NodeProto]) -> bool:
    return len(consumers) == 1 and consumers[0].op_type == "QuantizeLinear" and value not in g.outputs


def ort_site(s: Site, rules: OrtRules) -> OrtSite:
    g, node = s.graph, s.node
    qs = [c for c in s.consumers if c.op_type == "QuantizeLinear"]
    add = _matmul_add_fusion(s) if not qs and node.op_type == "MatMul" else None
    if qs:
        only = len(s.consumers) == 1 and not s.is_output
        kernel = ("QGemm" if node.op_type == "Gemm" else "QLinearMatMul") if only else None
    elif node.op_type == "Gemm":
        kernel = None if _gemm_float_bias(g, node) else "QGemm"
    elif add is not None:
        kernel = "QGemm" if _only_q(g, add.output[0], g.consumers_of(add.output[0])) else None
    else:
        kernel = "MatMulIntegerToFloat"
    return OrtSite(s, rules, _input_type(g, s.a, rules.int8_allowed), qs[0] if qs else None, kernel, add)


def _gemm_float_bias(g: Int8Graph, node: onnx.NodeProto) -> bool:
    has_c = len(node.input) > 2 and node.input[2]
    producer = g.producer_node(node.input[2]) if has_c else None
    return bool(has_c) and (producer is None or producer.op_type != "DequantizeLinear")


def _output_type(o: OrtSite) -> str:
    """The type of the output QuantizeLinear, after the s8→u8 rewrite."""
    g, q = o.site.graph, o.output_q
    zp = g.value(q.input[2]) if len(q.input) > 2 and q.input[2] else None
    dt = "uint8" if zp is None else zp.dtype.name
    dq = (g.consumers_of(q.output[0]) or [None])[0]
    return "uint8" if dt == "int8" and not o.rules.int8_allowed and _s8_to_u8(g, q, dq) else dt


def _int8_refused(o: OrtSite) -> str | None:
    if o.input_type != "int8" or o.rules.int8_allowed:
        return None
    g = o.site.graph
    dq = g.node_named(o.site.a.node)
    users = len(g.consumers_of(dq.output[0])) if dq is not None else 0
    why = (f"its DequantizeLinear is shared by {users} consumers" if users > 1 else
           "it is not a Q→DQ pair with constant scalar int8 zero points used once")
    return ("int8 activation on x86: ONNX Runtime's MatMul rule takes int8 inputs only on ARM and "
            f"the QDQS8ToU8Transformer rewrite to uint8 skips this pair ({why})")


def _type_mismatch(o: OrtSite) -> str | None:
    if o.kernel != "QLinearMatMul" or o.input_type is None or _int8_refused(o):
        return None
    out = _output_type(o)
    if out == o.input_type:
        return None
    return (f"the activation reaches the MatMul as {o.input_type} but the output QuantizeLinear is "
            f"{out} (after ORT's s8→u8 rewrite): QLinearMatMul needs the same type")


def _bits(q: Quant | None, what: str) -> str | None:
    if q is None or q.bits == 8:
        return None
    return f"the {what} is {q.dtype}: ONNX Runtime's CPU QDQ MatMul rule takes 8-bit types only"


def _per_row(s: Site) -> str | None:
    """Where the weight's scale runs along an axis other than N, how to say so."""
    b = s.b
    if b is None or not b.per_channel:
        return None
    n_axis = _n_axis(s.node, s.rank(1))
    if b.axis is not None and n_axis is not None and b.axis == n_axis:
        return None
    return "per row (along K)" if b.axis is not None else "per channel along an axis fusekit cannot place"


def _params_checked(o: OrtSite) -> str | None:
    """The rule that checks the quantization parameters itself, leaving the node in FP32, if it does."""
    if o.kernel == "QGemm" and o.site.node.op_type == "MatMul":
        return "QDQ Gemm rule (after MatMulAddFusion)"
    if o.kernel == "QLinearMatMul" and o.rules.qlinear_checks_quant_params:
        return f"{o.rules.version[0]}.{o.rules.version[1]} QDQ MatMul rule"
    return None


ACT_NOT_PER_TENSOR = "the activation scale/zero point is not per-tensor"


def _act_refused(o: OrtSite) -> str | None:
    rule = _params_checked(o)
    return f"{ACT_NOT_PER_TENSOR}: ONNX Runtime's {rule} leaves it in FP32" if rule and o.site.a.per_channel else None


def _weight_refused(o: OrtSite) -> str | None:
    rule, where = _params_checked(o), _per_row(o.site)
    return f"the weight is quantized {where}: ONNX Runtime's {rule} leaves it in FP32" if rule and where else None


def _act_fails(o: OrtSite) -> str | None:
    return (f"{ACT_NOT_PER_TENSOR}: ONNX Runtime selects the MatMul anyway and the INT8 kernel fails at run time "
            "('input zero point must be a scalar')") if o.site.a.per_channel else None


def _weight_fails(o: OrtSite) -> str | None:
    where = _per_row(o.site)
    return (f"the weight is quantized {where}: the INT8 kernel accepts per-tensor or per output column only and "
            "fails at run time ('weight zero point must be … last to second dimension is 1')") if where else None


def _uses_fakequantize(o: OrtSite) -> str | None:
    s = o.site
    if "org.openvinotoolkit" in s.graph.domains or any(q and q.kind == "fakequantize" for q in (s.a, s.b)):
        return ("the model uses OpenVINO's FakeQuantize op (domain org.openvinotoolkit), "
                "which ONNX Runtime cannot load")
    return None


def _op(o: OrtSite) -> str:
    return o.site.node.op_type


ORT_RULES: list[Stage[OrtSite]] = [
    Stage("error", lambda o: "-", (
        RuntimeRule(_uses_fakequantize, "onnxruntime/core/graph/model.cc (a domain with no registered ops fails to load)"),
    )),
    # the QDQ MatMul rule needs a DequantizeLinear on both inputs, of 8-bit types
    Stage("fp32", _op, (
        RuntimeRule(lambda o: R_NO_ACT if o.site.a is None else None, ORT_SELECTORS + ": two DQ inputs"),
        RuntimeRule(lambda o: None if o.site.b else R_NO_WEIGHT if o.site.weight_constant else R_NO_SECOND,
             ORT_SELECTORS + ": two DQ inputs"),
        RuntimeRule(lambda o: _bits(o.site.a, "activation"), ORT_SELECTORS + ": 16-bit types not enabled on CPU"),
        RuntimeRule(lambda o: _bits(o.site.b, o.site.second), ORT_SELECTORS + ": 16-bit types not enabled on CPU"),
    )),
    # the node group the QDQ rules can form from how the output is used
    Stage("fp32", lambda o: "Gemm" if o.matmul_add is not None and o.kernel is None else _op(o), (
        RuntimeRule(_int8_refused, ORT_INT8_ALLOWED),
        RuntimeRule(lambda o: "the output feeds a QuantizeLinear and other nodes (or is a graph output): the QDQ rule "
                       "needs the Q to be the only consumer" if o.output_q is not None and o.kernel is None else None,
             ORT_CHECK_QDQ),
        RuntimeRule(lambda o: "Gemm with a float bias and no QuantizeLinear after it: the QDQ Gemm rule needs a Q on the "
                       "output (or a DequantizeLinear on the bias)"
                       if _op(o) == "Gemm" and o.output_q is None and o.kernel is None else None, ORT_GEMM_SELECTOR),
        RuntimeRule(lambda o: "MatMul → Add(bias) with a static input shape and no QuantizeLinear after the Add: ONNX "
                       "Runtime's MatMulAddFusion makes it a Gemm before the QDQ rules run, and the Gemm stays FP32 "
                       "without a Q on its output" if o.matmul_add is not None and o.kernel is None else None,
             "matmul_add_fusion.cc, " + ORT_GEMM_SELECTOR),
        RuntimeRule(_type_mismatch, ORT_SELECTORS + ": input and output of one type"),
    )),
    # quantization parameters the INT8 kernels cannot take: where the rule checks them, FP32 …
    Stage("fp32", lambda o: "Gemm" if o.kernel == "QGemm" else _op(o), (
        RuntimeRule(_act_refused, ORT_SELECTORS + " (1.32), " + ORT_GEMM_SELECTOR),
        RuntimeRule(_weight_refused, ORT_SELECTORS + " (1.32), " + ORT_GEMM_SELECTOR + ": per-tensor or axis 1 only"),
    )),
    # … else the rule selects the node and the kernel fails at run time
    Stage("error", lambda o: o.kernel, (
        RuntimeRule(_act_fails, ORT_KERNELS),
        RuntimeRule(_weight_fails, ORT_KERNELS),
    )),
]


def ort_verdict(s: Site, rules: OrtRules) -> Verdict:
    o = ort_site(s, rules)
    return judge(ORT_RULES, o, o.kernel)


# --------------------------------------------------------------------------- OpenVINO

def _act_along_k(s: Site) -> bool:
    """The activation's scales run along K, the reduction axis (LPT cannot move them past the MatMul)."""
    a = s.a
    if a is None or not a.per_channel or a.uniform:
        return False
    return a.axis is None or a.axis == _k_axis(s.node, s.rank(0))


def _act_along_k_dynamic(s: Site) -> str | None:
    if not _act_along_k(s) or s.a.axis in (None, 1) or _static(s.graph.shape(s.node.input[0])):
        return None
    return ("the activation is quantized per channel along K with a dynamic shape: the CPU plugin's "
            "FakeQuantize takes per-channel ranges only along axis 1 and the model fails to compile")


def _weight_zero_point(s: Site) -> str | None:
    b = s.b
    if b is None or not s.weight_constant:
        return None
    if b.zero_point is None:
        return "the weight zero point is not a constant"
    if b.symmetric is False:
        return ("zero point of the weight is not 0: OpenVINO's INT8 MatMul needs symmetric int8 "
                "weights (asymmetric weights stay compressed, f32 compute); ONNX Runtime accepts them")
    if b.dtype.startswith("uint"):
        return "the weight is uint8: OpenVINO's INT8 MatMul takes int8 weights only"
    return None


def _ov_weight_per_row(s: Site) -> str | None:
    b = s.b
    if b is None or not s.weight_constant or not b.per_channel or b.uniform:
        return None
    if b.axis is not None and b.axis == _n_axis(s.node, s.rank(1)):
        return None
    return "the weight is quantized per row (along K): LPT cannot move such scales past the MatMul"


def _ov_kernel(s: Site) -> str:
    return "FullyConnected" if s.weight_constant else "MatMul"


def _when(condition: Callable[[Site], bool], reason: str) -> Callable[[Site], str | None]:
    return lambda s: reason if condition(s) else None


OV_RULES: list[Stage[Site]] = [
    Stage("error", _ov_kernel, (
        RuntimeRule(_act_along_k_dynamic, "CPU plugin FakeQuantize node (per-channel only along axis 1)"),
    )),
    Stage("fp32", _ov_kernel, (
        RuntimeRule(_when(lambda s: s.a is None, R_NO_ACT), OV_LPT_MATMUL + ": a FakeQuantize on input 0"),
        RuntimeRule(_when(lambda s: s.a is None and s.b is not None and s.weight_constant,
                   "(OpenVINO keeps the quantized weight compressed; on a CPU with VNNI or AMX its FullyConnected "
                   "quantizes the f32 input at run time in the kernel, per group of DYNAMIC_QUANTIZATION_GROUP_SIZE "
                   "channels, else it computes in f32: no static INT8 kernel)"),
                   "CPU plugin weights compression (FullyConnected; dynamic quantization of its input)"),
        RuntimeRule(lambda s: None if s.b else R_NO_WEIGHT if s.weight_constant else R_NO_SECOND,
             OV_LPT_MATMUL + ": a dequantization on input 1"),
        RuntimeRule(lambda s: f"the activation is {s.a.dtype}, not 8-bit" if s.a and s.a.bits != 8 else None,
             OV_CPU_PRECISIONS),
        RuntimeRule(_when(lambda s: s.a is not None and not s.a.scale_constant, "the activation scale is not a constant"),
             OV_LPT_FQ),
        RuntimeRule(_when(_act_along_k, "the activation is quantized per channel along K (the reduction axis): LPT cannot "
                                 "move such scales past the MatMul"), OV_LPT_MATMUL),
        RuntimeRule(lambda s: f"the {s.second} is {s.b.dtype}, not 8-bit" if s.b and s.b.bits != 8 else None,
             OV_CPU_PRECISIONS),
        RuntimeRule(lambda s: f"the {s.second} scale is not a constant" if s.b and not s.b.scale_constant else None,
             OV_LPT_FQ),
        RuntimeRule(_weight_zero_point, OV_CPU_PRECISIONS + ", LPT quantization scheme"),
        RuntimeRule(_ov_weight_per_row, OV_LPT_MATMUL),
        RuntimeRule(_when(lambda s: s.b is not None and not s.weight_constant and s.a is not None and s.a.symmetric is False,
                   "the first input has a nonzero zero point and the second input is not a constant: LPT's MatMul "
                   "transformation refuses an asymmetric first input then"),
             OV_LPT_MATMUL + ": (!isConstantPath(input 1)) && dequantization1.subtract"),
        RuntimeRule(_when(lambda s: s.b is not None and not s.weight_constant and s.b.symmetric is False,
                   "the second input has a nonzero zero point: LPT needs it to be 0"), OV_LPT_MATMUL),
    )),
]


def ov_verdict(s: Site) -> Verdict:
    return judge(OV_RULES, s, _ov_kernel(s))


# The quantizers' own integer ops (QOperator format, quantize_dynamic): what each runtime makes of one,
# observed on ONNX Runtime 1.32 and OpenVINO 2026.4.1 (tests/test_int8_report.py) — no selector decides,
# the op is INT8 by construction or the runtime's reader lowers it. (op, domain) → (ort, openvino).
QOP_FIX = "fusekit reads it as DQ → float op → Q (QDQAsQOperator)"
OPERATOR_FORMS: dict[tuple[str, str], tuple[Verdict, Verdict]] = {
    ("QLinearMatMul", ""): (Verdict("int8", "QLinearMatMul"), Verdict("int8", "FullyConnected (u8 × i8)")),
    ("QGemm", "com.microsoft"): (
        Verdict("int8", "QGemm"),
        Verdict("error", "none", [f"OpenVINO's ONNX reader has no conversion rule for com.microsoft.QGemm, so the "
                                  f"model does not load; {QOP_FIX}"])),
    ("MatMulInteger", ""): (
        Verdict("int8", "MatMulInteger (DynamicQuantizeMatMul once ONNX Runtime fuses it)"),
        Verdict("fp32", "FullyConnected (f32)", [
            "a dynamically quantized input: OpenVINO lowers MatMulInteger to an f32 FullyConnected with f32 weights "
            "(no static activation range for an INT8 one); fusekit --target openvino gives it its int8 weights, "
            "whose FullyConnected then quantizes its input at run time in the kernel (DynamicQuantizedLinear), "
            "and fuses a product of two activations (Q·Kᵀ, P·V) into the attention (QuantizedAttention)"])),
}
