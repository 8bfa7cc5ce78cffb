#!/usr/bin/env python3
"""Does `--pack` cost anything when a batch has no padding, and does the branch form keep its gain?

Three models of one encoder (bert-base from benchmarks/models.py unless --model), fused for
--target (by default the backend's own: ort for ONNX Runtime, openvino for OpenVINO):

  unpacked   fusekit optimize
  packed     fusekit optimize --pack, the packed graph alone (the form before the branch)
  branch     fusekit optimize --pack as shipped: If(the mask has padding) the packed graph, else the
             unpacked one, both reading the outer graph's weights (fusekit.branches)

each timed in a fresh process per model per round, in a shuffled order every round, at batch
8 × 128 with an all-ones mask and with the lengths 112 … 17 (42% real tokens): the median of 5
runs after 2 warm-ups. Printed: each file's size, each model's median and its ratio to the
unpacked model paired round by round (median, 10th–90th percentile). Nothing is asserted.
OpenVINO's bf16 hint cannot be judged on a CPU without BF16 (one 8 × 128 batch: 43.6 s against
0.73 s in f32): --precision bf16 runs it where the CPU has it.

    python benchmarks/pack_branch.py [--model M.onnx] [--rounds 21] [--backend ort|openvino]
                                     [--target ort|onnx|openvino] [--precision f32|bf16]
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

LENGTHS = [112, 87, 73, 50, 46, 24, 20, 17]

TIMER = r"""
import json, sys, time
import numpy as np
path, padded, backend, precision = sys.argv[1], sys.argv[2] == "padded", sys.argv[3], sys.argv[5]
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
    compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_NUM_THREADS": 2, "INFERENCE_PRECISION_HINT": precision})
    names, request = {p.get_any_name() for p in compiled.inputs}, compiled.create_infer_request()
    run = lambda: request.infer({k: v for k, v in feeds.items() if k in names})
for _ in range(2):
    run()
times = []
for _ in range(5):
    start = time.perf_counter(); run(); times.append(time.perf_counter() - start)
print(json.dumps(sorted(times)[2]))
"""


def _time(path: Path, padded: bool, backend: str, precision: str) -> float:
    out = subprocess.run([sys.executable, "-c", TIMER, str(path), "padded" if padded else "full", backend,
                          json.dumps(LENGTHS), precision], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="an encoder export (default: bert-base from benchmarks/models.py)")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--backend", choices=("ort", "openvino"), default="ort")
    parser.add_argument("--target", choices=("ort", "onnx", "openvino"))
    parser.add_argument("--precision", choices=("f32", "bf16"), default="f32")
    args = parser.parse_args(argv)
    target = args.target or args.backend
    if args.backend == "ort" and target == "openvino" or args.precision == "bf16" and args.backend == "ort":
        parser.error("ONNX Runtime runs the ort and onnx targets, in f32")
    import fusekit
    from fusekit.stages import pack
    if args.model:
        source = Path(args.model)
    else:
        from benchmarks.models import get_model
        source = Path(get_model("bert-base"))
    with tempfile.TemporaryDirectory() as tmp:
        paths = {name: Path(tmp) / f"{name}.onnx" for name in ("unpacked", "packed", "branch")}
        shipped = pack.FORMS[target]
        for name, packing in (("unpacked", False), ("packed", True), ("branch", True)):
            pack.FORMS[target] = replace(shipped, branch=name == "branch")
            model, _ = fusekit.optimize(source, target=target, pack=packing, verify=False)
            onnx.save(model, paths[name])
        pack.FORMS[target] = shipped
        print(f"target {target}; file sizes: " + ", ".join(f"{n} {p.stat().st_size / 1e6:.1f} MB" for n, p in paths.items()))
        for padded in (False, True):
            times = {name: [] for name in paths}
            for _ in range(args.rounds):
                for name in random.sample(list(paths), len(paths)):
                    times[name].append(_time(paths[name], padded, args.backend, args.precision))
            what = "42% real tokens" if padded else "no padding"
            print(f"{args.backend} {args.precision}, batch 8 × 128, {what}, {args.rounds} rounds:", flush=True)
            for name, samples in times.items():
                ratios = sorted(t / u for t, u in zip(samples, times["unpacked"]))
                p10, p90 = ratios[len(ratios) // 10], ratios[min(len(ratios) - 1, 9 * len(ratios) // 10)]
                print(f"  {name:9s} {statistics.median(samples) * 1000:7.0f} ms   ÷ unpacked, paired: "
                      f"{statistics.median(ratios):.3f}× (p10–p90 {p10:.2f}–{p90:.2f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
