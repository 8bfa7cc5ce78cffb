#!/usr/bin/env python3
"""Export the encoders users deploy in 2026, ModernBERT and DeBERTa-v3, from transformers 5
with both torch.onnx exporters.

Writes testmodels/exporters/<file>.onnx and merges the entries into
testmodels/exporters/manifest.json (see testmodels/exporters/README.md).

  modernbert_ts17_{eager,sdpa}  ModernBertModel: rotary positions, GeGLU (the Wi output
                                chunked in two), alternating global and local attention
                                (layer 0 global, layers 1 and 2 a window of ±3 tokens,
                                shorter than every test length), no bias anywhere, LayerNorm
                                without β; TorchScript, opset 17, eager or sdpa attention
  modernbert_dynamo18_{eager,sdpa}  the same with the dynamo exporter, opset 18 (the sdpa export
                                differs from PyTorch where a padded token's window holds no
                                valid token, and is recorded as a failure)
  debertav3_ts17_eager          DebertaV2Model with DeBERTa-v3's settings: relative attention
                                with log position buckets, share_att_key, c2p and p2c terms,
                                no absolute positions, no token types; TorchScript, opset 17
                                (DeBERTa has no sdpa attention)
  debertav3_dynamo18_eager      the same with the dynamo exporter, opset 18

Each from a config (hidden 32, 4 heads, intermediate 64, vocabulary 128; ModernBERT 3 layers,
DeBERTa 2), every weight drawn at random, biases and LayerNorm γ/β included (γ around 1);
inputs input_ids and attention_mask (int64, [batch, sequence], both dynamic); output
last_hidden_state. Compared with PyTorch on right-, left- and mixed-padded batches before it
is written. An export that fails is recorded under ``failures`` in the manifest with its error.

Regenerate (in a virtualenv of its own; onnxscript for the dynamo exporter):

    python -m venv /work/venvs/t5
    /work/venvs/t5/bin/pip install torch==2.13.0 transformers==5.25.0 onnx onnxruntime onnxscript
    /work/venvs/t5/bin/python testmodels/export_modern_encoders.py     # --models to make some
"""
from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

import numpy as np
import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))
from exporters_common import OUT_DIR, check_against, merge_manifest  # noqa: E402

HIDDEN, HEADS, INTERMEDIATE, VOCAB, POSITIONS = 32, 4, 64, 128, 64
NAMES = ["input_ids", "attention_mask"]


class Encoder(torch.nn.Module):
    """The model with positional inputs and one output, as the exporters want it."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True).last_hidden_state


def randomize(model: torch.nn.Module) -> None:
    """Every parameter drawn at random: a LayerNorm's γ around 1, everything else around 0."""
    torch.manual_seed(0)
    gammas = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.LayerNorm) and m.weight is not None}
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.1 + (1.0 if id(p) in gammas else 0.0))


def modernbert(attention: str) -> torch.nn.Module:
    # token ids 0-3 special, as the export checks and fusekit's inputs may use any of them
    config = transformers.ModernBertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTERMEDIATE,
                                           num_hidden_layers=3, num_attention_heads=HEADS,
                                           max_position_embeddings=POSITIONS, global_attn_every_n_layers=3,
                                           local_attention=6, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                           cls_token_id=1, sep_token_id=2)
    assert config.layer_types == ["full_attention", "sliding_attention", "sliding_attention"]
    return transformers.ModernBertModel._from_config(config, attn_implementation=attention)


def debertav3(attention: str) -> torch.nn.Module:
    config = transformers.DebertaV2Config(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTERMEDIATE,
                                          num_hidden_layers=2, num_attention_heads=HEADS,
                                          max_position_embeddings=POSITIONS, type_vocab_size=0,
                                          relative_attention=True, position_buckets=16, max_relative_positions=-1,
                                          norm_rel_ebd="layer_norm", share_att_key=True,
                                          pos_att_type=["p2c", "c2p"], position_biased_input=False,
                                          layer_norm_eps=1e-7, pad_token_id=0)
    return transformers.DebertaV2Model._from_config(config, attn_implementation=attention)


# file: (family, builder, attention, exporter, opset, layers, description)
MODELS = {
    "modernbert_ts17_eager": ("modernbert", modernbert, "eager", "torchscript", 17, 3,
                              "ModernBertModel, eager attention, torch.onnx.export(dynamo=False)"),
    "modernbert_ts17_sdpa": ("modernbert", modernbert, "sdpa", "torchscript", 17, 3,
                             "ModernBertModel, sdpa attention, torch.onnx.export(dynamo=False)"),
    "modernbert_dynamo18_eager": ("modernbert", modernbert, "eager", "dynamo", 18, 3,
                                  "ModernBertModel, eager attention, torch.onnx.export(dynamo=True)"),
    "modernbert_dynamo18_sdpa": ("modernbert", modernbert, "sdpa", "dynamo", 18, 3,
                                 "ModernBertModel, sdpa attention, torch.onnx.export(dynamo=True)"),
    "debertav3_ts17_eager": ("debertav3", debertav3, "eager", "torchscript", 17, 2,
                             "DebertaV2Model with the v3 settings, eager attention, torch.onnx.export(dynamo=False)"),
    "debertav3_dynamo18_eager": ("debertav3", debertav3, "eager", "dynamo", 18, 2,
                           "DebertaV2Model with the v3 settings, eager attention, torch.onnx.export(dynamo=True)"),
}


def export(name: str, out_dir: Path) -> dict:
    family, build, attention, exporter, opset, layers, description = MODELS[name]
    model = build(attention)
    randomize(model)
    model = Encoder(model.eval()).eval()
    path = out_dir / f"{name}.onnx"
    # a padded example, so that no tracer takes the all-ones shortcut of a mask
    mask = torch.ones(2, 12, dtype=torch.int64)
    mask[1, 9:] = 0
    example = (torch.randint(4, VOCAB, (2, 12)), mask)
    if exporter == "torchscript":
        axes = {n: {0: "batch", 1: "sequence"} for n in NAMES + ["last_hidden_state"]}
        torch.onnx.export(model, example, path, dynamo=False, opset_version=opset, do_constant_folding=True,
                          input_names=NAMES, output_names=["last_hidden_state"], dynamic_axes=axes)
    else:
        batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
        shapes = {n: {0: batch, 1: sequence} for n in NAMES}
        program = torch.onnx.export(model, example, dynamo=True, opset_version=opset, dynamic_shapes=shapes,
                                    input_names=NAMES, output_names=["last_hidden_state"])
        program.save(path, external_data=False)

    def reference(feeds):
        with torch.no_grad():
            out = model(*(torch.from_numpy(feeds[n].astype(np.int64)) for n in NAMES))
        return {"last_hidden_state": out.numpy()}
    entry = check_against(path, reference, NAMES, vocab=VOCAB)
    entry.update(family=family, route=f"{exporter}-{name}", exporter=f"torch.onnx ({exporter})", opset=opset,
                 attention=attention, description=description,
                 versions={"transformers": transformers.__version__, "torch": torch.__version__},
                 layers=layers, hidden=HIDDEN, heads=HEADS, intermediate=INTERMEDIATE)
    print(f"{path.name}: {entry['size_bytes']:,} bytes, {entry['nodes']} nodes, "
          f"max abs diff {entry['max_abs_diff']:.2e}")
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args()
    entries, failures = [], {}
    for name in args.models:
        try:
            entries.append(export(name, args.out_dir))
        except Exception as e:  # an exporter that cannot export the model is recorded, not fatal
            traceback.print_exc()
            (args.out_dir / f"{name}.onnx").unlink(missing_ok=True)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            failures[f"{MODELS[name][3]}-{name}"] = f"{type(e).__name__}: {first}"
    merge_manifest(args.out_dir, entries, failures)


if __name__ == "__main__":
    main()
