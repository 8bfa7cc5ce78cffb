#!/usr/bin/env python3
"""Which ONNX form of a fused BERT self-attention block does each CPU runtime run fastest?

One layer of BERT-base self-attention (hidden 768, 12 heads x 64, scale 1/8) is
built with ``onnx.helper`` and seeded random weights in several ONNX spellings.
Every model has the same interface:

    x     float32 [B, S, 768]   hidden states
    mask  int64   [B, S]        0/1 attention mask (padding on some rows)
    y     float32 [B, S, 768]   merged heads (context before the output projection;
                                with --out-proj the projection MatMul+Add is appended
                                to every form identically)

Forms
  a   unfused, as the TorchScript exporter writes transformers-5 eager attention:
      Q/K/V MatMul->Add->Reshape[B,S,12,64]->Transpose (K perm 0,2,3,1), MatMul(Q,K^T)
      ->Mul(0.125)->Add(mask)->Softmax->MatMul(V)->Transpose->Reshape; additive mask
      Where(Cast(Unsqueeze(mask),bool), 0, -3.4e38) [B,1,1,S] computed once   (opset 17)
  a2  an identical copy of a: its ratio vs a is the noise floor of the run
  b   com.microsoft Attention, packed QKV weight [768,2304] + bias [2304], mask_index =
      raw 2-D int32 mask [B,S], mask_filter_value=-3.4e38                     (opset 17)
  b2  as b with the default mask_filter_value (-10000)
  c   separate Q/K/V MatMul+Add -> com.microsoft MultiHeadAttention(3-D Q,K,V,
      key_padding_mask int32 [B,S], mask_filter_value=-3.4e38)                (opset 17)
  c2  packed QKV MatMul+Add [768,2304] -> Split -> MultiHeadAttention
  c3  Q/K/V MatMul without Add -> MultiHeadAttention(bias=[2304])
  d   ONNX Attention-23, 3-D Q/K/V (MatMul+Add), q/kv_num_heads=12, scale=0.125,
      additive float attn_mask [B,1,S,S] (Where + Expand from the 2-D mask)   (opset 23)
  d2  as d with a boolean attn_mask [B,1,S,S] (True = attend)
  d3  as d with the float mask left broadcast as [B,1,1,S] (probe: ORT's CPU kernel is
      said to reject it)

--bias adds a relative position bias [1, 12, S, S], slope_h · (k − q) computed from S as
MPNet computes its bias from the input's shape, to the scores of every form: added after
the mask in a, as attention_bias in b and c, summed into the float mask in d and d3 (d2's
boolean mask cannot carry it, so d2 is left out).

Step 1 (correctness): every form is compared with form a at B=2, S=16 with RIGHT padding
in row 0 and LEFT padding in row 1, in onnxruntime with graph optimizations disabled (and
in OpenVINO f32 as well).  A form that mismatches with left padding is disqualified.

Step 2 (speed): ONNX Runtime CPU (ORT_ENABLE_ALL, 2 intra-op threads, one global pool
shared by all sessions), OpenVINO CPU f32 and OpenVINO with its default precision (bf16
on AMX machines), at (B,S) = (1,128), (8,128), (1,384).  Forms are interleaved
round-robin (fresh random order per round); one sample = k back-to-back inferences
lasting >= --min-sample-ms; the cell shows the median ms per inference, +-half IQR,
the ratio vs form a in the same runtime, and max|y - fp64 numpy reference|.  A second
table gives the 10th percentile over rounds: when other processes share the 2 cores
(ORT's spin-waiting pool suffers most: 3-4x slower medians) it is the steadier number.
The timing masks have padding too (left padding for B=1, alternating left/right for B>1),
so the error column also catches runtimes that mishandle left padding after their own
fusions.

Finally each form's op list is printed: the ONNX ops as built, ORT's graph after its
session fusions, and OpenVINO's runtime layers (with a flag for a fused
ScaledDotProductAttention / SDPA layer).

Usage: python benchmarks/attention_forms.py [--shapes 1x128 8x128 1x384] [--rounds 40]
       [--runtimes ort ov-f32 ov-bf16] [--forms a b c ...] [--out-proj] [--bias]
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

# OpenVINO's telemetry forks (multiprocessing) from a background thread; with a multi-threaded
# OpenBLAS busy in numpy (the fp64 reference) the fork's atfork handler deadlocked this script.
# Single-threaded numpy BLAS has no worker threads to join, and keeps numpy off the timed cores.
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# Shared helpers live next to this script; its folder is sys.path[0] when run as
# `python benchmarks/attention_forms.py`, and is added here for `python -m benchmarks.attention_forms`.
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
)
from _timing import short_error as _short_error

HIDDEN = 768
HEADS = 12
HEAD_DIM = 64
SCALE = 0.125
FILTER = -3.4028234663852886e38  # torch.finfo(float32).min
MS = "com.microsoft"
IR_VERSION = 10  # opset 23 needs IR >= 10 (onnx checker); ORT 1.31 / OV 2026 read it


# --------------------------------------------------------------------------- #
# Model builders
# --------------------------------------------------------------------------- #


class G:
    """Tiny onnx.helper wrapper: unique names, initializers."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, p: str) -> str:
        self._n += 1
        return f"{p}_{self._n}"

    def init(self, value, dtype=np.float32, name: str | None = None) -> str:
        name = name or self.name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def i64(self, value) -> str:
        return self.init(value, np.int64)

    def op(self, op_type: str, inputs: list[str], domain: str = "", out: str | None = None,
           n_out: int = 1, **attrs):
        outs = [out] if out else [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.name(op_type), domain=domain, **attrs))
        return outs[0] if n_out == 1 else outs

    def model(self, opset: int, ms: bool) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, "attention_form",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "S", HIDDEN]),
             helper.make_tensor_value_info("mask", TensorProto.INT64, ["B", "S"])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", "S", HIDDEN])],
            self.inits)
        ops = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(MS, 1)] if ms else [])
        m = helper.make_model(graph, opset_imports=ops, producer_name="fusekit-attention-forms")
        m.ir_version = IR_VERSION
        return m


def make_weights(seed: int = 0, bias: bool = False) -> dict:
    """The weights every form shares; with ``bias`` also the per-head slopes of the position bias."""
    rng = np.random.default_rng(seed)
    s = 1.0 / math.sqrt(HIDDEN)
    w = {}
    for k in "qkvo":
        w["W" + k] = (rng.standard_normal((HIDDEN, HIDDEN)) * s).astype(np.float32)
        w["b" + k] = (0.1 * rng.standard_normal(HIDDEN)).astype(np.float32)
    w["Wqkv"] = np.concatenate([w["Wq"], w["Wk"], w["Wv"]], axis=1)
    w["bqkv"] = np.concatenate([w["bq"], w["bk"], w["bv"]])
    if bias:
        w["slopes"] = np.linspace(-1.0, 1.0, HEADS).astype(np.float32).reshape(1, HEADS, 1, 1)
    return w


def _position_bias(g: G, w: dict) -> str:
    """slope_h · (k − q), [1, 12, S, S], from the sequence length of x."""
    s = g.op("Gather", [g.op("Shape", ["x"]), g.i64(1)], axis=0)
    r = g.op("Cast", [g.op("Range", [g.i64(0), s, g.i64(1)])], to=TensorProto.FLOAT)
    d = g.op("Sub", [g.op("Unsqueeze", [r, g.i64([0])]), g.op("Unsqueeze", [r, g.i64([1])])])
    return g.op("Mul", [g.op("Unsqueeze", [d, g.i64([0, 1])]), g.init(w["slopes"], name="slopes")])


def _finish(g: G, ctx: str, w: dict, out_proj: bool, opset: int, ms: bool) -> onnx.ModelProto:
    """Optional output projection (identical in every form), then output 'y'."""
    if out_proj:
        t = g.op("MatMul", [ctx, g.init(w["Wo"], name="Wo")])
        g.op("Add", [t, g.init(w["bo"], name="bo")], out="y")
    else:
        g.op("Identity", [ctx], out="y")
    return g.model(opset, ms)


def _proj(g: G, w: dict, k: str, bias: bool = True) -> str:
    t = g.op("MatMul", ["x", g.init(w["W" + k], name="W" + k)])
    return g.op("Add", [t, g.init(w["b" + k], name="b" + k)]) if bias else t


def _mask_i32(g: G) -> str:
    return g.op("Cast", ["mask"], to=TensorProto.INT32)


def form_a(w: dict, out_proj: bool) -> onnx.ModelProto:
    g = G()
    shp4 = g.i64([0, 0, HEADS, HEAD_DIM])

    def heads(k: str, perm) -> str:
        t = g.op("Reshape", [_proj(g, w, k), shp4])
        return g.op("Transpose", [t], perm=perm)

    q = heads("q", [0, 2, 1, 3])
    kt = heads("k", [0, 2, 3, 1])
    v = heads("v", [0, 2, 1, 3])
    m = g.op("Unsqueeze", ["mask", g.i64([1, 2])])
    m = g.op("Cast", [m], to=TensorProto.BOOL)
    add_mask = g.op("Where", [m, g.init(0.0), g.init(FILTER)])
    s = g.op("MatMul", [q, kt])
    s = g.op("Mul", [s, g.init(SCALE)])
    s = g.op("Add", [s, add_mask])
    if "slopes" in w:
        s = g.op("Add", [s, _position_bias(g, w)])
    p = g.op("Softmax", [s], axis=-1)
    c = g.op("MatMul", [p, v])
    c = g.op("Transpose", [c], perm=[0, 2, 1, 3])
    c = g.op("Reshape", [c, g.i64([0, 0, HIDDEN])])
    return _finish(g, c, w, out_proj, 17, False)


def form_b(w: dict, out_proj: bool, filter_value: float | None = FILTER) -> onnx.ModelProto:
    g = G()
    attrs = {"num_heads": HEADS}
    if filter_value is not None:
        attrs["mask_filter_value"] = filter_value
    ins = ["x", g.init(w["Wqkv"], name="Wqkv"), g.init(w["bqkv"], name="bqkv"), _mask_i32(g)]
    ins += ["", _position_bias(g, w)] if "slopes" in w else []  # attention_bias
    c = g.op("Attention", ins, domain=MS, **attrs)
    return _finish(g, c, w, out_proj, 17, True)


def form_c(w: dict, out_proj: bool, variant: str = "separate") -> onnx.ModelProto:
    g = G()
    attrs = {"num_heads": HEADS, "mask_filter_value": FILTER}
    kpm = _mask_i32(g)
    if variant == "separate":
        ins = [_proj(g, w, "q"), _proj(g, w, "k"), _proj(g, w, "v"), "", kpm]
    elif variant == "packed":
        t = g.op("MatMul", ["x", g.init(w["Wqkv"], name="Wqkv")])
        t = g.op("Add", [t, g.init(w["bqkv"], name="bqkv")])
        q, k, v = g.op("Split", [t, g.i64([HIDDEN] * 3)], n_out=3, axis=-1)
        ins = [q, k, v, "", kpm]
    elif variant == "bias":
        ins = [_proj(g, w, "q", False), _proj(g, w, "k", False), _proj(g, w, "v", False),
               g.init(w["bqkv"], name="bqkv"), kpm]
    else:
        raise ValueError(variant)
    ins += [_position_bias(g, w)] if "slopes" in w else []  # attention_bias
    c = g.op("MultiHeadAttention", ins, domain=MS, **attrs)
    return _finish(g, c, w, out_proj, 17, True)


def form_d(w: dict, out_proj: bool, mask_kind: str = "float") -> onnx.ModelProto:
    g = G()
    q, k, v = _proj(g, w, "q"), _proj(g, w, "k"), _proj(g, w, "v")
    m = g.op("Unsqueeze", ["mask", g.i64([1, 2])])          # [B,1,1,S]
    m = g.op("Cast", [m], to=TensorProto.BOOL)
    if mask_kind in ("float", "float-bcast"):
        m = g.op("Where", [m, g.init(0.0), g.init(FILTER)])
    if mask_kind != "float-bcast":
        s = g.op("Shape", ["mask"], start=1, end=2)           # [S]
        one = g.i64([1])
        tgt = g.op("Concat", [one, one, s, one], axis=0)     # [1,1,S,1]
        m = g.op("Expand", [m, tgt])                         # [B,1,S,S]
    if "slopes" in w:
        if mask_kind == "bool":
            raise ValueError("a boolean mask cannot carry a bias")
        m = g.op("Add", [m, _position_bias(g, w)])           # [B,12,S,S]
    c = g.op("Attention", [q, k, v, m], q_num_heads=HEADS, kv_num_heads=HEADS, scale=SCALE)
    return _finish(g, c, w, out_proj, 23, False)


@dataclass
class Form:
    key: str
    desc: str
    build: Callable[[dict, bool], onnx.ModelProto]


FORMS = [
    Form("a", "unfused (TorchScript eager)", form_a),
    Form("a2", "= a, identical copy (noise gauge)", form_a),
    Form("b", "ms Attention, filter -3.4e38", form_b),
    Form("b2", "ms Attention, filter default", lambda w, p: form_b(w, p, None)),
    Form("c", "ms MHA, sep. MatMul+Add", form_c),
    Form("c2", "ms MHA, packed MatMul+Split", lambda w, p: form_c(w, p, "packed")),
    Form("c3", "ms MHA, bias input", lambda w, p: form_c(w, p, "bias")),
    Form("d", "ONNX Attention-23 float[B,1,S,S]", form_d),
    Form("d2", "ONNX Attention-23 bool[B,1,S,S]", lambda w, p: form_d(w, p, "bool")),
    Form("d3", "ONNX Attention-23 float[B,1,1,S]", lambda w, p: form_d(w, p, "float-bcast")),
]


def reference(x: np.ndarray, mask: np.ndarray, w: dict, out_proj: bool) -> np.ndarray:
    """float64 numpy reference of form a."""
    x = x.astype(np.float64)
    B, S, _ = x.shape

    def heads(k):
        t = x @ w["W" + k].astype(np.float64) + w["b" + k]
        return t.reshape(B, S, HEADS, HEAD_DIM).transpose(0, 2, 1, 3)

    q, k, v = heads("q"), heads("k"), heads("v")
    s = q @ k.transpose(0, 1, 3, 2) * SCALE + np.where(mask[:, None, None, :] != 0, 0.0, FILTER)
    if "slopes" in w:
        positions = np.arange(S, dtype=np.float64)
        s = s + w["slopes"].astype(np.float64) * (positions[None, :] - positions[:, None])
    s = s - s.max(-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(-1, keepdims=True)
    c = (p @ v).transpose(0, 2, 1, 3).reshape(B, S, HIDDEN)
    if out_proj:
        c = c @ w["Wo"].astype(np.float64) + w["bo"]
    return c


def make_mask(B: int, S: int, check: bool = False) -> np.ndarray:
    """0/1 int64 mask.  check: row 0 right-padded, row 1 left-padded.  Timing: B=1 left-padded
    (S/8 pads), B>1 alternating left / right padding of varying length, some rows unpadded."""
    m = np.ones((B, S), dtype=np.int64)
    if check:
        m[0, S - 5:] = 0
        m[1, :4] = 0
        return m
    for i in range(B):
        pad = (S // 8) * (1 + i % 3) if i % 4 != 3 else 0
        if pad:
            if i % 2 == 0:
                m[i, :pad] = 0
            else:
                m[i, S - pad:] = 0
    return m


# --------------------------------------------------------------------------- #
# Runtimes
# --------------------------------------------------------------------------- #

def short_error(exc: BaseException, limit: int = 90) -> str:
    return _short_error(exc, limit, ov_prefix="OV frontend: no op ", detailed=True)


class Runner:
    run: Callable[[], None]
    output: Callable[[], np.ndarray]
    layers: str = ""
    sdpa: str = ""


def ort_options(level: str, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                   "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}[level]
    ort_set_threads(so, threads)
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return so


def ort_runner(path: str, x: np.ndarray, mask: np.ndarray, threads: int, level: str = "all",
               want_layers: bool = True) -> Runner:
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(path, ort_options(level, threads), providers=["CPUExecutionProvider"])
    except Exception as e:
        raise Unsupported(short_error(e)) from e
    r = Runner()
    if want_layers:
        try:
            opt = path + ".ort_opt.onnx"
            so = ort_options(level, threads)
            so.optimized_model_filepath = opt
            ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            r.layers = op_list(onnx.load(opt))
            os.remove(opt)
        except Exception as e:  # noqa: BLE001
            r.layers = f"? ({short_error(e, 40)})"
    out = page_aligned_empty(x.shape, offset=OUT_PAGE_OFFSET)
    b = sess.io_binding()
    b.bind_cpu_input("x", x)
    b.bind_cpu_input("mask", mask)
    b.bind_ortvalue_output("y", ort.OrtValue.ortvalue_from_numpy(out))
    r.run = lambda: sess.run_with_iobinding(b)
    r.output = lambda: out
    r._keep = (sess, b)  # type: ignore[attr-defined]
    return r


_OV_CORE = None


def ov_runner(path: str, x: np.ndarray, mask: np.ndarray, threads: int, precision: str | None) -> tuple[Runner, str]:
    import openvino as ov

    global _OV_CORE
    if _OV_CORE is None:
        _OV_CORE = ov.Core()
    cfg: dict = {"INFERENCE_NUM_THREADS": threads}
    if precision:
        cfg["INFERENCE_PRECISION_HINT"] = precision
    try:
        model = _OV_CORE.read_model(path)
        compiled = _OV_CORE.compile_model(model, "CPU", cfg)
    except Exception as e:
        raise Unsupported(short_error(e)) from e
    resolved = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
    r = Runner()
    r.layers, r.sdpa = ov_layers(compiled)
    req = compiled.create_infer_request()
    try:
        req.set_tensor("x", ov.Tensor(x, shared_memory=True))
        req.set_tensor("mask", ov.Tensor(mask, shared_memory=True))
        out = page_aligned_empty(x.shape, offset=OUT_PAGE_OFFSET)
        req.set_tensor("y", ov.Tensor(out, shared_memory=True))
    except Exception as e:
        raise Unsupported("binding: " + short_error(e)) from e
    r.run = lambda: req.infer()
    r.output = lambda: out
    r._keep = (compiled, req)  # type: ignore[attr-defined]
    return r, resolved


SDPA_RE = re.compile(r"ScaledDotProductAttention|SDPA|Attention", re.IGNORECASE)


def ov_layers(compiled) -> tuple[str, str]:
    """(layer listing, fused-attention layer types found).  Listing: layerType@precision,
    I/O and constant-only layers omitted, consecutive repeats collapsed."""
    ops = compiled.get_runtime_model().get_ops()
    info = {op.get_friendly_name(): op.get_rt_info() for op in ops}
    by_name = {op.get_friendly_name(): op for op in ops}
    memo: dict[str, bool] = {}

    def lt(n: str) -> str:
        return info[n]["layerType"].astype(str)

    def is_const(n: str) -> bool:
        if n not in memo:
            memo[n] = False
            op = by_name[n]
            srcs = [op.input_value(i).get_node().get_friendly_name() for i in range(op.get_input_size())]
            memo[n] = lt(n) == "Const" or (bool(srcs) and all(is_const(s) for s in srcs))
        return memo[n]

    items, sdpa = [], []
    for op in ops:
        n = op.get_friendly_name()
        t = lt(n)
        rt = info[n]
        orig = [re.sub(r"_\d+$", "", o) for o in rt["originalLayersNames"].astype(str).split(",") if o] \
            if "originalLayersNames" in rt else []
        if SDPA_RE.search(t):
            sdpa.append(t)
        elif t == "Subgraph" and "Softmax" in orig and any(o in ("MatMul", "ScaledDotProductAttention") for o in orig):
            # CPU-plugin Snippets kernel fusing MatMul -> Softmax -> MatMul (its "MHA" tokenization)
            sdpa.append("Subgraph(MHA snippet)")
        if t in ("Input", "Output") or is_const(n):
            continue
        prec = rt["runtimePrecision"].astype(str) if "runtimePrecision" in rt else "?"
        merged = "[" + "+".join(orig) + "]" if t == "Subgraph" else ""
        items.append(f"{t}@{prec}{merged}")
    return compact(items, " "), ",".join(sorted(set(sdpa)))


def op_list(m: onnx.ModelProto) -> str:
    return compact([("ms:" if n.domain == MS else "") + n.op_type for n in m.graph.node], " ")


# --------------------------------------------------------------------------- #
# Timing
# --------------------------------------------------------------------------- #


def round_robin(runners: dict[str, Runner], rounds: int, warmup: int, min_sample_ms: float
                ) -> dict[str, tuple[float, float, float]]:
    """{form: (median ms, half-IQR / median, 10th-percentile ms)} per inference over rounds."""
    samples = round_robin_samples({k: r.run for k, r in runners.items()}, rounds, warmup, min_sample_ms,
                                  max_probe_runs=20)
    res = {}
    for k, v in samples.items():
        med, spread = median_half_iqr(v)
        low = statistics.quantiles(v, n=10, method="inclusive")[0] if len(v) >= 2 else med
        res[k] = (med * 1e3, spread, low * 1e3)
    return res


# --------------------------------------------------------------------------- #
# Main
# --------------------------------------------------------------------------- #


@dataclass
class Cell:
    ms: float | None = None
    spread: float = 0.0
    p10_ms: float | None = None
    err: float | None = None
    note: str = ""
    layers: str = ""
    sdpa: str = ""


def check_numerics(forms: list[Form], paths: dict[str, str], w: dict, args) -> dict[str, str]:
    """B=2, S=16, row 0 right padding, row 1 left padding.  Returns {form: verdict}."""
    B, S = 2, 16
    rng = np.random.default_rng(1)
    x = page_aligned_empty((B, S, HIDDEN))
    x[...] = rng.standard_normal(x.shape)
    mask = page_aligned_empty((B, S), np.int64)
    mask[...] = make_mask(B, S, check=True)
    ref = reference(x, mask, w, args.out_proj)
    valid = mask.astype(bool)
    print(f"## numerics: B={B} S={S}; row 0 right-padded (last 5), row 1 left-padded (first 4); "
          "max|form - a| per row over all query positions (valid-query-only in brackets when different); "
          "a vs fp64 numpy shown on a's line")
    rts = ["ort-noopt"] + (["ov-f32"] if any(r.startswith("ov") for r in args.runtimes) else [])
    outs: dict[str, dict[str, np.ndarray | str]] = {rt: {} for rt in rts}
    for rt in rts:
        for f in forms:
            try:
                if rt == "ort-noopt":
                    r = ort_runner(paths[f.key], x, mask, args.threads, "none", want_layers=False)
                else:
                    r, _ = ov_runner(paths[f.key], x, mask, args.threads, "f32")
                r.run()
                outs[rt][f.key] = r.output().copy()
            except Exception as e:  # noqa: BLE001
                outs[rt][f.key] = f"unsupported: {short_error(e, 60)}"
    verdict: dict[str, str] = {}
    W = 44
    hdr = f"{'form':<38}" + "".join(f"{rt + ' right | left':>{W}}" for rt in rts)
    print(hdr)
    print("-" * len(hdr))
    for f in forms:
        row = f"{f.key + ' ' + f.desc:<38}"
        for rt in rts:
            o = outs[rt][f.key]
            base = outs["ort-noopt"].get("a")
            if isinstance(o, str):
                row += f"{o[:W - 2]:>{W}}"
                continue
            cmp_to = ref if f.key == "a" else base
            if isinstance(cmp_to, str) or cmp_to is None:
                cmp_to = ref
            parts = []
            for i, tag in ((0, "R"), (1, "L")):
                d = np.abs(o[i].astype(np.float64) - cmp_to[i])
                full, vq = float(d.max()), float(d[valid[i]].max())
                parts.append(f"{full:.1e}" + (f"[{vq:.1e}]" if abs(full - vq) > 1e-6 else ""))
                bad = full >= 1e-4
                if rt == "ort-noopt" and f.key != "a":
                    key = "right" if i == 0 else "LEFT"
                    if bad:
                        verdict[f.key] = verdict.get(f.key, "") + f" MISMATCH({key})"
            txt = " | ".join(parts)
            row += f"{txt:>{W}}"
        print(row)
    for f in forms:
        if f.key != "a" and not isinstance(outs["ort-noopt"][f.key], str):
            verdict.setdefault(f.key, "ok")
    bad = {k: v for k, v in verdict.items() if v != "ok"}
    print("verdict (ORT, no graph optimizations, tolerance 1e-4): "
          + (", ".join(f"{k}:{v.strip()}" for k, v in bad.items()) if bad else "all runnable forms match a")
          + "\n")
    return verdict


def bench(args) -> None:
    w = make_weights(args.seed, args.bias)
    forms = [f for f in FORMS if f.key in args.forms and not (args.bias and f.key == "d2")]
    if "a" not in [f.key for f in forms]:
        forms.insert(0, FORMS[0])
    tmp = args.keep_models or tempfile.mkdtemp(prefix="attn_forms_")
    os.makedirs(tmp, exist_ok=True)
    paths: dict[str, str] = {}
    built: dict[str, onnx.ModelProto] = {}
    for f in forms:
        m = f.build(w, args.out_proj)
        built[f.key] = m
        p = os.path.join(tmp, f"attn_{f.key}.onnx")
        onnx.save(m, p)
        paths[f.key] = p
    if "ort" in args.runtimes:
        ort_use_global_pool(args.threads)

    import onnxruntime as ort
    import openvino as ov
    print(f"# fusekit attention-form benchmark  onnx {onnx.__version__}  onnxruntime {ort.__version__}  "
          f"openvino {ov.get_version().split('-')[0]}  threads={args.threads}  rounds={args.rounds}  "
          f"out_proj={args.out_proj}  bias={args.bias}")
    print()
    check_numerics(forms, paths, w, args)

    shapes = [tuple(int(v) for v in s.lower().split("x")) for s in args.shapes]
    results: dict[tuple, dict[str, Cell]] = {}
    ov_prec: dict[str, str] = {}
    t0 = time.perf_counter()
    cpu0 = cpu_times()
    rng = np.random.default_rng(2)
    for (B, S) in shapes:
        x = page_aligned_empty((B, S, HIDDEN))
        x[...] = rng.standard_normal(x.shape)
        mask = page_aligned_empty((B, S), np.int64)
        mask[...] = make_mask(B, S)
        ref = reference(x, mask, w, args.out_proj)
        for rt in args.runtimes:
            runners: dict[str, Runner] = {}
            for f in forms:
                cell = results.setdefault((B, S, f.key), {}).setdefault(rt, Cell())
                try:
                    if rt == "ort":
                        r = ort_runner(paths[f.key], x, mask, args.threads, "all", want_layers=(B, S) == shapes[0])
                    else:
                        r, res = ov_runner(paths[f.key], x, mask, args.threads,
                                           "f32" if rt == "ov-f32" else args.ov_default_precision)
                        ov_prec[rt] = res
                    r.run()
                    cell.err = float(np.max(np.abs(r.output().astype(np.float64) - ref)))
                    cell.layers, cell.sdpa = r.layers, r.sdpa
                    runners[f.key] = r
                except Unsupported as e:
                    cell.note = f"unsupported: {e}"
                except Exception as e:  # noqa: BLE001
                    cell.note = f"unsupported: run failed: {short_error(e)}"
            if runners:
                for k, (ms, sp, lo) in round_robin(runners, args.rounds, args.warmup, args.min_sample_ms).items():
                    results[(B, S, k)][rt].ms = ms
                    results[(B, S, k)][rt].spread = sp
                    results[(B, S, k)][rt].p10_ms = lo
            del runners
            print(f"  [{time.perf_counter() - t0:6.1f}s] B={B} S={S} {rt} done", file=sys.stderr, flush=True)
    cpu1 = cpu_times()
    if not args.keep_models:
        shutil.rmtree(tmp, ignore_errors=True)
    steal = None
    if cpu0 and cpu1 and len(cpu0) > 7:
        tot = sum(cpu1[:8]) - sum(cpu0[:8])
        steal = (cpu1[7] - cpu0[7]) / tot if tot else None
    report(args, forms, shapes, results, ov_prec, built, time.perf_counter() - t0, steal)


def report(args, forms, shapes, results, ov_prec, built, elapsed, steal) -> None:
    labels = {"ort": "ORT", "ov-f32": "OV f32",
              "ov-bf16": "OV " + ov_prec.get("ov-bf16", "default").replace("bfloat16", "bf16")}
    print("# timing cell: median ms/inference ±half-IQR (ratio vs a, same runtime) max|y - fp64 ref|")
    print(f"# {'CPU steal %.1f%%, ' % (steal * 100) if steal is not None else ''}load average at end "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs")
    W = 34
    for (B, S) in shapes:
        print()
        print(f"## B={B} S={S}")
        hdr = f"{'form':<38}" + "".join(f"{labels[rt]:>{W}}" for rt in args.runtimes)
        print(hdr)
        print("-" * len(hdr))
        base = {rt: results[(B, S, "a")][rt].ms for rt in args.runtimes}
        for f in forms:
            row = f"{f.key + ' ' + f.desc:<38}"
            for rt in args.runtimes:
                c = results[(B, S, f.key)][rt]
                if c.ms is None:
                    row += f"{c.note[:W - 2]:>{W}}"
                else:
                    ratio = f"{c.ms / base[rt]:.2f}x" if base[rt] else "-"
                    row += f"{f'{c.ms:7.3f} ±{c.spread * 100:.0f}% ({ratio}) {c.err:.0e}':>{W}}"
            print(row)

    print()
    print("## the same runs, 10th percentile over rounds instead of the median: ms (ratio vs a).  On a shared "
          "machine the low percentile is the less contention-sensitive statistic (a sample that ran while "
          "another process held a core is slow, never fast)")
    hdr = f"{'form':<38}" + "".join(f"{f'{labels[rt]} {B}x{S}':>18}" for (B, S) in shapes for rt in args.runtimes)
    print(hdr)
    print("-" * len(hdr))
    for f in forms:
        row = f"{f.key + ' ' + f.desc:<38}"
        for (B, S) in shapes:
            for rt in args.runtimes:
                c, a = results[(B, S, f.key)][rt], results[(B, S, "a")][rt]
                if c.p10_ms is None:
                    row += f"{'unsupported':>18}"
                else:
                    ratio = f"{c.p10_ms / a.p10_ms:.2f}x" if a.p10_ms else "-"
                    row += f"{f'{c.p10_ms:.2f} ({ratio})':>18}"
        print(row)

    print()
    print("## full unsupported reasons")
    seen = set()
    for (B, S) in shapes:
        for f in forms:
            for rt in args.runtimes:
                c = results[(B, S, f.key)][rt]
                if c.ms is None and (f.key, rt) not in seen:
                    seen.add((f.key, rt))
                    print(f"  {f.key:<3} {labels[rt]:<8} {c.note}")

    B, S = shapes[0]
    print()
    print(f"## op lists (B={B} S={S}).  built: the ONNX nodes as written.  ORT: nodes after ORT_ENABLE_ALL "
          "(ms: = com.microsoft).  OV: runtime layerType@precision (I/O and weight-only layers omitted); "
          "'fused attention layer' = a ScaledDotProductAttention/SDPA/Attention layer, or a Snippets "
          "Subgraph whose merged nodes include Softmax and MatMul/ScaledDotProductAttention (the CPU plugin's MHA "
          "tokenization: Q.K^T, scale, mask, Softmax and .V run as one generated kernel)")
    for f in forms:
        print(f"# {f.key} {f.desc}")
        print(f"    built    {op_list(built[f.key])}")
        for rt in args.runtimes:
            c = results[(B, S, f.key)][rt]
            if c.ms is None:
                print(f"    {labels[rt]:<8} {c.note}")
                continue
            print(f"    {labels[rt]:<8} {c.layers}")
            if rt != "ort":
                print(f"    {'':<8} fused attention layer: {c.sdpa or 'NO'}")
    print()
    print(f"# timing phase {elapsed:.0f}s")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--shapes", nargs="+", default=["1x128", "8x128", "1x384"], help="BxS")
    ap.add_argument("--forms", nargs="+", default=[f.key for f in FORMS], choices=[f.key for f in FORMS])
    ap.add_argument("--runtimes", nargs="+", default=["ort", "ov-f32", "ov-bf16"],
                    choices=["ort", "ov-f32", "ov-bf16"])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--min-sample-ms", type=float, default=4.0,
                    help="repeat an inference within one sample until it lasts this long (short samples + many "
                         "rounds let the low percentile find uncontended time slices)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-proj", action="store_true", help="append the output projection MatMul+Add to every form")
    ap.add_argument("--bias", action="store_true",
                    help="add a relative position bias [1, 12, S, S] to the scores of every form (d2 left out)")
    ap.add_argument("--ov-default-precision", default=None, metavar="PREC",
                    help="precision hint for the ov-bf16 column (default: plugin default)")
    ap.add_argument("--keep-models", metavar="DIR")
    args = ap.parse_args(argv)
    bench(args)


if __name__ == "__main__":
    main()
