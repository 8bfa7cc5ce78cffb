#!/usr/bin/env python3
"""Padding-free batches: fusekit --pack against fusekit without it and its peers, on real-looking batches.

Batches are mostly padding in practice; --pack computes the token-wise ops on the valid
tokens alone. This script measures what that is worth on full-size BERT (random weights,
benchmarks/models.py, cached in benchmarks/models/) across the shapes traffic has:

  batch 8 and 32, each row's length drawn from U[16, S] and from a skewed distribution
  (most short, a few long: 16 + (S − 16)·u³), padded to S = 128 and 384;
  batch 1 padded to max_length S with 20–60 real tokens (the common tokenizer setting);
  batch 8 with no padding (what --pack costs when there is nothing to gain);
  at S = 128, the batch 112, 87, 73, 50, 46, 24, 20, 17 (42% real tokens).

Rows, per runtime (each runtime's rows interleaved round-robin, rotating, after a warm-up run):
  ORT f32        the original (ORT's default graph optimizations), ONNX Runtime's transformers
                 optimizer output (num_heads and hidden size given, opt_level 0), fusekit --target ort,
                 fusekit --target ort --pack;
  OpenVINO f32   the original, fusekit --target openvino, the same with --pack;
  OpenVINO bf16  the same three at bf16.
Peers are the rows that are not fusekit; each row's ratio is its median ÷ the best peer's median
in the same runtime and batch (below 1.00× = faster). Nothing is asserted.

Masks are right-padded (the ORT optimizer's mask index assumes right padding; with left
padding its output would compute wrong values, see the README).

    python benchmarks/bench_pack.py [--models bert-base,bert-large] [--quick] [--rounds 7]
                                    [--threads 2] [--json PATH]

--quick: bert-base (unless --models says), S = 128 only, the 42% batch, batch 1 at max_length and batch 8
without padding, ORT f32 and OpenVINO f32, 5 rounds unless --rounds says (a few minutes on 2 cores).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks._timing import log  # noqa: E402  (the repository is on sys.path now)

ISSUE_LENGTHS = [112, 87, 73, 50, 46, 24, 20, 17]
ROWS = [  # (runtime, backend, precision, model key)
    ("ORT f32", "ort", "f32", "original"),
    ("ORT f32", "ort", "f32", "ort-transformers"),
    ("ORT f32", "ort", "f32", "fusekit-ort"),
    ("ORT f32", "ort", "f32", "fusekit-ort-pack"),
    ("OpenVINO f32", "openvino", "f32", "original"),
    ("OpenVINO f32", "openvino", "f32", "fusekit-openvino"),
    ("OpenVINO f32", "openvino", "f32", "fusekit-openvino-pack"),
    ("OpenVINO bf16", "openvino", "bf16", "original"),
    ("OpenVINO bf16", "openvino", "bf16", "fusekit-openvino"),
    ("OpenVINO bf16", "openvino", "bf16", "fusekit-openvino-pack"),
]
HEADS = {"bert-base": (12, 768), "bert-large": (16, 1024)}


def cases(seqs: list[int], quick: bool) -> list[tuple[str, int, int, object]]:
    """(label, batch, padded length S, lengths spec or None for no padding)."""
    out = []
    for s in seqs:
        if s == 128:
            out.append(("8, lengths 112…17", 8, s, ISSUE_LENGTHS))
        out.append(("1 at max_length, 20–60", 1, s, ("uniform", 20, 60)))
        out.append(("8, no padding", 8, s, None))
        if not quick:
            for batch in (8, 32):
                out.append((f"{batch}, U[16,{s}]", batch, s, ("uniform", 16, s)))
                out.append((f"{batch}, skewed", batch, s, ("skewed", 16, s)))
    return out


def build(name: str, source: Path, folder: Path) -> dict[str, Path]:
    """The original and every optimized model, beside the original. fusekit's are made afresh on
    every run (a few seconds each), so that they are never those of an older checkout; the
    ORT optimizer's output is cached."""
    import fusekit
    from fusekit.modelio import save
    files = {"original": source}
    folder.mkdir(exist_ok=True)
    for target in ("ort", "openvino"):
        for pack in (False, True):
            key = f"fusekit-{target}" + ("-pack" if pack else "")
            path = folder / f"{source.stem}.{key}.onnx"
            log(f"{name}: {key}")
            model, report = fusekit.optimize(str(source), target=target, verify=False, pack=pack)
            if pack and not report.packed:
                raise SystemExit(f"{name}: not packed: {report.notes}")
            save(model, path)
            files[key] = path
    path = folder / f"{source.stem}.ort-transformers.onnx"
    if not path.is_file():
        log(f"{name}: ORT transformers optimizer")
        from onnxruntime.transformers.optimizer import optimize_model
        heads, hidden = HEADS[name]
        # opt_level 0: its own fusions only (levels above run ORT's session optimizer first, which
        # needs torch installed); ORT applies those at load time anyway
        optimize_model(str(source), model_type="bert", num_heads=heads, hidden_size=hidden,
                       opt_level=0).save_model_to_file(str(path))
    files["ort-transformers"] = path
    return files


def feeds_for(interface, batch: int, seq: int, spec) -> tuple[dict, list[int] | None]:
    from fusekit.inputs import Setting, make_inputs
    from fusekit.runtime.bench import row_lengths, with_lengths
    feeds = make_inputs(interface, Setting("none", batch, seq), seed=0)
    if spec is None:
        return feeds, None
    lengths = row_lengths(spec, batch, seq, seed=batch * 1000 + seq)
    return with_lengths(feeds, lengths), lengths


def measure_model(name: str, files: dict[str, Path], runtimes: list[str], seqs: list[int], quick: bool,
                  rounds: int, threads: int) -> list[dict]:
    import onnx

    from fusekit.runtime import backends
    from fusekit.runtime.bench import measure
    interface = onnx.load(str(files["original"]), load_external_data=False)
    results = []
    for runtime in runtimes:
        rows = [r for r in ROWS if r[0] == runtime]
        log(f"{name}: loading {len(rows)} models on {runtime}")
        runners = [backends.load(backend, files[key], "cpu", threads, precision) for _, backend, precision, key in rows]
        for label, batch, seq, spec in cases(seqs, quick):
            feeds, lengths = feeds_for(interface, batch, seq, spec)
            real = sum(lengths) / (batch * seq) if lengths else 1.0
            log(f"{name}: {runtime}, batch {label}, S {seq} ({real:.0%} real), {rounds} rounds")
            samples = measure(runners, [feeds] * len(runners), rounds, warmup=1)
            medians = {key: statistics.median(s) for (_, _, _, key), s in zip(rows, samples)}
            best = min(ms for key, ms in medians.items() if not key.startswith("fusekit"))
            for (_, _, precision, key), s in zip(rows, samples):
                results.append({"model": name, "runtime": runtime, "case": label, "batch": batch, "seq": seq,
                                "lengths": lengths, "real": real, "key": key, "median_ms": medians[key],
                                "vs_best_peer": medians[key] / best, "samples_ms": s})
        del runners
    return results


def table(results: list[dict]) -> str:
    keys = [key for _, _, _, key in ROWS]
    short = {"original": "original", "ort-transformers": "ORT opt", "fusekit-ort": "fusekit",
             "fusekit-ort-pack": "--pack", "fusekit-openvino": "fusekit", "fusekit-openvino-pack": "--pack"}
    lines = []
    groups = dict.fromkeys((r["model"], r["runtime"]) for r in results)
    for model, runtime in groups:
        rows = [r for r in results if (r["model"], r["runtime"]) == (model, runtime)]
        present = [k for k in dict.fromkeys(keys) if any(r["key"] == k for r in rows)]
        lines.append(f"\n{model} · {runtime} · median ms (× best peer)")
        lines.append(f"  {'batch':<24} {'S':>4} {'real':>5}  " + "  ".join(f"{short[k]:>17}" for k in present))
        for case in dict.fromkeys((r["case"], r["seq"]) for r in rows):
            cells = {r["key"]: r for r in rows if (r["case"], r["seq"]) == case}
            real = next(iter(cells.values()))["real"]
            lines.append(f"  {case[0]:<24} {case[1]:>4} {real:>5.0%}  " + "  ".join(
                f"{cells[k]['median_ms']:>9.1f} ({cells[k]['vs_best_peer']:.2f}×)" for k in present))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", help="comma-separated (default bert-base,bert-large; bert-base with --quick)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 7; 5 with --quick)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    from benchmarks.models import get_model
    models = args.models.split(",") if args.models else ["bert-base"] if args.quick else ["bert-base", "bert-large"]
    runtimes = ["ORT f32", "OpenVINO f32"] if args.quick else ["ORT f32", "OpenVINO f32", "OpenVINO bf16"]
    seqs = [128] if args.quick else [128, 384]
    rounds = args.rounds or (5 if args.quick else 7)
    results = []
    for name in models:
        source = Path(get_model(name))
        files = build(name, source, source.parent / "pack")
        results += measure_model(name, files, runtimes, seqs, args.quick, rounds, args.threads)
    print(f"fusekit --pack · {args.threads} threads · medians of {rounds} interleaved rounds · "
          "ratios against the best peer (the rows that are not fusekit)")
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": args.threads, "rounds": rounds, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
