"""The ``fusekit`` command.

Exit codes: 0 success; 1 the models are not equivalent (verification failed);
2 bad input or usage, or a dependency that cannot be imported; 3 an internal error (a bug: please report it).

A command imports what it runs when it runs: the parser needs nothing beyond argparse and the
option choices, so ``fusekit --help`` starts at once and ``optimize`` loads no report.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

from . import __version__
from .errors import FusekitError, InputsNeeded, first_line
from .runtime.backends import BACKENDS, DEVICES, PRECISIONS
from .targets import TARGETS


def _default_output(model: str) -> Path:
    p = Path(model)
    stem = p.name[: -len(".onnx")] if p.name.endswith(".onnx") else p.name
    return p.with_name(stem + ".fused.onnx")


def _write_json(data: dict, dest: str):
    from .modelio import staged
    text = json.dumps(data, indent=2, default=str)
    if dest == "-":
        print(text)
        return
    with staged(dest) as p:
        p.write_text(text + "\n")


# How to go on when fusekit cannot make up a model's inputs, in each command's options.
REMEDIES = {
    "optimize": "give them with --inputs FEEDS.npz, size them with --shape NAME=DxD, "
                "or skip the check with --no-verify",
    "verify": "give them with --inputs FEEDS.npz or size them with --shape NAME=DxD",
    "run": "give them with --inputs FEEDS.npz or size them with --shape NAME=DxD",
    "bench": "bench makes its inputs at --batch × --seq only; run the model with --inputs FEEDS.npz instead",
}


def _given_feeds(args, model) -> dict | None:
    """The --inputs arrays, or None after checking the --shape sizes, each against ``model``
    (the full one: a skeleton declares its weights as inputs), before any work is done."""
    from .inputs import check_feeds, check_shapes, load_feeds, parse_shapes
    if not args.inputs:
        check_shapes(model, parse_shapes(args.shape))
        return None
    if args.shape:
        raise FusekitError("--shape sizes the generated inputs; it cannot be combined with --inputs")
    feeds = load_feeds(args.inputs)
    check_feeds(feeds, model, args.inputs)
    return feeds


def cmd_optimize(args) -> int:
    from .inputs import parse_shapes
    from .modelio import check_destination, read, skeleton, staged, write
    from .pipeline import optimize
    # what is imported lives as long as the process: the collections that free a large model's
    # replaced weights (pipeline.optimize) need not walk it each time
    gc.freeze()
    out = Path(args.output) if args.output else _default_output(args.model)
    check_destination(out, protect=(args.model,))
    if args.json and args.json != "-":
        check_destination(args.json, protect=(args.model,))
    text = sys.stderr if args.json == "-" else sys.stdout  # with --json -, stdout holds the JSON alone
    start = time.perf_counter()
    loaded = read(args.model)
    feeds = None if args.no_verify else _given_feeds(args, loaded.model)
    inputs_from = None if args.no_verify else skeleton(loaded.model)  # what verify builds its inputs from
    # in place: the loaded model becomes the fused one, so a large model's weights exist once
    fused, report = optimize(loaded.model, target=args.target, verify=False, disable=args.disable, in_place=True,
                             pack=args.pack)
    report.notes[:0], report.opset_before = loaded.notes, loaded.opset
    external = loaded.external
    del loaded
    to_ir = out.suffix == ".xml"
    with staged(out, protect=(args.model,)) as path:
        onnx_path = path.with_suffix(".onnx") if to_ir else path
        write(fused, onnx_path, external)
        del fused
        if not args.no_verify:  # verify the very file that will land, against the input on disk
            from .verify import verify
            t = time.perf_counter()
            report.verification = verify(args.model, onnx_path, trials=args.trials, seed=args.seed,
                                         shapes=parse_shapes(args.shape), inputs_from=inputs_from, feeds=feeds)
            report.verify_seconds = time.perf_counter() - t
            if not report.verification.ok:
                report.seconds = time.perf_counter() - start
                print(report.summary(), file=text)
                raise _NotEquivalent(
                    f"the fused model is not equivalent to {args.model} within the tolerance above; nothing was "
                    f"written (to compare at another tolerance: --no-verify, then `fusekit verify {args.model} "
                    f"{out} --rtol R`; a difference far beyond any tolerance is worth reporting with the model)")
        if to_ir:  # OpenVINO IR: converted from the verified ONNX by OpenVINO's own reader
            from .runtime.openvino import save_ir
            save_ir(onnx_path, path)
            for leftover in path.parent.glob(onnx_path.name + "*"):
                leftover.unlink()
    report.seconds = time.perf_counter() - start
    print(f"{args.model} → {out}", file=text)
    print(report.summary(), file=text)
    if args.json:
        _write_json({"input": args.model, "output": str(out), **report.to_dict()}, args.json)
    return 0


def cmd_verify(args) -> int:
    from .inputs import parse_shapes
    from .modelio import load, skeleton
    from .verify import verify
    feeds, inputs_from = None, None
    if args.inputs:
        model = load(args.original)
        feeds, inputs_from = _given_feeds(args, model), skeleton(model)
        del model
    result = verify(args.original, args.candidate, trials=args.trials, seed=args.seed, atol=args.atol,
                    rtol=args.rtol, shapes=parse_shapes(args.shape), reference_kind=args.reference_kind,
                    steps=args.steps, inputs_from=inputs_from, feeds=feeds)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        print(result.summary())
    return 0 if result.ok else 1


def cmd_run(args) -> int:
    from .inputs import parse_shapes
    from .modelio import check_destination
    from .runtime.run import run_model, save_outputs
    if args.save:
        check_destination(args.save, protect=(args.model,))
    result = run_model(args.model, args.backend, args.device, args.threads, args.precision, args.inputs,
                       parse_shapes(args.shape), args.seed)
    print(result.summary())
    if args.save:
        save_outputs(result.outputs, args.save, protect=(args.model,))
        print(f"saved: {args.save}")
    return 0


def cmd_bench(args) -> int:
    from .modelio import check_destination
    from .runtime import bench
    for dest in (args.json, args.plot):
        if dest and dest != "-":
            check_destination(dest, protect=tuple(args.models))
    if args.plot:
        bench.require_matplotlib()
    report = bench.bench(args.models, bench.parse_list(args.backend, "backend", str), bench.parse_list(args.batch, "batch"),
                         bench.parse_list(args.seq, "seq"), args.device, args.threads, args.precision,
                         args.iterations, args.warmup,
                         lengths=bench.parse_lengths(args.lengths) if args.lengths else None)
    print(report.table())
    if args.json:
        _write_json(report.to_dict(), args.json)
    if args.plot:
        bench.plot(report, Path(args.plot))
        print(f"plot: {args.plot}")
    return 0


def _report(result, args, page: str, protect: tuple) -> None:
    """Print ``result`` (its summary, or its JSON with --json) and write its --html page, drawn by
    ``page`` of ``fusekit.reports.htmlreport``."""
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str, ensure_ascii=False))
    else:
        print(result.summary())
    if args.html:
        from .modelio import staged
        from .reports import htmlreport
        with staged(args.html, protect=protect) as path:
            path.write_text(getattr(htmlreport, page)(result), encoding="utf-8")
        if not args.json:
            print(f"html: {args.html}")


def cmd_inspect(args) -> int:
    from . import inspect_model
    from .modelio import check_destination
    if args.html:
        check_destination(args.html, protect=(args.model,))
    _report(inspect_model(args.model), args, "inspect_page", (args.model,))
    return 0


def cmd_explain(args) -> int:
    from . import explain
    from .modelio import check_destination, load
    if args.int8:  # which MatMuls will run in INT8 on each runtime, and why the others will not
        from .reports.int8 import analyze
        if args.html:
            raise FusekitError("--int8 has no --html view yet; use --json")
        from .branches import view
        report = analyze(view(load(args.model), copy=False),
                         {"ort": "ort", "openvino": "openvino", "onnx": "both"}[args.target])
        print(json.dumps(report.to_dict(), indent=2, default=str) if args.json else report.summary())
        return 0
    if args.html:
        check_destination(args.html, protect=(args.model,))
    _report(explain(args.model, args.target, args.fusion, args.layer, pack=args.pack), args, "explain_page",
            (args.model,))
    return 0


def cmd_diff(args) -> int:
    from .modelio import check_destination
    from .reports.diff import diff
    models = (args.original, args.fused)
    if args.html:
        check_destination(args.html, protect=models)
    result = diff(args.original, args.fused, use_provenance=not args.structural)
    _report(result, args, "diff_page", models)
    return 0 if result.ok else 1


class _NotEquivalent(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fusekit", description="Fuse BERT-family ONNX graphs and prove the result equivalent.")
    p.add_argument("--version", action="version", version=f"fusekit {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def trials(sp, default):
        sp.add_argument("--trials", type=int, default=default, help=f"input settings to try (default {default})")
        sp.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
        sp.add_argument("--shape", action="append", metavar="NAME=DxD",
                        help="fix an input's shape, e.g. input_ids=2x128 (repeatable)")
        sp.add_argument("--inputs", metavar="NPZ",
                        help="verify on these named input arrays (np.savez) instead of made-up ones: one trial")

    o = sub.add_parser("optimize", help="fuse a model's graph and verify the result")
    o.add_argument("model", help="the ONNX model to optimize (never modified)")
    o.add_argument("-o", "--output", help="where to write the fused model (default: MODEL.fused.onnx beside it); "
                                          "a name ending in .xml writes OpenVINO IR (.xml + .bin)")
    o.add_argument("--target", choices=TARGETS, default="ort",
                   help="runtime the fused ops are shaped for (default ort)")
    o.add_argument("--no-verify", action="store_true", help="skip the equivalence check")
    o.add_argument("--json", metavar="PATH", help="also write the full report as JSON ('-' for stdout)")
    o.add_argument("--disable", action="append", default=[], metavar="FUSION", help="turn a fusion off (repeatable)")
    o.add_argument("--pack", action="store_true",
                   help="run the token-wise ops on the batch's valid tokens only (padding-free batches)")
    trials(o, 4)
    o.set_defaults(run=cmd_optimize)

    v = sub.add_parser("verify", help="check two models compute the same outputs (quantized: within a few steps)")
    v.add_argument("original")
    v.add_argument("candidate")
    trials(v, 4)
    v.add_argument("--atol", type=float, default=None, help="absolute tolerance (default 0)")
    v.add_argument("--rtol", type=float, default=None,
                   help="tolerance relative to each output's largest magnitude (default 1e-4 for float32)")
    v.add_argument("--steps", type=float, default=None,
                   help="quantized models: tolerance in quantization steps of each output (default 4)")
    v.add_argument("--reference-kind", choices=("same", "fp32"), default="same",
                   help="fp32: ORIGINAL is the FP32 model CANDIDATE was quantized from; report the FP32→INT8 "
                        "error in the candidate's quantization steps instead of checking equivalence")
    v.add_argument("--json", action="store_true", help="print the result as JSON")
    v.set_defaults(run=cmd_verify)

    def runtime(sp):
        sp.add_argument("--device", choices=DEVICES, default="cpu",
                        help="cpu (default), gpu, cuda (ort: gpu = cuda), openvino (ort: the OpenVINO execution provider)")
        sp.add_argument("--threads", type=int, help="CPU threads (default: the CPUs this process may use)")
        sp.add_argument("--precision", choices=PRECISIONS, default="f32",
                        help="inference precision (default f32; bf16 is OpenVINO's default on CPUs that have it)")

    r = sub.add_parser("run", help="run a model once and summarize its outputs")
    r.add_argument("model")
    r.add_argument("--backend", choices=BACKENDS, default="ort", help="runtime (default ort)")
    runtime(r)
    r.add_argument("--inputs", metavar="NPZ", help="named input arrays (np.savez); default: meaningful random inputs")
    r.add_argument("--shape", action="append", metavar="NAME=DxD", help="size of a generated input, e.g. input_ids=1x128")
    r.add_argument("--seed", type=int, default=0, help="seed of the generated inputs (default 0)")
    r.add_argument("--save", metavar="NPZ", help="write the outputs to this .npz")
    r.set_defaults(run=cmd_run)

    b = sub.add_parser("bench", help="measure latency and throughput of models on runtimes")
    b.add_argument("models", nargs="+", help="models to compare; ratios are against the first")
    b.add_argument("--backend", default="ort", help="comma-separated runtimes: ort,openvino (default ort)")
    runtime(b)
    b.add_argument("--batch", default="1", help="comma-separated batch sizes (default 1)")
    b.add_argument("--seq", default="128", help="comma-separated sequence lengths (default 128)")
    b.add_argument("--lengths", metavar="L,L,…|uniform:LO:HI|skewed:LO:HI",
                   help="real tokens per row, the rest padding: a list (cycled over the batch) or a distribution; "
                        "default: every token real")
    b.add_argument("--iterations", type=int, default=20, help="timed runs per model and configuration (default 20)")
    b.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    b.add_argument("--json", metavar="PATH", help="also write every sample as JSON ('-' for stdout)")
    b.add_argument("--plot", metavar="PNG", help="draw a bar chart (needs matplotlib)")
    b.set_defaults(run=cmd_bench)

    def reports(sp):
        sp.add_argument("--json", action="store_true", help="print the report as JSON (schema in the README)")
        sp.add_argument("--html", metavar="PATH", help="also write a self-contained HTML report with pictures")

    i = sub.add_parser("inspect", help="what a model is: exporter, architecture, ops, parameters, fused ops")
    i.add_argument("model")
    reports(i)
    i.set_defaults(run=cmd_inspect)

    e = sub.add_parser("explain", help="every place a fusion could apply: fused, or why not (per encoder layer)")
    e.add_argument("model")
    e.add_argument("--fusion", metavar="NAME", help="only this fusion (e.g. Attention)")
    e.add_argument("--layer", type=int, metavar="N", help="only encoder layer N")
    e.add_argument("--target", choices=TARGETS, default="ort", help="runtime the fused ops are shaped for (default ort)")
    e.add_argument("--pack", action="store_true", help="also show where --pack puts the packing points, or why not")
    e.add_argument("--int8", action="store_true",
                   help="for a quantized model: will each MatMul run in INT8 on the target runtime (onnx: both), and why not")
    reports(e)
    e.set_defaults(run=cmd_explain)

    d = sub.add_parser("diff", help="account for every original node in a fused model (exit 1 if one is lost)")
    d.add_argument("original")
    d.add_argument("fused", help="fusekit's output, or another optimizer's")
    d.add_argument("--structural", action="store_true", help="ignore fusekit's provenance; align by structure only")
    reports(d)
    d.set_defaults(run=cmd_diff)
    return p


def _dependency(e: Exception) -> str | None:
    """The package an ImportError could not import, where it is not fusekit's own (that is a bug)."""
    if not isinstance(e, ImportError) or not e.name:
        return None
    package = e.name.partition(".")[0]
    return None if package == "fusekit" else package


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except InputsNeeded as e:
        print(f"fusekit: error: {e}; {REMEDIES[args.command]}", file=sys.stderr)
        return 2
    except FusekitError as e:
        print(f"fusekit: error: {e}", file=sys.stderr)
        return 2
    except _NotEquivalent as e:
        print(f"fusekit: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fusekit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `fusekit … | head` closed the pipe: nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # a bug: one line for users, the traceback on request
        if os.environ.get("FUSEKIT_DEBUG"):
            raise
        missing = _dependency(e)
        if missing:
            print(f"fusekit: error: {args.command} needs {missing}, which cannot be imported: {first_line(e)} "
                  "(pip install fusekit installs its dependencies)", file=sys.stderr)
            return 2
        print(f"fusekit: internal error: {type(e).__name__}: {e} (set FUSEKIT_DEBUG=1 for the traceback)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
