#!/usr/bin/env python3
"""One BERT-base attention core (hidden 768, 12 heads) in a quantized model, as written by
ONNX Runtime's ``quantize_static`` (Q/DQ pairs on Q, K, V after the head split, on the
probabilities and on P·V: ``--form matmul_only``; on every value: ``--form all_ops``) against
what ``QuantizedAttention`` makes of it for ``--target ort`` (MultiHeadAttention on the
dequantized Q, K, V), on ONNX Runtime. Q, K, V are model inputs here: the projections are INT8
blocks of their own either way.

Each form is first checked against the other (in steps); then timed interleaved, each round in a
fresh random order (benchmarks/_timing.py style: medians and the inter-quartile range). Nothing
is asserted: the machine may be shared, so read the ranges.

    python benchmarks/quantized_attention.py [--batch 1] [--seq 128] [--rounds 15] [--threads 2]
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

HIDDEN, HEADS = 768, 12
SIZE = HIDDEN // HEADS


def core(form: str) -> onnx.ModelProto:
    nodes, inits = [], []

    def const(name, value, dtype=np.float32):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    count = [0]

    def node(op, *inputs, **attrs):
        count[0] += 1
        out = f"{op}_{count[0]}"
        nodes.append(helper.make_node(op, list(inputs), [out], name=out, **attrs))
        return out

    def pair(t, scale, zero=128):
        s, z = const(f"s{count[0]}", scale), const(f"z{count[0]}", zero, np.uint8)
        return node("DequantizeLinear", node("QuantizeLinear", t, s, z), s, z)
    inner = pair if form == "all_ops" else (lambda t, *a: t)
    split = const("split", [0, 0, HEADS, SIZE], np.int64)

    def heads(t, perm):
        return pair(node("Transpose", inner(node("Reshape", pair(t, 0.05), split), 0.05), perm=perm), 0.05)
    q, k_t, v = heads("q", [0, 2, 1, 3]), heads("k", [0, 2, 3, 1]), heads("v", [0, 2, 1, 3])
    scores = inner(node("Mul", inner(node("MatMul", q, k_t), 0.2), const("scale", 1 / np.sqrt(SIZE))), 0.1)
    keys = node("Unsqueeze", "attention_mask", const("axes", [1, 2], np.int64))
    padded = node("Sub", const("one", 1.0), node("Cast", keys, to=TensorProto.FLOAT))
    masked = node("Add", scores, node("Mul", padded, const("fill", -10000.0)))
    probs = pair(node("Softmax", masked, axis=-1), 1 / 255, 0)
    context = inner(node("Transpose", pair(node("MatMul", probs, v), 0.05), perm=[0, 2, 1, 3]), 0.05)
    nodes.append(helper.make_node("Reshape", [context, const("merge", [0, 0, HIDDEN], np.int64)], ["y"]))
    x = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", "seq", HIDDEN]) for n in "qkv"]
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])
    graph = helper.make_graph(nodes, "core", x + [mask],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", HIDDEN])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--form", choices=("matmul_only", "all_ops"), default="matmul_only")
    args = ap.parse_args(argv)
    import onnxruntime as ort

    import fusekit
    original = core(args.form)
    fused, report = fusekit.optimize(original, target="ort", verify=True)
    print(report.verification.summary() if report.verification else "")
    print("fused:", {f.fusion for f in report.fused}, "ops:", sorted({n.op_type for n in fused.graph.node}))
    rng = np.random.default_rng(0)
    feeds = {n: rng.normal(0, 1, (args.batch, args.seq, HIDDEN)).astype(np.float32) for n in "qkv"}
    feeds["attention_mask"] = np.ones((args.batch, args.seq), np.int64)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sessions = {"QDQ as written": ort.InferenceSession(original.SerializeToString(), options,
                                                       providers=["CPUExecutionProvider"]),
                "fused (ort)": ort.InferenceSession(fused.SerializeToString(), options,
                                                    providers=["CPUExecutionProvider"])}
    times = {k: [] for k in sessions}
    for s in sessions.values():
        for _ in range(3):
            s.run(None, feeds)
    for _ in range(args.rounds):
        for name in random.sample(list(sessions), len(sessions)):
            start = time.perf_counter()
            for _ in range(5):
                sessions[name].run(None, feeds)
            times[name].append((time.perf_counter() - start) / 5 * 1e3)
    base = statistics.median(times["QDQ as written"])
    for name, ts in times.items():
        q1, _, q3 = statistics.quantiles(ts, n=4)
        print(f"{name:16s} {statistics.median(ts):7.2f} ms (IQR {q1:.2f}–{q3:.2f})  "
              f"{statistics.median(ts) / base:.2f}× of the QDQ core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
