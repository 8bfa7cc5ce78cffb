#!/usr/bin/env python3
"""Full-size BERT in INT8: does fusekit's fused graph keep the runtimes' INT8 kernels, and is it faster?

Builds (and caches in benchmarks/models/, git-ignored) four models from one FP32 export:

  FP32 original   benchmarks/models.py get_model("bert-base"): random weights, TorchScript
                  exporter, opset 14 (exported on first use; needs torch + transformers)
  INT8 unfused    onnxruntime.quantization.quantize_static in QDQ format, MatMul only,
                  uint8 asymmetric activations, int8 per-tensor symmetric weights, MinMax on
                  seeded calibration inputs -- exactly testmodels/quantized.py matmul_u8s8();
                  cached as <model>.int8.qdq.onnx
  FP32 fused      fusekit optimize --target ort / --target openvino of the FP32 original
  INT8 fused      fusekit optimize --target ort / --target openvino of the INT8 QDQ model
                  (made with --no-verify; then `fusekit verify` is run once on the INT8
                  ORT-fused model against the QDQ one and its summary printed)

fusekit outputs are remade on every run (the fusion code changes; the runs take ~10-40 s each).

Latency, batch 1 and 8 x seq 128, inputs: input_ids random within the vocabulary, attention_mask
all ones, token_type_ids zeros (bound once; outputs bound once):

  ORT       onnxruntime CPU EP, ORT_ENABLE_ALL, intra-op 2 threads (one global pool shared by
            the sessions), sequential: FP32 original, FP32 fused (ort), INT8 QDQ unfused,
            INT8 fused (ort)
  OpenVINO  compile_model(CPU, INFERENCE_PRECISION_HINT=f32, INFERENCE_NUM_THREADS=2):
            FP32 original, FP32 fused (openvino), INT8 QDQ unfused, INT8 fused (openvino)

Timing (benchmarks/_timing.py): each model is warmed up, then the four models of one
(runtime, batch) are interleaved round-robin in a fresh random order each round, so load from
other processes on the machine hits them alike; a sample is k back-to-back inferences lasting
>= --min-sample-ms.  Cell: median ms per inference, +- half the inter-quartile range, and the
ratio vs the FP32 original and vs INT8 unfused of the same runtime and batch.

What each runtime runs in INT8:
  ORT       op histogram of the session-optimized graph (SessionOptions.optimized_model_filepath):
            QLinearMatMul / MatMulIntegerToFloat / QGemm / MatMulInteger / DynamicQuantizeMatMul
            (INT8 kernels) vs float MatMul / FusedMatMul / Gemm, and fusekit's Attention etc.
  OpenVINO  compiled.get_runtime_model() (testmodels/quantized.py openvino_summary): how many
            FullyConnected/MatMul layers take a u8/i8 data input (= INT8 compute) of all of
            them, and how many standalone FakeQuantize layers remain.

Usage:  python benchmarks/bench_int8.py [--quick] [--batches 1,8] [--model bert-base]
        [--rounds 20] [--threads 2] [--min-sample-ms 300]
A full run of bert-base takes ~10-15 minutes on 2 cores (--quick: ~6 min with cached models).
Needs torch + transformers only to export a missing FP32 model
(pip install torch==2.13.0 && pip install -e '.[bench]').
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

# OpenVINO's telemetry forks from a background thread; with multi-threaded OpenBLAS in numpy
# the fork's atfork handler can deadlock.  Single-threaded BLAS has no workers to join.
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
for _p in (str(HERE), str(REPO_ROOT)):  # _timing (next to this script); benchmarks, testmodels
    if _p not in sys.path:
        sys.path.insert(0, _p)

from _timing import (
    OUT_PAGE_OFFSET,
    cpu_times,
    median_half_iqr,
    ort_set_threads,
    ort_use_global_pool,
    page_aligned_empty,
    round_robin_samples,
    short_error,
)

SEQ = 128
T0 = time.perf_counter()
# (key, label); the fused key is completed with the runtime's target
ROWS = [("fp32", "FP32 original"), ("fp32.fused", "FP32 fused"),
        ("int8", "INT8 QDQ unfused"), ("int8.fused", "INT8 fused")]
RUNTIMES = {"ort": "ONNX Runtime CPU (ORT_ENABLE_ALL)", "openvino": "OpenVINO CPU (f32 hint)"}
ORT_INT8_OPS = ("QLinearMatMul", "MatMulIntegerToFloat", "QGemm", "MatMulInteger", "DynamicQuantizeMatMul")
ORT_FLOAT_MM = ("MatMul", "FusedMatMul", "Gemm", "FusedGemm")


def log(message: str) -> None:
    print(f"[{time.perf_counter() - T0:6.0f} s] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- models


def fp32_model(name: str) -> Path:
    """The cached FP32 export; exported in a child process if missing (torch stays out of here)."""
    from benchmarks.models import model_path
    path = model_path(name)
    if path.is_file():
        return path
    log(f"exporting {path.name} (torch)")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.models", name], cwd=REPO_ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    if proc.returncode or not path.is_file():
        raise SystemExit(f"bench_int8: exporting {name} failed:\n{proc.stdout.strip()}")
    return path


def int8_model(fp32: Path, quantizer: str = "matmul_u8s8") -> Path:
    """The FP32 model quantized by ``quantizer`` (a testmodels.quantized builder: matmul_u8s8, the
    quantize_static QDQ default, or dynamic_s8pc, qoperator …), cached beside the FP32 model."""
    suffix = "qdq" if quantizer == "matmul_u8s8" else quantizer
    dst = fp32.with_name(fp32.name.removesuffix(".onnx") + f".int8.{suffix}.onnx")
    if dst.is_file() and dst.stat().st_mtime >= fp32.stat().st_mtime:
        return dst
    from testmodels.quantized import VARIANTS
    log(f"quantizing {fp32.name} ({quantizer})")
    start = time.perf_counter()
    model = VARIANTS[quantizer](fp32)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    try:
        onnx.save(model, str(tmp))
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    log(f"  -> {dst.name} ({dst.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - start:.0f} s")
    return dst


def fusekit_optimize(src: Path, dst: Path, target: str) -> tuple[bool, str]:
    """`fusekit optimize --no-verify`: (ok, its "fused: ..." line) or (False, the last line of its output)."""
    cmd = [sys.executable, "-m", "fusekit.cli", "optimize", "--no-verify", "--target", target, str(src), "-o", str(dst)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    if proc.returncode or not dst.is_file():
        lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
        return False, (lines[-1] if lines else f"exit {proc.returncode}")[:300]
    log(f"  fusekit --target {target} {src.name}: {time.perf_counter() - start:.0f} s")
    fused = [ln.strip() for ln in proc.stdout.splitlines() if ln.startswith(("fused:", "nodes:"))]
    return True, "; ".join(fused)


def fusekit_verify(original: Path, candidate: Path) -> str:
    """`fusekit verify` output (its summary), with the exit status."""
    cmd = [sys.executable, "-m", "fusekit.cli", "verify", str(original), str(candidate)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    return (f"$ fusekit verify {original.name} {candidate.name}   (exit {proc.returncode}, "
            f"{time.perf_counter() - start:.0f} s)\n" + "\n".join("  " + ln for ln in proc.stdout.rstrip().splitlines()))


def fused_histogram(path: Path) -> Counter:
    """Fused ops in a fusekit output: com.microsoft / OpenVINO-domain ops and the standard fused ops."""
    model = onnx.load(str(path), load_external_data=False)
    return Counter((n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain.split('.')[-1]}:{n.op_type}")
                   for n in model.graph.node
                   if n.domain not in ("", "ai.onnx") or n.op_type in ("LayerNormalization", "Gelu", "Attention"))


# --------------------------------------------------------------------------- inputs and runners


def make_feeds(model_path: Path, batch: int) -> dict[str, np.ndarray]:
    """input_ids within the vocabulary (fusekit.inputs), attention_mask ones, token_type_ids zeros."""
    from fusekit.inputs import Setting, make_inputs
    model = onnx.load(str(model_path), load_external_data=False)
    feeds = make_inputs(model, Setting("none", batch, SEQ), seed=0)
    out = {}
    for name, v in feeds.items():
        a = page_aligned_empty(v.shape, v.dtype)
        lname = name.lower()
        a[...] = 1 if "mask" in lname else 0 if ("token_type" in lname or "segment" in lname) else v
        out[name] = a
    return out


def ort_runner(path: Path, feeds: dict[str, np.ndarray], threads: int, describe: bool):
    """(run, optimized-graph op Counter or None)."""
    import onnxruntime as ort

    def opts():
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        ort_set_threads(so, threads)
        so.log_severity_level = 3
        return so

    ops = None
    if describe:  # a throw-away session that saves its optimized graph: the kernels ORT chose
        with tempfile.TemporaryDirectory(prefix="bench_int8.", dir=HERE / "models") as tmp:
            so = opts()
            so.optimized_model_filepath = os.path.join(tmp, "opt.onnx")
            ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            opt = onnx.load(so.optimized_model_filepath, load_external_data=False)
            ops = Counter(("ms:" if n.domain == "com.microsoft" else "") + n.op_type for n in opt.graph.node)
            del opt
    sess = ort.InferenceSession(str(path), opts(), providers=["CPUExecutionProvider"])
    binding = sess.io_binding()
    names = {i.name for i in sess.get_inputs()}
    for name, v in feeds.items():
        if name in names:
            binding.bind_cpu_input(name, v)
    for o in sess.get_outputs():  # ORT allocates the outputs (a few MB; negligible next to the model)
        binding.bind_output(o.name, "cpu")

    def run():
        sess.run_with_iobinding(binding)
    run()
    run.keep = (sess, binding)  # type: ignore[attr-defined]
    return run, ops


_OV_CORE = None


def ov_runner(path: Path, feeds: dict[str, np.ndarray], threads: int):
    """(run, compiled model)."""
    import openvino as ov

    global _OV_CORE
    if _OV_CORE is None:
        _OV_CORE = ov.Core()
    from fusekit.runtime.openvino import read  # with the compile options fusekit wrote into the model
    compiled = _OV_CORE.compile_model(read(path), "CPU",
                                      {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads})
    req = compiled.create_infer_request()
    for port in compiled.inputs:
        name = port.get_any_name()
        req.set_tensor(port, ov.Tensor(feeds[name], shared_memory=True))
    req.infer()
    outs = []
    for port in compiled.outputs:  # shapes are static now that the inputs are set
        out = page_aligned_empty(tuple(req.get_tensor(port).shape), np.float32, offset=OUT_PAGE_OFFSET)
        req.set_tensor(port, ov.Tensor(out, shared_memory=True))
        outs.append(out)
    req.infer()
    run = req.infer
    return run, compiled, outs, req


def ort_kernels(ops: Counter) -> str:
    int8 = sum(ops[k] for k in ORT_INT8_OPS)
    fmm = sum(ops[k] + ops["ms:" + k] for k in ORT_FLOAT_MM)
    parts = [f"{k} {ops[k] + ops['ms:' + k]}" for k in ORT_INT8_OPS + ORT_FLOAT_MM if ops[k] + ops["ms:" + k]]
    # the fused ops that matter for BERT (attention, norms, gelu) and the QDQ leftovers
    rest = [f"{k} {v}" for k, v in sorted(ops.items(), key=lambda kv: -kv[1])
            if k.removeprefix("ms:") in ("Attention", "MultiHeadAttention", "SkipLayerNormalization",
                                         "EmbedLayerNormalization", "LayerNormalization", "BiasGelu", "Gelu",
                                         "FastGelu", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")]
    return (f"INT8 matmul kernels {int8} / float matmuls {fmm}: " + ", ".join(parts)
            + ("; " + ", ".join(rest) if rest else ""))


def ov_int8_summary(compiled) -> str:
    from testmodels.quantized import openvino_summary
    s = openvino_summary(compiled)
    return (f"FullyConnected/MatMul with u8/i8 data input (INT8 compute) {s['fc_int8']}/{s['fc_total']} "
            f"(runtimePrecision i8/u8 on {s['fc_reported_i8u8']}), standalone FakeQuantize {s['fakequantize']}")


# --------------------------------------------------------------------------- timing


def time_runtime(backend: str, files: dict[str, Path], batches: list[int], args) -> tuple[dict, dict, dict]:
    """medians[(key, batch)] = (ms, half-IQR fraction); notes[key] = error; info[key] = INT8 summary."""
    results, notes, info = {}, {}, {}
    for b in batches:
        feeds = make_feeds(files["fp32"], b)
        runs, keep = {}, []
        for key, label in ROWS:
            if key not in files:
                continue
            log(f"{backend} batch {b}: loading {label}")
            try:
                if backend == "ort":
                    run, ops = ort_runner(files[key], feeds, args.threads, key != "fp32" and key not in info)
                    keep.append(run)
                    if ops is not None:
                        info[key] = ort_kernels(ops)
                else:
                    run, compiled, outs, req = ov_runner(files[key], feeds, args.threads)
                    keep.append((compiled, outs, req))
                    if key.startswith("int8") and key not in info:
                        info[key] = ov_int8_summary(compiled)
            except Exception as e:  # noqa: BLE001 - reported in the table
                notes[key] = short_error(e, 160, detailed=True)
                log(f"  {label} failed: {notes[key]}")
                continue
            runs[key] = run
        if runs:
            log(f"{backend} batch {b}: timing {len(runs)} models, {args.rounds} rounds")
            samples = round_robin_samples(runs, args.rounds, args.warmup, args.min_sample_ms)
            for key, v in samples.items():
                med, spread = median_half_iqr(v)
                results[(key, b)] = (med * 1e3, spread)
        del runs, keep
    return results, notes, info


# --------------------------------------------------------------------------- report


def print_table(backend: str, results: dict, notes: dict, info: dict, batches: list[int]) -> None:
    print(f"\n{RUNTIMES[backend]}, seq {SEQ}: median ms (± half IQR); ×FP32 = ÷ FP32 original, "
          f"×INT8 = ÷ INT8 QDQ unfused (same runtime and batch)")
    cell_w = 30
    head = f"{'model':<26}" + "".join(f"{'batch ' + str(b) + ': ms ±  ×FP32  ×INT8':>{cell_w}}" for b in batches)
    print(head)
    print("-" * len(head))
    for key, label in ROWS:
        name = label + (f" ({backend})" if key.endswith("fused") else "")
        row = f"{name:<26}"
        for b in batches:
            if (key, b) not in results:
                row += f"{'failed [' + key + ']' if key in notes else '-':>{cell_w}}"
                continue
            ms, spread = results[(key, b)]
            fp = results.get(("fp32", b), (None,))[0]
            i8 = results.get(("int8", b), (None,))[0]
            r1 = f"{ms / fp:.2f}" if fp else "-"
            r2 = f"{ms / i8:.2f}" if i8 else "-"
            row += f"{ms:>12.1f} ±{spread * 100:>3.0f}% {r1:>6} {r2:>6}"
        print(row)
    for key, text in notes.items():
        print(f"  [{key}] {text}")
    label = "INT8 kernels (session-optimized graph)" if backend == "ort" else "runtime graph"
    for key, _ in ROWS:
        if key in info:
            print(f"  {dict(ROWS)[key]}, {label}: {info[key]}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--model", default="bert-base", help="benchmarks/models.py name (bert-base, bert-large)")
    ap.add_argument("--batches", default="1,8", help="comma-separated batch sizes (seq 128)")
    ap.add_argument("--quick", action="store_true", help="4 rounds, 1 warm-up, shorter samples")
    ap.add_argument("--rounds", type=int, default=20, help="round-robin rounds per (runtime, batch)")
    ap.add_argument("--warmup", type=int, default=2, help="warm-up inferences per model")
    ap.add_argument("--min-sample-ms", type=float, default=300.0,
                    help="back-to-back inferences per sample until it lasts this long")
    ap.add_argument("--threads", type=int, default=2, help="ORT intra-op / OpenVINO inference threads")
    ap.add_argument("--runtimes", default="ort,openvino", help="comma-separated: ort, openvino")
    ap.add_argument("--quantizer", default="matmul_u8s8",
                    help="testmodels/quantized.py builder of the INT8 model: matmul_u8s8 (quantize_static QDQ), "
                         "dynamic_s8pc (quantize_dynamic, Optimum avx512_vnni), dynamic_u8, qoperator")
    ap.add_argument("--no-verify", dest="verify", action="store_false",
                    help="skip `fusekit verify` of the INT8 ORT-fused model")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.warmup, args.min_sample_ms = 4, 1, 150.0
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    backends = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    if not batches or any(b < 1 for b in batches) or any(r not in RUNTIMES for r in backends):
        ap.error("--batches: positive ints; --runtimes: ort and/or openvino")

    import onnxruntime
    import openvino
    print(f"bench_int8: {args.model}, onnxruntime {onnxruntime.__version__}, "
          f"openvino {openvino.get_version().split('-')[0]}, {os.cpu_count()} CPUs, {args.threads} threads, "
          f"{args.rounds} rounds, samples >= {args.min_sample_ms:.0f} ms")
    fp32 = fp32_model(args.model)
    int8 = int8_model(fp32, args.quantizer)  # before the global pool: the calibration makes sessions of its own
    if "ort" in backends:
        ort_use_global_pool(args.threads)
    stem = fp32.name.removesuffix(".onnx")
    base = {"fp32": fp32, "int8": int8}
    files = {r: dict(base) for r in backends}
    summaries: dict[str, str] = {}
    for target in backends:
        for key, src in base.items():
            dst = fp32.with_name(f"{stem}.{key if key == 'fp32' else int8.stem.split('.', 1)[1]}.{target}.fused.onnx")
            dst.unlink(missing_ok=True)
            log(f"fusekit optimize --target {target} {src.name}")
            ok, text = fusekit_optimize(src, dst, target)
            summaries[f"{key.upper()} --target {target}"] = ("" if ok else "FAILED: ") + text
            if ok:
                files[target][f"{key}.fused"] = dst
            else:
                log(f"  failed: {text}")

    print("\nfusekit optimize (its summary; then the fused/contrib ops in the output file):")
    for what, text in summaries.items():
        print(f"  {what}: {text}")
        target, key = what.split(" --target ")[1], what.split()[0].lower() + ".fused"
        if key in files[target]:
            h = fused_histogram(files[target][key])
            print(f"  {'':<{len(what)}}  ops: " + (", ".join(f"{k} {v}" for k, v in sorted(h.items())) or "-"))

    if args.verify and "int8.fused" in files.get("ort", {}):
        log("fusekit verify INT8 QDQ vs INT8 fused (ort)")
        print("\n" + fusekit_verify(int8, files["ort"]["int8.fused"]))

    cpu0 = cpu_times()
    tables = {}
    for backend in backends:
        tables[backend] = time_runtime(backend, files[backend], batches, args)
        print_table(backend, *tables[backend], batches)
        sys.stdout.flush()
    cpu1 = cpu_times()
    if cpu0 and cpu1 and len(cpu0) > 7:
        d = [b - a for a, b in zip(cpu0[:8], cpu1[:8])]
        if sum(d):
            print(f"\nCPU during timing: steal {d[7] / sum(d):.0%}, idle {d[3] / sum(d):.0%} (of all cores)")
    print(f"total: {(time.perf_counter() - T0) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
