"""The ``fusekit`` command.

Exit codes: 0 success; 1 the models are not equivalent (verification failed);
2 bad input or usage; 3 an internal error (a bug: please report it).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from . import __version__
from .errors import FusekitError
from .inputs import parse_shapes
from .modelio import check_destination, load_with_layout, skeleton, staged, write
from .pipeline import TARGETS, optimize
from .verify import verify


def _default_output(model: str) -> Path:
    p = Path(model)
    stem = p.name[: -len(".onnx")] if p.name.endswith(".onnx") else p.name
    return p.with_name(stem + ".fused.onnx")


def _write_json(data: dict, dest: str):
    text = json.dumps(data, indent=2, default=str)
    if dest == "-":
        print(text)
        return
    with staged(dest) as p:
        p.write_text(text + "\n")


def cmd_optimize(args) -> int:
    out = Path(args.output) if args.output else _default_output(args.model)
    check_destination(out, protect=(args.model,))
    if args.json and args.json != "-":
        check_destination(args.json, protect=(args.model,))
    start = time.perf_counter()
    model, external = load_with_layout(args.model)
    inputs_from = skeleton(model)
    # in place: the loaded model becomes the fused one, so a large model's weights exist once
    fused, report = optimize(model, target=args.target, verify=False, disable=args.disable, in_place=True)
    del model
    with staged(out, protect=(args.model,)) as path:
        write(fused, path, external)
        del fused
        if not args.no_verify:  # verify the very file that will land, against the input on disk
            t = time.perf_counter()
            report.verification = verify(args.model, path, trials=args.trials, seed=args.seed,
                                         shapes=parse_shapes(args.shape), inputs_from=inputs_from)
            report.verify_seconds = time.perf_counter() - t
            if not report.verification.ok:
                report.seconds = time.perf_counter() - start
                print(report.summary())
                raise _NotEquivalent(f"the fused model is not equivalent to {args.model}; nothing was written "
                                     "(this is a fusekit bug: please report it with the model)")
    report.seconds = time.perf_counter() - start
    print(f"{args.model} → {out}")
    print(report.summary())
    if args.json:
        _write_json({"input": args.model, "output": str(out), **report.to_dict()}, args.json)
    return 0


def cmd_verify(args) -> int:
    result = verify(args.original, args.candidate, trials=args.trials, seed=args.seed, atol=args.atol,
                    rtol=args.rtol, shapes=parse_shapes(args.shape))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        print(result.summary())
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

    o = sub.add_parser("optimize", help="fuse a model's graph and verify the result")
    o.add_argument("model", help="the ONNX model to optimize (never modified)")
    o.add_argument("-o", "--output", help="where to write the fused model (default: MODEL.fused.onnx beside it)")
    o.add_argument("--target", choices=TARGETS, default="ort",
                   help="runtime the fused ops are shaped for (default ort)")
    o.add_argument("--no-verify", action="store_true", help="skip the equivalence check")
    o.add_argument("--json", metavar="PATH", help="also write the full report as JSON ('-' for stdout)")
    o.add_argument("--disable", action="append", default=[], metavar="FUSION", help="turn a fusion off (repeatable)")
    trials(o, 4)
    o.set_defaults(run=cmd_optimize)

    v = sub.add_parser("verify", help="check two models compute the same outputs")
    v.add_argument("original")
    v.add_argument("candidate")
    trials(v, 4)
    v.add_argument("--atol", type=float, default=None, help="absolute tolerance (default 0)")
    v.add_argument("--rtol", type=float, default=None,
                   help="tolerance relative to each output's largest magnitude (default 1e-4 for float32)")
    v.add_argument("--json", action="store_true", help="print the result as JSON")
    v.set_defaults(run=cmd_verify)
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except FusekitError as e:
        print(f"fusekit: error: {e}", file=sys.stderr)
        return 2
    except _NotEquivalent as e:
        print(f"fusekit: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fusekit: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: one line for users, the traceback on request
        if os.environ.get("FUSEKIT_DEBUG"):
            raise
        print(f"fusekit: internal error: {type(e).__name__}: {e} (set FUSEKIT_DEBUG=1 for the traceback)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
