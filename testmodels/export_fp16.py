#!/usr/bin/env python3
"""Convert torch exports to float16 with the two common converters.

Writes testmodels/exporters/<source>_fp16<converter>[_keepio].onnx and merges their
entries into testmodels/exporters/manifest.json (see testmodels/README.md).

Sources (both tiny random-weight BERTs from torch.onnx):

  bert_optimum_default   this corpus's Optimum export (transformers 4.57, sdpa,
                         LayerNormalization; made by export_optimum.py first)
  bert_ts14_eager        testmodels/corpus's TorchScript export (transformers 5,
                         eager attention, opset 14, decomposed LayerNorm)

Converters, each with keep_io_types off (float16 inputs/outputs where float) and on
(float32 I/O, Casts at the edges):

  occ   onnxconverter_common.float16.convert_float_to_float16
  ort   onnxruntime.transformers.float16.convert_float_to_float16

Each file is compared with its float32 source under ONNX Runtime (relative to the
output's largest magnitude, within 1e-2) on right- and left-padded batches.

Regenerate (in the Optimum virtualenv, after export_optimum.py):

    /work/venvs/hf/bin/python testmodels/export_fp16.py
"""
from __future__ import annotations

import argparse
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from exporters_common import OUT_DIR, check_against, merge_manifest  # noqa: E402

SOURCES = {
    "bert_optimum_default": (OUT_DIR / "bert_optimum_default.onnx", 128),
    "bert_ts14_eager": (HERE / "corpus" / "bert_ts14_eager.onnx", 64),
}


def convert(model: onnx.ModelProto, converter: str, keep_io_types: bool) -> onnx.ModelProto:
    if converter == "occ":
        from onnxconverter_common import float16
        return float16.convert_float_to_float16(model, keep_io_types=keep_io_types)
    from onnxruntime.transformers import float16
    return float16.convert_float_to_float16(model, keep_io_types=keep_io_types)


def export(source: str, out_dir: Path, failures: dict[str, str]) -> list[dict]:
    path, vocab = SOURCES[source]
    fp32 = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in fp32.get_inputs()]
    entries = []
    for converter in ("occ", "ort"):
        for keep in (False, True):
            name = f"{source}_fp16{converter}{'_keepio' if keep else ''}"
            target = out_dir / f"{name}.onnx"
            model = convert(onnx.load(path), converter, keep)
            try:  # a converter's output that ONNX Runtime refuses is recorded, not committed
                ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            except Exception as e:
                failures[f"fp16-{name}"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"
                print(f"{name}: FAILED {failures[f'fp16-{name}']}", file=sys.stderr)
                target.unlink(missing_ok=True)
                continue
            onnx.save(model, target)

            def reference(feeds):
                return dict(zip([o.name for o in fp32.get_outputs()], fp32.run(None, feeds)))
            entry = check_against(target, reference, names, vocab=vocab, rtol=1e-2)
            entry.update(family="bert", route=f"fp16-{name}", exporter=f"fp16-{converter}",
                         opset=entry["opsets"]["ai.onnx"], source=path.name, keep_io_types=keep,
                         description=f"{'onnxconverter_common' if converter == 'occ' else 'onnxruntime.transformers'}"
                                     f".float16.convert_float_to_float16(keep_io_types={keep}) of {path.name}",
                         versions={"onnxconverter-common": version("onnxconverter-common"),
                                   "onnxruntime": ort.__version__},
                         layers=2)
            entries.append(entry)
            print(f"{target.name}: {entry['size_bytes']:,} bytes, {entry['nodes']} nodes, "
                  f"max abs diff {entry['max_abs_diff']:.2e}")
    return entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", default=",".join(SOURCES))
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args()
    entries, failures = [], {}
    for source in args.sources.split(","):
        try:
            entries += export(source, args.out_dir, failures)
        except Exception as e:
            failures[f"fp16-{source}"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"
            print(f"{source}: FAILED {failures[f'fp16-{source}']}", file=sys.stderr)
    merge_manifest(args.out_dir, entries, failures)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
