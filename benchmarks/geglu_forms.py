#!/usr/bin/env python3
"""Does a fused form of ModernBERT's GeGLU pay, in ONNX Runtime or OpenVINO?

    GeGLU(x) = gelu(x·Wi[:, :d]) · (x·Wi[:, d:]),   x [B, S, 768], Wi [768, 2·1152] (ModernBERT-base)

One block, seeded random weights, in the spellings an exporter or a fusion could write:

  split    x·Wi ─► Split(2) ─► erf GELU as exported (Div, Erf, Add, Mul, Mul) on the first half ─► Mul   (dynamo)
  slice    the same with two Slices of the last axis                                               (TorchScript)
  gelu     x·Wi ─► Split(2) ─► Gelu (opset 20) ─► Mul                       (fusekit's onnx/openvino form today)
  ms-gelu  x·Wi ─► Split(2) ─► com.microsoft Gelu ─► Mul                      (fusekit's ort form today; ORT only)
  two      x·Wi[:, :d] and x·Wi[:, d:] as two MatMuls ─► Gelu ─► Mul          (no split: one candidate fused form)

Each is checked against ``split`` first, then timed interleaved round-robin (2 threads, ORT without
spin-wait, OpenVINO f32) at batch 1 × 128 and 8 × 128: median and 10th percentile in ms, and the
ratio of medians to ``split`` in the same runtime.

Usage: python benchmarks/geglu_forms.py [--iterations 40]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HIDDEN, INNER = 768, 1152


def build(form: str, w: np.ndarray) -> onnx.ModelProto:
    nodes, inits = [], {}
    opset = 20

    def const(name, value):
        inits[name] = numpy_helper.from_array(np.asarray(value), name)
        return name

    def node(op, *inputs, outputs=None, domain="", **attrs):
        outs = outputs or [f"{op}_{len(nodes)}"]
        nodes.append(helper.make_node(op, list(inputs), outs, name=f"n{len(nodes)}", domain=domain, **attrs))
        return outs[0] if len(outs) == 1 else outs

    if form == "two":
        a = node("MatMul", "x", const("wa", w[:, :INNER]))
        b = node("MatMul", "x", const("wb", w[:, INNER:]))
    else:
        h = node("MatMul", "x", const("w", w))
        if form == "slice":
            a = node("Slice", h, const("s0", np.array([0])), const("s1", np.array([INNER])), const("ax", np.array([-1])))
            b = node("Slice", h, const("s1", np.array([INNER])), const("s2", np.array([2 * INNER])), const("ax", np.array([-1])))
        else:
            a, b = node("Split", h, axis=-1, num_outputs=2, outputs=["a", "b"])
    if form in ("split", "slice"):
        erf = node("Erf", node("Div", a, const("root2", np.float32(np.sqrt(2)))))
        act = node("Mul", node("Mul", a, node("Add", erf, const("one", np.float32(1)))), const("half", np.float32(0.5)))
    elif form == "ms-gelu":
        act = node("Gelu", a, domain="com.microsoft")
    else:
        act = node("Gelu", a)
    node("Mul", act, b, outputs=["y"])
    graph = helper.make_graph(nodes, form, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "S", HIDDEN])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", "S", INNER])],
                              list(inits.values()))
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("com.microsoft", 1)] if form == "ms-gelu" else [])
    return helper.make_model(graph, opset_imports=imports, ir_version=10)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=40)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from fusekit.runtime import backends
    from fusekit.runtime.bench import measure
    w = (np.random.default_rng(0).standard_normal((HIDDEN, 2 * INNER)) * 0.05).astype(np.float32)
    folder = Path(tempfile.mkdtemp(prefix="geglu"))
    forms = {"ort": ["split", "slice", "gelu", "ms-gelu", "two"], "openvino": ["split", "slice", "gelu", "two"]}
    paths = {}
    for name in forms["ort"]:
        paths[name] = folder / f"{name}.onnx"
        onnx.save(build(name, w), paths[name])
    print(f"{'runtime':9} {'shape':7} {'form':8} {'median ms':>10} {'p10 ms':>9} {'vs split':>9}  max |Δ|")
    for runtime, names in forms.items():
        runners = [backends.load(runtime, paths[n], threads=2) for n in names]
        for batch in (1, 8):
            x = {"x": np.random.default_rng(batch).standard_normal((batch, 128, HIDDEN)).astype(np.float32)}
            ref = runners[0].run(x)["y"]
            errors = [float(np.abs(r.run(x)["y"] - ref).max()) for r in runners]
            samples = measure(runners, [x] * len(runners), args.iterations, warmup=3)
            base = statistics.median(samples[0])
            for name, s, err in zip(names, samples, errors):
                med, p10 = statistics.median(s), float(np.percentile(s, 10))
                print(f"{runtime:9} {batch}×128   {name:8} {med:10.2f} {p10:9.2f} {med / base:8.2f}×  {err:.1e}",
                      flush=True)


if __name__ == "__main__":
    main()
