#!/usr/bin/env python3
"""Which spelling of a residual Add + LayerNorm does ONNX Runtime run fastest on CPU?

Each form is a chain of ``--chain`` residual blocks y ← norm(y + s) at hidden 768 (twelve,
as a 6-layer ModernBERT has), so the op dominates a run:

  add+ln         Add + LayerNormalization-17, the session at ORT_ENABLE_BASIC (ONNX Runtime
                 keeps the two ops; at its default level it fuses them into the SkipLayerNorm
                 kernel below wherever it can see both addends' shapes)
  add+ln@all     the same graph at ORT_ENABLE_ALL (what ONNX Runtime makes of it itself)
  sum+ln@all     Sum(y, s) + LayerNormalization-17 at ORT_ENABLE_ALL: ONNX Runtime's
                 SkipLayerNorm fusion matches Add only, so this keeps the vectorized kernel
  sub+ln@all     Sub(y, s) + LayerNormalization-17 at ORT_ENABLE_ALL: the sum as a difference
                 (a sublayer whose weights and bias are negated computes −s exactly)
  sln            com.microsoft.SkipLayerNormalization(x, s, γ, β)
  sln-no-beta    …(x, s, γ): ModernBERT's LayerNorm has no β
  sln-bias       …(x, s, γ, β, bias): a sublayer's bias folded in
  sln-sum        …(x, s, γ, β) with the sum as a fourth output, read by the next block
  sln-2d         …(x, s, γ, β) on [B·S, 768], as a packed batch has it
  sln-skip-bcast …(x, s, γ, β) with s of [1, S, 768], broadcast over the batch

at [1, 128, 768] and [8, 128, 768], 2 threads, no spin-wait, interleaved round-robin after
warm-up. Every form is first checked against add+ln. Printed per block: the median and 10th
percentile in µs and the ratio of medians to add+ln.

Usage: python benchmarks/skip_layer_norm_forms.py [--iterations 30] [--chain 12]
"""
from __future__ import annotations

import argparse
import statistics
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HIDDEN = 768
EPS = 1e-5
FORMS = ["add+ln", "add+ln@all", "sum+ln@all", "sub+ln@all", "sln", "sln-no-beta", "sln-bias", "sln-sum", "sln-2d", "sln-skip-bcast"]


def block(form: str, i: int, cur: str) -> tuple[list, str]:
    """The nodes of block i reading `cur`; returns them and the name of the block's output."""
    out = f"y{i}"
    if form.startswith(("add+ln", "sum+ln", "sub+ln")):
        return [helper.make_node(form[:3].title(), [cur, "s"], [f"sum{i}"]),
                helper.make_node("LayerNormalization", [f"sum{i}", "gamma", "beta"], [out], axis=-1,
                                 epsilon=EPS)], out
    inputs = {"sln-no-beta": [cur, "s", "gamma"], "sln-bias": [cur, "s", "gamma", "beta", "bias"]}.get(
        form, [cur, "s", "gamma", "beta"])
    outputs = [out, "", "", f"sum{i}"] if form == "sln-sum" else [out]
    node = helper.make_node("SkipLayerNormalization", inputs, outputs, domain="com.microsoft", epsilon=EPS)
    if form == "sln-sum":  # the next block reads the sum, as a pre-LN residual stream does
        return [node, helper.make_node("Add", [out, f"sum{i}"], [f"z{i}"])], f"z{i}"
    return [node], out


def build(form: str, chain: int, weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    nodes, cur = [], "x"
    for i in range(chain):
        more, cur = block(form, i, cur)
        nodes += more
    x_dims = ["T", HIDDEN] if form == "sln-2d" else ["B", "S", HIDDEN]
    s_dims = [1, "S", HIDDEN] if form == "sln-skip-bcast" else x_dims
    graph = helper.make_graph(
        nodes, form, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_dims),
                      helper.make_tensor_value_info("s", TensorProto.FLOAT, s_dims)],
        [helper.make_tensor_value_info(cur, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in weights.items()])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets)


def reference(form: str, chain: int, weights: dict, x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """The chain in numpy, each form's own math (no β, the bias, the sum read back)."""
    y = x
    for _ in range(chain):
        total = (y - s if form.startswith("sub") else y + s) + (weights["bias"] if form == "sln-bias" else 0)
        mean = total.mean(-1, keepdims=True)
        normed = (total - mean) / np.sqrt(((total - mean) ** 2).mean(-1, keepdims=True) + EPS) * weights["gamma"]
        normed = normed if form == "sln-no-beta" else normed + weights["beta"]
        y = normed + total if form == "sln-sum" else normed
    return y


def session(model: onnx.ModelProto, level: str):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--chain", type=int, default=12)
    args = parser.parse_args(argv)
    from fusekit.runtime.bench import measure

    rng = np.random.default_rng(0)
    weights = {k: rng.standard_normal(HIDDEN).astype(np.float32) for k in ("gamma", "beta", "bias")}
    sessions = {f: session(build(f, args.chain, weights), "ORT_ENABLE_BASIC" if f == "add+ln" else "ORT_ENABLE_ALL")
                for f in FORMS}

    class Runner:
        def __init__(self, sess):
            self.sess = sess

        def run(self, feeds):
            return self.sess.run(None, feeds)

    print(f"{'shape':9} {'form':15} {'median µs':>10} {'p10 µs':>9} {'vs add+ln':>10}"
          f"   (per block; chain of {args.chain})")
    for batch in (1, 8):
        x = rng.standard_normal((batch, 128, HIDDEN)).astype(np.float32)
        s = rng.standard_normal((batch, 128, HIDDEN)).astype(np.float32)
        feeds = {}
        for f in FORMS:
            fx, fs = x, s
            if f == "sln-2d":
                fx, fs = x.reshape(-1, HIDDEN), s.reshape(-1, HIDDEN)
            elif f == "sln-skip-bcast":
                fs = s[:1]
            feeds[f] = {"x": fx, "s": fs}
            got = sessions[f].run(None, feeds[f])[0]
            want = reference(f, args.chain, weights, fx, fs)
            if not np.allclose(got, want, atol=1e-3, rtol=1e-3):
                sys.exit(f"{f}: differs from its numpy reference by {np.abs(got - want).max():.2e}")
        samples = measure([Runner(sessions[f]) for f in FORMS], [feeds[f] for f in FORMS], args.iterations, warmup=3)
        base = statistics.median(samples[0])
        for f, v in zip(FORMS, samples):
            med, p10 = statistics.median(v), float(np.percentile(v, 10))
            per_block = 1e3 / args.chain
            print(f"{batch}×128×768 {f:15} {med * per_block:10.1f} {p10 * per_block:9.1f} {med / base:9.2f}×",
                  flush=True)


if __name__ == "__main__":
    main()
