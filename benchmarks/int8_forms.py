#!/usr/bin/env python3
"""In which ONNX form does each CPU runtime run a quantized transformer block fastest in INT8?

A BERT-base FFN block quantized the way ``onnxruntime.quantization.quantize_static``
writes it (QDQ format) can be handed to a runtime in several spellings.  Runtimes
recognise QDQ patterns themselves (ONNX Runtime's QDQ selector/actions turn them into
QLinearMatMul / MatMulIntegerToFloat; OpenVINO turns Q/DQ into FakeQuantize and its
low-precision transformations into a u8/i8 FullyConnected), so which spelling actually
reaches an INT8 kernel -- and which keeps the GELU, bias and requantization fused into
it -- has to be measured.

Blocks, built with ``onnx.helper`` (seq 128, hidden 768; seeded random weights):

  up    x_q[B,128,768] @ W_q[768,3072] + b[3072] -> GELU(erf)   (BERT FFN-up)
  down  x_q[B,128,768] @ W_q[768,768]  + b[768]                  (FFN-down / projection;
                                                                  768 instead of 3072 for speed)

  x_q   graph input, quantized activation.  Two variants:
          u8  uint8, scale 0.05, zero point 128  (quantize_static's default, asymmetric)
          s8  int8,  scale 0.05, zero point 0    (symmetric activations)
  W_q   int8 constant, per-tensor symmetric (scale max|W|/127, zero point 0)
  y_q   graph output, QuantizeLinear with constant scale / zero point calibrated by min/max on
        the B=1 input (u8: asymmetric uint8; s8: symmetric int8)

Forms (opset 14 unless stated; "GELU" = decomposed erf GELU Div(sqrt2)/Erf/Add(1)/Mul(x)/Mul(0.5)):

  a    quantize_static's QDQ: DQ(x_q) -> MatMul(., DQ(W_q)) -> Q -> DQ (requantization pair
       on the MatMul output) -> Add(b) -> GELU -> Q
  b    a without the requantization pair: DQ -> MatMul(DQ W) -> Add -> GELU -> Q
  c    b with com.microsoft Gelu
  c20  b with ONNX Gelu (opset 20)
  d    com.microsoft MatMulIntegerToFloat(x_q, W_q, x_scale, w_scale, x_zp, w_zp, b)
       -> com.microsoft Gelu -> Q          (ORT contrib op; OpenVINO's ONNX frontend converts it too)
  e    Reshape[-1,768] -> com.microsoft QGemm(x_q, W_q, int32 bias = round(b/(x_scale*w_scale)))
       -> (up: float output -> com.microsoft Gelu -> Q; down: quantized output y_scale/y_zp)
       -> Reshape                                                           (ORT contrib op)
  f    FP32 reference: float x = DQ(x_q) as the input, MatMul(W = DQ(W_q)) -> Add -> GELU,
       float output.  The ratio column is against this form.
  (down: the same forms without the GELU; c / c20 are then identical to b and are left out)

Runtimes (CPU only, 2 threads):
  ort  onnxruntime CPU EP, ORT_ENABLE_ALL, intra-op 2 (one global pool for all sessions)
  ov   openvino compile_model(CPU, INFERENCE_NUM_THREADS=2, INFERENCE_PRECISION_HINT=f32)
  ort-i8  (opt-in, --runtimes ort ov ort-i8) ort with session config
       session.qdqisint8allowed=1: on x86 ORT leaves QDQ groups with *int8* activations
       unfused (runs them in float, or rewrites s8 activations to u8 with QDQS8ToU8 where a
       Q/DQ pair allows it) unless this is set; its s8s8 kernels were ~10x slower than u8s8 here

Timing as in op_forms.py (shared code in _timing.py): every form is warmed up, then the
forms of one (block, variant, batch, runtime) are interleaved round-robin in a fresh random
order each round; one sample = k back-to-back inferences lasting >= --min-sample-ms; the cell
is the median ms per inference, +-half IQR, and the ratio vs the FP32 form f of the same
runtime and batch.  Inputs/outputs are bound once, page-aligned.

Then:
* numerics (B=1): each INT8 form's output vs form a's in output quantization steps
  (max |y_q - y_q(a)| and the share of elements that differ), and vs the exact result
  (fp64 x_deq @ W_deq + b, GELU, quantized once): shows what dropping the requantization
  pair changes in the rounding.  For f (float output): |y - deq(y_q(a))| / y_scale.
* ORT: op types of the session's optimized graph (SessionOptions.optimized_model_filepath):
  QLinearMatMul, MatMulIntegerToFloat, QGemm, BiasGelu, ...
* OpenVINO: per runtime layer of compiled.get_runtime_model(): rt_info layerType,
  runtimePrecision, primitiveType and the input element types; and a summary per form:
  the FullyConnected's data-input type (u8/i8 = INT8 compute; runtimePrecision alone
  misleads), what was merged into it (originalLayersNames: bias Add / GELU ops / requant),
  and what remains as separate layers (FakeQuantize, Eltwise, Gelu-ish counts).

Usage:  python benchmarks/int8_forms.py [--quick] [--batch 1 8] [--rounds 25]
        [--runtimes ort ov] [--blocks up down] [--variants u8 s8]
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# OpenVINO's telemetry forks (multiprocessing) from a background thread; with a multi-threaded
# OpenBLAS busy in numpy (the fp64 reference) the fork's atfork handler deadlocks.
# Single-threaded numpy BLAS has no worker threads to join, and keeps numpy off the timed cores.
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# Shared helpers live next to this script (sys.path[0] when run as a script).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import (
    OUT_PAGE_OFFSET,
    Unsupported,
    compact,
    cpu_times,
    median_half_iqr,
    ort_set_threads,
    ort_use_global_pool,
    page_aligned_empty,
    round_robin_samples,
    short_error,
)

SEQ = 128
HIDDEN = 768
INTER = 3072
X_SCALE = 0.05
MS_DOMAIN = "com.microsoft"
IR_VERSION = 9  # new enough for opset 20, old enough for every runtime here
SQRT2 = math.sqrt(2.0)

NP_TYPE = {TensorProto.UINT8: np.uint8, TensorProto.INT8: np.int8, TensorProto.FLOAT: np.float32}


# --------------------------------------------------------------------------- #
# Quantization parameters and data
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class QParams:
    """Per-tensor quantization of one tensor: real = (q - zp) * scale."""

    scale: float
    zp: int
    elem: int  # TensorProto.UINT8 / INT8

    @property
    def np(self):
        return NP_TYPE[self.elem]

    @property
    def qmin_qmax(self) -> tuple[int, int]:
        return (0, 255) if self.elem == TensorProto.UINT8 else (-128, 127)

    def quantize(self, v: np.ndarray) -> np.ndarray:
        lo, hi = self.qmin_qmax
        return np.clip(np.rint(np.asarray(v, np.float64) / self.scale) + self.zp, lo, hi).astype(self.np)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return (q.astype(np.float64) - self.zp) * self.scale


def calibrate_minmax(v: np.ndarray, symmetric: bool) -> QParams:
    """quantize_static's MinMax calibration: u8 asymmetric over [min(v,0), max(v,0)], s8 symmetric."""
    if symmetric:
        return QParams(float(np.max(np.abs(v))) / 127.0, 0, TensorProto.INT8)
    lo, hi = min(float(v.min()), 0.0), max(float(v.max()), 0.0)
    scale = (hi - lo) / 255.0
    return QParams(scale, round(-lo / scale), TensorProto.UINT8)


_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu_erf(v: np.ndarray) -> np.ndarray:
    return 0.5 * v * (1.0 + _erf(v / SQRT2))


@dataclass
class Block:
    """One quantized MatMul(+bias)(+GELU) block: weights, bias and all quantization params."""

    key: str
    title: str
    n: int
    gelu: bool
    w_q: np.ndarray  # int8 [768, n]
    w_scale: float
    bias: np.ndarray  # float32 [n]
    x: QParams
    mm: QParams  # requantization of the MatMul output (form a)
    y: QParams

    @property
    def w_deq(self) -> np.ndarray:
        return (self.w_q.astype(np.float32) * np.float32(self.w_scale)).astype(np.float32)

    def exact(self, x_q: np.ndarray) -> np.ndarray:
        """fp64 result from the dequantized input, before output quantization."""
        h = self.x.dequantize(x_q).reshape(-1, HIDDEN) @ self.w_deq.astype(np.float64) + self.bias
        return (gelu_erf(h) if self.gelu else h).reshape(*x_q.shape[:-1], self.n)


def make_block(key: str, variant: str, rng_seed: int, x_cal_q: np.ndarray, xq: QParams) -> Block:
    n, gelu = (INTER, True) if key == "up" else (HIDDEN, False)
    rng = np.random.default_rng(rng_seed)
    w = rng.standard_normal((HIDDEN, n)) / math.sqrt(HIDDEN)
    w_scale = float(np.max(np.abs(w))) / 127.0
    w_q = np.clip(np.rint(w / w_scale), -127, 127).astype(np.int8)
    bias = (0.1 * rng.standard_normal(n)).astype(np.float32)
    sym = variant == "s8"
    # Calibrate the MatMul output and the block output on the calibration input.
    mm = xq.dequantize(x_cal_q).reshape(-1, HIDDEN) @ (w_q.astype(np.float64) * np.float32(w_scale))
    y = mm + bias
    if gelu:
        y = gelu_erf(y)
    title = (f"{'FFN-up' if gelu else 'FFN-down'} {variant}  x_q[B,128,768] {'uint8 zp128' if not sym else 'int8 zp0'}"
             f" @ W_q[768,{n}] + b{' -> GELU' if gelu else ''}")
    return Block(key, title, n, gelu, w_q, w_scale, bias, xq,
                 calibrate_minmax(mm, sym), calibrate_minmax(y, sym))


def x_qparams(variant: str) -> QParams:
    return QParams(X_SCALE, 128, TensorProto.UINT8) if variant == "u8" else QParams(X_SCALE, 0, TensorProto.INT8)


# --------------------------------------------------------------------------- #
# Model builders
# --------------------------------------------------------------------------- #


class GraphBuilder:
    """Tiny helper around onnx.helper: named nodes, typed constants."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def _name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def const(self, value, dtype=np.float32, name: str | None = None) -> str:
        name = name or self._name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str, domain: str = "", out: str | None = None, **attrs) -> str:
        """Node named `name` (the names show up in OpenVINO's originalLayersNames)."""
        out = out or name
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name, domain=domain, **attrs))
        return out

    def qparams(self, q: QParams, tag: str) -> tuple[str, str]:
        return self.const(q.scale, np.float32, f"{tag}_scale"), self.const(q.zp, q.np, f"{tag}_zp")

    def model(self, x_elem: int, y_elem: int, B: int, n: int, opset: int, ms: bool) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, "int8_form",
            [helper.make_tensor_value_info("x", x_elem, [B, SEQ, HIDDEN])],
            [helper.make_tensor_value_info("y", y_elem, [B, SEQ, n])],
            self.inits)
        opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(MS_DOMAIN, 1)] if ms else [])
        m = helper.make_model(graph, opset_imports=opsets, producer_name="fusekit-int8-forms")
        m.ir_version = IR_VERSION
        return m


def gelu_decomposed(g: GraphBuilder, x: str) -> str:
    t = g.op("Div", [x, g.const(SQRT2)], "gelu_div")
    t = g.op("Erf", [t], "gelu_erf")
    t = g.op("Add", [t, g.const(1.0)], "gelu_add1")
    t = g.op("Mul", [x, t], "gelu_mulx")
    return g.op("Mul", [t, g.const(0.5)], "gelu_mulhalf")


def _qdq_model(blk: Block, B: int, requant: bool, gelu: str) -> onnx.ModelProto:
    """Forms a/b/c/c20: DQ(x) -> MatMul(DQ W) [-> Q -> DQ] -> Add(b) -> GELU -> Q."""
    g = GraphBuilder()
    xs, xz = g.qparams(blk.x, "x")
    x = g.op("DequantizeLinear", ["x", xs, xz], "x_dq")
    w = g.op("DequantizeLinear", [g.const(blk.w_q, np.int8, "W_q"), g.const(blk.w_scale, np.float32, "w_scale"),
                                  g.const(0, np.int8, "w_zp")], "w_dq")
    t = g.op("MatMul", [x, w], "matmul")
    if requant:
        ms_, mz = g.qparams(blk.mm, "mm")
        t = g.op("QuantizeLinear", [t, ms_, mz], "requant_q")
        t = g.op("DequantizeLinear", [t, ms_, mz], "requant_dq")
    t = g.op("Add", [t, g.const(blk.bias, np.float32, "bias")], "bias_add")
    if blk.gelu:
        if gelu == "decomposed":
            t = gelu_decomposed(g, t)
        elif gelu == "ms":
            t = g.op("Gelu", [t], "gelu", domain=MS_DOMAIN)
        else:
            t = g.op("Gelu", [t], "gelu")
    ys, yz = g.qparams(blk.y, "y")
    g.op("QuantizeLinear", [t, ys, yz], "y_q", out="y")
    opset = 20 if gelu == "onnx20" else 14
    return g.model(blk.x.elem, blk.y.elem, B, blk.n, opset, ms=gelu == "ms")


def _mmitf_model(blk: Block, B: int) -> onnx.ModelProto:
    """Form d: com.microsoft MatMulIntegerToFloat(x_q, W_q, scales, zps, bias) -> ms Gelu -> Q."""
    g = GraphBuilder()
    xs, xz = g.qparams(blk.x, "x")
    t = g.op("MatMulIntegerToFloat",
             ["x", g.const(blk.w_q, np.int8, "W_q"), xs, g.const(blk.w_scale, np.float32, "w_scale"),
              xz, g.const(0, np.int8, "w_zp"), g.const(blk.bias, np.float32, "bias")],
             "matmul_int_to_float", domain=MS_DOMAIN)
    if blk.gelu:
        t = g.op("Gelu", [t], "gelu", domain=MS_DOMAIN)
    ys, yz = g.qparams(blk.y, "y")
    g.op("QuantizeLinear", [t, ys, yz], "y_q", out="y")
    return g.model(blk.x.elem, blk.y.elem, B, blk.n, 14, ms=True)


def _qgemm_model(blk: Block, B: int) -> onnx.ModelProto:
    """Form e: Reshape 2-D -> com.microsoft QGemm (int32 bias) [-> ms Gelu -> Q] -> Reshape."""
    g = GraphBuilder()
    xs, xz = g.qparams(blk.x, "x")
    x2 = g.op("Reshape", ["x", g.const([-1, HIDDEN], np.int64, "shape_2d")], "reshape_in")
    bias_i32 = np.rint(blk.bias.astype(np.float64) / (np.float32(blk.x.scale) * np.float32(blk.w_scale)))
    ins = [x2, xs, xz, g.const(blk.w_q, np.int8, "W_q"), g.const(blk.w_scale, np.float32, "w_scale"),
           g.const(0, np.int8, "w_zp"), g.const(bias_i32, np.int32, "bias_i32")]
    ys, yz = g.qparams(blk.y, "y")
    if blk.gelu:
        t = g.op("QGemm", ins, "qgemm", domain=MS_DOMAIN)  # no y_scale: float output
        t = g.op("Gelu", [t], "gelu", domain=MS_DOMAIN)
        t = g.op("QuantizeLinear", [t, ys, yz], "y_q")
    else:
        t = g.op("QGemm", ins + [ys, yz], "qgemm", domain=MS_DOMAIN)
    g.op("Reshape", [t, g.const([B, SEQ, blk.n], np.int64, "shape_3d")], "reshape_out", out="y")
    return g.model(blk.x.elem, blk.y.elem, B, blk.n, 14, ms=True)


def _fp32_model(blk: Block, B: int) -> onnx.ModelProto:
    """Form f: float MatMul(x, DQ(W_q) folded) -> Add -> GELU, float in and out."""
    g = GraphBuilder()
    t = g.op("MatMul", ["x", g.const(blk.w_deq, np.float32, "W")], "matmul")
    t = g.op("Add", [t, g.const(blk.bias, np.float32, "bias")], "bias_add")
    if blk.gelu:
        t = gelu_decomposed(g, t)
    g.nodes[-1].output[0] = "y"
    return g.model(TensorProto.FLOAT, TensorProto.FLOAT, B, blk.n, 14, ms=False)


@dataclass
class Form:
    key: str
    desc: str
    build: Callable[[Block, int], onnx.ModelProto]
    float_io: bool = False
    gelu_only: bool = False  # only differs from b when the block has a GELU


FORMS = [
    Form("a", "QDQ + requant pair (quantize_static)", lambda blk, B: _qdq_model(blk, B, True, "decomposed")),
    Form("b", "QDQ, no requant pair", lambda blk, B: _qdq_model(blk, B, False, "decomposed")),
    Form("c", "b + com.microsoft Gelu", lambda blk, B: _qdq_model(blk, B, False, "ms"), gelu_only=True),
    Form("c20", "b + ONNX Gelu-20", lambda blk, B: _qdq_model(blk, B, False, "onnx20"), gelu_only=True),
    Form("d", "ms MatMulIntegerToFloat (+ms Gelu)", _mmitf_model),
    Form("e", "ms QGemm 2-D (+ms Gelu)", _qgemm_model),
    Form("f", "FP32 MatMul+Add(+GELU)", _fp32_model, float_io=True),
]


def forms_for(blk: Block) -> list[Form]:
    return [f for f in FORMS if blk.gelu or not f.gelu_only]


# --------------------------------------------------------------------------- #
# Runtimes
# --------------------------------------------------------------------------- #


@dataclass
class Runner:
    """A compiled form ready to run, its input and output bound once."""

    run: Callable[[], None]
    output: np.ndarray
    listing: list[str] = field(default_factory=list)  # what the runtime actually executes
    summary: str = ""
    keep: tuple = ()  # session / compiled model objects that must stay alive


def error_text(exc: BaseException) -> str:
    """short_error, plus OpenVINO's 'no conversion rule' list (its first line says only 'failed')."""
    m = re.search(r"No conversion rule found for operations:\s*([^\n]+)", str(exc))
    return f"no OpenVINO conversion rule for {m.group(1).strip()}"[:80] if m else short_error(exc, detailed=True)


def ort_runner(path: str, x: np.ndarray, threads: int, describe: bool, config: dict[str, str]) -> Runner:
    import onnxruntime as ort

    def opts() -> ort.SessionOptions:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        for k, v in config.items():
            so.add_session_config_entry(k, v)
        ort_set_threads(so, threads)
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        return so

    try:
        sess = ort.InferenceSession(path, opts(), providers=["CPUExecutionProvider"])
    except Exception as e:
        raise Unsupported(error_text(e)) from e

    summary = ""
    if describe:
        # Separate throw-away session to see the kernels ORT's own transformations chose.
        try:
            opt_path = path + ".ort_opt.onnx"
            so = opts()
            so.optimized_model_filepath = opt_path
            ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            summary = compact([("ms:" if n.domain == MS_DOMAIN else "") + n.op_type
                               for n in onnx.load(opt_path).graph.node])
        except Exception as e:  # noqa: BLE001
            summary = f"? ({short_error(e, 40)})"

    o = sess.get_outputs()[0]
    out_dtype = {"tensor(uint8)": np.uint8, "tensor(int8)": np.int8}.get(o.type, np.float32)
    out = page_aligned_empty(tuple(o.shape), out_dtype, offset=OUT_PAGE_OFFSET)
    binding = sess.io_binding()
    binding.bind_cpu_input("x", x)
    binding.bind_ortvalue_output("y", ort.OrtValue.ortvalue_from_numpy(out))
    return Runner(lambda: sess.run_with_iobinding(binding), out, [], summary, (sess, binding))


_OV_CORE = None


def ov_runner(path: str, x: np.ndarray, threads: int, describe: bool, form: Form, gelu: bool) -> Runner:
    import openvino as ov

    global _OV_CORE
    if _OV_CORE is None:
        _OV_CORE = ov.Core()
    config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"}
    try:
        compiled = _OV_CORE.compile_model(_OV_CORE.read_model(path), "CPU", config)
    except Exception as e:
        raise Unsupported(error_text(e)) from e
    listing, summary = ov_layers(compiled, form, gelu) if describe else ([], "")
    req = compiled.create_infer_request()
    req.set_input_tensor(ov.Tensor(x, shared_memory=True))
    port = compiled.output(0)
    out_dtype = {"u8": np.uint8, "i8": np.int8}.get(port.get_element_type().get_type_name(), np.float32)
    out = page_aligned_empty(tuple(port.get_shape()), out_dtype, offset=OUT_PAGE_OFFSET)
    req.set_output_tensor(ov.Tensor(out, shared_memory=True))
    return Runner(req.infer, out, listing, summary, (compiled, req))


def _rt(info, key: str) -> str:
    return info[key].astype(str) if key in info else ""


def _role(name: str, form: Form, gelu: bool) -> str | None:
    """What an original (frontend) node merged into a runtime layer was, in the form's terms."""
    if name.startswith("gelu"):
        return "GELU"
    if name == "y":  # OpenVINO names the node producing the graph output after the output
        return "GELU" if form.float_io and gelu else ("bias" if form.float_io else "out-Q")
    if "Dequantization" in name:
        return "dequant-scale"  # the DQ multiply/subtract that LPT moved behind the MatMul
    roles = {"bias_add": "bias", "requant_q": "requant-Q", "requant_dq": "requant-DQ",
             "matmul_int_to_float": "bias(MMITF)", "x_dq": "DQ(x)"}
    if name in roles:
        return roles[name]
    if name == "matmul" or name.startswith("MatMul_"):
        return None  # the MatMul itself
    if name.split("_")[0] in ("Convert", "Subtract", "Multiply"):
        return "DQ"  # a DequantizeLinear decomposed by the frontend
    return name


def _roles(names: list[str], form: Form, gelu: bool) -> str:
    out: list[str] = []
    for n in names:
        r = _role(n, form, gelu)
        if r and r not in out:
            out.append(r)
    return "+".join(out)


def ov_layers(compiled, form: Form, gelu: bool) -> tuple[list[str], str]:
    """(one line per runtime layer, one-line INT8/fusion summary) of an OpenVINO compiled model.

    Layers computed only from constants (weight paths) are left out.  A line reads
    ``layerType runtimePrecision primitiveType in(<input element types>) [merged original nodes]``.
    The summary gives the FullyConnected's *data input* type (u8/i8: the INT8 kernel ran;
    runtimePrecision alone misleads), the roles of the nodes merged into it, and the layers
    left beside it.
    """
    ops = compiled.get_runtime_model().get_ops()
    info = {op.get_friendly_name(): op.get_rt_info() for op in ops}
    by_name = {op.get_friendly_name(): op for op in ops}
    memo: dict[str, bool] = {}

    def is_const(name: str) -> bool:
        if name not in memo:
            memo[name] = False  # cycle guard
            op = by_name[name]
            srcs = [op.input_value(i).get_node().get_friendly_name() for i in range(op.get_input_size())]
            memo[name] = _rt(info[name], "layerType") == "Const" or (bool(srcs) and all(is_const(s) for s in srcs))
        return memo[name]

    lines, fc, beside = [], [], []
    counts = {"FakeQuantize": 0, "Eltwise": 0, "Gelu": 0}
    for op in ops:
        name = op.get_friendly_name()
        rt = info[name]
        lt = _rt(rt, "layerType")
        if lt in ("Input", "Output") or is_const(name):
            continue
        ins = ",".join(op.get_input_element_type(i).get_type_name() for i in range(op.get_input_size()))
        orig = [n for n in _rt(rt, "originalLayersNames").split(",") if n]
        lines.append(f"{lt:<15} {_rt(rt, 'runtimePrecision'):<5} {_rt(rt, 'primitiveType'):<26} in({ins})"
                     + (f"  [{'+'.join(orig)}]" if len(orig) > 1 else ""))
        if lt == "FullyConnected":
            fc.append((op.get_input_element_type(0).get_type_name(), _rt(rt, "primitiveType"), _roles(orig, form, gelu)))
            continue
        if lt in counts:
            counts[lt] += 1
        elif "gelu" in lt.lower():
            counts["Gelu"] += 1
        roles = _roles(orig or [name], form, gelu)
        if lt not in ("Reorder", "Reshape"):
            beside.append(f"{lt}[{roles}]" if roles else lt)
    merged = " ".join(r for _, _, r in fc) + " " + " ".join(beside)
    if fc and "bias" not in merged:
        # No layer lists bias_add: LPT folded the Add into the output FakeQuantize's ranges
        # (the numerics section shows the bias is applied).
        fc = [(t, prim, roles + "+bias(into out-Q)") for t, prim, roles in fc]
    if not fc:
        head = "no FullyConnected"
    else:
        head = "; ".join(f"FC in={t}{' INT8' if t in ('u8', 'i8') else ''} ({prim}), fused: {roles or '-'}"
                         for t, prim, roles in fc)
    summary = (f"{head}; beside FC: {' '.join(beside) or '-'}; "
               f"standalone FakeQuantize {counts['FakeQuantize']}, Eltwise {counts['Eltwise']}, Gelu {counts['Gelu']}")
    return lines, summary


# --------------------------------------------------------------------------- #
# Main
# --------------------------------------------------------------------------- #


RUNTIMES = ("ort", "ov", "ort-i8")
LABELS = {"ort": "ORT", "ov": "OV f32", "ort-i8": "ORT i8ok"}
# x86 ONNX Runtime leaves QDQ nodes with *int8* activations unfused (s8s8 kernels are slow
# there) unless this session option is set; the opt-in 'ort-i8' runtime sets it.
ORT_CONFIG = {"ort": {}, "ort-i8": {"session.qdqisint8allowed": "1"}}


@dataclass
class Cell:
    ms: float | None = None
    spread: float = 0.0
    note: str = ""
    listing: list[str] = field(default_factory=list)
    summary: str = ""
    y: np.ndarray | None = None  # B=1 output, for the numerics


def bench(args: argparse.Namespace) -> None:
    t_start = time.perf_counter()
    if any(rt.startswith("ort") for rt in args.runtimes):
        ort_use_global_pool(args.threads)
    rng = np.random.default_rng(0)
    x_float = {B: rng.standard_normal((B, SEQ, HIDDEN)) for B in args.batch}
    x_cal = x_float[min(args.batch)]
    tmp = args.keep_models or tempfile.mkdtemp(prefix="int8_forms_")
    os.makedirs(tmp, exist_ok=True)

    blocks: list[Block] = []
    for v in args.variants:
        xq = x_qparams(v)
        for bk in args.blocks:
            blocks.append(make_block(bk, v, 1 if bk == "up" else 2, xq.quantize(x_cal), xq))
    describe_B = min(args.batch)

    # results[(block title, B, form)][runtime]
    results: dict[tuple, dict[str, Cell]] = {}
    cpu0 = cpu_times()
    for blk in blocks:
        forms = forms_for(blk)
        for B in args.batch:
            x_q = page_aligned_empty((B, SEQ, HIDDEN), blk.x.np)
            x_q[...] = blk.x.quantize(x_float[B])
            x_f = page_aligned_empty((B, SEQ, HIDDEN), np.float32)
            x_f[...] = blk.x.dequantize(x_q)
            paths = {}
            for f in forms:
                paths[f.key] = os.path.join(tmp, f"{blk.key}_{blk.x.np.__name__}_{f.key}_b{B}.onnx")
                onnx.save(f.build(blk, B), paths[f.key])
            for rt in args.runtimes:
                runners: dict[str, Runner] = {}
                for f in forms:
                    cell = results.setdefault((blk.title, B, f.key), {}).setdefault(rt, Cell())
                    x = x_f if f.float_io else x_q
                    try:
                        if rt == "ov":
                            runner = ov_runner(paths[f.key], x, args.threads, B == describe_B, f, blk.gelu)
                        else:
                            runner = ort_runner(paths[f.key], x, args.threads, B == describe_B, ORT_CONFIG[rt])
                        runner.run()
                    except Unsupported as e:
                        cell.note = f"cannot load: {e}"
                        continue
                    except Exception as e:  # noqa: BLE001 - a runtime error at first run
                        cell.note = f"failed: {error_text(e)}"
                        continue
                    cell.listing, cell.summary = runner.listing, runner.summary
                    if B == describe_B:
                        cell.y = runner.output.copy()
                    runners[f.key] = runner
                if runners:
                    samples = round_robin_samples({k: r.run for k, r in runners.items()},
                                                  args.rounds, args.warmup, args.min_sample_ms)
                    for k, v in samples.items():
                        med, spread = median_half_iqr(v)
                        results[(blk.title, B, k)][rt].ms, results[(blk.title, B, k)][rt].spread = med * 1e3, spread
                del runners
                print(f"  [{time.perf_counter() - t_start:6.1f}s] {blk.key} {blk.x.np.__name__} B={B} {rt} done",
                      file=sys.stderr, flush=True)
            if B == describe_B:
                blk_exact = blk.exact(x_q)
                results[(blk.title, B, "_exact")] = {"": Cell(y=blk_exact)}
    cpu1 = cpu_times()
    if not args.keep_models:
        shutil.rmtree(tmp, ignore_errors=True)
    steal = None
    if cpu0 and cpu1 and len(cpu0) > 7:
        d = [b - a for a, b in zip(cpu0[:8], cpu1[:8])]
        steal = d[7] / sum(d) if sum(d) else None
    print_report(args, blocks, results, time.perf_counter() - t_start, steal)


def numerics(blk: Block, cells: dict[str, Cell], exact: np.ndarray) -> dict[str, str]:
    """Per form: output vs form a and vs the exact result, in output quantization steps."""
    a = cells["a"].y if "a" in cells else None
    q_exact = blk.y.quantize(exact).astype(np.int32)
    out = {}
    for k, c in cells.items():
        if c.y is None:
            out[k] = "-"
            continue
        if k == "f":
            deq_ref = blk.y.dequantize(a) if a is not None else blk.y.dequantize(q_exact)
            ex = np.max(np.abs(c.y.astype(np.float64) - exact)) / blk.y.scale
            va = np.max(np.abs(c.y.astype(np.float64) - deq_ref)) / blk.y.scale
            out[k] = f"float out: vs a {va:.2f} steps; vs exact {ex:.3f} steps"
            continue
        yi = c.y.astype(np.int32)
        parts = []
        if a is not None:
            d = np.abs(yi - a.astype(np.int32))
            parts.append(f"vs a max {d.max()} steps, {np.mean(d > 0) * 100:5.2f}% differ")
        d = np.abs(yi - q_exact)
        parts.append(f"vs exact max {d.max()}, {np.mean(d > 0) * 100:5.2f}% differ")
        out[k] = "; ".join(parts)
    return out


def print_report(args, blocks: list[Block], results, elapsed: float, steal: float | None) -> None:
    import onnxruntime as ort
    import openvino as ov

    cols = [(rt, B) for rt in args.runtimes for B in args.batch]
    print(f"# fusekit INT8 form benchmark  onnx {onnx.__version__}  onnxruntime {ort.__version__}  "
          f"openvino {ov.get_version().split('-')[0]}  threads={args.threads}  rounds={args.rounds}")
    print("# cell: median ms per inference ±half-IQR (ratio vs FP32 form f, same runtime and batch)")
    if steal is not None:
        print(f"# hypervisor steal during the run: {steal * 100:.0f}% (absolute ms drift; compare ratios)")
    W = 25
    describe_B = min(args.batch)
    for blk in blocks:
        forms = forms_for(blk)
        print()
        print(f"## {blk.title}   (x {blk.x.scale}/{blk.x.zp}, W scale {blk.w_scale:.3g}, "
              f"requant {blk.mm.scale:.3g}/{blk.mm.zp}, y {blk.y.scale:.3g}/{blk.y.zp})")
        hdr = f"{'form':<42}" + "".join(f"{LABELS[rt] + ' B=' + str(B):>{W}}" for rt, B in cols)
        print(hdr)
        print("-" * len(hdr))
        notes: list[str] = []
        for f in forms:
            row = f"{f.key + '  ' + f.desc:<42}"
            for rt, B in cols:
                c = results[(blk.title, B, f.key)][rt]
                base = results[(blk.title, B, "f")][rt].ms
                if c.ms is None:
                    note = f"{f.key}/{LABELS[rt]}: {c.note or 'not run'}"
                    if note not in notes:
                        notes.append(note)
                    tag = f"[{notes.index(note) + 1}]"
                    row += f"{('cannot load ' if c.note.startswith('cannot') else 'failed ') + tag:>{W}}"
                else:
                    ratio = f"{c.ms / base:.2f}x" if base else "-"
                    row += f"{f'{c.ms:.3f} ±{c.spread * 100:.0f}% ({ratio})':>{W}}"
            print(row)
        for i, n in enumerate(notes):
            print(f"   [{i + 1}] {n}")

    print()
    print(f"## numerics (B={describe_B}): INT8 outputs in output quantization steps, vs form a (same runtime) "
          "and vs the exact result (fp64 from the dequantized input, quantized once)")
    for blk in blocks:
        print(f"# {blk.title}")
        exact = results[(blk.title, describe_B, "_exact")][""].y
        for rt in args.runtimes:
            cells = {f.key: results[(blk.title, describe_B, f.key)][rt] for f in forms_for(blk)}
            for k, text in numerics(blk, cells, exact).items():
                print(f"  {LABELS[rt]:<9}{k:<4}{text}")

    for rt in [r for r in args.runtimes if r.startswith("ort")]:
        print()
        print(f"## {LABELS[rt]}: node types of the session-optimized graph (B={describe_B}; ms: = com.microsoft)"
              + (f"; session config {ORT_CONFIG[rt]}" if ORT_CONFIG[rt] else ""))
        for blk in blocks:
            print(f"# {blk.title}")
            for f in forms_for(blk):
                c = results[(blk.title, describe_B, f.key)][rt]
                print(f"  {f.key:<4}{c.summary if c.ms is not None else c.note}")

    if "ov" in args.runtimes:
        print()
        print(f"## OpenVINO f32 hint: runtime layers (B={describe_B}; weight-only layers omitted). Summary: the "
              "FullyConnected's data input type (u8/i8 = INT8 kernel), the original nodes merged into it, "
              "and the layers left beside it")
        for blk in blocks:
            print(f"# {blk.title}")
            for f in forms_for(blk):
                c = results[(blk.title, describe_B, f.key)]["ov"]
                if c.ms is None:
                    print(f"  {f.key:<4}{c.note}")
                    continue
                print(f"  {f.key:<4}{c.summary}")
                if args.ov_layers:
                    for line in c.listing:
                        print(f"        {line}")
    print()
    print(f"# total {elapsed:.0f}s")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description="Time ONNX forms (QDQ with/without requantization, contrib ops, FP32) of a quantized "
                    "BERT-base FFN block in ONNX Runtime and OpenVINO CPU, and show which run in INT8.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few rounds and short samples (a smoke run)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes (seq len is 128)")
    ap.add_argument("--rounds", type=int, default=25, help="round-robin rounds per (block, batch, runtime)")
    ap.add_argument("--warmup", type=int, default=5, help="warm-up inferences per form")
    ap.add_argument("--min-sample-ms", type=float, default=10.0,
                    help="repeat each inference within one sample until the sample lasts this long")
    ap.add_argument("--threads", type=int, default=2, help="ORT intra-op / OpenVINO inference threads")
    ap.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=["ort", "ov"],
                    help="ort-i8: ORT with session.qdqisint8allowed=1 (QDQ fusions also for int8 activations)")
    ap.add_argument("--blocks", nargs="+", choices=["up", "down"], default=["up", "down"])
    ap.add_argument("--variants", nargs="+", choices=["u8", "s8"], default=["u8", "s8"],
                    help="activation quantization: u8 asymmetric (zp 128) / s8 symmetric (zp 0)")
    ap.add_argument("--no-ov-layers", dest="ov_layers", action="store_false",
                    help="print only the per-form OpenVINO summary, not every runtime layer")
    ap.add_argument("--keep-models", metavar="DIR", help="write the generated .onnx files here and keep them")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.warmup, args.min_sample_ms = 5, 2, 5.0
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    bench(args)


if __name__ == "__main__":
    main()
