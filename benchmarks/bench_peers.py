#!/usr/bin/env python3
"""fusekit against its peers on full-size BERT: inference latency, optimization cost, fused ops.

Generates the models on demand (benchmarks/models.py: random-weight bert-base and
bert-large exported by the TorchScript exporter at opset 14, cached in
benchmarks/models/), optimizes each with every tool, and prints:

  (1) optimization time and peak memory per tool and model. Each tool runs in a
      child process of its own; "time" is its load → optimize → save (imports
      excluded), "peak RSS" is the child's whole high-water mark (VmHWM), the
      interpreter and imports included (~0.1-0.3 GiB of it).
  (2) how both grow with depth: bert-base with 2, 6, 12, 24, 48 layers, and a
      least-squares line time = fixed + per-node × nodes (R² near 1 = linear).
  (3) fused-op counts: the op histogram of each tool's output file (contrib ops
      and standard fused ops; runtimes fuse further inside their sessions).
  (4) inference latency at batch 1 and 8 × seq 128: the median of interleaved runs
      (fusekit.runtime.bench.measure: round-robin, rotating, after one warm-up run; up to
      --iterations rounds, fewer — at least 3 — where they would take over --budget
      seconds, which keeps bert-large at batch 8 within the half hour) of
        ORT f32        the original under ORT's default (all) graph optimizations,
                       ONNX Runtime's transformers optimizer output, the onnxscript
                       rewriter's ort_fusions output, fusekit --target ort;
        OpenVINO f32   the original, fusekit --target openvino;
        OpenVINO bf16  the same two at OpenVINO's default precision on this CPU.
      "ratio" is median ÷ the best peer's median in the same runtime and precision
      (peers: every row that is not fusekit; below 1.00× = faster than the best peer).
  Then the issue's goals, as measured (nothing is asserted).

Usage:
  python benchmarks/bench_peers.py [--models bert-base,bert-large] [--quick]
      [--depths 2,6,12,24,48] [--iterations 10] [--budget 60] [--threads 2] [--json PATH]

Needs the bench extra: pip install torch==2.13.0 && pip install -e '.[bench]'.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks._timing import T0, log  # noqa: E402  (the repository is on sys.path now)

TOOLS = {  # name → what the tables call it
    "fusekit-ort": "fusekit --target ort",
    "fusekit-openvino": "fusekit --target openvino",
    "ort-transformers": "ORT transformers optimizer",
    "onnxscript": "onnxscript ort_fusions",
}
DEPTH_TOOLS = ("fusekit-ort", "ort-transformers", "onnxscript")
# (runtime label, backend, precision, model key); model key "original" or a tool
LATENCY_ROWS = [
    ("ORT f32", "ort", "f32", "original"),
    ("ORT f32", "ort", "f32", "ort-transformers"),
    ("ORT f32", "ort", "f32", "onnxscript"),
    ("ORT f32", "ort", "f32", "fusekit-ort"),
    ("OpenVINO f32", "openvino", "f32", "original"),
    ("OpenVINO f32", "openvino", "f32", "fusekit-openvino"),
    ("OpenVINO bf16", "openvino", "bf16", "original"),
    ("OpenVINO bf16", "openvino", "bf16", "fusekit-openvino"),
]
BATCHES, SEQ = (1, 8), 128
GOALS = [  # (runtime, fusekit's row, the goal)
    ("ORT f32", "fusekit-ort", "fusekit --target ort ≤ best ORT peer"),
    ("OpenVINO f32", "fusekit-openvino", "fusekit --target openvino ≤ OpenVINO on the original, f32"),
    ("OpenVINO bf16", "fusekit-openvino", "fusekit --target openvino ≤ OpenVINO on the original, bf16"),
]
# Fused ops counted in (3) besides every com.microsoft op: the standard ops fusions produce.
STANDARD_FUSED = {"LayerNormalization", "Gelu", "Attention", "RMSNormalization"}


# --------------------------------------------------------------------------- optimizing, in a child


def optimize_here(tool: str, src: str, dst: str, heads: int, hidden: int) -> float:
    """Run one tool in this process (the child); returns load → optimize → save seconds."""
    if tool.startswith("fusekit-"):
        from fusekit.cli import main
        start = time.perf_counter()
        code = main(["optimize", "--no-verify", "--target", tool.removeprefix("fusekit-"), src, "-o", dst])
        if code:
            raise SystemExit(code)  # its one-line error is already the last line of the output
    elif tool == "ort-transformers":
        from onnxruntime.transformers.optimizer import optimize_model
        start = time.perf_counter()
        optimize_model(src, model_type="bert", num_heads=heads, hidden_size=hidden).save_model_to_file(dst)
    elif tool == "onnxscript":
        import onnx_ir as ir
        from onnxscript.rewriter.ort_fusions import optimize_for_ort
        start = time.perf_counter()
        model = ir.load(src)
        optimize_for_ort(model)
        ir.save(model, dst)
    else:
        raise SystemExit(f"unknown tool {tool}")
    return time.perf_counter() - start


def peak_rss() -> int:
    """This process's own high-water mark in bytes.

    Not getrusage: Linux carries the maxrss of the parent, as it was when forked, over
    exec into the child, so a child of a large parent would report the parent's size.
    """
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):  # not Linux
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def optimize_in_child(tool: str, src: Path, dst: Path, heads: int, hidden: int) -> dict:
    """Time and peak RSS of one tool on one model, in a fresh process so memory is its own."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--optimize-one", tool, str(src), str(dst),
           "--heads", str(heads), "--hidden", str(hidden)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT,
                          check=False)
    lines = proc.stdout.strip().splitlines()
    result = {"tool": tool, "model": src.name, "process_seconds": time.perf_counter() - start}
    if proc.returncode == 0 and lines and lines[-1].startswith("{"):
        result.update(json.loads(lines[-1]))
    else:
        result["error"] = (lines[-1] if lines else f"exit {proc.returncode}")[:200]
    return result


# --------------------------------------------------------------------------- measuring


def node_count(path: Path) -> int:
    import onnx
    return len(onnx.load(str(path), load_external_data=False).graph.node)


def fused_ops(path: Path) -> Counter:
    import onnx
    model = onnx.load(str(path), load_external_data=False)
    return Counter(n.op_type for n in model.graph.node
                   if n.domain == "com.microsoft" or n.op_type in STANDARD_FUSED)


def rounds_within(runners: list, feeds: dict, iterations: int, budget_s: float) -> int:
    """Run each runner once (a warm-up) and return how many interleaved rounds fit the budget, 3 to ``iterations``."""
    start = time.perf_counter()
    for runner in runners:
        runner.run(feeds)
    return max(3, min(iterations, int(budget_s / (time.perf_counter() - start))))


def latency(name: str, files: dict[str, Path], threads: int, iterations: int, warmup: int, budget_s: float) -> dict:
    """Median ms per (runtime, model key, batch); each backend's rows interleaved together."""
    import onnx

    from fusekit.runtime import backends
    from fusekit.runtime.bench import measure
    from fusekit.inputs import Setting, make_inputs

    interface = onnx.load(str(files["original"]), load_external_data=False)
    feeds = {b: make_inputs(interface, Setting("none", b, SEQ), seed=0) for b in BATCHES}
    del interface
    medians, spreads, runtimes, rounds = {}, {}, {}, {}
    for backend in ("ort", "openvino"):
        rows = [r for r in LATENCY_ROWS if r[1] == backend and r[3] in files]
        runners = []
        for runtime, _, precision, key in rows:
            log(f"{name}: loading {key} on {runtime}")
            runners.append(backends.load(backend, files[key], "cpu", threads, precision))
            runtimes[runtime] = runners[-1].describe()
        for b in BATCHES:
            n = rounds_within(runners, feeds[b], iterations, budget_s)
            rounds[(backend, b)] = n
            log(f"{name}: timing {len(runners)} models on {backend} at batch {b} × seq {SEQ}, {n} rounds")
            samples = measure(runners, [feeds[b]] * len(runners), n, warmup)
            for (runtime, _, _, key), s in zip(rows, samples):
                medians[(runtime, key, b)] = statistics.median(s)
                q1, _, q3 = statistics.quantiles(s, n=4)
                spreads[(runtime, key, b)] = (q3 - q1) / 2 / statistics.median(s)
        del runners
    return {"medians": medians, "spreads": spreads, "runtimes": runtimes, "rounds": rounds}


def best_peers(medians: dict) -> dict:
    """(runtime, batch) → the smallest median among the rows that are not fusekit."""
    best = {}
    for (runtime, key, b), ms in medians.items():
        if not key.startswith("fusekit"):
            best[(runtime, b)] = min(ms, best.get((runtime, b), float("inf")))
    return best


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least squares y = a + b·x; returns (a, b, R²)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    a = my - b * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys))
    return a, b, (1 - ss_res / ss_tot) if ss_tot else 1.0


# --------------------------------------------------------------------------- printing


def gib(n: float) -> str:
    return f"{n / 2**30:.2f}"


def print_optimization(runs: list[dict]):
    print("\n(1) optimization: time (load → optimize → save, s) and peak RSS (GiB, whole process)")
    print(f"{'model':<12} {'tool':<28} {'time s':>8} {'peak GiB':>9}  {'process s':>9}")
    for r in runs:
        if "error" in r:
            print(f"{r['label']:<12} {TOOLS[r['tool']]:<28} failed: {r['error']}")
        else:
            print(f"{r['label']:<12} {TOOLS[r['tool']]:<28} {r['seconds']:>8.1f} {gib(r['peak_rss']):>9}  "
                  f"{r['process_seconds']:>9.1f}")


def print_depth(depths: list[int], nodes: dict[int, int], runs: dict[tuple, dict]) -> dict:
    print("\n(2) growth with depth (bert-base): time s / peak RSS GiB per tool")
    head = f"{'layers':>6} {'nodes':>6}  " + "  ".join(f"{TOOLS[t]:>28}" for t in DEPTH_TOOLS)
    print(head)
    for d in depths:
        cells = []
        for t in DEPTH_TOOLS:
            r = runs.get((t, d), {})
            ok = "seconds" in r
            cells.append(f"{r['seconds']:>12.1f} s {gib(r['peak_rss']):>8} GiB" if ok else f"{'failed':>28}")
        print(f"{d:>6} {nodes[d]:>6}  " + "  ".join(cells))
    fits = {}
    print(f"{'fit':<13}  " + "  ".join(f"{TOOLS[t]:>28}" for t in DEPTH_TOOLS))
    for what, key, unit, scale in (("time", "seconds", "ms", 1e3), ("peak RSS", "peak_rss", "MiB", 2**-20)):
        per_node, fixed, r2 = [], [], []
        for t in DEPTH_TOOLS:
            ok = [d for d in depths if key in runs.get((t, d), {})]
            if len(ok) < 3:
                for column in (per_node, fixed, r2):
                    column.append(f"{'—':>28}")
                continue
            a, b, r = linear_fit([nodes[d] for d in ok], [runs[(t, d)][key] for d in ok])
            fits[(t, key)] = (a, b, r)
            per_node.append(f"{b * scale:>24.3f} {unit}")
            fixed.append(f"{a * scale:>24.0f} {unit}")
            r2.append(f"{r:>28.4f}")
        print(f"{what + ' /node':<13}  " + "  ".join(per_node))
        print(f"{what + ' fixed':<13}  " + "  ".join(fixed))
        print(f"{what + ' R²':<13}  " + "  ".join(r2))
    return fits


def print_ops(name: str, files: dict[str, Path]):
    hists = {key: fused_ops(p) for key, p in files.items() if key != "original"}
    ops = sorted(set().union(*hists.values()))
    keys = list(hists)
    print(f"\n(3) fused ops in each tool's output, {name}")
    print(f"{'op':<32}" + "".join(f"{TOOLS[k]:>28}" for k in keys))
    for op in ops:
        print(f"{op:<32}" + "".join(f"{hists[k][op]:>28}" for k in keys))
    print(f"{'nodes (original ' + str(node_count(files['original'])) + ')':<32}"
          + "".join(f"{node_count(files[k]):>28}" for k in keys))


def print_latency(name: str, result: dict, threads: int, warmup: int):
    medians, best = result["medians"], best_peers(result["medians"])
    rounds = ", ".join(f"{backend} batch {b}: {n}" for (backend, b), n in result["rounds"].items())
    print(f"\n(4) latency, {name}, seq {SEQ}, {threads} threads: median ms of interleaved runs after {warmup + 1} "
          f"warm-up (± half the inter-quartile range); ratio = ÷ best peer in the same runtime and precision\n"
          f"  rounds: {rounds}")
    for runtime, text in result["runtimes"].items():
        print(f"  {runtime}: {text}")
    print(f"{'runtime':<14} {'model':<28}" + "".join(f"{'batch ' + str(b) + ' ms':>13} {'±':>4} {'ratio':>7}"
                                                      for b in BATCHES))
    for runtime, _, _, key in LATENCY_ROWS:
        if (runtime, key, BATCHES[0]) not in medians:
            continue
        label = "original" if key == "original" else TOOLS[key]
        cells = "".join(f"{medians[(runtime, key, b)]:>13.1f} {result['spreads'][(runtime, key, b)]:>3.0%} "
                        f"{medians[(runtime, key, b)] / best[(runtime, b)]:>6.2f}×" for b in BATCHES)
        print(f"{runtime:<14} {label:<28}{cells}")


def print_goals(latencies: dict, opt_runs: list[dict], fits: dict):
    print("\ngoals (measured, not asserted)")
    for name, result in latencies.items():
        medians, best = result["medians"], best_peers(result["medians"])
        for runtime, key, goal in GOALS:
            if (runtime, key, BATCHES[0]) in medians:
                ratios = [medians[(runtime, key, b)] / best[(runtime, b)] for b in BATCHES]
                met = "met" if all(round(r, 2) <= 1.0 for r in ratios) else "not met"  # as printed
                print(f"  {name}: {goal}: " + ", ".join(f"{r:.2f}× at batch {b}" for r, b in zip(ratios, BATCHES))
                      + f" — {met}")
    by = {(r["label"], r["tool"]): r for r in opt_runs if "seconds" in r}
    fk, ortx = by.get(("bert-base", "fusekit-ort")), by.get(("bert-base", "ort-transformers"))
    if fk and ortx:
        print(f"  bert-base: fusekit optimize faster than the ORT transformers optimizer: {fk['seconds']:.1f} s vs "
              f"{ortx['seconds']:.1f} s — {'met' if fk['seconds'] < ortx['seconds'] else 'not met'}")
    if fk:
        print(f"  bert-base: fusekit optimize under 1.5 GiB peak RSS: {gib(fk['peak_rss'])} GiB — "
              f"{'met' if fk['peak_rss'] < 1.5 * 2**30 else 'not met'}")
    for key, what in (("seconds", "time"), ("peak_rss", "peak RSS")):
        if ("fusekit-ort", key) in fits:
            print(f"  fusekit optimize {what} linear in nodes: R² {fits[('fusekit-ort', key)][2]:.4f}")


# --------------------------------------------------------------------------- the run


def generate(name: str, layers: int | None = None) -> Path:
    """The cached model, exported first if missing — in a child, so torch's memory never stays in this process."""
    from benchmarks.models import model_path
    path = model_path(name, layers=layers, opset=14, attn="eager")
    if path.is_file():
        log(f"{path.name}: cached")
        return path
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "benchmarks.models", name, "--opset", "14", "--attn", "eager"]
    if layers is not None:
        cmd += ["--layers", str(layers)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    if proc.returncode or not path.is_file():
        raise SystemExit(f"bench_peers: exporting {path.name} failed:\n{proc.stdout.strip()}")
    log(f"{path.name}: exported in {time.perf_counter() - start:.0f} s")
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="fusekit against ORT's transformers optimizer, onnxscript and OpenVINO.")
    p.add_argument("--models", default="bert-base,bert-large", help="comma-separated (default bert-base,bert-large)")
    p.add_argument("--quick", action="store_true", help="bert-base only, depths 2,6,12, 5 timed runs")
    p.add_argument("--depths", default=None, help="bert-base depths for (2), comma-separated; '' to skip "
                                                  "(default 2,6,12,24,48)")
    p.add_argument("--iterations", type=int, default=None,
                   help="most timed runs per model and batch (default 10, --quick 5)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds of timed runs per runtime and batch; fewer rounds (at least 3) when they would "
                        "take longer (default 60, --quick 30)")
    p.add_argument("--warmup", type=int, default=0, help="untimed runs besides the first (default 0)")
    p.add_argument("--threads", type=int, default=2, help="inference threads (default 2)")
    p.add_argument("--json", metavar="PATH", help="also write every measurement as JSON")
    p.add_argument("--optimize-one", nargs=3, metavar=("TOOL", "SRC", "DST"), help=argparse.SUPPRESS)
    p.add_argument("--heads", type=int, help=argparse.SUPPRESS)
    p.add_argument("--hidden", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.optimize_one:  # the child of optimize_in_child
        seconds = optimize_here(*args.optimize_one, args.heads, args.hidden)
        print(json.dumps({"seconds": seconds, "peak_rss": peak_rss()}))
        return 0

    from benchmarks.models import CONFIGS
    names = ["bert-base"] if args.quick else [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        p.error(f"unknown model {unknown[0]}; choose from {', '.join(CONFIGS)}")
    depth_text = args.depths if args.depths is not None else ("2,6,12" if args.quick else "2,6,12,24,48")
    depths = [int(d) for d in depth_text.split(",") if d.strip()]
    iterations = args.iterations or (5 if args.quick else 10)
    budget = args.budget or (30 if args.quick else 60)

    import onnxruntime
    import openvino
    print(f"bench_peers: onnxruntime {onnxruntime.__version__}, openvino {openvino.get_version().split('-')[0]}, "
          f"{os.cpu_count()} CPUs; OpenVINO's default CPU precision here: "
          f"{openvino.Core().get_property('CPU', 'INFERENCE_PRECISION_HINT').get_type_name()}")
    record: dict = {"optimization": [], "depth": [], "latency": {}}
    with tempfile.TemporaryDirectory(prefix="bench_peers.", dir=REPO_ROOT / "benchmarks") as tmp:
        outputs: dict[str, dict[str, Path]] = {}
        for name in names:
            src = generate(name)
            heads, hidden = CONFIGS[name]["num_attention_heads"], CONFIGS[name]["hidden_size"]
            outputs[name] = {"original": src}
            for tool, title in TOOLS.items():
                dst = Path(tmp) / f"{name}.{tool}.onnx"
                log(f"{name}: optimizing with {title}")
                run = optimize_in_child(tool, src, dst, heads, hidden)
                record["optimization"].append({**run, "label": name})
                if "error" in run:
                    log(f"{name}: {title} failed: {run['error']}")
                else:
                    outputs[name][tool] = dst
        print_optimization(record["optimization"])

        fits = {}
        if depths:
            base = CONFIGS["bert-base"]
            # the full-depth bert-base was measured above: reuse it
            runs = {(r["tool"], base["num_hidden_layers"]): r
                    for r in record["optimization"] if r["label"] == "bert-base"}
            nodes = {}
            for d in depths:
                src = generate("bert-base", d)
                nodes[d] = node_count(src)
                for tool in DEPTH_TOOLS:
                    if (tool, d) not in runs:
                        log(f"bert-base {d} layers: optimizing with {TOOLS[tool]}")
                        dst = Path(tmp) / f"depth.{tool}.onnx"
                        runs[(tool, d)] = optimize_in_child(tool, src, dst, base["num_attention_heads"],
                                                            base["hidden_size"])
                        dst.unlink(missing_ok=True)
                    record["depth"].append({**runs[(tool, d)], "layers": d, "nodes": nodes[d]})
            fits = print_depth(depths, nodes, runs)

        for name in names:
            print_ops(name, outputs[name])

        latencies = {}
        for name in names:
            latencies[name] = latency(name, outputs[name], args.threads, iterations, args.warmup, budget)
            print_latency(name, latencies[name], args.threads, args.warmup)
            record["latency"][name] = [{"runtime": k[0], "model": k[1], "batch": k[2], "median_ms": v,
                                        "half_iqr": latencies[name]["spreads"][k]}
                                       for k, v in latencies[name]["medians"].items()]
        print_goals(latencies, record["optimization"], fits)
    print(f"\ntotal: {(time.perf_counter() - T0) / 60:.1f} min")
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
