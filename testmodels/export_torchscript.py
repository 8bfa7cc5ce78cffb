#!/usr/bin/env python3
"""Export tiny random-weight encoders with the TorchScript exporter, for forms only one
transformers version writes.

Writes testmodels/exporters/<file>.onnx and merges the entries into
testmodels/exporters/manifest.json (see testmodels/README.md).

  mpnet_ts14_tf5             transformers 5 MPNetModel: its attention adds a relative
                             position bias, computed from the sequence length alone, to
                             the scores (32 buckets; positions offset by the padding id)
  distilbert_ts14_eager_tf4  transformers 4.x DistilBertModel with eager attention: the
                             mask is applied with masked_fill, i.e. Where(mask, scores, min)

Each from a config (2 layers, hidden 32, 4 heads, intermediate 64, vocabulary 128, 64
positions), every weight drawn at random, biases and LayerNorm γ/β included;
torch.onnx.export(dynamo=False, opset_version=14, do_constant_folding=True); inputs
input_ids and attention_mask (int64, [batch, sequence], both dynamic); output
last_hidden_state. Compared with PyTorch on right- and left-padded batches. A model is
made only by the transformers major version it needs.

Regenerate (each in a virtualenv of its own; the Optimum one has transformers 4.57):

    python -m venv /work/venvs/t5
    /work/venvs/t5/bin/pip install torch==2.13.0 transformers==5.23.0 onnx onnxruntime
    /work/venvs/t5/bin/python testmodels/export_torchscript.py     # mpnet_ts14_tf5
    /work/venvs/hf/bin/python testmodels/export_torchscript.py     # distilbert_ts14_eager_tf4
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


def randomize(model: torch.nn.Module) -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():  # every weight random: γ around 1, the rest around 0
            p.copy_(torch.randn_like(p) * 0.1 + (1.0 if "LayerNorm.weight" in name or "layer_norm.weight" in name
                                                  else 0.0))


def mpnet() -> torch.nn.Module:
    config = transformers.MPNetConfig(vocab_size=VOCAB, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                      hidden_size=HIDDEN, intermediate_size=INTERMEDIATE,
                                      max_position_embeddings=POSITIONS + 2, relative_attention_num_buckets=32)
    return transformers.MPNetModel(config, add_pooling_layer=False)


def distilbert_eager() -> torch.nn.Module:
    config = transformers.DistilBertConfig(vocab_size=VOCAB, n_layers=LAYERS, n_heads=HEADS, dim=HIDDEN,
                                           hidden_dim=INTERMEDIATE, max_position_embeddings=POSITIONS)
    return transformers.DistilBertModel._from_config(config, attn_implementation="eager")


# file: (family, transformers major version, builder, description)
MODELS = {
    "mpnet_ts14_tf5": ("mpnet", 5, mpnet, "MPNetModel (relative position bias), torch.onnx.export(dynamo=False)"),
    "distilbert_ts14_eager_tf4": ("distilbert", 4, distilbert_eager,
                                  "DistilBertModel, eager attention (masked_fill mask), "
                                  "torch.onnx.export(dynamo=False)"),
}


def export(name: str, out_dir: Path) -> dict:
    family, _, build, description = MODELS[name]
    model = build()
    randomize(model)
    model = Encoder(model.eval()).eval()
    path = out_dir / f"{name}.onnx"
    example = (torch.randint(3, VOCAB, (2, 12)), torch.ones(2, 12, dtype=torch.int64))
    axes = {n: {0: "batch", 1: "sequence"} for n in NAMES + ["last_hidden_state"]}
    torch.onnx.export(model, example, path, dynamo=False, opset_version=OPSET, do_constant_folding=True,
                      input_names=NAMES, output_names=["last_hidden_state"], dynamic_axes=axes)

    def reference(feeds):
        with torch.no_grad():
            out = model(*(torch.from_numpy(feeds[n].astype(np.int64)) for n in NAMES))
        return {"last_hidden_state": out.numpy()}
    entry = check_against(path, reference, NAMES, vocab=VOCAB)
    entry.update(family=family, route=f"torchscript-{name}", exporter="torch.onnx (TorchScript)", opset=OPSET,
                 description=description,
                 versions={"transformers": transformers.__version__, "torch": torch.__version__},
                 layers=LAYERS, hidden=HIDDEN, heads=HEADS, intermediate=INTERMEDIATE)
    print(f"{path.name}: {entry['size_bytes']:,} bytes, {entry['nodes']} nodes, "
          f"max abs diff {entry['max_abs_diff']:.2e}")
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args()
    major = int(transformers.__version__.split(".")[0])
    entries = [export(name, args.out_dir) for name, (_, version, _, _) in MODELS.items() if version == major]
    merge_manifest(args.out_dir, entries, {})


if __name__ == "__main__":
    main()
