#!/usr/bin/env python3
"""ONNX Runtime's SkipLayerNormalization against the Add + LayerNormalization it replaces, alone.

One node each at BERT-base width, [batch, sequence, 768] float32, random γ and β: `SkipLayerNormalization`
(com.microsoft, one output), the same with the sum as its fourth output (what fusekit emits where the
residual reads the sum), and `Add` → `LayerNormalization`-17; all three sessions at ORT_DISABLE_ALL so
ONNX Runtime does not fuse the last into the first. Outputs are compared first, then the forms are timed
round-robin in a fresh random order each round (benchmarks/_timing.py). Medians, 10th–90th percentile.
Nothing is asserted; on a shared machine run it twice.

    python benchmarks/skip_layernorm_forms.py [--shapes 1x128,8x128,1x384] [--rounds 40] [--threads 2]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import round_robin_samples  # noqa: E402

HIDDEN = 768


def model(form: str, batch: int, seq: int, rng):
    from onnx import TensorProto, helper, numpy_helper
    tensor = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, seq, HIDDEN])  # noqa: E731
    inits = [numpy_helper.from_array((rng.random(HIDDEN) + 0.5).astype(np.float32), "gamma"),
             numpy_helper.from_array(rng.standard_normal(HIDDEN).astype(np.float32), "beta")]
    if form == "add_layernorm":
        nodes = [helper.make_node("Add", ["x", "skip"], ["sum"]),
                 helper.make_node("LayerNormalization", ["sum", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-12)]
    else:
        outputs = ["y", "", "", "sum"] if form == "skip_with_sum" else ["y"]
        nodes = [helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma", "beta"], outputs,
                                  domain="com.microsoft", epsilon=1e-12)]
    outs = [tensor("y")] + ([tensor("sum")] if form != "skip" else [])
    graph = helper.make_graph(nodes, form, [tensor("x"), tensor("skip")], outs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default="1x128,8x128,1x384", help="batch x sequence, comma-separated")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    try:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",") if s]
    except ValueError:
        shapes = []
    if not shapes or any(len(s) != 2 or min(s) < 1 for s in shapes):
        ap.error("--shapes: BATCHxSEQUENCE, comma-separated, e.g. 1x128,8x128")
    import onnxruntime as ort
    print(f"skip_layernorm_forms: onnxruntime {ort.__version__}, {args.threads} threads, {args.rounds} rounds")
    for batch, seq in shapes:
        rng = np.random.default_rng(0)
        feeds = {"x": rng.standard_normal((batch, seq, HIDDEN)).astype(np.float32),
                 "skip": rng.standard_normal((batch, seq, HIDDEN)).astype(np.float32)}
        runs, outputs = {}, {}
        for form in ("skip", "skip_with_sum", "add_layernorm"):
            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = args.threads, 1
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            sess = ort.InferenceSession(model(form, batch, seq, np.random.default_rng(1)).SerializeToString(), so,
                                        providers=["CPUExecutionProvider"])
            runs[form] = lambda sess=sess: sess.run(None, feeds)
            outputs[form] = runs[form]()[0]
        worst = max(float(np.abs(v - outputs["add_layernorm"]).max()) for v in outputs.values())
        print(f"\n[{batch}, {seq}, {HIDDEN}]: largest difference to Add + LayerNormalization {worst:.1e}")
        samples = round_robin_samples(runs, args.rounds, 3, 30.0)
        for form, v in samples.items():
            ms = np.array(v) * 1e3
            print(f"  {form:<14} {np.median(ms):8.3f} ms ({np.percentile(ms, 10):.3f}–{np.percentile(ms, 90):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
