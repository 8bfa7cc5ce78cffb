#!/usr/bin/env python3
"""Which ONNX *form* of each fused BERT op does each CPU runtime run fastest?

fusekit can emit the same computation in several ONNX spellings: as a chain of
primitive ops (what exporters produce at old opsets), as an ONNX standard fused
op (LayerNormalization-17, Gelu-20) or as an ONNX Runtime contrib op in the
``com.microsoft`` domain (Gelu, FastGelu, BiasGelu).  Which one is best depends
on the consumer:

* ONNX Runtime runs its own graph fusions at session creation
  (ORT_ENABLE_ALL), so a decomposed pattern may end up as the very same kernel
  as the fused op -- or may not, if the pattern is not recognised.
* OpenVINO converts the ONNX graph with its own frontend, which may or may not
  know the contrib ops, and then maps subgraphs to plugin kernels (MVN for
  LayerNorm, an Eltwise/Gelu kernel for GELU, FullyConnected with fused
  post-ops for MatMul+bias+activation).

This script builds tiny single-op-family ONNX models with ``onnx.helper`` at
BERT-base sizes (seq 128, hidden 768, intermediate 3072) and times every form
in every runtime:

  LayerNorm  x[B,128,768], gamma/beta[768], eps 1e-12
      a  decomposed ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add (opset 14)
      b  LayerNormalization (opset 17)
  GELU-erf   x[B,128,3072]
      a  decomposed Div(sqrt2)/Erf/Add(1)/Mul(x)/Mul(0.5)        (opset 14)
      b  com.microsoft Gelu                                     (opset 14)
      c  ONNX Gelu                                              (opset 20)
  GELU-tanh  x[B,128,3072]
      a  decomposed Pow(3)/Mul/Add/Mul(sqrt(2/pi))/Tanh/Add/Mul/Mul (opset 14)
      b  com.microsoft FastGelu                                 (opset 14)
      c  ONNX Gelu(approximate="tanh")                          (opset 20)
  Bias+GELU  x[B,128,768] @ W[768,3072] + b[3072]
      a  MatMul/Add/decomposed erf GELU                         (opset 14)
      b  MatMul/Add/com.microsoft Gelu                          (opset 14)
      c  MatMul/com.microsoft BiasGelu(., b)                    (opset 14)
      d  MatMul/Add/ONNX Gelu                                   (opset 20)
      e0 MatMul/Add/decomposed tanh GELU (reference for e1/e2)  (opset 14)
      e1 MatMul/com.microsoft FastGelu(., b)                    (opset 14)
      e2 MatMul/Add/com.microsoft FastGelu                      (opset 14)

Runtimes (CPU only):
  ort       onnxruntime CPU EP, ORT_ENABLE_ALL, 2 intra-op threads.  All
            sessions share one global intra-op pool (see --ort-per-session-threads:
            with a pool per session the idle, spin-waiting workers of the other
            forms' sessions slowed the timed one ~3x on a 2-core machine)
  ov-f32    openvino compile_model(CPU, INFERENCE_NUM_THREADS=2,
                                   INFERENCE_PRECISION_HINT=f32)
  ov-bf16   openvino compile_model(CPU, INFERENCE_NUM_THREADS=2) with the
            plugin's default precision (bf16 on AMX/AVX512-BF16 machines;
            the resolved precision is printed)

Timing: each form is warmed up, then all forms of a group are interleaved
round-robin for --rounds rounds (in a fresh random order each round), so slow
drift and bursts of interference (turbo, other load on the cores, hypervisor
steal) hit every form alike.  One sample = k back-to-back inferences (k
calibrated so a sample lasts >= --min-sample-ms); the reported time is the
median per-inference time over rounds (half the inter-quartile range is shown
as a noise gauge), and the ratio is against form (a) of the same group in the
same runtime (< 1.00 = faster than the decomposed form).  Inputs and outputs
are bound once (ORT io_binding / OpenVINO user tensors), page-aligned at a fixed
relative offset (see page_aligned_empty in _timing.py), so the numbers are kernel time plus
the runtime's per-call overhead, not numpy allocation or allocator luck.
The header reports CPU steal time during the run: on a shared VM absolute ms
drift between runs; trust the ratios, and identical compiled graphs (marked in
the listing) should time alike -- when they do not, the run was noisy.

Each form's output is checked against a float64 numpy reference ("err" =
max abs error); a form that fails to load or compile prints
"unsupported: <short error>" instead of a time.  After the timing table the
script lists, per form, the node types ORT's optimised graph contains and the
runtime layers of OpenVINO's compiled model (``layerType@runtimePrecision``,
with the nodes merged into each layer), to show whether a form reached the
LayerNormalization/MVN and Gelu kernels or was fused into FullyConnected.

Usage:  python benchmarks/op_forms.py [--batch 1 8] [--rounds 30]
        [--runtimes ort ov-f32 ov-bf16] [--groups ln gelu-erf gelu-tanh bias-gelu]
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
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# Shared helpers live next to this script; its folder is sys.path[0] when run as
# `python benchmarks/op_forms.py`, and is added here for `python -m benchmarks.op_forms`.
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
EPS = 1e-12
MS_DOMAIN = "com.microsoft"
IR_VERSION = 9  # new enough for opset 20, old enough for every runtime here
SQRT2 = math.sqrt(2.0)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


# --------------------------------------------------------------------------- #
# Model builders
# --------------------------------------------------------------------------- #


class GraphBuilder:
    """Tiny helper around onnx.helper: unique names, scalar constants."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def _name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def const(self, value, name: str | None = None) -> str:
        name = name or self._name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def op(self, op_type: str, inputs: list[str], domain: str = "", out: str | None = None, **attrs) -> str:
        out = out or self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=self._name(op_type), domain=domain, **attrs))
        return out

    def model(self, x_shape, y_shape, opset: int, ms: bool = False) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            "op_form",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(y_shape))],
            self.inits,
        )
        opsets = [helper.make_opsetid("", opset)]
        if ms:
            opsets.append(helper.make_opsetid(MS_DOMAIN, 1))
        m = helper.make_model(graph, opset_imports=opsets, producer_name="fusekit-op-forms")
        m.ir_version = IR_VERSION
        return m


def gelu_erf_decomposed(g: GraphBuilder, x: str, out: str = "y") -> str:
    t = g.op("Div", [x, g.const(SQRT2)])
    t = g.op("Erf", [t])
    t = g.op("Add", [t, g.const(1.0)])
    t = g.op("Mul", [x, t])
    return g.op("Mul", [t, g.const(0.5)], out=out)


def gelu_tanh_decomposed(g: GraphBuilder, x: str, out: str = "y") -> str:
    # 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))  (HF NewGELU export)
    t = g.op("Pow", [x, g.const(3.0)])
    t = g.op("Mul", [t, g.const(0.044715)])
    t = g.op("Add", [x, t])
    t = g.op("Mul", [t, g.const(SQRT_2_OVER_PI)])
    t = g.op("Tanh", [t])
    t = g.op("Add", [t, g.const(1.0)])
    t = g.op("Mul", [x, t])
    return g.op("Mul", [t, g.const(0.5)], out=out)


@dataclass
class Form:
    key: str
    desc: str
    build: Callable[[int, dict], onnx.ModelProto]


@dataclass
class Group:
    key: str
    title: str
    x_shape: Callable[[int], tuple]
    reference: Callable[[np.ndarray, dict], np.ndarray]
    forms: list[Form] = field(default_factory=list)


def _weights(rng: np.random.Generator) -> dict:
    return {
        "gamma": (1.0 + 0.1 * rng.standard_normal(HIDDEN)).astype(np.float32),
        "beta": (0.1 * rng.standard_normal(HIDDEN)).astype(np.float32),
        "W": (rng.standard_normal((HIDDEN, INTER)) / math.sqrt(HIDDEN)).astype(np.float32),
        "b": (0.1 * rng.standard_normal(INTER)).astype(np.float32),
    }


# ---- LayerNorm ------------------------------------------------------------- #


def ln_decomposed(B: int, w: dict) -> onnx.ModelProto:
    g = GraphBuilder()
    mean = g.op("ReduceMean", ["x"], axes=[-1], keepdims=1)  # attr axes until opset 18
    d = g.op("Sub", ["x", mean])
    sq = g.op("Pow", [d, g.const(2.0)])
    var = g.op("ReduceMean", [sq], axes=[-1], keepdims=1)
    t = g.op("Add", [var, g.const(EPS)])
    t = g.op("Sqrt", [t])
    t = g.op("Div", [d, t])
    t = g.op("Mul", [t, g.const(w["gamma"], "gamma")])
    g.op("Add", [t, g.const(w["beta"], "beta")], out="y")
    return g.model((B, SEQ, HIDDEN), (B, SEQ, HIDDEN), opset=14)


def ln_fused(B: int, w: dict) -> onnx.ModelProto:
    g = GraphBuilder()
    g.op("LayerNormalization", ["x", g.const(w["gamma"], "gamma"), g.const(w["beta"], "beta")],
         out="y", axis=-1, epsilon=EPS)
    return g.model((B, SEQ, HIDDEN), (B, SEQ, HIDDEN), opset=17)


def ln_ref(x: np.ndarray, w: dict) -> np.ndarray:
    x = x.astype(np.float64)
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + EPS) * w["gamma"] + w["beta"]


# ---- GELU ------------------------------------------------------------------ #


def _gelu_model(B: int, body: Callable[[GraphBuilder], None], opset: int, ms: bool) -> onnx.ModelProto:
    g = GraphBuilder()
    body(g)
    return g.model((B, SEQ, INTER), (B, SEQ, INTER), opset=opset, ms=ms)


def gelu_forms() -> list[Form]:
    return [
        Form("a", "decomposed erf (opset 14)",
             lambda B, w: _gelu_model(B, lambda g: gelu_erf_decomposed(g, "x"), 14, False)),
        Form("b", "com.microsoft Gelu",
             lambda B, w: _gelu_model(B, lambda g: g.op("Gelu", ["x"], domain=MS_DOMAIN, out="y"), 14, True)),
        Form("c", "ONNX Gelu-20",
             lambda B, w: _gelu_model(B, lambda g: g.op("Gelu", ["x"], out="y"), 20, False)),
    ]


def gelu_tanh_forms() -> list[Form]:
    return [
        Form("a", "decomposed tanh (opset 14)",
             lambda B, w: _gelu_model(B, lambda g: gelu_tanh_decomposed(g, "x"), 14, False)),
        Form("b", "com.microsoft FastGelu",
             lambda B, w: _gelu_model(B, lambda g: g.op("FastGelu", ["x"], domain=MS_DOMAIN, out="y"), 14, True)),
        Form("c", "ONNX Gelu-20 approximate=tanh",
             lambda B, w: _gelu_model(B, lambda g: g.op("Gelu", ["x"], out="y", approximate="tanh"), 20, False)),
    ]


_erf = np.frompyfunc(math.erf, 1, 1)
REF_ELEMS = 1 << 17  # elementwise references are checked on the first 128K outputs


def gelu_erf_ref(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return 0.5 * x * (1.0 + _erf(x / SQRT2).astype(np.float64))


def gelu_tanh_ref(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return 0.5 * x * (1.0 + np.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x ** 3)))


# ---- Bias + GELU ----------------------------------------------------------- #


def _bias_model(B: int, w: dict, tail: Callable[[GraphBuilder, str, str], None], opset: int, ms: bool) -> onnx.ModelProto:
    g = GraphBuilder()
    mm = g.op("MatMul", ["x", g.const(w["W"], "W")])
    tail(g, mm, g.const(w["b"], "b"))
    return g.model((B, SEQ, HIDDEN), (B, SEQ, INTER), opset=opset, ms=ms)


def bias_gelu_forms() -> list[Form]:
    def add(g, mm, b):
        return g.op("Add", [mm, b])

    return [
        Form("a", "MatMul+Add+decomposed erf",
             lambda B, w: _bias_model(B, w, lambda g, mm, b: gelu_erf_decomposed(g, add(g, mm, b)), 14, False)),
        Form("b", "MatMul+Add+ms Gelu",
             lambda B, w: _bias_model(B, w, lambda g, mm, b: g.op("Gelu", [add(g, mm, b)], domain=MS_DOMAIN, out="y"), 14, True)),
        Form("c", "MatMul+ms BiasGelu",
             lambda B, w: _bias_model(B, w, lambda g, mm, b: g.op("BiasGelu", [mm, b], domain=MS_DOMAIN, out="y"), 14, True)),
        Form("d", "MatMul+Add+ONNX Gelu-20",
             lambda B, w: _bias_model(B, w, lambda g, mm, b: g.op("Gelu", [add(g, mm, b)], out="y"), 20, False)),
        Form("e0", "MatMul+Add+decomposed tanh",
             lambda B, w: _bias_model(B, w, lambda g, mm, b: gelu_tanh_decomposed(g, add(g, mm, b)), 14, False)),
        Form("e1", "MatMul+ms FastGelu(.,bias)",
             lambda B, w: _bias_model(B, w, lambda g, mm, b: g.op("FastGelu", [mm, b], domain=MS_DOMAIN, out="y"), 14, True)),
        Form("e2", "MatMul+Add+ms FastGelu",
             lambda B, w: _bias_model(B, w, lambda g, mm, b: g.op("FastGelu", [add(g, mm, b)], domain=MS_DOMAIN, out="y"), 14, True)),
    ]


def bias_gelu_ref(x: np.ndarray, w: dict, tanh: bool) -> np.ndarray:
    rows = max(1, REF_ELEMS // INTER)
    h = x.reshape(-1, HIDDEN)[:rows].astype(np.float64) @ w["W"].astype(np.float64) + w["b"]
    return gelu_tanh_ref(h) if tanh else gelu_erf_ref(h)


def make_groups() -> list[Group]:
    def flat(ref):
        return lambda x, w: ref(x.reshape(-1)[:REF_ELEMS])

    return [
        Group("ln", "LayerNorm  x[B,128,768]", lambda B: (B, SEQ, HIDDEN), ln_ref,
              [Form("a", "decomposed (opset 14)", ln_decomposed),
               Form("b", "LayerNormalization-17", ln_fused)]),
        Group("gelu-erf", "GELU erf  x[B,128,3072]", lambda B: (B, SEQ, INTER), flat(gelu_erf_ref), gelu_forms()),
        Group("gelu-tanh", "GELU tanh  x[B,128,3072]", lambda B: (B, SEQ, INTER), flat(gelu_tanh_ref), gelu_tanh_forms()),
        Group("bias-gelu", "Bias+GELU  x[B,128,768] @ W[768,3072] + b", lambda B: (B, SEQ, HIDDEN),
              lambda x, w: bias_gelu_ref(x, w, tanh=False), bias_gelu_forms()),
    ]


def reference_for(group: Group, form: Form, x: np.ndarray, w: dict) -> np.ndarray:
    if group.key == "bias-gelu" and form.key.startswith("e"):
        return bias_gelu_ref(x, w, tanh=True)
    return group.reference(x, w)


# --------------------------------------------------------------------------- #
# Runtimes
# --------------------------------------------------------------------------- #


@dataclass
class Runner:
    """A compiled form ready to run, its input and output bound once."""

    run: Callable[[], None]
    output: np.ndarray
    layers: str  # compact listing of what the runtime actually executes
    keep: tuple = ()  # session / compiled model objects that must stay alive


def ort_runner(path: str, x: np.ndarray, threads: int) -> Runner:
    import onnxruntime as ort

    def opts() -> "ort.SessionOptions":
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        ort_set_threads(so, threads)
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        return so

    try:
        sess = ort.InferenceSession(path, opts(), providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - any load/compile failure is a table entry
        raise Unsupported(short_error(e)) from e

    # Separate throw-away session to see what ORT's own fusions turned the form into.
    layers = "?"
    try:
        opt_path = path + ".ort_opt.onnx"
        so = opts()
        so.optimized_model_filepath = opt_path
        ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])  # discarded at once
        layers = compact([("ms:" if n.domain == MS_DOMAIN else "") + n.op_type
                          for n in onnx.load(opt_path).graph.node])
    except Exception as e:  # noqa: BLE001
        layers = f"? ({short_error(e, 40)})"

    out_shape = [d if isinstance(d, int) else x.shape[0] for d in sess.get_outputs()[0].shape]
    out = page_aligned_empty(out_shape, offset=OUT_PAGE_OFFSET)
    binding = sess.io_binding()
    binding.bind_cpu_input("x", x)
    binding.bind_ortvalue_output("y", ort.OrtValue.ortvalue_from_numpy(out))

    return Runner(lambda: sess.run_with_iobinding(binding), out, layers, (sess, binding))


_OV_CORE = None


def ov_runner(path: str, x: np.ndarray, threads: int, precision: str | None) -> tuple[Runner, str]:
    import openvino as ov

    global _OV_CORE
    if _OV_CORE is None:
        _OV_CORE = ov.Core()
    core = _OV_CORE
    config: dict = {"INFERENCE_NUM_THREADS": threads}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    try:
        model = core.read_model(path)
        compiled = core.compile_model(model, "CPU", config)
    except Exception as e:  # noqa: BLE001
        raise Unsupported(short_error(e)) from e
    resolved = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()

    r_layers = ov_layers(compiled)
    req = compiled.create_infer_request()
    req.set_input_tensor(ov.Tensor(x, shared_memory=True))
    out = page_aligned_empty(tuple(compiled.output(0).get_shape()), offset=OUT_PAGE_OFFSET)
    req.set_output_tensor(ov.Tensor(out, shared_memory=True))
    return Runner(req.infer, out, r_layers, (compiled, req)), resolved


def ov_layers(compiled) -> str:
    """Runtime layers of an OpenVINO compiled model, minus I/O and constant-folded weight paths.

    Each entry is layerType@runtimePrecision, followed by the original (post-frontend)
    node names that were merged into it when there is more than one.
    """
    ops = compiled.get_runtime_model().get_ops()
    info = {op.get_friendly_name(): op.get_rt_info() for op in ops}
    by_name = {op.get_friendly_name(): op for op in ops}
    memo: dict[str, bool] = {}

    def ltype(name: str) -> str:
        return info[name]["layerType"].astype(str)

    def is_const(name: str) -> bool:
        if name not in memo:
            memo[name] = False  # cycle guard
            op = by_name[name]
            srcs = [op.input_value(i).get_node().get_friendly_name() for i in range(op.get_input_size())]
            memo[name] = ltype(name) == "Const" or (bool(srcs) and all(is_const(s) for s in srcs))
        return memo[name]

    out = []
    for op in ops:
        name = op.get_friendly_name()
        if ltype(name) in ("Input", "Output") or is_const(name):
            continue
        rt = info[name]
        prec = rt["runtimePrecision"].astype(str) if "runtimePrecision" in rt else "?"
        orig = [n for n in rt["originalLayersNames"].astype(str).split(",") if n] if "originalLayersNames" in rt else []
        merged = "" if len(orig) < 2 else ("[" + "+".join(orig) + "]" if len(orig) <= 3 else f"[{len(orig)} nodes]")
        out.append(f"{ltype(name)}@{prec}{merged}")
    return " ".join(out) if out else "(none)"


# --------------------------------------------------------------------------- #
# Timing
# --------------------------------------------------------------------------- #


def time_round_robin(runners: dict[str, Runner], rounds: int, warmup: int, min_sample_ms: float,
                     stat: str = "median") -> dict[str, tuple[float, float]]:
    """ms per inference (median, or min over rounds) and the half inter-quartile range as a
    fraction of the median."""
    samples = round_robin_samples({k: r.run for k, r in runners.items()}, rounds, warmup, min_sample_ms)
    out = {}
    for k, v in samples.items():
        med, spread = median_half_iqr(v)
        out[k] = ((min(v) if stat == "min" else med) * 1e3, spread)
    return out


# --------------------------------------------------------------------------- #
# Main
# --------------------------------------------------------------------------- #

RUNTIMES = ("ort", "ov-f32", "ov-bf16")


@dataclass
class Cell:
    ms: float | None = None
    spread: float = 0.0
    err: float | None = None
    note: str = ""
    layers: str = ""


def own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def bench(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    w = _weights(rng)
    groups = [g for g in make_groups() if g.key in args.groups]
    tmp = tempfile.mkdtemp(prefix="op_forms_") if not args.keep_models else args.keep_models
    os.makedirs(tmp, exist_ok=True)
    ov_precision_label: dict[str, str] = {}
    if "ort" in args.runtimes and not args.ort_per_session_threads:
        ort_use_global_pool(args.threads)

    # results[(batch, group, form)][runtime] = Cell
    results: dict[tuple, dict[str, Cell]] = {}
    t_start = time.perf_counter()
    cpu0, own0 = cpu_times(), own_cpu_s()
    for B in args.batch:
        for g in groups:
            x = page_aligned_empty(g.x_shape(B))
            x[...] = rng.standard_normal(x.shape)
            paths = {}
            for f in g.forms:
                p = os.path.join(tmp, f"{g.key}_{f.key}_b{B}.onnx")
                onnx.save(f.build(B, w), p)
                paths[f.key] = p
            refs = {f.key: reference_for(g, f, x, w) for f in g.forms}
            for rt in args.runtimes:
                runners: dict[str, Runner] = {}
                for f in g.forms:
                    cell = results.setdefault((B, g.key, f.key), {}).setdefault(rt, Cell())
                    try:
                        if rt == "ort":
                            runner = ort_runner(paths[f.key], x, args.threads)
                        else:
                            prec = "f32" if rt == "ov-f32" else args.ov_default_precision
                            runner, resolved = ov_runner(paths[f.key], x, args.threads, prec)
                            ov_precision_label[rt] = resolved
                        runner.run()
                        ref = refs[f.key]
                        got = runner.output.reshape(-1)[: ref.size].astype(np.float64)
                        cell.err = float(np.max(np.abs(got - ref.reshape(-1))))
                        cell.layers = runner.layers
                        runners[f.key] = runner
                    except Unsupported as e:
                        cell.note = f"unsupported: {e}"
                    except Exception as e:  # noqa: BLE001 - a runtime error at first run
                        cell.note = f"failed: {short_error(e)}"
                if runners:
                    med = time_round_robin(runners, args.rounds, args.warmup, args.min_sample_ms, args.stat)
                    for k, (ms, spread) in med.items():
                        results[(B, g.key, k)][rt].ms = ms
                        results[(B, g.key, k)][rt].spread = spread
                del runners
                print(f"  [{time.perf_counter() - t_start:6.1f}s] B={B} {g.key:9s} {rt} done", file=sys.stderr, flush=True)

    cpu1, own1 = cpu_times(), own_cpu_s()
    if not args.keep_models:
        shutil.rmtree(tmp, ignore_errors=True)
    contention = None
    if cpu0 and cpu1 and len(cpu0) > 7:
        d = [b - a for a, b in zip(cpu0[:8], cpu1[:8])]
        total = sum(d)
        if total:
            hz = os.sysconf("SC_CLK_TCK")
            others = (total - d[3] - d[4] - d[7]) / hz - (own1 - own0)  # busy minus idle/iowait/steal, minus us
            contention = (max(0.0, others) / (total / hz), d[7] / total)
    print_report(args, groups, results, ov_precision_label, time.perf_counter() - t_start, contention)


def print_report(args, groups, results, ov_prec, elapsed, contention) -> None:
    import onnxruntime as ort
    import openvino as ov

    labels = {"ort": "ORT", "ov-f32": "OV f32", "ov-bf16": f"OV {ov_prec.get('ov-bf16', 'default')}".replace("bfloat16", "bf16")}
    print(f"# fusekit op-form benchmark  onnx {onnx.__version__}  onnxruntime {ort.__version__}  "
          f"openvino {ov.get_version().split('-')[0]}  threads={args.threads}  rounds={args.rounds}")
    print(f"# cell: {args.stat} ms per inference  ±half-IQR  (ratio vs form a of the group, same runtime)  "
          "max|y - fp64 ref|")
    if contention is not None:
        print(f"# during the run, other processes used {contention[0] * 100:.0f}% and hypervisor steal "
              f"{contention[1] * 100:.0f}% of the {os.cpu_count()} CPUs (contention inflates ms and noise; "
              "compare ratios, which come from interleaved rounds)")
    W = 30
    for B in args.batch:
        for g in groups:
            print()
            print(f"## B={B}  {g.title}")
            hdr = f"{'form':<34}" + "".join(f"{labels[rt]:>{W}}" for rt in args.runtimes)
            print(hdr)
            print("-" * len(hdr))
            base = {rt: results[(B, g.key, g.forms[0].key)][rt].ms for rt in args.runtimes}
            notes: list[str] = []
            for f in g.forms:
                row = f"{f.key + ' ' + f.desc:<34}"
                for rt in args.runtimes:
                    c = results[(B, g.key, f.key)][rt]
                    if c.ms is None:
                        tag = f"[{len(notes) + 1}]"
                        notes.append(f"{tag} {f.key}/{labels[rt]}: {c.note or 'not run'}")
                        row += f"{'unsupported ' + tag if c.note.startswith('unsupported') else 'failed ' + tag:>{W}}"
                    else:
                        ratio = f"{c.ms / base[rt]:.2f}x" if base[rt] else "  -  "
                        row += f"{f'{c.ms:7.3f} ±{c.spread * 100:.0f}% ({ratio}) {c.err:.0e}':>{W}}"
                print(row)
            for n in notes:
                print("   " + n)

    print()
    print("## compiled graphs.  ORT: node types after its session fusions (ms: = com.microsoft).  OV: runtime "
          "layerType@runtimePrecision[nodes merged into it; y = the form's final node], weight-only layers omitted")
    B = args.batch[0]
    for g in groups:
        print(f"# {g.title} (B={B})")
        for f in g.forms:
            for rt in args.runtimes:
                c = results[(B, g.key, f.key)][rt]
                body = c.layers if c.ms is not None else (c.note or "not run")
                a = results[(B, g.key, g.forms[0].key)][rt]
                if f is not g.forms[0] and c.ms is not None and a.ms is not None and same_graph(c.layers, a.layers):
                    body += "   (same layers as a)"
                print(f"  {f.key:<3}{labels[rt]:<9}{body}")
    print()
    print(f"# total {elapsed:.0f}s")


def same_graph(x: str, y: str) -> bool:
    """Layer listings equal in layer types/precisions (merged-node names ignored)."""
    def norm(t: str) -> str:
        return re.sub(r"\[[^]]*\]", "", t)
    return norm(x) == norm(y)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description="Time ONNX forms (decomposed / ONNX fused / com.microsoft) of LayerNorm, GELU and "
                    "Bias+GELU at BERT-base sizes in ONNX Runtime and OpenVINO CPU.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes (seq len is 128)")
    ap.add_argument("--rounds", type=int, default=30, help="round-robin rounds per group")
    ap.add_argument("--stat", choices=["median", "min"], default="median",
                    help="statistic over rounds; 'min' is the more robust one when other processes share the cores")
    ap.add_argument("--warmup", type=int, default=5, help="warm-up inferences per form")
    ap.add_argument("--min-sample-ms", type=float, default=10.0,
                    help="repeat each inference within one sample until the sample lasts this long")
    ap.add_argument("--threads", type=int, default=2, help="intra-op / inference threads")
    ap.add_argument("--ort-per-session-threads", action="store_true",
                    help="give every ORT session its own intra-op pool instead of one shared global pool "
                         "(idle spinning workers of the other sessions then slow the timed one down)")
    ap.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=list(RUNTIMES))
    ap.add_argument("--groups", nargs="+", choices=["ln", "gelu-erf", "gelu-tanh", "bias-gelu"],
                    default=["ln", "gelu-erf", "gelu-tanh", "bias-gelu"])
    ap.add_argument("--ov-default-precision", default=None, metavar="PREC",
                    help="precision hint for the 'ov-bf16' column; default: leave unset (plugin default, "
                         "bf16 on AMX/AVX512-BF16 CPUs)")
    ap.add_argument("--keep-models", metavar="DIR", help="write the generated .onnx files here and keep them")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    bench(args)


if __name__ == "__main__":
    main()
