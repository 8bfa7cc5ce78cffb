#!/usr/bin/env python3
"""Record in testmodels/exporters/manifest.json what fusekit does today on each exporter model.

For every model: `fusekit optimize --target ort` (with verification: right padding, left
padding, all-ones masks, another length), the fused count per fusion, the encoder layers
`fusekit explain` finds, whether the result verifies, and the near misses. Each entry gets

  fusekit_today   what happens now: fused count per fusion (`counts`, the floor that
                  tests/test_exporters.py holds), the fused model's contrib and elementary
                  ops (`ops`), layers, verification, near misses and explain's lines
  expected        the fused model's ops when everything fuses: Attention = layers,
                  a LayerNormalization behind each of the 2 residual sums per layer (the
                  sum respelled so that ONNX Runtime keeps it out of its slow CPU
                  SkipLayerNorm kernel), one EmbedLayerNormalization, a
                  BiasGelu (FastGelu for the tanh GELU) per layer, and none of the
                  elementary ops of attention, LayerNorm and GELU left; for ModernBERT, a
                  MultiHeadAttention and two RotaryEmbeddings per layer instead of the
                  Attention, and for DeBERTa-v3 a MultiHeadAttention; the LayerNorms no fusion
                  takes stay; a family whose attention fusion is still to come lists the ops
                  that step fuses as `pending` (none today). tests/test_exporters.py also holds every
                  LayerNormalization to read no Add

For ModernBERT, DeBERTa-v3 and the models whose attention is pending, `fusekit_today` also records
`targets`: the counts and verification of `--target onnx` and `openvino`, the floor held on
those targets.

Run with fusekit's own environment after any exporter script, or after a change to
fusekit, to move the floor (of the FILEs named, or of every model):

    python testmodels/exporters_status.py [FILE.onnx …]     # every model, or these
"""
from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import fusekit

HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "exporters" / "manifest.json"


MS = "com.microsoft"
# ops a fully fused encoder no longer has: the elementary forms of attention, LayerNorm and GELU
UNFUSED = ("Softmax", "Erf", "Tanh", "ReduceMean", "GlobalAveragePool", "Pow", "Sqrt")
NORM = "LayerNormalization"  # one per residual sum (respelled before it), and those no fusion takes


# Families whose attention does not fuse yet: each with the attention ops still left, and how many
# LayerNorms no fusion takes (none today).
ATTENTION_PENDING: dict[str, tuple[list[str], int]] = {}
# Rotary attention (ModernBERT): RotaryEmbedding on Q and K, then MultiHeadAttention; the
# embedding sum has no position term (no EmbedLayerNormalization), so its LayerNorm stays.
ROTARY = {"modernbert"}
# DeBERTa-v3's disentangled attention fuses into MultiHeadAttention (it reads the Q and K projections
# its bias reads too); its embeddings and its norm of the relative position table stay LayerNorms.
DISENTANGLED = {"debertav3"}


def expected(entry: dict) -> dict:
    """The fused model's ops when every layer fuses for --target ort."""
    layers = entry["layers"]
    if entry["family"] in ROTARY:
        return {"ops": {f"{MS}.MultiHeadAttention": layers, f"{MS}.RotaryEmbedding": 2 * layers,
                        NORM: 2 * layers + 1, f"{MS}.EmbedLayerNormalization": 0,
                        f"{MS}.Gelu": layers},  # the GeGLU has no bias
                "unfused_left": {op: 0 for op in UNFUSED}}
    if entry["family"] in ATTENTION_PENDING:
        return {"ops": {f"{MS}.Attention": layers, NORM: 2 * layers + ATTENTION_PENDING[entry["family"]][1],
                        f"{MS}.EmbedLayerNormalization": 0, f"{MS}.BiasGelu": layers},
                "unfused_left": {op: 0 for op in UNFUSED},
                "pending": [f"{MS}.Attention", *ATTENTION_PENDING[entry["family"]][0]]}
    if entry["family"] in DISENTANGLED:
        return {"ops": {f"{MS}.Attention": 0, f"{MS}.MultiHeadAttention": layers,
                        NORM: 2 * layers + 2, f"{MS}.EmbedLayerNormalization": 0, f"{MS}.BiasGelu": layers},
                # the bias keeps its own run-time √(3h) (TorchScript computes it from Shape), outside the op
                "unfused_left": {op: 0 for op in UNFUSED if op != "Sqrt"}}
    gelu = "FastGelu" if entry["family"] == "albert" or entry["route"].startswith("kerashub") else "BiasGelu"
    return {"ops": {f"{MS}.Attention": layers, NORM: 2 * layers,
                    f"{MS}.EmbedLayerNormalization": 1, f"{MS}.{gelu}": layers},
            "unfused_left": {op: 0 for op in UNFUSED}}


def op_counts(model) -> dict:
    ops = Counter(f"{n.domain}.{n.op_type}" if n.domain else n.op_type for n in model.graph.node)
    return dict(sorted((op, k) for op, k in ops.items() if op.startswith(MS) or op in UNFUSED or op == NORM))


def today(path: Path, other_targets: bool) -> dict:
    try:
        fused, report = fusekit.optimize(path, target="ort")
        explanation = fusekit.explain(path, target="ort")
    except fusekit.FusekitError as e:
        return {"loads": False, "error": str(e)}
    per_fusion = [explanation.per_fusion(f) for f in explanation.fusions()]
    targets = {}
    for target in ("onnx", "openvino") if other_targets else ():
        _, other = fusekit.optimize(path, target=target)
        targets[target] = {"counts": dict(sorted(other.counts.items())), "verifies": other.verification.ok}
    return {
        "loads": True,
        "layers": explanation.layers.count,
        "layers_from": explanation.layers.method,
        "counts": dict(sorted(report.counts.items())),
        "ops": op_counts(fused),
        "verifies": report.verification.ok,
        "verification": report.verification.summary().splitlines()[0],
        "worst_output": next((o.describe() for o in report.verification.outputs if not o.ok), None),
        "near_misses": [str(m) for m in report.misses],
        "explain": [f["summary"] for f in per_fusion],
    } | ({"targets": targets} if targets else {})


def main(files=()) -> None:
    """Every model, or those ``files`` name."""
    manifest = json.loads(MANIFEST.read_text())
    files = set(sys.argv[1:])
    for entry in manifest["models"]:
        if files and entry["file"] not in files:
            continue
        now = today(MANIFEST.parent / entry["file"],
                    other_targets=entry["family"] in {*ATTENTION_PENDING, *ROTARY, *DISENTANGLED})
        entry["fusekit_today"] = {"fusekit": fusekit.__version__, "target": "ort", **now}
        entry["expected"] = expected(entry)
        print(f"{entry['file']}: " + (f"layers {now['layers']}, fused {now['counts']}, verifies {now['verifies']}"
                                      if now["loads"] else f"refused: {now['error']}"), file=sys.stderr)
    MANIFEST.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
