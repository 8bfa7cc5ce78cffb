#!/usr/bin/env python3
"""Export tiny random-weight BERT encoders to ONNX as fusekit test models.

What it makes (in --out-dir, default: this script's folder):

  bert_tiny_opset14.onnx       BertModel, eager attention, opset 14
  bert_tiny_opset14_sdpa.onnx  BertModel, SDPA attention,  opset 14
  bert_tiny_opset17.onnx       BertModel, eager attention, opset 17

All three come from the same weights (BertConfig with hidden_size=32,
num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
vocab_size=128, max_position_embeddings=64, type_vocab_size=2,
hidden_act="gelu"; torch.manual_seed(0)). They are exported with the
TorchScript exporter (torch.onnx.export(..., dynamo=False,
do_constant_folding=True)). At opset 14 it decomposes LayerNorm into
ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add; at opset 17 it emits
LayerNormalization. GELU is Div/Erf/Add/Mul/Mul at both opsets.

Graph interface (all int64 inputs, dims "batch" and "sequence" dynamic):
  inputs:  input_ids, attention_mask, token_type_ids   [batch, sequence]
  outputs: last_hidden_state [batch, sequence, 32], pooler_output [batch, 32]

BERT's own init leaves every bias at 0 and every LayerNorm at weight 1 /
bias 0, which would let a wrong fusion (a dropped bias, swapped gamma/beta)
go unnoticed. So after init all biases and LayerNorm parameters are
re-drawn from a generator seeded with 0 (see randomize_trivial_params).
Output is byte-for-byte reproducible with the versions below.

For each model the script checks onnx.checker.check_model, runs it under
onnxruntime (CPU) and compares with PyTorch (max abs diff < 1e-4) on
batch 2 x seq 16 with padding, plus two other shapes to prove the axes
really are dynamic; then prints the op histogram and the file size.

Made with: torch 2.13.0+cpu, transformers 5.23.0, onnx 1.23.2,
onnxruntime 1.31.1 (Python 3.11). Regenerate with:

    python testmodels/export_bert.py

Workaround needed for this torch/transformers pair: the TorchScript exporter
fills in every forward() parameter after the given args with its default,
positionally (torch.onnx ... _decide_input_format), so use_cache=None is
passed as a positional arg; transformers 5's @merge_with_config_defaults
sees None there and also passes config.use_cache (True) as a keyword, so
export fails with "BertModel.forward() got multiple values for argument
'use_cache'". Exporting a BertModel subclass whose forward() takes exactly
the three inputs (BertForExport) avoids it.

Needs torch and transformers; fusekit's tests need neither (they only load
the committed .onnx files).
"""

from __future__ import annotations

import argparse
import collections
import os
import warnings
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import torch
import transformers
from transformers import BertConfig, BertModel

SEED = 0
ATOL = 1e-4
INPUT_NAMES = ["input_ids", "attention_mask", "token_type_ids"]
OUTPUT_NAMES = ["last_hidden_state", "pooler_output"]
DYNAMIC_AXES = {
    "input_ids": {0: "batch", 1: "sequence"},
    "attention_mask": {0: "batch", 1: "sequence"},
    "token_type_ids": {0: "batch", 1: "sequence"},
    "last_hidden_state": {0: "batch", 1: "sequence"},
    "pooler_output": {0: "batch"},
}
CONFIG = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    vocab_size=128,
    max_position_embeddings=64,
    type_vocab_size=2,
    hidden_act="gelu",
)


@dataclass(frozen=True)
class Variant:
    filename: str
    attn_implementation: str
    opset: int


VARIANTS = [
    Variant("bert_tiny_opset14.onnx", "eager", 14),
    Variant("bert_tiny_opset14_sdpa.onnx", "sdpa", 14),
    Variant("bert_tiny_opset17.onnx", "eager", 17),
]


class BertForExport(BertModel):
    """BertModel whose forward() takes exactly the three graph inputs.

    They go to BertModel.forward by keyword, and the outputs come back as a
    plain tuple (see the module docstring for why the exporter can't be given
    BertModel.forward directly). Subclassing rather than wrapping keeps the
    ONNX names the same as a plain BertModel export (no "model." prefix).
    """

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            return_dict=True,
        )
        if out.pooler_output is None:
            return (out.last_hidden_state,)
        return out.last_hidden_state, out.pooler_output


def randomize_trivial_params(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Give biases and LayerNorm weights non-trivial random values."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif "LayerNorm" in name and name.endswith(".weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))


def build_model(attn_implementation: str) -> BertForExport:
    torch.manual_seed(SEED)
    config = BertConfig(**CONFIG, attn_implementation=attn_implementation)
    model = BertForExport(config)
    randomize_trivial_params(model, torch.Generator().manual_seed(SEED))
    model.eval()
    assert model.config._attn_implementation == attn_implementation
    return model


def make_inputs(batch: int, seq: int, seed: int, pad: bool) -> dict[str, np.ndarray]:
    """Random ids/token types; with pad, every row but the first is padded."""
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(0, CONFIG["vocab_size"], size=(batch, seq), dtype=np.int64)
    token_type_ids = rng.integers(0, 2, size=(batch, seq), dtype=np.int64)
    attention_mask = np.ones((batch, seq), dtype=np.int64)
    if pad:
        for b in range(1, batch):
            attention_mask[b, max(1, seq - 3 * b - 3):] = 0
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": token_type_ids,
    }


# (batch, seq, pad): the export shape first, then other shapes for dynamic axes.
CHECK_CASES = [(2, 16, True), (3, 7, True), (1, 64, False)]


def export(model: BertForExport, variant: Variant, path: str) -> None:
    example = make_inputs(2, 16, SEED, pad=True)
    args = tuple(torch.from_numpy(example[n]) for n in INPUT_NAMES)
    torch.onnx.export(
        model,
        args,
        path,
        dynamo=False,
        opset_version=variant.opset,
        do_constant_folding=True,
        input_names=INPUT_NAMES,
        output_names=OUTPUT_NAMES,
        dynamic_axes=DYNAMIC_AXES,
    )


def verify(model: BertForExport, path: str) -> float:
    """check_model + onnxruntime vs PyTorch; returns the worst max abs diff."""
    onnx.checker.check_model(onnx.load(path), full_check=True)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    graph_outputs = [o.name for o in sess.get_outputs()]
    worst = 0.0
    for i, (batch, seq, pad) in enumerate(CHECK_CASES):
        feeds = make_inputs(batch, seq, seed=100 + i, pad=pad)
        ort_outs = sess.run(None, feeds)
        with torch.no_grad():
            ref = model(*(torch.from_numpy(feeds[n]) for n in INPUT_NAMES))
        assert len(ref) == len(ort_outs), (len(ref), len(ort_outs))
        diffs = []
        for name, r, o in zip(graph_outputs, ref, ort_outs):
            r = r.numpy()
            assert r.shape == o.shape, (name, r.shape, o.shape)
            d = float(np.max(np.abs(r - o)))
            diffs.append(f"{name}={d:.2e}")
            worst = max(worst, d)
        print(f"    batch {batch} seq {seq} pad={pad}: max|ort-torch| " + ", ".join(diffs))
    if worst >= ATOL:
        raise SystemExit(f"{path}: onnxruntime differs from PyTorch by {worst:.3e} >= {ATOL}")
    return worst


def op_histogram(path: str) -> collections.Counter:
    return collections.Counter(n.op_type for n in onnx.load(path).graph.node)


def describe(hist: collections.Counter) -> str:
    """One-line count of the LayerNorm and GELU patterns the fuser targets."""
    if hist["LayerNormalization"]:
        ln = f"{hist['LayerNormalization']} LayerNormalization"
    else:
        # Each decomposed LayerNorm has two ReduceMeans and one Pow.
        ln = f"{hist['ReduceMean'] // 2} decomposed (ReduceMean={hist['ReduceMean']}, Pow={hist['Pow']})"
    return f"LayerNorm: {ln}; GELU: {hist['Erf']} Erf"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out-dir",
        default=os.path.dirname(os.path.abspath(__file__)),
        help="where to write the .onnx files (default: this script's folder)",
    )
    args = parser.parse_args()
    # dynamo=False is deliberate: the TorchScript exporter is what emits the
    # decomposed opset-14 patterns fusekit fuses.
    warnings.filterwarnings("ignore", message="You are using the legacy TorchScript")
    os.makedirs(args.out_dir, exist_ok=True)

    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"onnx {onnx.__version__}, onnxruntime {ort.__version__}"
    )
    for variant in VARIANTS:
        path = os.path.join(args.out_dir, variant.filename)
        print(f"\n== {variant.filename} (attn={variant.attn_implementation}, opset {variant.opset})")
        model = build_model(variant.attn_implementation)
        export(model, variant, path)
        worst = verify(model, path)
        hist = op_histogram(path)
        print(f"  check_model ok; onnxruntime matches PyTorch (worst {worst:.2e} < {ATOL})")
        print(f"  size: {os.path.getsize(path)} bytes; {sum(hist.values())} nodes")
        print(f"  {describe(hist)}")
        print("  ops: " + ", ".join(f"{op}={n}" for op, n in sorted(hist.items())))


if __name__ == "__main__":
    main()
