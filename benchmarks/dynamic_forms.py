#!/usr/bin/env python3
"""In which ONNX form does each CPU runtime run a dynamically quantized dense block fastest?

``quantize_dynamic`` (Optimum's ``avx512_vnni`` config: int8 weights per output column;
transformers.js: uint8 per tensor) writes each Linear as

    x ─► DynamicQuantizeLinear ─► MatMulInteger(W_q) ─► Cast ─► Mul(x_scale · w_scale) ─► Add(b)

One BERT-base block, x [B, 128, 768] · W [768, 3072] + b, seeded random weights, in the forms:

  fp32        MatMul(x, W) + b                                   (the ratio column's reference)
  integer     the quantize_dynamic form above
  dq_weight   MatMul(x, DQ(W_q)) + b: float activations, constant int8 weights
  dq_both     DynamicQuantizeLinear ─► DQ ─► MatMul(·, DQ(W_q)) + b (fusekit's canonical form)
  dqmatmul    com.microsoft DynamicQuantizeMatMul(x, W_q, w_scale, w_zp, b)   (ONNX Runtime only)

For OpenVINO it also prints what the CPU plugin made of each form: the FullyConnected's input
precisions (u8/i8 data: an INT8 kernel) and its primitive. A FullyConnected with int8 weights on
a float input quantizes that input at run time inside its kernel, per group of
``DYNAMIC_QUANTIZATION_GROUP_SIZE`` input channels (default 32, 0 = off), which the runtime graph
does not show: ``--group-sizes`` adds ``dq_weight`` compiled with each of them. Nothing is asserted;
run it on a quiet machine (2 threads, interleaved rounds, medians ± half the IQR).

    python benchmarks/dynamic_forms.py [--batch 1 8] [--rounds 15] [--weights s8pc|u8] [--group-sizes 0 32 128]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _timing  # noqa: E402

K, N, S = 768, 3072, 128
MS = "com.microsoft"


def _weights(kind: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((K, N)) * 0.03).astype(np.float32)
    b = (rng.standard_normal(N) * 0.1).astype(np.float32)
    if kind == "s8pc":  # symmetric int8 per output column
        scale = (np.abs(w).max(axis=0) / 127).astype(np.float32)
        return np.round(w / scale).astype(np.int8), scale, np.zeros(N, np.int8), b
    lo, hi = min(w.min(), 0), max(w.max(), 0)  # asymmetric uint8 per tensor
    scale = np.float32((hi - lo) / 255)
    zero = np.uint8(round(-lo / scale))
    return np.clip(np.round(w / scale) + zero, 0, 255).astype(np.uint8), scale, zero, b


def build(form: str, kind: str) -> onnx.ModelProto:
    w_q, scale, zero, b = _weights(kind)
    per_column = {"axis": 1} if scale.size > 1 else {}
    inits = [numpy_helper.from_array(w_q, "w_q"), numpy_helper.from_array(np.asarray(scale), "w_scale"),
             numpy_helper.from_array(np.asarray(zero), "w_zero_point"), numpy_helper.from_array(b, "b")]
    n = helper.make_node
    if form == "fp32":
        w = ((w_q.astype(np.float32) - zero.astype(np.float32)) * scale).astype(np.float32)
        inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
        nodes = [n("MatMul", ["x", "w"], ["xw"]), n("Add", ["xw", "b"], ["y"])]
    elif form == "integer":
        nodes = [n("DynamicQuantizeLinear", ["x"], ["x_q", "x_scale", "x_zero_point"]),
                 n("MatMulInteger", ["x_q", "w_q", "x_zero_point", "w_zero_point"], ["acc"]),
                 n("Cast", ["acc"], ["acc_f"], to=TensorProto.FLOAT),
                 n("Mul", ["x_scale", "w_scale"], ["scales"]), n("Mul", ["acc_f", "scales"], ["xw"]),
                 n("Add", ["xw", "b"], ["y"])]
    elif form == "dq_weight":
        nodes = [n("DequantizeLinear", ["w_q", "w_scale", "w_zero_point"], ["w"], **per_column),
                 n("MatMul", ["x", "w"], ["xw"]), n("Add", ["xw", "b"], ["y"])]
    elif form == "dq_both":
        nodes = [n("DynamicQuantizeLinear", ["x"], ["x_q", "x_scale", "x_zero_point"]),
                 n("DequantizeLinear", ["x_q", "x_scale", "x_zero_point"], ["x_dq"]),
                 n("DequantizeLinear", ["w_q", "w_scale", "w_zero_point"], ["w"], **per_column),
                 n("MatMul", ["x_dq", "w"], ["xw"]), n("Add", ["xw", "b"], ["y"])]
    elif form == "dqmatmul":
        nodes = [n("DynamicQuantizeMatMul", ["x", "w_q", "w_scale", "w_zero_point", "b"], ["y"], domain=MS)]
    else:
        raise ValueError(form)
    graph = helper.make_graph(nodes, form, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", S, K])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", S, N])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14), helper.make_opsetid(MS, 1)])
    model.ir_version = 8
    return model


def ort_runner(model, x, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    _timing.ort_set_threads(so, threads)
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, {"x": x})


def ov_runner(model, x, threads, precision="f32", group_size=None):
    import openvino as ov
    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": precision}
    if group_size is not None:
        config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = group_size
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.onnx")
        onnx.save(model, path)
        compiled = core.compile_model(core.read_model(path), "CPU", config)
    request = compiled.create_infer_request()
    fcs = []
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if "layerType" in info and info["layerType"].astype(str) in ("FullyConnected", "MatMul"):
            inputs = [op.get_input_element_type(i).get_type_name() for i in range(op.get_input_size())]
            fcs.append(f"{info['layerType'].astype(str)}({'/'.join(inputs[:2])}, "
                       f"{info['primitiveType'].astype(str) if 'primitiveType' in info else '?'})")
    return (lambda: request.infer({"x": x})), ", ".join(fcs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--weights", choices=("s8pc", "u8"), default="s8pc")
    ap.add_argument("--min-sample-ms", type=float, default=100)
    ap.add_argument("--group-sizes", type=int, nargs="*", default=[],
                    help="OpenVINO: dq_weight again with each DYNAMIC_QUANTIZATION_GROUP_SIZE")
    args = ap.parse_args(argv)
    forms = ("fp32", "integer", "dq_weight", "dq_both", "dqmatmul")
    models = {f: build(f, args.weights) for f in forms}
    grouped = [f"dq_weight_g{g}" for g in args.group_sizes]
    for batch in args.batch:
        x = _timing.page_aligned_empty((batch, S, K))
        x[...] = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
        runs, layers = {}, {}
        for f in forms:
            try:
                runs[f"ort {f}"] = ort_runner(models[f], x, args.threads)
            except Exception as e:  # noqa: BLE001 - a table entry
                print(f"ort {f}: {_timing.short_error(e)}")
            if f != "dqmatmul":
                runs[f"ov {f}"], layers[f] = ov_runner(models[f], x, args.threads)
        for g, f in zip(args.group_sizes, grouped):
            runs[f"ov {f}"], layers[f] = ov_runner(models["dq_weight"], x, args.threads, group_size=g)
        samples = _timing.round_robin_samples(runs, args.rounds, 3, args.min_sample_ms)
        print(f"\nbatch {batch} × {S}, weights {args.weights}, {args.threads} threads, {args.rounds} rounds")
        for runtime in ("ort", "ov"):
            base, _ = _timing.median_half_iqr(samples[f"{runtime} fp32"])
            for f in forms + tuple(grouped):
                if f"{runtime} {f}" not in samples:
                    continue
                v = samples[f"{runtime} {f}"]
                med, spread = _timing.median_half_iqr(v)
                lo, hi = min(v) / base, max(v) / base
                extra = f"   {layers[f]}" if runtime == "ov" else ""
                print(f"  {runtime:4s} {f:15s} {med * 1e3:8.2f} ms ±{spread * 100:4.1f}%  "
                      f"{med / base:5.2f}× fp32 ({lo:.2f}–{hi:.2f}){extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
