#!/usr/bin/env python3
"""Which spelling of the packing points does each CPU runtime run fastest?

`fusekit optimize --pack` gathers a batch's valid tokens after the embeddings and scatters
them back around each attention core. The spellings compared here (``fusekit.stages.pack.Forms``):

  unpack first     an attention core's inputs Gather(x, index), padded positions reading the
                   stream's first row (never weighed); other values as "pad" (fusekit's form)
  unpack gather    Gather(x, index) from a packed stream that carries one spare row, padded
                   positions pointing at it (zeros put in by a Where where they are read)
  unpack pad       Gather(Pad(x, one zero row), index), padded positions pointing at the zero row
  unpack scatter   ScatterND(ConstantOfShape([B·S, C], 0), token rows, x)
  ort core mha     the fused Attention's packed QKV projection runs on the tokens, then
                   unpack → Split → com.microsoft.MultiHeadAttention (2-D key padding mask)
  ort core attention
                   the fused com.microsoft.Attention kept, reading the unpacked hidden states
                   (its projection then runs on every position, padding included)

Each form is a whole model (bert-base, 2 layers unless --layers, random weights, from
benchmarks/models.py), timed against the same model fused without --pack, on
ONNX Runtime f32 and OpenVINO f32, at batch 8 × 128 with the lengths
112, 87, 73, 50, 46, 24, 20, 17 (42% real tokens) and with no padding. Models are
interleaved round-robin (a fresh random order each round); medians, ±half IQR, the ratio
to the unpacked model, and the ratio of 10th percentiles (steadier when other processes
share the cores). Nothing is asserted.

    python benchmarks/pack_forms.py [--layers 2] [--rounds 15] [--quick]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._timing import median_half_iqr, round_robin_samples  # noqa: E402

LENGTHS = [112, 87, 73, 50, 46, 24, 20, 17]
SEQ = 128
FORMS = {  # target -> label -> Forms(...) keyword arguments; None: fused without --pack
    "ort": {"fused": None, "pack mha+gather": dict(ms_core="mha", unpack="gather"),
            "pack mha+pad": dict(ms_core="mha", unpack="pad"),
            "pack mha+first": dict(ms_core="mha", unpack="first"),
            "pack mha+scatter": dict(ms_core="mha", unpack="scatter"),
            "pack attention+gather": dict(ms_core="attention", unpack="gather")},
    "openvino": {"fused": None, "pack gather": dict(unpack="gather"), "pack pad": dict(unpack="pad"), "pack first": dict(unpack="first"),
                 "pack scatter": dict(unpack="scatter")},
}
RUNTIMES = {"ort": [("ort", "f32")], "openvino": [("openvino", "f32")]}


def build(source: Path, target: str, label: str, forms, folder: Path) -> Path:
    import fusekit
    from fusekit.stages import pack
    from fusekit.modelio import write
    saved = dict(pack.FORMS)
    if forms is not None:
        pack.FORMS[target] = pack.Forms(**forms)
    try:
        model, report = fusekit.optimize(str(source), target=target, verify=forms is not None, pack=forms is not None,
                                         trials=2)
    finally:
        pack.FORMS.clear()
        pack.FORMS.update(saved)
    if report.verification is not None and not report.verification.ok:
        raise SystemExit(f"{target} {label}: not equivalent\n{report.verification.summary()}")
    path = folder / f"{target}_{label.replace(' ', '_').replace('+', '_')}.onnx"
    write(model, path, False)
    return path


def feeds_for(model_path: Path, padded: bool) -> dict:
    import onnx

    from fusekit.inputs import Setting, make_inputs
    from fusekit.runtime.bench import with_lengths
    interface = onnx.load(str(model_path), load_external_data=False)
    feeds = make_inputs(interface, Setting("none", len(LENGTHS), SEQ), seed=0)
    return with_lengths(feeds, LENGTHS) if padded else feeds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="5 rounds, padded batch only")
    args = p.parse_args(argv)
    from benchmarks.models import get_model
    from fusekit.runtime import backends
    source = Path(get_model("bert-base", layers=args.layers))
    rounds = 5 if args.quick else args.rounds
    cases = [("42% real", True)] + ([] if args.quick else [("no padding", False)])
    with tempfile.TemporaryDirectory() as tmp:
        for target, forms in FORMS.items():
            paths = {label: build(source, target, label, f, Path(tmp)) for label, f in forms.items()}
            for backend, precision in RUNTIMES[target]:
                runners = {label: backends.load(backend, str(path), "cpu", args.threads, precision)
                           for label, path in paths.items()}
                for case, padded in cases:
                    feeds = feeds_for(source, padded)
                    runs = {label: (lambda r=r: r.run(feeds)) for label, r in runners.items()}
                    samples = round_robin_samples(runs, rounds, warmup=1, min_sample_ms=50)
                    base = median_half_iqr(samples["fused"])[0]
                    print(f"\n{target} form on {backend} {precision}, bert-base L{args.layers}, "
                          f"batch {len(LENGTHS)} × {SEQ}, {case}, {rounds} rounds")
                    for label, s in samples.items():
                        med, spread = median_half_iqr(s)
                        p10 = sorted(s)[len(s) // 10] / sorted(samples["fused"])[len(s) // 10]
                        print(f"  {label:<22} {med * 1e3:9.1f} ms ±{spread:4.0%}   {med / base:5.2f}×   "
                              f"10th percentile {p10:5.2f}×")
                del runners
    return 0


if __name__ == "__main__":
    sys.exit(main())
