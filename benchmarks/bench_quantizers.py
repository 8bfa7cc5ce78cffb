#!/usr/bin/env python3
"""bert-base quantized by each quantizer users run: fusekit's output against the quantizer's model as written.

Makes and caches in benchmarks/models/ (git-ignored), from the FP32 bert-base of benchmarks/models.py
(random weights, TorchScript, opset 14; exported on first use, which needs torch + transformers):

  <stem>.q.<form>.onnx                    the FP32 model quantized with the same calls as
                                          testmodels/export_quantized.py (`quantize FORM`), each in the
                                          environment its tool needs (--nncf-python, --optimum-python,
                                          --inc-python), calibrated on CALIBRATION below
  <stem>.q.<form>.fused.<target>.onnx     `fusekit optimize --target ort|openvino --no-verify` of it
                                          (remade every run unless --reuse-fused; the tiny models of
                                          testmodels/int8/quantizers are where fusekit's output is verified)

  form                 quantizer
  nncf_transformer     NNCF nncf.quantize, ONNX backend, model_type=TRANSFORMER
  dynamic_avx512vnni   Optimum ORTQuantizer, AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True)
  dynamic_u8           onnxruntime quantize_dynamic with transformers.js's u8 settings
  inc_qdq              Intel Neural Compressor (onnx-neural-compressor) static PTQ, QDQ
  inc_qoperator        the same, QOperator
  static_qdq           onnxruntime quantize_static, QDQ, MatMul only, u8 activations, s8 weights
                       (testmodels/quantized.py matmul_u8s8, as benchmarks/bench_int8.py)

Timing: for each (form, runtime, batch × sequence) a fresh process loads three models, the FP32
original on ONNX Runtime (the reference every ratio is taken to), the quantizer's model as written
and fusekit's output (the ort target on ONNX Runtime, the openvino target on OpenVINO, f32 inference
precision hint), warms each up and times them round-robin in a fresh random order each round
(benchmarks/_timing.py); a sample is k back-to-back inferences lasting >= --min-sample-ms. In an
OpenVINO process the ONNX Runtime reference runs with session.intra_op.allow_spinning=0, so its idle
workers do not spin against OpenVINO's; in an ONNX Runtime process the sessions share one global
intra-op pool that spins as ONNX Runtime's default does (--no-spin: each session a pool of its own
that does not; on a loaded machine spinning workers slow every ONNX Runtime model, by several times).
Inputs: ids within the vocabulary, all-ones masks, token types zero. Cells: median ms (min–max over
the rounds); ratios of medians. The bf16 hint is left out where the CPU lacks BF16
(avx512_bf16 / amx_bf16): OpenVINO would emulate it and the number would say nothing.

--variant RULES also makes fusekit's output with `--disable RULES` and times it as a fourth model in
the same processes: an A/B of those rules on the whole model (e.g. `--variant SkipLayerNorm`).

Nothing is asserted. The machine's load is printed (loadavg, steal): on a shared machine read the
ratios and their ranges, and run it twice.

    python benchmarks/bench_quantizers.py --nncf-python V1/bin/python --optimum-python V2/bin/python \\
        --inc-python V3/bin/python [--forms nncf_transformer,…] [--runtimes ort,openvino]
        [--shapes 1x128,8x128,1x384,8x384] [--rounds 7] [--threads 2] [--quick] [--variant RULES]
        [--reuse-fused] [--prepare]

    python benchmarks/bench_quantizers.py profile MODEL [--runtime ort|openvino] [--shape 1x128] [--runs 5]

(where one model's time goes per op type: ONNX Runtime's profiler, OpenVINO's PERF_COUNT).

--quick: shapes 1x128 and 8x128, 3 rounds, one inference per sample (a few minutes per form once the
models are cached). The environments: see testmodels/int8/README.md (V1: nncf; V2: optimum-onnx and
transformers 4.57; V3: onnx-neural-compressor, numpy<2).
"""
from __future__ import annotations

import os

# OpenVINO's telemetry forks from a background thread; multi-threaded OpenBLAS can deadlock in it.
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(HERE), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from _timing import cpu_times, log, round_robin_samples, short_error  # noqa: E402

EXPORT = ROOT / "testmodels" / "export_quantized.py"
# form: (label, which interpreter runs the quantizer)
FORMS = {
    "nncf_transformer": ("NNCF, `model_type=TRANSFORMER`", "nncf"),
    "dynamic_avx512vnni": ("Optimum `avx512_vnni` dynamic (s8 per channel)", "optimum"),
    "dynamic_u8": ("`quantize_dynamic`, transformers.js u8", "optimum"),
    "inc_qdq": ("Intel Neural Compressor static, QDQ", "inc"),
    "inc_qoperator": ("Intel Neural Compressor static, QOperator", "inc"),
    "static_qdq": ("`quantize_static` QDQ, MatMul only (u8/s8)", "self"),
}
RUNTIMES = ("ort", "openvino")
# (batch, sequence, padding per row: +n pads n on the right, -n on the left), seeds 100 + i
CALIBRATION = [(2, 128, (0, 40)), (2, 96, (-30, 0)), (1, 128, (0,)), (2, 64, (0, 17))]
VOCAB = 30522
ORT_INT8_OPS = ("QLinearMatMul", "MatMulIntegerToFloat", "QGemm", "MatMulInteger", "DynamicQuantizeMatMul",
                "QAttention")
ORT_FLOAT_MM = ("MatMul", "FusedMatMul", "Gemm", "FusedGemm")


# --------------------------------------------------------------------------- models

def calibration(path: Path) -> Path:
    """Seeded bert-base batches: ids inside the vocabulary, clear of the special ids, 0/1 masks padded
    on either side, token types 0/1 where the mask is 1."""
    sys.path.insert(0, str(EXPORT.parent))
    from export_quantized import padding_mask, save_feeds
    batches = []
    for i, (batch, seq, pads) in enumerate(CALIBRATION):
        rng = np.random.default_rng(100 + i)
        mask = padding_mask(batch, seq, pads)
        ids = np.where(mask == 1, rng.integers(1000, VOCAB, (batch, seq)), 0).astype(np.int64)
        batches.append({"input_ids": ids, "attention_mask": mask,
                        "token_type_ids": (rng.integers(0, 2, (batch, seq)) * mask).astype(np.int64)})
    save_feeds(path, batches)
    return path


def quantized(form: str, fp32: Path, python: str) -> Path:
    """The cached quantized model (remade when older than the FP32 export)."""
    dst = fp32.with_name(f"{fp32.stem}.q.{form}.onnx")
    if dst.is_file() and dst.stat().st_mtime >= fp32.stat().st_mtime:
        return dst
    log(f"quantizing {fp32.name}: {form}")
    start = time.perf_counter()
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}.onnx")
    try:
        if form == "static_qdq":
            import onnx

            from testmodels.quantized import matmul_u8s8
            onnx.save(matmul_u8s8(fp32), str(tmp))
        else:
            cal = calibration(fp32.with_name(f"{fp32.stem}.q.calibration.npz"))
            proc = subprocess.run([python, str(EXPORT), "quantize", form, str(fp32), str(tmp), "--calibration", str(cal)],
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
            if proc.returncode or not tmp.is_file():
                raise RuntimeError(f"{form}: " + " ".join(proc.stdout.split()[-60:]))
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    log(f"  -> {dst.name} ({dst.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - start:.0f} s")
    return dst


def fused(src: Path, target: str, reuse: bool, disable: str = "") -> tuple[Path, str]:
    """`fusekit optimize --no-verify [--disable RULES]` of ``src``: (path, its "fused:" line)."""
    dst = src.with_name(f"{src.stem}.fused.{target}" + (f".no-{disable.replace(',', '-')}" if disable else "") + ".onnx")
    summary = dst.with_suffix(".txt")
    if reuse and dst.is_file() and summary.is_file() and dst.stat().st_mtime >= src.stat().st_mtime:
        return dst, summary.read_text()
    log(f"fusekit optimize --target {target} {src.name}")
    start = time.perf_counter()
    dst.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "fusekit.cli", "optimize", "--no-verify", "--target", target, str(src), "-o", str(dst),
           *(["--disable", disable] if disable else [])]
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    if proc.returncode or not dst.is_file():
        raise RuntimeError(" ".join(proc.stdout.split()[-40:]))
    text = "; ".join(ln.strip() for ln in proc.stdout.splitlines() if ln.startswith("fused:")) or "nothing fused"
    summary.write_text(text)
    log(f"  {time.perf_counter() - start:.0f} s: {text}")
    return dst, text


# --------------------------------------------------------------------------- one timing process

def feeds_for(batch: int, seq: int, names: list[str]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {"input_ids": rng.integers(1000, VOCAB, (batch, seq)).astype(np.int64),
           "attention_mask": np.ones((batch, seq), np.int64), "token_type_ids": np.zeros((batch, seq), np.int64)}
    return {n: out[n] for n in names}


def ort_session(path: str, threads: int, shared_pool: bool, describe: bool):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if shared_pool:
        so.use_per_session_threads = False
    else:  # beside OpenVINO: a pool of its own that does not spin while OpenVINO runs
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    kernels = None
    if describe:  # the graph ORT runs: which matmuls are integer kernels
        import onnx
        with tempfile.TemporaryDirectory(dir=Path(path).parent) as tmp:
            so.optimized_model_filepath = os.path.join(tmp, "opt.onnx")
            ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            ops = Counter(n.op_type for n in onnx.load(so.optimized_model_filepath, load_external_data=False).graph.node)
        so.optimized_model_filepath = ""
        int8 = sum(ops[k] for k in ORT_INT8_OPS)
        fmm = sum(ops[k] for k in ORT_FLOAT_MM)
        kernels = (f"integer matmul kernels {int8}, float matmuls {fmm}; "
                   + ", ".join(f"{k} {v}" for k, v in ops.most_common() if v > 1 or k in ORT_INT8_OPS)[:400])
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"]), kernels


def child(args) -> int:
    """Time the FP32 reference, the model as written and fusekit's output in this one process; JSON out."""
    shared_pool = args.runtime == "ort" and not args.no_spin
    if shared_pool:
        from _timing import ort_use_global_pool
        ort_use_global_pool(args.threads)
    import onnx
    names = [i.name for i in onnx.load(args.models[0], load_external_data=False).graph.input]
    feeds = feeds_for(args.batch, args.seq, names)
    runs, info, errors, keep = {}, {}, {}, []
    for key, path in zip(("fp32", "written", "fusekit", "variant"), args.models):
        try:
            if key == "fp32" or args.runtime == "ort":
                sess, kernels = ort_session(path, args.threads, shared_pool, args.describe and key != "fp32")
                mine = {i.name: feeds[i.name] for i in sess.get_inputs()}
                run = (lambda s=sess, f=mine: s.run(None, f))
                if kernels:
                    info[key] = kernels
            else:
                import openvino as ov
                core = ov.Core()
                compiled = core.compile_model(core.read_model(path), "CPU", {"INFERENCE_PRECISION_HINT": args.precision,
                                                                            "INFERENCE_NUM_THREADS": args.threads})
                req = compiled.create_infer_request()
                for port in compiled.inputs:
                    req.set_tensor(port, ov.Tensor(feeds[port.get_any_name()]))
                run = req.infer
                keep.append((compiled, req))
                if args.describe:
                    from testmodels.quantized import openvino_summary
                    s = openvino_summary(compiled)
                    info[key] = (f"FullyConnected/MatMul in INT8 {s['fc_int8']}/{s['fc_total']}, standalone "
                                 f"FakeQuantize {s['fakequantize']}; " + ", ".join(
                                     f"{t} {n}" for (t, p), n in s["layers"].most_common(8)))
            run()
            runs[key] = run
        except Exception as e:  # noqa: BLE001 - a runtime that cannot take a model is a table entry
            errors[key] = short_error(e, 160, detailed=True)
    samples = round_robin_samples(runs, args.rounds, 1, args.min_sample_ms) if runs else {}
    print(json.dumps({"samples": {k: [s * 1e3 for s in v] for k, v in samples.items()}, "info": info, "errors": errors}))
    return 0


def time_pair(fp32: Path, written: Path, fusekit_out: Path | None, variant: Path | None, runtime: str, batch: int,
              seq: int, args, describe: bool) -> dict:
    models = [str(fp32), str(written)] + ([str(fusekit_out)] if fusekit_out else []) + (
        [str(variant)] if fusekit_out and variant else [])
    cmd = [sys.executable, str(Path(__file__).resolve()), "_child", "--runtime", runtime, "--batch", str(batch),
           "--seq", str(seq), "--rounds", str(args.rounds), "--threads", str(args.threads),
           "--min-sample-ms", str(args.min_sample_ms), "--precision", "f32", *(["--describe"] if describe else []),
           *(["--no-spin"] if args.no_spin else []),
           "--models", *models]
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False)
    if proc.returncode:
        return {"samples": {}, "info": {}, "errors": {"process": " ".join(proc.stderr.split()[-30:])}}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def profile(path: str, runtime: str, batch: int, seq: int, threads: int, runs: int = 5) -> None:
    """Where one model's time goes: per op type, ONNX Runtime's profiler or OpenVINO's PERF_COUNT."""
    import onnx
    names = [i.name for i in onnx.load(path, load_external_data=False).graph.input]
    feeds = feeds_for(batch, seq, names)
    times, counts = Counter(), Counter()
    if runtime == "ort":
        import json as _json

        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 3
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tempfile.gettempdir()) / f"bench_quantizers.{os.getpid()}")
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        sess.run(None, feeds)  # warm-up, profiled too: subtracted below by counting runs + 1
        for _ in range(runs):
            sess.run(None, feeds)
        trace = Path(sess.end_profiling())
        for e in _json.loads(trace.read_text()):
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                times[e["args"]["op_name"]] += e["dur"] / 1e3
                counts[e["args"]["op_name"]] += 1
        trace.unlink()
        runs += 1
    else:
        import openvino as ov
        core = ov.Core()
        compiled = core.compile_model(core.read_model(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERF_COUNT": True,
                                                                    "INFERENCE_NUM_THREADS": threads})
        req = compiled.create_infer_request()
        for port in compiled.inputs:
            req.set_tensor(port, ov.Tensor(feeds[port.get_any_name()]))
        req.infer()
        for _ in range(runs):
            req.infer()
            for info in req.profiling_info:
                if info.status == info.Status.EXECUTED:
                    key = f"{info.node_type} ({info.exec_type})"
                    times[key] += info.real_time.total_seconds() * 1e3
                    counts[key] += 1
    total = sum(times.values())
    print(f"{Path(path).name} on {runtime}, {batch}x{seq}: {total / runs:.1f} ms per inference in the nodes")
    for key, ms in times.most_common(16):
        print(f"  {key:<48} {ms / runs:9.2f} ms {100 * ms / total:5.1f}%  ×{counts[key] // runs}")


# --------------------------------------------------------------------------- report

def cell(v: list[float] | None) -> str:
    return f"{statistics.median(v):.0f} ({min(v):.0f}–{max(v):.0f})" if v else "—"


def ratio(a: list[float] | None, b: list[float] | None) -> str:
    """a/b of the medians, and the range of the per-round ratios (rounds interleave, so they pair)."""
    if not a or not b:
        return "—"
    per = sorted(x / y for x, y in zip(a, b))
    return f"{statistics.median(a) / statistics.median(b):.2f}× ({per[0]:.2f}–{per[-1]:.2f})"


def has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_child"]:
        ap = argparse.ArgumentParser()
        ap.add_argument("--runtime", choices=RUNTIMES)
        for flag in ("--batch", "--seq", "--rounds", "--threads"):
            ap.add_argument(flag, type=int)
        ap.add_argument("--min-sample-ms", type=float)
        ap.add_argument("--precision", default="f32")
        ap.add_argument("--describe", action="store_true")
        ap.add_argument("--no-spin", action="store_true")
        ap.add_argument("--models", nargs="+")
        return child(ap.parse_args(argv[1:]))

    if argv[:1] == ["profile"]:
        ap = argparse.ArgumentParser(description="where one model's time goes, per op type")
        ap.add_argument("model")
        ap.add_argument("--runtime", choices=RUNTIMES, default="ort")
        ap.add_argument("--shape", default="1x128", help="BATCHxSEQUENCE")
        ap.add_argument("--threads", type=int, default=2)
        ap.add_argument("--runs", type=int, default=5)
        args = ap.parse_args(argv[1:])
        try:
            batch, seq = (int(v) for v in args.shape.lower().split("x"))
        except ValueError:
            ap.error("--shape: BATCHxSEQUENCE, e.g. 1x128")
        if not Path(args.model).is_file():
            ap.error(f"no such model: {args.model}")
        profile(args.model, args.runtime, batch, seq, args.threads, args.runs)
        return 0

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nncf-python", default=sys.executable, help="an interpreter with nncf")
    ap.add_argument("--optimum-python", default=sys.executable, help="an interpreter with optimum-onnx")
    ap.add_argument("--inc-python", default=sys.executable, help="an interpreter with onnx-neural-compressor")
    ap.add_argument("--forms", default=",".join(FORMS), help="comma-separated, of: " + ", ".join(FORMS))
    ap.add_argument("--runtimes", default="ort,openvino")
    ap.add_argument("--shapes", default="1x128,8x128,1x384,8x384", help="batch x sequence, comma-separated")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--min-sample-ms", type=float, default=200.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="1x128 and 8x128, 3 rounds, one inference per sample")
    ap.add_argument("--reuse-fused", action="store_true", help="keep fusekit outputs cached from an earlier run")
    ap.add_argument("--variant", default="", metavar="RULES",
                    help="also time fusekit's output made with --disable RULES (an A/B of those rules in the same process)")
    ap.add_argument("--no-spin", action="store_true",
                    help="ONNX Runtime sessions with pools of their own that do not spin (on a loaded machine)")
    ap.add_argument("--prepare", action="store_true", help="make the quantized and fused models, time nothing")
    ap.add_argument("--model", default="bert-base")
    args = ap.parse_args(argv)
    if args.quick:
        args.shapes, args.rounds, args.min_sample_ms = "1x128,8x128", 3, 0.0
    forms = [f for f in args.forms.split(",") if f]
    runtimes = [r for r in args.runtimes.split(",") if r]
    try:
        shapes = [tuple(int(x) for x in s.lower().split("x")) for s in args.shapes.split(",") if s]
    except ValueError:
        shapes = []
    if unknown := [f for f in forms if f not in FORMS] + [r for r in runtimes if r not in RUNTIMES]:
        ap.error(f"unknown form(s) or runtime(s): {', '.join(unknown)}")
    if not shapes or any(len(s) != 2 or min(s) < 1 for s in shapes):
        ap.error("--shapes: BATCHxSEQUENCE, comma-separated, e.g. 1x128,8x128")
    pythons = {"nncf": args.nncf_python, "optimum": args.optimum_python, "inc": args.inc_python, "self": sys.executable}

    import onnxruntime
    import openvino

    import fusekit
    from bench_int8 import fp32_model
    fp32 = fp32_model(args.model)
    print(f"bench_quantizers: {args.model} ({fp32.name}); onnxruntime {onnxruntime.__version__}, openvino "
          f"{openvino.get_version().split('-')[0]}, fusekit {fusekit.__version__}; {os.cpu_count()} CPUs, "
          f"{args.threads} threads, {args.rounds} rounds, samples >= {args.min_sample_ms:.0f} ms; "
          f"loadavg at start {os.getloadavg()[0]:.1f}")
    if not has_bf16():
        print("bf16 inference precision: not measured, this CPU has no BF16 (no avx512_bf16 / amx_bf16)")
    made: dict[str, dict] = {}
    for form in forms:
        try:
            q = quantized(form, fp32, pythons[FORMS[form][1]])
        except RuntimeError as e:
            print(f"{form}: quantizer failed: {e}")
            continue
        made[form] = {"written": q}
        for target in runtimes:
            try:
                made[form][target] = fused(q, target, args.reuse_fused)
            except RuntimeError as e:
                made[form][target] = (None, f"fusekit failed: {e}")
            if args.variant:
                try:
                    made[form][target, "variant"] = fused(q, target, args.reuse_fused, args.variant)
                except RuntimeError as e:
                    made[form][target, "variant"] = (None, f"fusekit --disable {args.variant} failed: {e}")

    cpu0, results = cpu_times(), {}
    for form in made if not args.prepare else ():
        for target in runtimes:
            for i, (batch, seq) in enumerate(shapes):
                log(f"timing {form} on {target}, {batch}x{seq}")
                r = results[form, target, batch, seq] = time_pair(
                    fp32, made[form]["written"], made[form][target][0], made[form].get((target, "variant"), (None,))[0],
                    target, batch, seq, args, describe=i == 0)
                s = r["samples"]
                log(f"  ms: FP32 {cell(s.get('fp32'))}, as written {cell(s.get('written'))}, fusekit "
                    f"{cell(s.get('fusekit'))}; fusekit ÷ as written {ratio(s.get('fusekit'), s.get('written'))}, "
                    f"×FP32 {ratio(s.get('fusekit'), s.get('fp32'))}"
                    + (f"; without {args.variant} {cell(s.get('variant'))}, ÷ fusekit {ratio(s.get('variant'), s.get('fusekit'))}"
                       if args.variant else "") + "".join(f"; {k} failed" for k in r["errors"]))
    cpu1 = cpu_times()

    print("\nfusekit on each quantizer's model:")
    for form, m in made.items():
        for target in runtimes:
            print(f"  {form} --target {target}: {m[target][1]}")
            if (target, "variant") in m:
                print(f"  {form} --target {target} --disable {args.variant}: {m[target, 'variant'][1]}")
    print("\nWhat each runtime runs (first shape's process):")
    for (form, target, batch, seq), r in results.items():
        for key, text in r["info"].items():
            print(f"  {form}, {target}, {key}: {text}")
    for (form, target, batch, seq), r in results.items():
        for key, text in r["errors"].items():
            print(f"  {form}, {target}, {batch}x{seq}, {key} failed: {text}")

    print("\nms per inference, median (min–max over the rounds); ratios of medians (range of the per-round ratios). "
          "×FP32: to the FP32 original on ONNX Runtime in the same process.\n")
    extra = f" fusekit without {args.variant} ÷ fusekit |" if args.variant else ""
    print("| quantizer | runtime | batch × seq | as written ms | fusekit ms | fusekit ÷ as written | as written ×FP32 "
          "| fusekit ×FP32 |" + extra)
    print("|---|---|---|---|---|---|---|---|" + ("---|" if extra else ""))
    for (form, target, batch, seq), r in results.items():
        s = r["samples"]
        print(f"| {FORMS[form][0]} | {'ONNX Runtime' if target == 'ort' else 'OpenVINO'} | {batch} × {seq} "
              f"| {cell(s.get('written'))} | {cell(s.get('fusekit'))} | {ratio(s.get('fusekit'), s.get('written'))} "
              f"| {ratio(s.get('written'), s.get('fp32'))} | {ratio(s.get('fusekit'), s.get('fp32'))} |"
              + (f" {ratio(s.get('variant'), s.get('fusekit'))} |" if extra else ""))
    if cpu0 and cpu1 and len(cpu0) > 7:
        d = [b - a for a, b in zip(cpu0[:8], cpu1[:8])]
        if sum(d):
            print(f"\nCPU during timing: idle {d[3] / sum(d):.0%}, steal {d[7] / sum(d):.0%} (of all cores); "
                  f"loadavg at the end {os.getloadavg()[0]:.1f}")
    print(f"total: {(time.perf_counter() - __import__('_timing').T0) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
