#!/usr/bin/env python3
"""DeBERTa-v3's disentangled attention: fusekit's fused forms against the export and the peers.

    python benchmarks/deberta_forms.py --export DIR [--layers 12]   # in a venv with torch and transformers 5
    python benchmarks/deberta_forms.py DIR                          # fuse, check, optimize with the peers, time

The export is DebertaV2Model at DeBERTa-v3-base sizes (hidden 768, 12 heads, intermediate 3072,
256 position buckets, c2p and p2c, share_att_key) with ``--layers`` layers (4 by default; the
per-layer cost is what differs), a 1000-token vocabulary and random weights, through the
TorchScript exporter at opset 17. The peers are ONNX Runtime's transformers optimizer
(``model_type="bert"``, 12 heads, hidden 768) and the onnxscript rewriter (``optimize_for_ort``),
each as benchmarks/bench_peers.py runs them; onnxscript is skipped, with a note, where it is not
installed. Timed, interleaved round by round in one process per runtime (ONNX Runtime without
spinning, ``--threads`` threads):

  ONNX Runtime f32  the export (ORT's own optimizations at load) | ORT transformers optimizer |
                    onnxscript | fusekit --target ort (MultiHeadAttention, the bias as
                    attention_bias) | fusekit --target onnx
  OpenVINO f32      the export | fusekit --target onnx (ONNX Attention-23) | fusekit --target openvino
  OpenVINO bf16     the same, where the CPU reports BF16 (otherwise a note says it cannot be judged)

at batch 1 × 128 (no padding) and batch 8 × 128 with lengths 112, 87, 73, 50, 46, 24, 20, 17
(unpacked: ``--pack`` refuses DeBERTa's attention, whose bias mixes positions). Each row gives the
median wall time with the 10th-90th percentile range of the per-round times, and the median
process CPU time, in ms; the ratio is to the fastest peer (every row but fusekit's) by each
measure. On a shared machine the CPU time is the steadier of the two: it leaves out the time
the process waits for a core.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script: make `fusekit` and `benchmarks` importable
    sys.path.insert(0, str(REPO_ROOT))

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


def ort_runners(files: dict[str, Path], threads: int, disabled: dict[str, list[str]] | None = None):
    """``disabled``: per name, ORT graph optimizers the session leaves out."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = lambda name, p: ort.InferenceSession(str(p), so, disabled_optimizers=(disabled or {}).get(name))  # noqa: E731
    return {name: (lambda s: lambda f: s.run(None, f))(session(name, p)) for name, p in files.items()}


def term_forms(fused: Path) -> dict[str, Path]:
    """Exact alternatives to the ``ort`` form's additive term Where(masked, fill, bias), written into
    a copy of the fused model: the masked cells as MultiHeadAttention's 3-D key_padding_mask (kept
    cells 1) with mask_filter_value = the fill, the bias alone as attention_bias; or the bias plus
    Where(masked, fill, 0) ([B, 1, S, S]). Either gives each masked cell the fill, which absorbs
    any score, and every other cell the score plus the bias."""
    import onnx
    from onnx import helper, numpy_helper
    out = {}
    for form in ("key_padding_mask", "added fill"):
        model = onnx.load(fused)
        graph = model.graph
        made = {o: n for n in graph.node for o in n.output}
        graph.initializer.extend([numpy_helper.from_array(np.array([1], np.int64), "forms/head_axis"),
                                  numpy_helper.from_array(np.float32(0), "forms/zero")])
        for node in [n for n in graph.node if n.op_type == "MultiHeadAttention"]:
            masked, fill, bias = made[node.input[5]].input
            at = list(graph.node).index(node)
            if form == "key_padding_mask":
                names = [f"{node.name}/forms/{k}" for k in ("keep", "keep3", "kpm")]
                new = [helper.make_node("Not", [masked], [names[0]]),
                       helper.make_node("Squeeze", [names[0], "forms/head_axis"], [names[1]]),
                       helper.make_node("Cast", [names[1]], [names[2]], to=onnx.TensorProto.INT32)]
                node.input[4], node.input[5] = names[2], bias
                value = numpy_helper.to_array(next(i for i in graph.initializer if i.name == fill))
                node.attribute.append(helper.make_attribute("mask_filter_value", float(value.ravel()[0])))
            else:
                names = [f"{node.name}/forms/{k}" for k in ("fill", "term")]
                new = [helper.make_node("Where", [masked, fill, "forms/zero"], [names[0]]),
                       helper.make_node("Add", [bias, names[0]], [names[1]])]
                node.input[5] = names[1]
            for k, n in enumerate(new):
                graph.node.insert(at + k, n)
        out[form] = fused.with_suffix(f".{form.replace(' ', '_')}.onnx")
        onnx.save(model, out[form])
    return out


def ov_runners(files: dict[str, Path], threads: int, precision: str):
    import openvino as ov
    core = ov.Core()
    out = {}
    for name, p in files.items():
        compiled = core.compile_model(core.read_model(str(p)), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                                     "INFERENCE_PRECISION_HINT": precision})
        request = compiled.create_infer_request()
        out[name] = (lambda r: lambda f: r.infer(f))(request)
    return out


def timed(run, feed, reps: int) -> tuple[float, float]:
    """(wall, process CPU) ms per run."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(reps):
        run(feed)
    return (time.perf_counter() - wall) / reps * 1e3, (time.process_time() - cpu) / reps * 1e3


def table(title: str, runs: dict, settings: dict, rounds: int, reps: int, peers=None):
    """``peers``: the rows the ratios are to (the fastest of them); by default every row but fusekit's."""
    print(f"\n{title}")
    for label, feed in settings.items():
        wall, cpu = ({name: [] for name in runs} for _ in range(2))
        for run in runs.values():
            run(feed)  # warm-up
        for _ in range(rounds):
            for name, run in runs.items():
                w, c = timed(run, feed, reps)
                wall[name].append(w)
                cpu[name].append(c)
        med = lambda s: statistics.median(s)  # noqa: E731
        peers = peers or [name for name in runs if not name.startswith("fusekit")]
        best_wall, best_cpu = min(med(wall[n]) for n in peers), min(med(cpu[n]) for n in peers)
        for name in runs:
            q = statistics.quantiles(wall[name], n=10) if rounds > 1 else [wall[name][0]] * 9
            print(f"  {label:<14} {name:<22} {med(wall[name]):8.1f} ms ({q[0]:.1f}–{q[-1]:.1f}) "
                  f"{med(wall[name]) / best_wall:5.2f}×   cpu {med(cpu[name]):8.1f} ms {med(cpu[name]) / best_cpu:5.2f}×")


def peers(src: Path) -> dict[str, Path]:
    """The peers' outputs, each optimized as benchmarks/bench_peers.py optimizes it."""
    from benchmarks.bench_peers import optimize_here
    out = {}
    for tool, name in (("ort-transformers", "ORT optimizer"), ("onnxscript", "onnxscript")):
        dst = src.with_suffix(f".{tool}.onnx")
        try:
            optimize_here(tool, str(src), str(dst), 12, 768)
        except ImportError as e:
            print(f"{name}: skipped ({e})")
            continue
        out[name] = dst
    return out


def has_bf16() -> bool:
    import openvino as ov
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def forms(src: Path, args) -> int:
    """The ``ort`` form against its exact alternatives, and against itself with no SkipLayerNormalization
    at all: fusekit's left out and ORT's own load-time fusion off (it fuses Add + LayerNormalization
    wherever the shapes are known, fusekit's outputs included)."""
    import onnx
    import fusekit
    files = {"export": src}
    for name, disable in (("fusekit ort", ()), ("no SkipLayerNorm", ("SkipLayerNorm",))):
        fused, report = fusekit.optimize(src, target="ort", trials=1, disable=disable)
        print(f"{name}: {dict(report.counts)}, {report.verification.summary().splitlines()[0]}")
        files[name] = src.with_suffix(f".{name.replace(' ', '_')}.onnx")
        onnx.save(fused, files[name])
    files.update(term_forms(files["fusekit ort"]))
    runs = ort_runners(files, args.threads, {"no SkipLayerNorm": ["SkipLayerNormFusion"]})
    padded = feeds(8, 128, LENGTHS)
    padded["attention_mask"][4:] = padded["attention_mask"][4:, ::-1].copy()  # left padding too
    shipped = runs["fusekit ort"](padded)[0]
    for name, run in runs.items():
        print(f"{name}: max |Δ| from fusekit ort at 8 × 128, right and left padding: "
              f"{float(np.abs(run(padded)[0] - shipped).max()):.2g}")
    print("uptime:", Path("/proc/loadavg").read_text().strip())
    for settings, reps in (({"1 × 128": feeds(1, 128)}, args.reps),
                           ({"8 × 128 padded": feeds(8, 128, LENGTHS)}, args.batch8_reps)):
        table(f"ONNX Runtime f32, {args.threads} threads (ratios to the export)", runs, settings, args.rounds, reps,
              peers=["export"])
    print("uptime:", Path("/proc/loadavg").read_text().strip())
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--export", action="store_true")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch8-reps", type=int, default=1, help="runs per round at 8 × 128")
    parser.add_argument("--forms", action="store_true",
                        help="time the ort form's exact alternatives instead (and SkipLayerNorm's share)")
    args = parser.parse_args(argv)
    if args.export:
        export(args.dir, args.layers)
        return 0
    import onnx
    import fusekit
    src = args.dir / "deberta.onnx"
    if args.forms:
        return forms(src, args)
    files = {"export": src}
    for target in ("ort", "onnx", "openvino"):
        fused, report = fusekit.optimize(src, target=target, trials=2)
        print(f"fusekit --target {target}: {dict(report.counts)}, {report.verification.summary().splitlines()[0]}")
        files[target] = args.dir / f"deberta.{target}.onnx"
        onnx.save(fused, files[target])
    found = peers(src)
    print("uptime:", Path("/proc/loadavg").read_text().strip())
    one, eight = {"1 × 128": feeds(1, 128)}, {"8 × 128 padded": feeds(8, 128, LENGTHS)}
    ort_files = {"export": src, **found, "fusekit ort": files["ort"], "fusekit onnx": files["onnx"]}
    ov_files = {"export": src, "fusekit onnx": files["onnx"], "fusekit openvino": files["openvino"]}
    title = f"{{}}, {args.threads} threads"
    for settings, reps in ((one, args.reps), (eight, args.batch8_reps)):
        table(title.format("ONNX Runtime f32"), ort_runners(ort_files, args.threads), settings, args.rounds, reps)
        table(title.format("OpenVINO f32"), ov_runners(ov_files, args.threads, "f32"), settings, args.rounds, reps)
        if has_bf16():
            table(title.format("OpenVINO bf16"), ov_runners(ov_files, args.threads, "bf16"), settings, args.rounds, reps)
    if not has_bf16():
        print("\nOpenVINO bf16: not timed, this CPU reports no BF16 capability (OpenVINO would run f32)")
    print("uptime:", Path("/proc/loadavg").read_text().strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
