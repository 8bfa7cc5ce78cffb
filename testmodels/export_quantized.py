#!/usr/bin/env python3
"""Small INT8 encoders as the quantizers users run write them: testmodels/int8/quantizers/.

Each stage runs in the environment its tool needs (none of them is a fusekit dependency) and
merges its files' entries into testmodels/int8/quantizers/manifest.json:

  sources   FP32 encoders from transformers 5 through the TorchScript exporter, the models every
            quantizer below starts from: BERT (eager attention, opset 14: LayerNorm decomposed),
            DistilBERT (eager, opset 17) and RoBERTa (sdpa, opset 17); hidden 32, 4 heads,
            intermediate 64, 2 layers, vocabulary 200, no pooler; every parameter drawn at
            random, biases and LayerNorm γ/β included.                          (torch, transformers)
  qat       QAT exports of the BERT: torch.fake_quantize_per_tensor_affine on every Linear's input
            and fake_quantize_per_channel_affine on its weight, exported with torch.onnx
            (TorchScript, opset 14). `qat_linear`: uint8 asymmetric activations (torch.ao's default
            observer); `qat_qdqbert`: int8 symmetric activations and, as QDQBERT does, Q, K, V and the
            softmax output quantized too. Ranges calibrated by min/max on the calibration batches
            (no training: these are export forms, not trained models).       (torch, transformers)
  nncf      nncf.quantize on the ONNX model (ONNX backend): `model_type=TRANSFORMER`, and the
            default preset.                                                               (nncf)
  optimum   Optimum's ORTQuantizer with AutoQuantizationConfig.avx512_vnni(is_static=False,
            per_channel=True): dynamic, s8 per-channel weights; and the transformers.js u8 settings,
            onnxruntime.quantization.quantize_dynamic with QUInt8 per-tensor weights, every op type
            it quantizes by default.                          (optimum-onnx, transformers 4.57)
  inc       Intel Neural Compressor for ONNX (onnx-neural-compressor) static post-training
            quantization, QOperator and QDQ.                     (numpy<2, scipy, prettytable)

Calibration (every quantizer that calibrates): 8 seeded batches of meaningful inputs, ids inside
the vocabulary and clear of the special ids, padding ids at padded positions, 0/1 masks padded on
the right, on the left and not at all (`calibration_feeds`).

Regenerate (see testmodels/int8/README.md for the versions; any venv paths will do):

    python testmodels/export_quantized.py sources qat      # torch 2.13, transformers 5
    python -m venv --system-site-packages V1 && V1/bin/pip install nncf==3.4.0
    V1/bin/python testmodels/export_quantized.py nncf
    python -m venv --system-site-packages V2        # with torch importable: optimum needs it
    V2/bin/pip install optimum-onnx==0.1.0 transformers==4.57.6
    V2/bin/python testmodels/export_quantized.py optimum
    python -m venv V3 && V3/bin/pip install onnx-neural-compressor==1.0 'numpy<2' scipy prettytable onnx onnxruntime
    V3/bin/python testmodels/export_quantized.py inc

then, in fusekit's own environment, record what fusekit reaches on each:

    python testmodels/quantizers_status.py
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from importlib.metadata import version
from pathlib import Path

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "int8" / "quantizers"
MANIFEST = OUT_DIR / "manifest.json"
DESCRIPTION = ("Tiny random-weight encoders quantized by the tools users run (NNCF, Optimum / ONNX Runtime "
               "dynamic, Intel Neural Compressor, QAT exports); made by testmodels/export_quantized.py, "
               "fusekit_today by testmodels/quantizers_status.py (see testmodels/int8/README.md).")

HIDDEN, HEADS, INTERMEDIATE, LAYERS, VOCAB, POSITIONS = 32, 4, 64, 2, 200, 64
# family: (transformers classes, opset, attention, pad id, token types)
FAMILIES = {
    "bert": ("BertConfig", "BertModel", 14, "eager", 0, True),
    "distilbert": ("DistilBertConfig", "DistilBertModel", 17, "eager", 0, False),
    "roberta": ("RobertaConfig", "RobertaModel", 17, "sdpa", 1, False),
}


def source(family: str) -> Path:
    return OUT_DIR / f"{family}_fp32.onnx"


# --------------------------------------------------------------------------- inputs (numpy only)

# (batch, sequence, padding per row: +n pads n on the right, -n on the left)
CALIBRATION = [(2, 16, (0, 5)), (3, 9, (0, -4, 2)), (1, 16, (0,)), (4, 7, (0, 2, -3, 1)),
               (2, 12, (-5, 0)), (3, 20, (0, 9, 4)), (2, 5, (0, 0)), (4, 11, (0, -6, 3, -2))]


def padding_mask(batch: int, seq: int, pads) -> np.ndarray:
    """A 0/1 mask [batch, seq]; per row, +n pads its last n positions, -n its first n."""
    mask = np.ones((batch, seq), np.int64)
    for row, pad in enumerate(pads):
        if pad > 0:
            mask[row, seq - pad:] = 0
        elif pad < 0:
            mask[row, :-pad] = 0
    return mask


def feeds(family: str, batch: int, seq: int, pads, seed: int) -> dict[str, np.ndarray]:
    """Token ids inside the vocabulary (the special ids 0-2 left out), pad ids where the 0/1 mask pads."""
    pad_id, token_types = FAMILIES[family][4], FAMILIES[family][5]
    rng = np.random.default_rng(seed)
    mask = padding_mask(batch, seq, pads)
    ids = np.where(mask == 1, rng.integers(3, VOCAB, (batch, seq)), pad_id).astype(np.int64)
    out = {"input_ids": ids, "attention_mask": mask}
    if token_types:
        out["token_type_ids"] = (rng.integers(0, 2, (batch, seq)) * mask).astype(np.int64)
    return out


def calibration_feeds(family: str) -> list[dict[str, np.ndarray]]:
    return [feeds(family, b, s, p, seed=100 + i) for i, (b, s, p) in enumerate(CALIBRATION)]


# --------------------------------------------------------------------------- manifest

def histogram(model: onnx.ModelProto) -> dict[str, int]:
    ops = Counter((f"{n.domain}." if n.domain not in ("", "ai.onnx") else "") + n.op_type for n in model.graph.node)
    return dict(sorted(ops.items()))


def describe(path: Path, family: str, quantizer: str, tool_versions: dict, settings: dict, form: str) -> dict:
    model = onnx.load(path)
    onnx.checker.check_model(model)
    return {"file": path.name, "family": family, "source": source(family).name, "quantizer": quantizer,
            "form": form, "settings": settings, "versions": tool_versions, "size_bytes": path.stat().st_size,
            "nodes": len(model.graph.node),
            "opsets": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
            "ops": histogram(model)}


def merge(entries: list[dict], failures: dict[str, str] | None = None) -> None:
    """Replace these files' entries (keeping what quantizers_status.py recorded for them)."""
    manifest = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {"description": DESCRIPTION}
    by_file = {e["file"]: e for e in manifest.get("models", [])}
    for e in entries:
        by_file[e["file"]] = by_file.get(e["file"], {}) | e
    manifest["models"] = sorted(by_file.values(), key=lambda e: e["file"])
    manifest["failures"] = dict(sorted((manifest.get("failures", {}) | (failures or {})).items()))
    manifest["total_onnx_bytes"] = sum(e["size_bytes"] for e in manifest["models"])
    MANIFEST.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    for e in entries:
        print(f"{e['file']}: {e['size_bytes']:,} bytes, {e['nodes']} nodes", file=sys.stderr)


def ort_versions() -> dict:
    return {"onnxruntime": version("onnxruntime"), "onnx": version("onnx")}


# --------------------------------------------------------------------------- sources and QAT (torch)

def _torch_model(family: str, attention: str | None = None):
    import torch
    import transformers
    config_cls, model_cls, _, default_attention, pad_id, _ = FAMILIES[family]
    common = dict(vocab_size=VOCAB, max_position_embeddings=POSITIONS + (2 if family == "roberta" else 0),
                  pad_token_id=pad_id)
    if family == "distilbert":
        config = transformers.DistilBertConfig(dim=HIDDEN, n_heads=HEADS, hidden_dim=INTERMEDIATE, n_layers=LAYERS,
                                               activation="gelu", **common)
    else:
        config = getattr(transformers, config_cls)(hidden_size=HIDDEN, num_attention_heads=HEADS,
                                                   intermediate_size=INTERMEDIATE, num_hidden_layers=LAYERS,
                                                   hidden_act="gelu", type_vocab_size=2 if family == "bert" else 1,
                                                   **common)
    kwargs = {} if family == "distilbert" else {"add_pooling_layer": False}
    model = getattr(transformers, model_cls)._from_config(config, attn_implementation=attention or default_attention,
                                                          **kwargs)
    torch.manual_seed(0)  # every parameter at random: γ around 1, everything else around 0
    gammas = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.LayerNorm)}
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.1 + (1.0 if id(p) in gammas else 0.0))
    return model.eval()


def _encoder(model, token_types: bool):
    import torch

    class Encoder(torch.nn.Module):  # positional inputs, one output, as the exporter wants them
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            extra = {"token_type_ids": token_type_ids} if token_types else {}
            return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
    return Encoder().eval()


def _export(module, path: Path, opset: int, example: dict, checks: list[dict], atol: float, mean=False) -> float:
    """TorchScript export, compared with PyTorch on ``checks``: the largest difference (``mean``: the
    mean difference on valid tokens, relative to the output's scale) must stay within ``atol``."""
    import warnings

    import onnxruntime as ort
    import torch
    names = list(example)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(torch.from_numpy(example[n]) for n in names), str(path), dynamo=False,
                          opset_version=opset, do_constant_folding=True, input_names=names,
                          output_names=["last_hidden_state"],
                          dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names + ["last_hidden_state"]})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for f in checks:
        with torch.no_grad():
            want = module(*(torch.from_numpy(f[n]) for n in names)).numpy()
        diff = np.abs(session.run(None, f)[0] - want)
        worst = max(worst, float(diff[f["attention_mask"] == 1].mean() / np.abs(want).max() if mean else diff.max()))
    if worst > atol:
        raise SystemExit(f"{path.name}: ONNX Runtime differs from PyTorch by {worst:.3g}" + (" (mean)" if mean else ""))
    return worst


def _family_export(module, family: str, path: Path, opset: int, atol: float) -> float:
    checks = [feeds(family, b, s, p, seed=10 + i) for i, (b, s, p) in enumerate(CALIBRATION[:4])]
    return _export(module, path, opset, feeds(family, 2, 8, (0, 3), seed=0), checks, atol)


def torch_versions() -> dict:
    import torch
    import transformers
    return {"torch": torch.__version__, "transformers": transformers.__version__} | ort_versions()


def stage_sources() -> list[dict]:
    entries = []
    for family, (_, _, opset, attention, _, token_types) in FAMILIES.items():
        path = source(family)
        worst = _family_export(_encoder(_torch_model(family), token_types), family, path, opset, 1e-4)
        entries.append(describe(path, family, "none (FP32 source)", torch_versions(),
                                {"opset": opset, "attention": attention, "max_abs_diff_to_pytorch": worst}, "fp32"))
    return entries


class _Observer:
    """Min/max of what passes through, then a fake quantization on that range."""

    def __init__(self, signed: bool):
        self.signed, self.lo, self.hi, self.calibrating = signed, np.inf, -np.inf, True

    def __call__(self, x):
        import torch
        if self.calibrating:
            self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))
            return x
        if self.signed:  # symmetric int8, zero point 0 (pytorch-quantization, as QDQBERT)
            scale = max(abs(self.lo), abs(self.hi)) / 127.0
            return torch.fake_quantize_per_tensor_affine(x, scale, 0, -128, 127)
        lo, hi = min(self.lo, 0.0), max(self.hi, 0.0)  # asymmetric uint8 (torch.ao's default observer)
        scale = (hi - lo) / 255.0
        return torch.fake_quantize_per_tensor_affine(x, scale, int(round(-lo / scale)), 0, 255)


def _fake_quantized_linear(linear, signed: bool):
    import torch

    class FakeQuantizedLinear(torch.nn.Module):
        """A Linear whose input (per tensor) and weight (per output channel, symmetric int8) are fake-quantized."""

        def __init__(self):
            super().__init__()
            self.weight, self.bias = linear.weight, linear.bias
            self.observer = _Observer(signed)

            # the weight's ranges are a buffer, as a QAT model's are: constants in the export
            self.register_buffer("scale", (linear.weight.detach().abs().amax(dim=1) / 127.0).clamp(min=1e-8))
            self.register_buffer("zero_point", torch.zeros(linear.weight.shape[0], dtype=torch.int32))

        def forward(self, x):
            w = torch.fake_quantize_per_channel_affine(self.weight, self.scale, self.zero_point, 0, -128, 127)
            return torch.nn.functional.linear(self.observer(x), w, self.bias)
    return FakeQuantizedLinear()


def _qdqbert_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' eager attention with QDQBERT's quantizers on Q, K, V and the probabilities."""
    import torch
    q, k, v = module.q_observer(query), module.k_observer(key), module.v_observer(value)
    scores = torch.matmul(q, k.transpose(2, 3)) * (scaling if scaling is not None else query.size(-1) ** -0.5)
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = module.p_observer(torch.nn.functional.softmax(scores, dim=-1))
    return torch.matmul(probs, v).transpose(1, 2).contiguous(), probs


def qat_export(model, calibration: list[dict], path: Path, signed: bool, attention_too: bool,
               checks: list[dict] | None = None) -> dict:
    """Fake-quantize a BertModel's Linears (and QDQBERT's attention inputs), calibrate, export; the settings."""
    import torch
    from transformers.models.bert import modeling_bert
    observers = []
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear):
                fq = _fake_quantized_linear(child, signed)
                setattr(parent, child_name, fq)
                observers.append(fq.observer)
    if attention_too:
        for layer in model.encoder.layer:
            attention = layer.attention.self
            for tag in "qkvp":
                setattr(attention, f"{tag}_observer", _Observer(signed))
                observers.append(getattr(attention, f"{tag}_observer"))
    default_attention = modeling_bert.eager_attention_forward
    modeling_bert.eager_attention_forward = _qdqbert_attention if attention_too else default_attention
    try:
        encoder = _encoder(model, True)
        names = ("input_ids", "attention_mask", "token_type_ids")
        with torch.no_grad():
            for f in calibration:
                encoder(*(torch.from_numpy(f[n]) for n in names))
        for o in observers:
            o.calibrating = False
        # fake quantization: a value on a rounding boundary may fall either way in ONNX Runtime, and the
        # steps it moves add up over the layers (ONNX Runtime's own optimization levels differ as much)
        _export(encoder, path, 14, {n: calibration[0][n] for n in names}, checks or calibration[:4], 0.01, mean=True)
    finally:
        modeling_bert.eager_attention_forward = default_attention
    return {"activations": "int8 symmetric per tensor (zero point 0)" if signed else "uint8 asymmetric per tensor",
            "weights": "int8 symmetric per output channel",
            "quantized": "every Linear's input and weight" + (", Q, K, V and the softmax output (QDQBERT)"
                                                               if attention_too else ""),
            "exporter": "torch.onnx.export(dynamo=False), opset 14", "calibration": "min/max, no training"}


def stage_qat() -> list[dict]:
    entries = []
    for name, signed in (("qat_linear", False), ("qat_qdqbert", True)):
        path = OUT_DIR / f"bert_{name}.onnx"
        checks = [feeds("bert", b, s, p, seed=10 + i) for i, (b, s, p) in enumerate(CALIBRATION[:4])]
        settings = qat_export(_torch_model("bert", "eager"), calibration_feeds("bert"), path, signed,
                              attention_too=signed, checks=checks)
        entries.append(describe(path, "bert", "torch fake_quantize (QAT export)", torch_versions(), settings, "qat"))
    return entries


# --------------------------------------------------------------------------- NNCF

def nncf_quantize(src: Path, dst: Path, calibration: list[dict], transformer: bool) -> dict:
    import nncf
    kwargs = {"model_type": nncf.ModelType.TRANSFORMER} if transformer else {}
    onnx.save(nncf.quantize(onnx.load(src), nncf.Dataset(calibration), subset_size=len(calibration), **kwargs), dst)
    return {"call": f"nncf.quantize(onnx_model, dataset, subset_size={len(calibration)}"
                    + (", model_type=nncf.ModelType.TRANSFORMER)" if transformer else ")"), "backend": "ONNX"}


def stage_nncf() -> list[dict]:
    import nncf
    entries = []
    for family in FAMILIES:
        for name in ("nncf_transformer",) + (("nncf_default",) if family == "bert" else ()):
            path = OUT_DIR / f"{family}_{name}.onnx"
            settings = nncf_quantize(source(family), path, calibration_feeds(family), name == "nncf_transformer")
            entries.append(describe(path, family, "nncf", {"nncf": nncf.__version__} | ort_versions(), settings, "qdq"))
    return entries


# --------------------------------------------------------------------------- Optimum and transformers.js

def optimum_dynamic(src: Path, dst: Path) -> dict:
    """Optimum's avx512_vnni dynamic config: what the Hub's INT8 BERT models are made with."""
    import logging

    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig
    logging.getLogger().setLevel(logging.ERROR)
    config = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True)
    with tempfile.TemporaryDirectory() as tmp:
        ORTQuantizer.from_pretrained(src.parent, file_name=src.name).quantize(save_dir=tmp, quantization_config=config)
        (quantized,) = Path(tmp).glob("*.onnx")
        dst.write_bytes(quantized.read_bytes())
    return {"call": "ORTQuantizer.quantize(AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True))",
            "weights": "int8 symmetric per channel", "activations": "uint8, quantized at run time",
            "operators": config.operators_to_quantize}


def transformersjs_u8(src: Path, dst: Path) -> dict:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    extra = {"EnableSubgraph": True, "MatMulConstBOnly": True}
    quantize_dynamic(str(src), str(dst), per_channel=False, reduce_range=False, weight_type=QuantType.QUInt8,
                     extra_options=extra)
    return {"call": "onnxruntime.quantization.quantize_dynamic(per_channel=False, reduce_range=False, "
                    "weight_type=QuantType.QUInt8, extra_options=" + json.dumps(extra) + ")",
            "weights": "uint8 asymmetric per tensor", "activations": "uint8, quantized at run time",
            "operators": "quantize_dynamic's default (every op type it quantizes)",
            "as": "transformers.js's u8 (quantized) settings"}


def stage_optimum() -> list[dict]:
    tools = {"optimum-onnx": version("optimum-onnx"), "optimum": version("optimum"),
             "transformers": version("transformers")} | ort_versions()
    entries = []
    for family in ("bert", "distilbert"):
        path = OUT_DIR / f"{family}_dynamic_avx512vnni.onnx"
        entries.append(describe(path, family, "optimum", tools, optimum_dynamic(source(family), path), "dynamic"))
    for family in ("bert", "roberta"):
        path = OUT_DIR / f"{family}_dynamic_u8.onnx"
        entries.append(describe(path, family, "onnxruntime quantize_dynamic (transformers.js u8)", ort_versions(),
                                transformersjs_u8(source(family), path), "dynamic"))
    return entries


# --------------------------------------------------------------------------- Intel Neural Compressor

def inc_static(src: Path, dst: Path, calibration: list[dict], fmt: str) -> dict:
    """onnx-neural-compressor's static PTQ, ``fmt`` "QOperator" or "QDQ", the config's defaults otherwise."""
    from onnx_neural_compressor import data_reader
    from onnx_neural_compressor.quantization import QuantFormat, config, quantize

    class Reader(data_reader.CalibrationDataReader):
        def __init__(self):
            self.rewind()

        def get_next(self):
            return next(self._it, None)

        def rewind(self):
            self._it = iter(calibration)

    with tempfile.TemporaryDirectory() as tmp:  # it writes the weights beside the model: one file here
        quantize(str(src), str(Path(tmp) / dst.name),
                 config.StaticQuantConfig(Reader(), quant_format=getattr(QuantFormat, fmt)))
        onnx.save(onnx.load(Path(tmp) / dst.name), dst)
    return {"call": f"quantize(model, out, StaticQuantConfig(reader, quant_format=QuantFormat.{fmt}))",
            "method": "static post-training quantization, the config's defaults"}


def stage_inc() -> list[dict]:
    tools = {"onnx-neural-compressor": version("onnx-neural-compressor"), "numpy": np.__version__} | ort_versions()
    entries = []
    for name, fmt in (("inc_qoperator", "QOperator"), ("inc_qdq", "QDQ")):
        path = OUT_DIR / f"bert_{name}.onnx"
        settings = inc_static(source("bert"), path, calibration_feeds("bert"), fmt)
        entries.append(describe(path, "bert", "onnx-neural-compressor", tools, settings, fmt.lower()))
    return entries


STAGES = {"sources": stage_sources, "qat": stage_qat, "nncf": stage_nncf, "optimum": stage_optimum, "inc": stage_inc}


def _qat_pretrained(signed: bool):
    def make(model_dir: Path, dst: Path, calibration: list[dict]) -> dict:
        import transformers
        model = transformers.BertModel.from_pretrained(str(model_dir), attn_implementation="eager",
                                                       add_pooling_layer=False).eval()
        return qat_export(model, calibration, dst, signed, attention_too=signed)
    return make


# One quantizer on one model (benchmarks/int8_accuracy.py): FORM SOURCE DESTINATION; the QAT forms
# take a transformers BERT folder as SOURCE.
FORMS = {
    "nncf_transformer": lambda src, dst, cal: nncf_quantize(src, dst, cal, transformer=True),
    "nncf_default": lambda src, dst, cal: nncf_quantize(src, dst, cal, transformer=False),
    "dynamic_avx512vnni": lambda src, dst, cal: optimum_dynamic(src, dst),
    "dynamic_u8": lambda src, dst, cal: transformersjs_u8(src, dst),
    "inc_qoperator": lambda src, dst, cal: inc_static(src, dst, cal, "QOperator"),
    "inc_qdq": lambda src, dst, cal: inc_static(src, dst, cal, "QDQ"),
    "qat_linear": _qat_pretrained(signed=False),
    "qat_qdqbert": _qat_pretrained(signed=True),
}


def save_feeds(path: Path, batches: list[dict[str, np.ndarray]]) -> None:
    np.savez(path, **{f"{i}:{name}": array for i, batch in enumerate(batches) for name, array in batch.items()})


def load_feeds(path: Path) -> list[dict[str, np.ndarray]]:
    batches: dict[int, dict] = {}
    with np.load(path) as data:
        for key in data.files:
            i, name = key.split(":", 1)
            batches.setdefault(int(i), {})[name] = data[key]
    return [batches[i] for i in sorted(batches)]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["quantize"]:
        ap = argparse.ArgumentParser(description="one quantizer on one model")
        ap.add_argument("form", choices=sorted(FORMS))
        ap.add_argument("source", type=Path)
        ap.add_argument("destination", type=Path)
        ap.add_argument("--calibration", type=Path, help="batches of feeds, as save_feeds writes them")
        args = ap.parse_args(argv[1:])
        settings = FORMS[args.form](args.source, args.destination, load_feeds(args.calibration) if args.calibration else [])
        print(json.dumps(settings))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("stages", nargs="+", choices=sorted(STAGES))
    args = ap.parse_args(argv)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for stage in args.stages:
        merge(STAGES[stage]())
    return 0


if __name__ == "__main__":
    sys.exit(main())
