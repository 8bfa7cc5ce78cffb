#!/usr/bin/env python3
"""DeBERTa-v3's disentangled attention: what fusekit's fused forms cost against the export as written.

    python benchmarks/deberta_forms.py --export DIR     # in a venv with torch and transformers 5
    python benchmarks/deberta_forms.py DIR              # with fusekit: fuse, check, time

The export is DebertaV2Model at DeBERTa-v3-base sizes (hidden 768, 12 heads, intermediate 3072,
256 position buckets, c2p and p2c, share_att_key) with ``--layers`` layers (4 by default; the
per-layer cost is what differs), a 1000-token vocabulary and random weights, through the
TorchScript exporter at opset 17. Timed, interleaved round by round in one process per runtime
(ONNX Runtime without spinning, 2 threads):

  ONNX Runtime  the export (ORT's own optimizations at load) | fusekit --target ort
                (MultiHeadAttention with the bias as attention_bias) | fusekit --target onnx
  OpenVINO f32  the export | fusekit --target onnx (ONNX Attention-23) | fusekit --target openvino

at batch 1 × 128 (no padding) and batch 8 × 128 with lengths 112, 87, 73, 50, 46, 24, 20, 17.
Prints medians with the 10th-90th percentile range of the per-round times, in ms.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

LENGTHS = [112, 87, 73, 50, 46, 24, 20, 17]


def export(out: Path, layers: int):
    import torch
    import transformers
    config = transformers.DebertaV2Config(vocab_size=1000, hidden_size=768, intermediate_size=3072,
                                          num_hidden_layers=layers, num_attention_heads=12,
                                          max_position_embeddings=512, type_vocab_size=0, relative_attention=True,
                                          position_buckets=256, max_relative_positions=-1, norm_rel_ebd="layer_norm",
                                          share_att_key=True, pos_att_type=["p2c", "c2p"],
                                          position_biased_input=False, layer_norm_eps=1e-7, pad_token_id=0)
    torch.manual_seed(0)
    model = transformers.DebertaV2Model._from_config(config, attn_implementation="eager").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)

    class Encoder(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    mask = torch.ones(2, 12, dtype=torch.int64)
    mask[1, 9:] = 0
    names = ["input_ids", "attention_mask"]
    out.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(Encoder(model), (torch.randint(4, 1000, (2, 12)), mask), out / "deberta.onnx", dynamo=False,
                      opset_version=17, input_names=names, output_names=["last_hidden_state"],
                      dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names + ["last_hidden_state"]})


def feeds(batch: int, seq: int, lengths=None):
    rng = np.random.default_rng(0)
    mask = np.ones((batch, seq), np.int64)
    for b, n in enumerate(lengths or []):
        mask[b, n:] = 0
    return {"input_ids": rng.integers(4, 1000, (batch, seq)).astype(np.int64), "attention_mask": mask}


def ort_runners(files: dict[str, Path]):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return {name: (lambda s: lambda f: s.run(None, f))(ort.InferenceSession(str(p), so)) for name, p in files.items()}


def ov_runners(files: dict[str, Path]):
    import openvino as ov
    core = ov.Core()
    out = {}
    for name, p in files.items():
        compiled = core.compile_model(core.read_model(str(p)), "CPU", {"INFERENCE_NUM_THREADS": 2,
                                                                     "INFERENCE_PRECISION_HINT": "f32"})
        request = compiled.create_infer_request()
        out[name] = (lambda r: lambda f: r.infer(f))(request)
    return out


def timed(run, feed, reps: int) -> float:
    start = time.perf_counter()
    for _ in range(reps):
        run(feed)
    return (time.perf_counter() - start) / reps * 1e3


def table(title: str, runs: dict, settings: dict, rounds: int, reps: int):
    print(f"\n{title}")
    for label, feed in settings.items():
        samples = {name: [] for name in runs}
        for run in runs.values():
            run(feed)  # warm-up
        for _ in range(rounds):
            for name, run in runs.items():
                samples[name].append(timed(run, feed, reps))
        base = statistics.median(next(iter(samples.values())))
        for name, s in samples.items():
            q = statistics.quantiles(s, n=10) if len(s) > 1 else [s[0]] * 9
            print(f"  {label:<14} {name:<22} {statistics.median(s):8.1f} ms  ({q[0]:.1f}–{q[-1]:.1f})"
                  f"  {statistics.median(s) / base:5.2f}×")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--export", action="store_true")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    if args.export:
        export(args.dir, args.layers)
        return 0
    import onnx
    import fusekit
    src = args.dir / "deberta.onnx"
    files = {"export": src}
    for target in ("ort", "onnx", "openvino"):
        fused, report = fusekit.optimize(src, target=target, trials=2)
        print(f"fusekit --target {target}: {dict(report.counts)}, {report.verification.summary().splitlines()[0]}")
        files[target] = args.dir / f"deberta.{target}.onnx"
        onnx.save(fused, files[target])
    settings = {"1 × 128": feeds(1, 128), "8 × 128 padded": feeds(8, 128, LENGTHS)}
    table("ONNX Runtime f32, 2 threads", ort_runners({"export": src, "fusekit ort": files["ort"],
                                                       "fusekit onnx": files["onnx"]}),
          settings, args.rounds, args.reps)
    table("OpenVINO f32, 2 threads", ov_runners({"export": src, "fusekit onnx": files["onnx"],
                                                "fusekit openvino": files["openvino"]}),
          settings, args.rounds, args.reps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
