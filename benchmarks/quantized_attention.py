#!/usr/bin/env python3
"""One BERT-base self-attention (hidden 768, 12 heads) in a model quantized by ONNX Runtime's
``quantize_static`` (QDQ, uint8 activations, int8 weights), in three forms, on ONNX Runtime:

  QDQ as written   x_q ─► DQ ─► MatMul(DQ(W_q)) ─⟨q⟩─► Add(b) ─⟨q⟩─► the core with pairs on Q, K, V
                   after the head split, on the probabilities and on P·V (``--form matmul_only``)
                   or on every value (``--form all_ops``)
  fusekit ort      what fusekit optimize --target ort makes of it: MatMulIntegerToFloat(+bias)
                   per projection (QuantizedLinear) and MultiHeadAttention on their outputs
                   (QuantizedAttention)
  QAttention       ONNX Runtime's integer attention: one com.microsoft.QAttention on x_q with the
                   three int8 weights packed [768, 2304] (per-column scales) and the raw 2-D mask

Each form is checked against the QDQ one first (max abs difference printed), then all are timed
interleaved, each round in a fresh random order, on one shared thread setting (spin-wait off).
Medians and inter-quartile ranges; nothing asserted: read the ranges on a shared machine.

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
X_SCALE, X_ZERO = np.float32(0.05), np.uint8(128)


def _weights(seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for name in "qkv":
        w = rng.normal(0, 0.05, (HIDDEN, HIDDEN)).astype(np.float32)
        scale = np.float32(np.abs(w).max() / 127)
        out[name] = (np.clip(np.round(w / scale), -127, 127).astype(np.int8), scale,
                     rng.normal(0, 0.1, HIDDEN).astype(np.float32))
    return out


class _Builder:
    def __init__(self):
        self.nodes, self.inits, self.count = [], [], 0

    def const(self, name, value, dtype=np.float32):
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def node(self, op, *inputs, domain="", **attrs):
        self.count += 1
        out = f"{op}_{self.count}"
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=out, domain=domain, **attrs))
        return out

    def pair(self, t, scale, zero=128):
        s, z = self.const(f"s{self.count}", scale), self.const(f"z{self.count}", zero, np.uint8)
        return self.node("DequantizeLinear", self.node("QuantizeLinear", t, s, z), s, z)

    def model(self, output, opsets=(("", 17),)):
        x = helper.make_tensor_value_info("x_q", TensorProto.UINT8, ["batch", "seq", HIDDEN])
        mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])
        self.nodes.append(helper.make_node("Identity", [output], ["y"]))
        graph = helper.make_graph(self.nodes, "attention", [x, mask], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, ["batch", "seq", HIDDEN])], self.inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets], ir_version=8)


def qdq(form: str) -> onnx.ModelProto:
    b = _Builder()
    inner = b.pair if form == "all_ops" else (lambda t, *a: t)
    x = b.node("DequantizeLinear", "x_q", b.const("x_scale", X_SCALE), b.const("x_zero", X_ZERO, np.uint8))
    split = b.const("split", [0, 0, HEADS, SIZE], np.int64)
    heads = {}
    for name, (w_q, scale, bias) in _weights().items():
        w = b.node("DequantizeLinear", b.const(f"w_{name}", w_q, np.int8), b.const(f"ws_{name}", scale))
        y = b.pair(b.node("Add", b.pair(b.node("MatMul", x, w), 0.05), b.const(f"b_{name}", bias)), 0.05)
        perm = [0, 2, 3, 1] if name == "k" else [0, 2, 1, 3]
        heads[name] = b.pair(b.node("Transpose", inner(b.node("Reshape", y, split), 0.05), perm=perm), 0.05)
    scores = inner(b.node("Mul", inner(b.node("MatMul", heads["q"], heads["k"]), 0.2),
                          b.const("scale", 1 / np.sqrt(SIZE))), 0.1)
    keys = b.node("Unsqueeze", "attention_mask", b.const("axes", [1, 2], np.int64))
    padded = b.node("Sub", b.const("one", 1.0), b.node("Cast", keys, to=TensorProto.FLOAT))
    masked = b.node("Add", scores, b.node("Mul", padded, b.const("fill", -10000.0)))
    probs = b.pair(b.node("Softmax", masked, axis=-1), 1 / 255, 0)
    context = inner(b.node("Transpose", b.pair(b.node("MatMul", probs, heads["v"]), 0.05), perm=[0, 2, 1, 3]), 0.05)
    return b.model(b.node("Reshape", context, b.const("merge", [0, 0, HIDDEN], np.int64)))


def qattention() -> onnx.ModelProto:
    b = _Builder()
    weights = _weights()
    w = np.concatenate([weights[n][0] for n in "qkv"], axis=1)
    scales = np.concatenate([np.full(HIDDEN, weights[n][1], np.float32) for n in "qkv"])
    bias = np.concatenate([weights[n][2] for n in "qkv"])
    mask = b.node("Cast", "attention_mask", to=TensorProto.INT32)
    out = b.node("QAttention", "x_q", b.const("w", w, np.int8), b.const("b", bias), b.const("x_scale", X_SCALE),
                 b.const("w_scale", scales), mask, b.const("x_zero", X_ZERO, np.uint8),
                 b.const("w_zero", np.zeros(3 * HIDDEN, np.int8), np.int8), domain="com.microsoft", num_heads=HEADS)
    return b.model(out, opsets=(("", 17), ("com.microsoft", 1)))


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
    original = qdq(args.form)
    fused, report = fusekit.optimize(original, target="ort", verify=False)
    print("fusekit:", dict(report.counts), "ops:", sorted({n.op_type for n in fused.graph.node}))
    rng = np.random.default_rng(0)
    feeds = {"x_q": rng.integers(90, 166, (args.batch, args.seq, HIDDEN)).astype(np.uint8),
             "attention_mask": np.ones((args.batch, args.seq), np.int64)}
    feeds["attention_mask"][:, args.seq * 3 // 4:] = 0  # right padding on every row
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    models = {"QDQ as written": original, "fusekit ort": fused, "QAttention": qattention()}
    sessions = {k: ort.InferenceSession(m.SerializeToString(), options, providers=["CPUExecutionProvider"])
                for k, m in models.items()}
    reference = sessions["QDQ as written"].run(None, feeds)[0]
    valid = feeds["attention_mask"].astype(bool)
    for name, s in sessions.items():
        got = s.run(None, feeds)[0]
        print(f"{name:16s} max abs vs QDQ on kept tokens {np.abs(got - reference)[valid].max():.3g}")
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
    print(f"batch {args.batch} × seq {args.seq}, {args.threads} threads, {args.rounds} rounds, form {args.form}")
    for name, ts in times.items():
        q1, _, q3 = statistics.quantiles(ts, n=4)
        print(f"{name:16s} {statistics.median(ts):7.2f} ms (IQR {q1:.2f}–{q3:.2f})  "
              f"{statistics.median(ts) / base:.2f}× of QDQ as written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
