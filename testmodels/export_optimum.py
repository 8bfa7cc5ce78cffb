#!/usr/bin/env python3
"""Export tiny random-weight encoders with Hugging Face Optimum (optimum-onnx).

Writes testmodels/exporters/<family>_optimum_<variant>.onnx and merges their
entries into testmodels/exporters/manifest.json (see testmodels/README.md).

Families (transformers 4.57, the version optimum-onnx 0.1 pins; each model built
from a config, every weight drawn at random, biases and LayerNorm γ/β included,
saved with save_pretrained to a temporary folder and exported from there, as
`optimum-cli export onnx --model DIR --task feature-extraction` does):

  bert, roberta, distilbert, albert (and xlm-roberta, see below)
  (2 layers, hidden 32, 4 heads, intermediate 64, vocabulary 128, 64 positions;
  ALBERT with embedding size 16 and its default tanh GELU)

Variants: `default` (Optimum's default opset), `opset14` (--opset 14), `O1`
(--optimize O1: ONNX Runtime's basic graph optimizations applied by Optimum) and
`fp16` (--dtype fp16: the model loaded in float16 and exported as it is).

Every file is compared with PyTorch (float32) on right- and left-padded batches:
within 1e-4 of the output's scale, 1e-2 for fp16.

xlm-roberta is accepted but not exported by default: XLMRobertaModel is RobertaModel's
code, and at the same config and seed its export is byte-identical to roberta's.

Regenerate (in a virtualenv of its own: these are not fusekit's dependencies; torch
first, so that optimum does not pull a CUDA build):

    python -m venv /work/venvs/hf
    /work/venvs/hf/bin/pip install torch==2.13.0
    /work/venvs/hf/bin/pip install optimum-onnx onnxconverter-common onnxruntime
    /work/venvs/hf/bin/python testmodels/export_optimum.py
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from exporters_common import OUT_DIR, check_against, merge_manifest  # noqa: E402

LAYERS, HIDDEN, HEADS, INTERMEDIATE, VOCAB, POSITIONS = 2, 32, 4, 64, 128, 64
VARIANTS = {"default": {}, "opset14": {"opset": 14}, "O1": {"optimize": "O1"}, "fp16": {"dtype": "fp16"}}
FLAGS = {"default": "", "opset14": " --opset 14", "O1": " --optimize O1", "fp16": " --dtype fp16"}


def build(family: str):
    import transformers as tr

    common = dict(vocab_size=VOCAB, num_hidden_layers=LAYERS, num_attention_heads=HEADS, hidden_size=HIDDEN,
                  intermediate_size=INTERMEDIATE, max_position_embeddings=POSITIONS)
    if family == "bert":
        model = tr.BertModel(tr.BertConfig(**common, type_vocab_size=2))
    elif family in ("roberta", "xlm-roberta"):  # positions count from padding_idx + 1
        config_class = tr.RobertaConfig if family == "roberta" else tr.XLMRobertaConfig
        config = config_class(**common | {"max_position_embeddings": POSITIONS + 2}, type_vocab_size=1,
                              pad_token_id=1)
        model = (tr.RobertaModel if family == "roberta" else tr.XLMRobertaModel)(config)
    elif family == "distilbert":
        model = tr.DistilBertModel(tr.DistilBertConfig(vocab_size=VOCAB, n_layers=LAYERS, n_heads=HEADS, dim=HIDDEN,
                                                       hidden_dim=INTERMEDIATE, max_position_embeddings=POSITIONS))
    elif family == "albert":
        model = tr.AlbertModel(tr.AlbertConfig(**common, embedding_size=16, type_vocab_size=2))
    else:
        raise ValueError(family)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():  # every weight random: γ around 1, the rest around 0
            p.copy_(torch.randn_like(p) * 0.1 + (1.0 if "LayerNorm.weight" in name or "layer_norm.weight" in name
                                                  else 0.0))
    return model.eval()


def export(family: str, variants, out_dir: Path) -> list[dict]:
    import onnxruntime
    import optimum.exporters.onnx as optimum_onnx
    import transformers
    from importlib.metadata import version

    model = build(family)
    entries = []
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(Path(tmp) / "model")
        for variant in variants:
            out = Path(tmp) / variant
            optimum_onnx.main_export(str(Path(tmp) / "model"), output=out, task="feature-extraction",
                                     do_validation=False, **VARIANTS[variant])
            onnx_file = out / "model.onnx"  # --optimize rewrites it in place
            path = out_dir / f"{family}_optimum_{variant}.onnx"
            shutil.copyfile(onnx_file, path)

            def reference(feeds):
                with torch.no_grad():
                    result = model(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in feeds.items()})
                return {"last_hidden_state": result.last_hidden_state.numpy()}
            names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in _inputs(path)]
            entry = check_against(path, reference, names, vocab=VOCAB, rtol=1e-2 if variant == "fp16" else 1e-4)
            entry.update(family=family, route=f"optimum-{family}", exporter="optimum", variant=variant,
                         opset=entry["opsets"]["ai.onnx"],
                         description=f"optimum-cli export onnx --task feature-extraction{FLAGS[variant]}",
                         versions={"optimum-onnx": version("optimum-onnx"), "optimum": version("optimum"),
                                   "transformers": transformers.__version__, "torch": torch.__version__,
                                   "onnxruntime": onnxruntime.__version__},
                         layers=LAYERS, hidden=HIDDEN, heads=HEADS, intermediate=INTERMEDIATE)
            entries.append(entry)
            print(f"{path.name}: {entry['size_bytes']:,} bytes, {entry['nodes']} nodes, "
                  f"max abs diff {entry['max_abs_diff']:.2e}")
    return entries


def _inputs(path: Path) -> list[str]:
    import onnx
    return [i.name for i in onnx.load(path).graph.input]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="bert,roberta,distilbert,albert")  # xlm-roberta: see below
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    entries, failures = [], {}
    for family in args.families.split(","):
        try:
            entries += export(family, args.variants.split(","), args.out_dir)
        except Exception as e:  # one family failing must not cost the others
            failures[f"optimum-{family}"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"
            print(f"{family}: FAILED {failures[f'optimum-{family}']}", file=sys.stderr)
    merge_manifest(args.out_dir, entries, failures)


if __name__ == "__main__":
    main()
