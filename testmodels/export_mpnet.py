#!/usr/bin/env python3
"""Export a tiny random-weight MPNet (transformers 5) with the TorchScript exporter.

Writes testmodels/exporters/mpnet_ts14.onnx and merges its entry into
testmodels/exporters/manifest.json (see testmodels/README.md).

MPNetModel from a config (2 layers, hidden 32, 4 heads, intermediate 64, vocabulary
128, 64 positions + RoBERTa's padding offset, 32 relative-position buckets); every
weight drawn at random, biases and LayerNorm γ/β included. Its attention adds a
relative position bias to the scores, computed from the sequence length alone.
torch.onnx.export(dynamo=False, opset_version=14, do_constant_folding=True); inputs
input_ids and attention_mask (int64, [batch, sequence], both dynamic); output
last_hidden_state. Compared with PyTorch on right- and left-padded batches.

Regenerate (in a virtualenv of its own):

    python -m venv /work/venvs/t5
    /work/venvs/t5/bin/pip install torch==2.13.0 transformers==5.23.0 onnx onnxruntime
    /work/venvs/t5/bin/python testmodels/export_mpnet.py
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))
from exporters_common import OUT_DIR, check_against, merge_manifest  # noqa: E402

LAYERS, HIDDEN, HEADS, INTERMEDIATE, VOCAB, POSITIONS = 2, 32, 4, 64, 128, 64
OPSET = 14
NAMES = ["input_ids", "attention_mask"]


class Encoder(torch.nn.Module):
    """The model with positional inputs and one output, as the exporter wants it."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True).last_hidden_state


def build() -> torch.nn.Module:
    config = transformers.MPNetConfig(vocab_size=VOCAB, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                      hidden_size=HIDDEN, intermediate_size=INTERMEDIATE,
                                      max_position_embeddings=POSITIONS + 2, relative_attention_num_buckets=32)
    model = transformers.MPNetModel(config, add_pooling_layer=False)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():  # every weight random: γ around 1, the rest around 0
            p.copy_(torch.randn_like(p) * 0.1 + (1.0 if "LayerNorm.weight" in name else 0.0))
    return Encoder(model.eval()).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args()
    model = build()
    path = args.out_dir / f"mpnet_ts{OPSET}.onnx"
    example = (torch.randint(3, VOCAB, (2, 12)), torch.ones(2, 12, dtype=torch.int64))
    axes = {n: {0: "batch", 1: "sequence"} for n in NAMES + ["last_hidden_state"]}
    torch.onnx.export(model, example, path, dynamo=False, opset_version=OPSET, do_constant_folding=True,
                      input_names=NAMES, output_names=["last_hidden_state"], dynamic_axes=axes)

    def reference(feeds):
        with torch.no_grad():
            out = model(*(torch.from_numpy(feeds[n].astype(np.int64)) for n in NAMES))
        return {"last_hidden_state": out.numpy()}
    entry = check_against(path, reference, NAMES, vocab=VOCAB)
    entry.update(family="mpnet", route="torchscript-mpnet", exporter="torch.onnx (TorchScript)", opset=OPSET,
                 description="MPNetModel, torch.onnx.export(dynamo=False)",
                 versions={"transformers": transformers.__version__, "torch": torch.__version__},
                 layers=LAYERS, hidden=HIDDEN, heads=HEADS, intermediate=INTERMEDIATE)
    print(f"{path.name}: {entry['size_bytes']:,} bytes, {entry['nodes']} nodes, "
          f"max abs diff {entry['max_abs_diff']:.2e}")
    merge_manifest(args.out_dir, [entry], {})


if __name__ == "__main__":
    main()
