#!/usr/bin/env python3
"""ModernBERT at base sizes: fusekit's forms against the peers, and which form each CPU runtime runs fastest.

A random-weight ModernBERT at base sizes (hidden 768, 12 heads, intermediate 1152, window
128, global attention every third layer, vocabulary 50368; ``--layers`` deep, 6 by default:
two global and four local layers) is exported by the TorchScript exporter (opset 17, eager
attention; ``--exporter dynamo``: the dynamo exporter at opset 18) and cached in
benchmarks/models/. Its forms:

  original   as exported (ORT's and OpenVINO's own session fusions apply)
  ort        fusekit --target ort: com.microsoft RotaryEmbedding on Q and K, MultiHeadAttention
             (key padding mask on global layers, the [B, 1, S, S] mask as attention_bias on
             local ones), SkipLayerNormalization, Gelu
  onnx       fusekit --target onnx: opset-23 RotaryEmbedding and Attention, LayerNormalization, Gelu
  openvino   fusekit --target openvino (attention as exported, LayerNormalization, Gelu)
  ort-pack   fusekit --target ort --pack (the token-wise ops on the real tokens alone)
  ov-pack    fusekit --target openvino --pack (attention as exported, the rest packed)
  ort-no-sln, ort-pack-no-sln   the ort forms with ``--disable SkipLayerNorm`` (only when named
             in --forms: what ORT's SkipLayerNormalization kernel costs; see skip_layer_norm_forms.py)

and the peers', each made in a child process of its own (benchmarks/bench_peers.py's tools):

  ort-opt    ONNX Runtime's transformers optimizer, model_type="bert", 12 heads, hidden 768
  onnxscript the onnxscript rewriter's ort_fusions (optimize_for_ort)

A peer that fails is named with its error and left out. Each form is timed in ONNX Runtime (2
threads, no spin-wait: original, ort, onnx, ort-opt, onnxscript, ort-pack) and OpenVINO f32
(original, openvino, onnx, ov-pack; the ort forms hold com.microsoft ops OpenVINO does not read):
interleaved round-robin after warm-up, at batch 1 × 128 (all tokens real) and batch 8 × 128 with
the README's realistic lengths. Printed: the median and 10th percentile in ms, the ratio of
medians to the original and to the best peer in the same runtime (the peers: ort-opt and
onnxscript on ONNX Runtime, the original on OpenVINO). On a shared machine the 10th percentile is
the steadier number. OpenVINO bf16 is left out: on a CPU without BF16 instructions OpenVINO
emulates it (tens of seconds per batch).

Usage: python benchmarks/modernbert_forms.py [--layers 6] [--iterations 30] [--runtimes ort,openvino]
           [--exporter torchscript|dynamo] [--forms original,ort,...]

Needs torch and transformers for the export, onnxscript for its peer (the bench extra).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(REPO_ROOT))
MODELS = REPO_ROOT / "benchmarks" / "models"
LENGTHS = [112, 87, 73, 50, 46, 24, 20, 17]


def export(layers: int, exporter: str = "torchscript") -> Path:
    opset = 17 if exporter == "torchscript" else 18
    path = MODELS / f"modernbert-base_L{layers}_opset{opset}_eager_{exporter}.onnx"
    if path.exists():
        return path
    import torch
    import transformers
    torch.manual_seed(0)
    config = transformers.ModernBertConfig(
        vocab_size=50368, hidden_size=768, intermediate_size=1152, num_hidden_layers=layers, num_attention_heads=12,
        max_position_embeddings=8192, global_attn_every_n_layers=3, local_attention=128, pad_token_id=0,
        bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2)
    model = transformers.ModernBertModel._from_config(config, attn_implementation="eager").eval()

    class Encoder(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    names = ["input_ids", "attention_mask"]
    mask = torch.ones(2, 160, dtype=torch.int64)
    mask[1, 100:] = 0
    MODELS.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.onnx.export(Encoder(model), (torch.randint(4, 1000, (2, 160)), mask), tmp,
                      dynamo=exporter == "dynamo", external_data=False, opset_version=opset, input_names=names,
                      output_names=["last_hidden_state"],
                      dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names + ["last_hidden_state"]})
    tmp.rename(path)
    return path


FORMS = {"ort": ("ort", False), "onnx": ("onnx", False), "openvino": ("openvino", False),
         "ort-pack": ("ort", True), "ov-pack": ("openvino", True),
         # A/B of the SkipLayerNorm kernel: timed only when named in --forms
         "ort-no-sln": ("ort", False), "ort-pack-no-sln": ("ort", True)}
DIAGNOSTIC = {"ort-no-sln", "ort-pack-no-sln"}
PEERS = {"ort-opt": "ort-transformers", "onnxscript": "onnxscript"}  # form → bench_peers' tool name
RUNS_ON = {"ort": ["original", "ort", "onnx", "ort-opt", "onnxscript", "ort-pack", "ort-no-sln", "ort-pack-no-sln"],
           "openvino": ["original", "openvino", "onnx", "ov-pack"]}
BEST_PEER_AMONG = {"ort": ["ort-opt", "onnxscript"], "openvino": ["original"]}


def forms(source: Path, wanted: set[str]) -> dict[str, Path]:
    import onnx

    import fusekit
    from benchmarks.bench_peers import optimize_in_child
    built = {"original": source}
    for name, (target, pack) in FORMS.items():
        dest = source.with_name(f"{source.stem}.fusekit-{name}.onnx")
        if name in wanted and not dest.exists():
            disable = ["SkipLayerNorm"] if name.endswith("no-sln") else []
            fused, report = fusekit.optimize(source, target=target, verify=False, pack=pack, disable=disable)
            onnx.save(fused, dest)
            print(f"{name}: {report.counts}", file=sys.stderr)
        if dest.exists():
            built[name] = dest
    for name, tool in PEERS.items():
        dest = source.with_name(f"{source.stem}.{name}.onnx")
        if name in wanted and not dest.exists():
            result = optimize_in_child(tool, source, dest, heads=12, hidden=768)
            if "error" in result:
                print(f"{name}: failed: {result['error']}", file=sys.stderr)
        if dest.exists():
            built[name] = dest
    return built


def feeds(batch: int, seq: int, lengths: list[int] | None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    mask = np.ones((batch, seq), np.int64)
    for b, n in enumerate(lengths or []):
        mask[b, n:] = 0
    return {"input_ids": rng.integers(4, 1000, (batch, seq)).astype(np.int64), "attention_mask": mask}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--runtimes", default="ort,openvino")
    parser.add_argument("--exporter", choices=["torchscript", "dynamo"], default="torchscript")
    parser.add_argument("--forms", default=",".join(["original", *(f for f in FORMS if f not in DIAGNOSTIC), *PEERS]),
                        help="which forms to build and time (the original is always timed; "
                             "ort-no-sln and ort-pack-no-sln: the ort forms without SkipLayerNorm)")
    args = parser.parse_args(argv)
    from fusekit.runtime import backends
    from fusekit.runtime.bench import measure
    wanted = set(args.forms.split(","))
    built = forms(export(args.layers, args.exporter), wanted)
    cases = [(1, 128, None), (8, 128, LENGTHS)]
    print(f"{'runtime':9} {'shape':7} {'form':15} {'median ms':>10} {'p10 ms':>9} {'vs original':>12}"
          f" {'vs best peer':>13}")
    for runtime in args.runtimes.split(","):
        names = [n for n in RUNS_ON[runtime] if n in built and (n == "original" or n in wanted)]
        runners = [backends.load(runtime, built[n], threads=2) for n in names]
        for batch, seq, lengths in cases:
            f = feeds(batch, seq, lengths)
            samples = measure(runners, [f] * len(runners), args.iterations, warmup=2)
            medians = {name: statistics.median(s) for name, s in zip(names, samples)}
            peers = [medians[n] for n in BEST_PEER_AMONG[runtime] if n in medians]
            best = min(peers) if peers else float("nan")
            for name, s in zip(names, samples):
                med, p10 = medians[name], float(np.percentile(s, 10))
                print(f"{runtime:9} {batch}×{seq:<5} {name:15} {med:10.1f} {p10:9.1f}"
                      f" {med / medians['original']:11.2f}× {med / best:12.2f}×", flush=True)


if __name__ == "__main__":
    main()
