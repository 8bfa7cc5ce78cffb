#!/usr/bin/env python3
"""Does a runtime branch make `--pack` free when a batch has no padding?

Three models of one encoder (bert-base from benchmarks/models.py unless --model):

  unpacked   fusekit --target ort
  packed     fusekit --target ort --pack
  branch     If(min(mask) ≠ 0): the unpacked graph, else the packed one; both branches read the
             outer graph's weights (a prototype built here from the two files, not a fusekit form)

each timed in a fresh process per model per round, in a shuffled order every round, at batch
8 × 128 with an all-ones mask and with the lengths 112 … 17 (42% real tokens): the median of 5
runs after 2 warm-ups. Printed: each model's median and its ratio to the unpacked model paired
round by round (median, 10th–90th percentile). Nothing is asserted.

    python benchmarks/pack_branch.py [--model M.onnx] [--rounds 21] [--backend ort|openvino]
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

LENGTHS = [112, 87, 73, 50, 46, 24, 20, 17]
MASK = "attention_mask"

TIMER = r"""
import json, sys, time
import numpy as np
path, padded, backend = sys.argv[1], sys.argv[2] == "padded", sys.argv[3]
B, S, lengths = 8, 128, json.loads(sys.argv[4])
ids = np.random.default_rng(0).integers(0, 100, (B, S)).astype(np.int64)
mask = np.array([[1] * n + [0] * (S - n) for n in lengths], np.int64) if padded else np.ones((B, S), np.int64)
feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros((B, S), np.int64)}
if backend == "ort":
    import onnxruntime as ort
    options = ort.SessionOptions(); options.intra_op_num_threads = 2
    session = ort.InferenceSession(path, options)
    names = {i.name for i in session.get_inputs()}
    run = lambda: session.run(None, {k: v for k, v in feeds.items() if k in names})
else:
    import openvino as ov
    compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_NUM_THREADS": 2, "INFERENCE_PRECISION_HINT": "f32"})
    names, request = {p.get_any_name() for p in compiled.inputs}, compiled.create_infer_request()
    run = lambda: request.infer({k: v for k, v in feeds.items() if k in names})
for _ in range(2):
    run()
times = []
for _ in range(5):
    start = time.perf_counter(); run(); times.append(time.perf_counter() - start)
print(json.dumps(sorted(times)[2]))
"""


def _body(graph: onnx.GraphProto, prefix: str, outer: set[str], renamed: dict[str, str]) -> onnx.GraphProto:
    """``graph``'s nodes as an If branch: names of its own prefixed, outer values read as they are."""
    own: dict[str, str] = {}

    def name(n: str) -> str:
        if not n or n in outer:
            return renamed.get(n, n)
        return own.setdefault(n, prefix + n)
    nodes = []
    for node in graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = prefix + node.name
        copy.input[:] = [name(n) for n in node.input]
        copy.output[:] = [name(n) for n in node.output]
        nodes.append(copy)
    outputs = [helper.make_tensor_value_info(name(o.name), o.type.tensor_type.elem_type, None) for o in graph.output]
    return helper.make_graph(nodes, prefix + "branch", [], outputs)


def branch_model(unpacked: onnx.ModelProto, packed: onnx.ModelProto) -> onnx.ModelProto:
    """If(no padding): ``unpacked``, else ``packed``; one copy of each weight the two share."""
    weights = {w.name: w for w in unpacked.graph.initializer}
    renamed = {}
    for w in packed.graph.initializer:
        if w.name in weights and numpy_helper.to_array(weights[w.name]).tobytes() == numpy_helper.to_array(w).tobytes():
            continue
        if w.name in weights:
            renamed[w.name] = w.name = "packed/" + w.name
        weights[w.name] = w
    outer = {i.name for i in unpacked.graph.input} | set(weights) | set(renamed)
    condition = [helper.make_node("ReduceMin", [MASK], ["min_mask"], keepdims=0),
                 helper.make_node("Cast", ["min_mask"], ["no_padding"], to=TensorProto.BOOL)]
    branch = helper.make_node("If", ["no_padding"], [o.name for o in unpacked.graph.output],
                              then_branch=_body(unpacked.graph, "unpacked/", outer, {}),
                              else_branch=_body(packed.graph, "packed/", outer, renamed))
    graph = helper.make_graph(condition + [branch], unpacked.graph.name, list(unpacked.graph.input),
                              list(unpacked.graph.output), list(weights.values()))
    model = helper.make_model(graph, opset_imports=list(unpacked.opset_import))
    model.ir_version = unpacked.ir_version
    return model


def _time(path: Path, padded: bool, backend: str) -> float:
    out = subprocess.run([sys.executable, "-c", TIMER, str(path), "padded" if padded else "full", backend,
                          json.dumps(LENGTHS)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="an encoder export (default: bert-base from benchmarks/models.py)")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--backend", choices=("ort", "openvino"), default="ort")
    args = parser.parse_args(argv)
    import fusekit
    if args.model:
        source = Path(args.model)
    else:
        from benchmarks.models import get_model
        source = Path(get_model("bert-base"))
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"unpacked": Path(tmp) / "unpacked.onnx", "packed": Path(tmp) / "packed.onnx",
                 "branch": Path(tmp) / "branch.onnx"}
        for name, pack in (("unpacked", False), ("packed", True)):
            model, _ = fusekit.optimize(source, target="ort", pack=pack, verify=False)
            onnx.save(model, paths[name])
        onnx.save(branch_model(onnx.load(paths["unpacked"]), onnx.load(paths["packed"])), paths["branch"])
        for padded in (False, True):
            times = {name: [] for name in paths}
            for _ in range(args.rounds):
                for name in random.sample(list(paths), len(paths)):
                    times[name].append(_time(paths[name], padded, args.backend))
            what = "42% real tokens" if padded else "no padding"
            print(f"{args.backend}, batch 8 × 128, {what}, {args.rounds} rounds:")
            for name, samples in times.items():
                ratios = sorted(t / u for t, u in zip(samples, times["unpacked"]))
                p10, p90 = ratios[len(ratios) // 10], ratios[min(len(ratios) - 1, 9 * len(ratios) // 10)]
                print(f"  {name:9s} {statistics.median(samples) * 1000:7.0f} ms   ÷ unpacked, paired: "
                      f"{statistics.median(ratios):.3f}× (p10–p90 {p10:.2f}–{p90:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
