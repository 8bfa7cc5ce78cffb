#!/usr/bin/env python3
"""bert-base quantized with every op type (ONNX Runtime ``quantize_static``, QDQ, the
quantizer's default op types: Q/DQ inside every LayerNorm, GELU and attention), as written and
after fusekit, on ONNX Runtime and OpenVINO.

Builds and caches in benchmarks/models/ (git-ignored), from the FP32 bert-base of
benchmarks/models.py (random weights; exported on first use, needing torch + transformers):

  <model>.int8.all_ops[_s8].onnx   testmodels/quantized.py all_ops() (uint8 activations) or
                                   all_ops_s8() (``--s8``: symmetric int8, reduce_range)
  … .fused_<target>_blocks.onnx    fusekit optimize --target ort / openvino with only the INT8 dense
                                   blocks fused (LayerNorm, SkipLayerNorm, EmbedLayerNorm and
                                   QuantizedAttention disabled: what fusekit did before them)
  … .fused_<target>_all.onnx       everything fused (no verify; all cached: ``--refuse`` fuses again)

then runs ``fusekit bench`` (interleaved round-robin, medians, p90; see README "Commands") per
backend: ONNX Runtime on the quantizer's model, the blocks-only and the fully fused one;
OpenVINO (which cannot compile the quantizer's all-ops model) on the last two. Nothing is asserted; on a shared machine
read the ratios, not the absolute times, and run it twice.

    python benchmarks/int8_around.py [--s8] [--batch 1,8] [--seq 128] [--iterations 20] [--threads 2]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="bert-base")
    ap.add_argument("--s8", action="store_true", help="symmetric int8 activations, reduce_range")
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--seq", default="128")
    ap.add_argument("--iterations", default="20")
    ap.add_argument("--threads", default="2")
    ap.add_argument("--refuse", action="store_true", help="fuse again even where the fused model is cached")
    args = ap.parse_args(argv)
    import onnx

    import fusekit
    from benchmarks.models import get_model
    from testmodels import quantized as Q

    source = Path(get_model(args.model))
    kind = "all_ops_s8" if args.s8 else "all_ops"
    quantized = source.with_name(f"{source.stem}.int8.{kind}.onnx")
    if not quantized.exists():
        print(f"quantizing {source.name} ({kind}) …", file=sys.stderr)
        onnx.save(getattr(Q, kind)(source), quantized)
    # the dense blocks alone (what fusekit fused before the fusions around them), and everything
    around = ("LayerNorm", "SkipLayerNorm", "EmbedLayerNorm", "QuantizedAttention")
    made = {}
    for target in ("ort", "openvino"):
        for form, disable in (("blocks", around), ("all", ())):
            path = quantized.with_name(f"{quantized.stem}.fused_{target}_{form}.onnx")
            if not path.exists() or args.refuse:
                model, report = fusekit.optimize(str(quantized), target=target, verify=False, disable=disable)
                onnx.save(model, path)
                print(f"{target} {form}: {dict(report.counts)}", file=sys.stderr)
            made[target, form] = path
    for backend in ("ort", "openvino"):
        # OpenVINO cannot compile the quantizer's all-ops model as written: the blocks-only model first
        models = ([quantized] if backend == "ort" else []) + [made[backend, "blocks"], made[backend, "all"]]
        subprocess.run([sys.executable, "-c", "import sys; from fusekit.cli import main; sys.exit(main())",
                        "bench", *map(str, models), "--backend", backend, "--batch", args.batch, "--seq", args.seq,
                        "--iterations", args.iterations, "--threads", args.threads], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
