"""What the exporter-corpus scripts share: the output folder, the check of an export
against the framework that made it, and the manifest merge.

Needs only numpy, onnx and onnxruntime, so that every exporter's virtualenv can import it.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

OUT_DIR = Path(__file__).resolve().parent / "exporters"
MANIFEST = "manifest.json"
DESCRIPTION = ("Tiny random-weight BERT-family encoders from exporters other than torch.onnx with transformers 5; "
               "made by testmodels/export_tf.py, export_optimum.py, export_fp16.py and export_torchscript.py; "
               "fusekit_today by testmodels/exporters_status.py (see testmodels/exporters/README.md).")
ATOL = 1e-4
# (batch, sequence, padding per row: +n pads n on the right, -n on the left)
CASES = [(2, 12, (0, 5)), (2, 12, (0, -4)), (3, 7, (0, 2, -3))]
ORT_TYPES = {"tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(float)": np.float32,
             "tensor(float16)": np.float16}


def is_mask(name: str) -> bool:
    return "mask" in name


def feeds_for(session: ort.InferenceSession, batch: int, seq: int, pads, vocab: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, seq))
    for row, pad in enumerate(pads):
        if pad > 0:
            mask[row, seq - pad:] = 0
        elif pad < 0:
            mask[row, :-pad] = 0
    feeds = {}
    for i in session.get_inputs():
        dtype = ORT_TYPES[i.type]
        if is_mask(i.name):
            feeds[i.name] = mask.astype(dtype)
        elif "type" in i.name or "segment" in i.name:
            feeds[i.name] = rng.integers(0, 2, (batch, seq)).astype(dtype)
        else:  # token ids, clear of the special ids 0-2 (RoBERTa's padding id is 1)
            feeds[i.name] = rng.integers(3, vocab, (batch, seq)).astype(dtype)
    return feeds


def check_against(path: Path, reference, names, vocab: int, rtol: float = ATOL) -> dict:
    """Check the ONNX file and compare it under ONNX Runtime with ``reference(feeds) -> {output: array}``.

    Returns the manifest entry's measured part: file, size, nodes, op histogram, inputs,
    outputs and the largest difference over right-, left- and mixed-padded batches.
    """
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch, seq, pads in CASES:
        feeds = feeds_for(session, batch, seq, pads, vocab)
        expected = reference({n: feeds[n] for n in names})
        got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
        for key, want in expected.items():
            have = got[key] if key in got else got[next(k for k in got if k.startswith(key))]
            diff = float(np.max(np.abs(have.astype(np.float64) - np.asarray(want, np.float64))))
            diff = diff if np.isfinite(diff) else float("inf")
            if not diff <= rtol * max(1.0, float(np.max(np.abs(want)))):
                raise RuntimeError(f"{path.name}: {key} differs by {diff:.3g} at batch {batch} x seq {seq} {pads}")
            worst = max(worst, diff)
    return measure(path, model) | {"max_abs_diff": worst}


def measure(path: Path, model: onnx.ModelProto | None = None) -> dict:
    model = model or onnx.load(path)
    shape = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    dtype = lambda v: onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type).lower()  # noqa: E731
    return {
        "file": path.name,
        "size_bytes": path.stat().st_size,
        "nodes": len(model.graph.node),
        "opsets": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        "inputs": [{"name": i.name, "dtype": dtype(i), "shape": shape(i)} for i in model.graph.input
                   if i.name not in {t.name for t in model.graph.initializer}],
        "outputs": [{"name": o.name, "dtype": dtype(o), "shape": shape(o)} for o in model.graph.output],
        "ops": dict(sorted(Counter(n.op_type for n in model.graph.node).items())),
    }


def merge_manifest(out_dir: Path, entries: list[dict], failures: dict[str, str]) -> None:
    """Replace the entries of these files (and the failures of these routes) in the manifest."""
    path = out_dir / MANIFEST
    manifest = json.loads(path.read_text()) if path.exists() else {"description": DESCRIPTION}
    by_file = {e["file"]: e for e in manifest.get("models", [])}
    for e in entries:
        old = by_file.get(e["file"], {})
        by_file[e["file"]] = e | {k: old[k] for k in ("fusekit_today", "expected") if k in old}
    manifest["models"] = sorted(by_file.values(), key=lambda e: e["file"])
    manifest["failures"] = dict(sorted((manifest.get("failures", {}) | failures).items()))
    for route in {e.get("route") for e in entries}:
        manifest["failures"].pop(route, None)
    manifest["total_onnx_bytes"] = sum(e["size_bytes"] for e in manifest["models"])
    path.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
