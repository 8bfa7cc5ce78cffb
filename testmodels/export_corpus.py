#!/usr/bin/env python3
"""Export a corpus of tiny random-weight BERT-family encoders to ONNX.

Writes testmodels/corpus/<family>_<exporter>.onnx and
testmodels/corpus/manifest.json: real exports, for testing the attention,
SkipLayerNorm and EmbedLayerNorm fusions on every architecture x exporter.

Families (random weights from a config, never the hub; torch.manual_seed(0)
then every bias and LayerNorm parameter re-drawn so none is trivially 0/1):

  bert        BertModel (no pooler)
  distilbert  DistilBertModel (no token types)
  roberta     RobertaModel (no pooler; no token_type_ids input, type_vocab 1
              like roberta-base; position ids made from input_ids and
              padding_idx=1, so max_position_embeddings is 42 = 40 + pad offset)
  albert      AlbertModel (no pooler; one shared layer applied twice;
              embedding_size 8, so the embedding LayerNorm runs on width 8 and
              a MatMul+Add projects it to 16; GELU is its default gelu_new,
              the tanh approximation)
  electra     ElectraModel (embedding_size 8 != hidden 16: the embedding
              LayerNorm runs on width 8, then embeddings_project MatMul+Add)

All with hidden 16, 2 layers, 2 heads, intermediate 32, vocab 64,
max_position_embeddings 40 (roberta 42), type_vocab 2 (bert, albert, electra).

Exporters:

  ts14_eager  TorchScript exporter (dynamo=False), opset 14, eager attention
  ts14_sdpa   TorchScript exporter, opset 14, attn_implementation="sdpa"
  ts17_sdpa   TorchScript exporter, opset 17, sdpa (LayerNormalization native)
  dynamo18    torch.onnx.export(dynamo=True, opset_version=18), the model's
              default attention (sdpa in transformers 5); needs onnxscript.
              A dynamo failure is recorded in the manifest instead of a file.

Graph interface: int64 inputs input_ids, attention_mask (+ token_type_ids for
bert/albert/electra), [batch, sequence] with both axes dynamic; one output,
last_hidden_state [batch, sequence, 16].

Each model is checked with onnx.checker (full_check), run under onnxruntime
(CPU) and compared with PyTorch (max abs diff < 1e-4) on batch 2 x seq 12
with right padding on one row, batch 2 x seq 12 with left padding on one row,
and batch 3 x seq 7 (one full, one right-padded, one left-padded row).

The manifest lists, for each file, its family, exporter, opset, attention,
versions, dims, the counts a full fusion should produce (attention = layers,
LayerNorm = 2 per layer application + 1 embedding, GELU = 1 per layer), the
observed op histogram, an automatic summary of the first attention block's
Softmax neighbourhood and mask path, and a hand-written note on the
attention/mask subgraph read from the graphs (NOTES below).

Regenerate (the dynamo files need onnxscript; without it they are recorded as
failures):

    pip install torch==2.13.0 transformers==5.23.0 onnx onnxruntime onnxscript
    python testmodels/export_corpus.py

The transformers-4 file (bert_ts14_eager_tf4.onnx) comes from a separate
plain virtualenv (not --system-site-packages) with transformers<4.50:

    python -m venv /tmp/tf4
    /tmp/tf4/bin/pip install torch==2.13.0 'transformers<4.50' onnx onnxruntime
    /tmp/tf4/bin/python testmodels/export_corpus.py --tf4

--tf4 exports only that file and merges its entry into the existing manifest.
transformers 4.21-4.49 build the additive mask as (1 - mask) * float32_min; the
older (1 - mask) * -10000 form is transformers <= 4.20, whose pinned tokenizers
(<0.13) has no wheel for Python 3.11, so that venv installs transformers
without dependencies (tokenizers is only version-checked when installed):

    python -m venv /tmp/tf420
    /tmp/tf420/bin/pip install torch==2.13.0 onnx onnxruntime numpy \
        'huggingface-hub<0.20' filelock packaging pyyaml regex requests tqdm
    /tmp/tf420/bin/pip install --no-deps transformers==4.20.1
    /tmp/tf420/bin/python testmodels/export_corpus.py --tf4 --suffix _tf420

A plain run (without --tf4) keeps the _tf4* entries already in the manifest.
Output is byte-for-byte reproducible with these versions (onnxscript 0.7.2
for the dynamo files); the script fails if the corpus exceeds 2 MB.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import traceback
import warnings
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
import torch
import transformers
from onnx import numpy_helper

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from testmodels.export_bert import ATOL, SEED, op_histogram

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "corpus")
MANIFEST = "manifest.json"
SIZE_LIMIT = 2 * 1024 * 1024

COMMON = {"vocab_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}


@dataclass(frozen=True)
class Family:
    name: str
    model_cls: str
    config_cls: str
    config: dict
    token_types: bool
    pad_token_id: int
    gelu_form: str
    model_kwargs: dict = field(default_factory=dict)


FAMILIES = [
    Family(
        "bert", "BertModel", "BertConfig",
        dict(COMMON, hidden_size=16, intermediate_size=32, max_position_embeddings=40,
             type_vocab_size=2, hidden_act="gelu"),
        token_types=True, pad_token_id=0, gelu_form="erf",
        model_kwargs={"add_pooling_layer": False},
    ),
    Family(
        "distilbert", "DistilBertModel", "DistilBertConfig",
        {"vocab_size": 64, "n_layers": 2, "n_heads": 2, "dim": 16, "hidden_dim": 32,
         "max_position_embeddings": 40, "activation": "gelu"},
        token_types=False, pad_token_id=0, gelu_form="erf",
    ),
    Family(
        "roberta", "RobertaModel", "RobertaConfig",
        dict(COMMON, hidden_size=16, intermediate_size=32, max_position_embeddings=42,
             type_vocab_size=1, hidden_act="gelu", pad_token_id=1),
        token_types=False, pad_token_id=1, gelu_form="erf",
        model_kwargs={"add_pooling_layer": False},
    ),
    Family(
        "albert", "AlbertModel", "AlbertConfig",
        dict(COMMON, hidden_size=16, intermediate_size=32, max_position_embeddings=40,
             type_vocab_size=2, embedding_size=8, num_hidden_groups=1, inner_group_num=1,
             hidden_act="gelu_new"),
        token_types=True, pad_token_id=0, gelu_form="tanh (gelu_new)",
        model_kwargs={"add_pooling_layer": False},
    ),
    Family(
        "electra", "ElectraModel", "ElectraConfig",
        dict(COMMON, hidden_size=16, intermediate_size=32, max_position_embeddings=40,
             type_vocab_size=2, embedding_size=8, hidden_act="gelu"),
        token_types=True, pad_token_id=0, gelu_form="erf",
    ),
]


@dataclass(frozen=True)
class Exporter:
    name: str
    dynamo: bool
    opset: int
    attn: str | None  # None: the model's default


EXPORTERS = [
    Exporter("ts14_eager", False, 14, "eager"),
    Exporter("ts14_sdpa", False, 14, "sdpa"),
    Exporter("ts17_sdpa", False, 17, "sdpa"),
    Exporter("dynamo18", True, 18, None),
]
# The other TorchScript opsets, for BERT only (the graphs differ by opset, not by family).
BERT_ONLY = [
    Exporter("ts13_eager", False, 13, "eager"),
    Exporter("ts15_sdpa", False, 15, "sdpa"),
    Exporter("ts16_eager", False, 16, "eager"),
]

# Hand-written notes on the attention / mask subgraph, read from the exported
# graphs with the versions in the manifest (torch 2.13.0, transformers 5.23.0,
# and 4.x for the _tf4* files). The automatic "attention_summary" next to each
# note in the manifest has the raw op chains and the probed mask shape.
# B = batch, S/Sq/Sk = sequence, H = heads, D = head size (8 here).
EXPORTER_NOTES = {
    "ts14_eager": (
        "TorchScript, eager attention. Q/K/V: Add(bias, MatMul(x, W)) (bias is input 0) -> "
        "Reshape to (B,S,-1,D) (shape Concat of Shape/Gather/Unsqueeze) -> Transpose: Q,V perm "
        "[0,2,1,3]; K perm [0,2,3,1] straight to K^T. QK MatMul -> Mul(1/sqrt(D)=0.353553) -> "
        "Add(mask) -> Softmax(axis=-1) -> MatMul(V) -> Transpose [0,2,1,3] -> Reshape (B,S,-1). "
        "Mask: one float additive mask [B,1,Sq,Sk] (full 4-D, not [B,1,1,Sk]) shared by all layers, "
        "built by transformers 5 masking_utils: Cast(attention_mask->bool) -> Flatten -> "
        "Gather(flat, b*Sk+kv Range index) -> Reshape -> Cast(bool) -> And(with a q_idx>=0 "
        "[1,1,Sq,1] predicate) -> Expand -> Where(mask, 0.0, -3.4028235e38 (float32 min)). "
        "LayerNorm decomposed: ReduceMean/Sub/Pow(2)/ReduceMean/Add(eps)/Sqrt/Div/Mul/Add. "
        "Residual: Add(dense_out, residual) then LN."
    ),
    "ts14_sdpa": (
        "TorchScript, sdpa (torch's SDPA decomposed by the exporter). Q: Transpose [0,2,1,3] -> "
        "Mul(D^-1/4=0.594604); K: Reshape -> Transpose [0,2,3,1] -> Mul(0.594604) (sqrt-scale on "
        "both Q and K, no scale after the MatMul). QK MatMul -> Add(Where(bool_mask, 0.0, -inf)) -> "
        "Softmax -> IsNaN -> Where(isnan, 0.0, softmax) -> MatMul(V). The bool mask [B,1,Sq,Sk] is "
        "built once as in ts14_eager (up to the Expand) but the Where(mask, 0, -inf) to float is "
        "repeated inside every layer. Bias is Add(bias, MatMul). LayerNorm decomposed."
    ),
    "ts17_sdpa": (
        "TorchScript, sdpa, opset 17: attention/mask exactly as ts14_sdpa (Mul 0.594604 on Q and "
        "K^T, per-layer Where(bool_mask, 0, -inf) -> Add, Softmax -> IsNaN -> Where(0) -> MatMul V; "
        "bool mask [B,1,Sq,Sk] shared); every LayerNorm is a native LayerNormalization(axis=-1)."
    ),
    "dynamo18": (
        "torch.onnx dynamo exporter (onnxscript optimizer on), opset 18, the model's default "
        "attention = sdpa. Q/K/V: Add(MatMul(x, W), bias) (bias is input 1) -> Reshape(allowzero=1) "
        "-> Transpose [0,2,1,3]. Q -> Mul(0.594604). K^T is built oddly: Transpose [0,2,1,3] -> "
        "Reshape(-1,S,D) -> 3-D Transpose [0,2,1] -> Reshape(B,H,D,S) -> Mul(0.594604). QK MatMul "
        "-> Add(mask) -> Softmax -> IsNaN -> Where(isnan, 0.0, softmax) -> MatMul(V) -> Transpose "
        "-> Reshape(allowzero=1). Mask: bool [B,1,Sq,Sk] from GatherND(Cast(attention_mask->bool), "
        "stacked [b, kv] Range indices) And (q_idx>=0), then ONE Where(mask, 0.0, -3.4028235e38) "
        "(float32 min, not -inf) shared by all layers (CSE'd). LayerNorm native "
        "(LayerNormalization, stash_type=1). Node names are val_N/linear_N; per-node metadata "
        "'namespace' kept (module path + aten op), other debug metadata stripped."
    ),
    "ts14_eager_tf4": (
        "TorchScript, eager, transformers 4.x (BertSelfAttention of that era). Additive mask "
        "[B,1,1,Sk] built once: Unsqueeze(1) -> Unsqueeze(2) -> Cast(float) -> Sub(1.0, m) -> "
        "Mul(float32 min -3.4028235e38) (transformers 4.21+ use finfo.min, not -10000; unmasked "
        "positions become -0.0); broadcast in Add. Scale is Div(sqrt(D)=2.828427) after the QK "
        "MatMul (not Mul). Reshape target is Concat(B, S, 2, 8) with the head count as a constant. "
        "K perm [0,2,3,1], Q/V [0,2,1,3]; bias Add(bias, MatMul). LayerNorm decomposed."
    ),
    "ts14_eager_tf420": (
        "TorchScript, eager, transformers 4.20 (last release with the -10000 mask): additive mask "
        "[B,1,1,Sk] built once: Unsqueeze(1) -> Unsqueeze(2) -> Cast(float) -> Sub(1.0, m) -> "
        "Mul(-10000.0) (unmasked positions -0.0). Otherwise as ts14_eager_tf4: Div(sqrt(D)=2.828427) "
        "after the QK MatMul, Reshape target Concat(B, S, 2, 8), K perm [0,2,3,1]. LayerNorm "
        "decomposed."
    ),
}
FAMILY_NOTES = {
    "bert": (
        "Embeddings: Add(Gather(word, input_ids), Gather(type, token_type_ids)) -> "
        "Add(Gather(pos, Slice(position_ids buffer [1,40], 0, S))) -> LN (width 16)."
    ),
    "distilbert": (
        "No token types: Add(Gather(word, input_ids), Gather(pos, Slice(buffer [1,40], 0, S))) "
        "-> LN. In transformers 5 DistilBERT shares BERT's attention code (scale after QK, "
        "not on Q as in 4.x). LNs are sa_layer_norm / output_layer_norm."
    ),
    "roberta": (
        "No token_type_ids input (type_vocab 1). Position ids from input_ids: "
        "Equal(input_ids, 1) -> Not -> Cast -> CumSum(axis 1) -> Mul(mask) -> Cast -> Add(1) "
        "(padding_idx) -> Gather(pos [42,16]). Token-type embedding is Gather([1,16] table, "
        "GatherElements(Expand(zeros buffer [1,42]), position_ids)), i.e. a constant row. "
        "Then Add/Add -> LN."
    ),
    "albert": (
        "Embedding LN on width 8 (embedding_size), then embedding_hidden_mapping_in MatMul(8x16)"
        "+Add before layer 0 (EmbedLayerNorm output is not the attention input directly). One "
        "shared layer applied twice: the TorchScript files feed the 2nd application's six "
        "MatMul weights through Identity(initializer) nodes (biases and LN params are referenced "
        "directly); dynamo reuses the same initializers. GELU is gelu_new (tanh): Mul(x,0.5); "
        "Pow(x,3) -> Mul(0.044715) -> Add(x, .) -> Mul(0.797885) -> Tanh -> Add(1) -> Mul(0.5x, .)."
    ),
    "electra": (
        "Embedding LN on width 8 (embedding_size), then embeddings_project MatMul(8x16)+Add "
        "before layer 0. Layers are BERT's."
    ),
}


def note_for(family: str, exporter: str) -> str:
    return f"{EXPORTER_NOTES.get(exporter, '')} {FAMILY_NOTES.get(family, '')}".strip()


# ---------------------------------------------------------------------------
# models


def input_names(fam: Family) -> list[str]:
    return ["input_ids", "attention_mask"] + (["token_type_ids"] if fam.token_types else [])


def export_class(fam: Family):
    """Subclass of the family's model whose forward() takes exactly the graph
    inputs and returns last_hidden_state (see export_bert.py for why: the
    TorchScript exporter fills remaining forward() params positionally, which
    clashes with transformers 5's use_cache handling). Subclassing keeps the
    ONNX initializer names those of the plain model."""
    base = getattr(transformers, fam.model_cls)
    if fam.token_types:
        def forward(self, input_ids, attention_mask, token_type_ids):
            return base.forward(self, input_ids=input_ids, attention_mask=attention_mask,
                                token_type_ids=token_type_ids, return_dict=True).last_hidden_state
    else:
        def forward(self, input_ids, attention_mask):
            return base.forward(self, input_ids=input_ids, attention_mask=attention_mask,
                                return_dict=True).last_hidden_state
    return type(fam.model_cls + "ForExport", (base,), {"forward": forward})


def randomize_trivial_params(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Re-draw every bias and LayerNorm weight (module-based, so DistilBERT's
    sa_layer_norm/output_layer_norm count too). Shared ALBERT weights are
    visited once (named_parameters de-duplicates)."""
    ln_weights = {id(m.weight) for m in model.modules()
                  if isinstance(m, torch.nn.LayerNorm) and m.weight is not None}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif id(p) in ln_weights:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))


def build_model(fam: Family, attn: str | None) -> torch.nn.Module:
    torch.manual_seed(SEED)
    kw = dict(fam.config)
    if attn is not None and not OLD_TRANSFORMERS:
        kw["attn_implementation"] = attn
    config = getattr(transformers, fam.config_cls)(**kw)
    model = export_class(fam)(config, **fam.model_kwargs)
    randomize_trivial_params(model, torch.Generator().manual_seed(SEED))
    model.eval()
    if attn is not None:
        assert attn_of(model) == attn, attn_of(model)
    return model


# transformers before 4.36 has no attn_implementation: its attention is eager.
OLD_TRANSFORMERS = tuple(int(x) for x in transformers.__version__.split(".")[:2]) < (4, 36)


def attn_of(model) -> str:
    return getattr(model.config, "_attn_implementation", None) or "eager"


def make_inputs(fam: Family, batch: int, seq: int, pads: list[tuple[str, int]],
                seed: int) -> dict[str, np.ndarray]:
    """pads[row] = ("right"|"left"|"none", n): n masked positions at that end.
    Padded positions hold the pad token; real tokens avoid ids 0..2."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, fam.config["vocab_size"], size=(batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), dtype=np.int64)
    for row, (side, n) in enumerate(pads):
        if side == "right" and n:
            mask[row, seq - n:] = 0
        elif side == "left" and n:
            mask[row, :n] = 0
    ids[mask == 0] = fam.pad_token_id
    feeds = {"input_ids": ids, "attention_mask": mask}
    if fam.token_types:
        tt = np.zeros((batch, seq), dtype=np.int64)
        for row in range(batch):
            tt[row, rng.integers(1, seq):] = 1  # segment B after a random cut
        feeds["token_type_ids"] = tt
    return feeds


# (batch, seq, per-row padding): the export example first.
CHECK_CASES = [
    (2, 12, [("none", 0), ("right", 5)]),
    (2, 12, [("none", 0), ("left", 4)]),
    (3, 7, [("none", 0), ("right", 2), ("left", 3)]),
]


def case_label(case) -> str:
    b, s, pads = case
    return f"batch {b} x seq {s} " + "/".join(f"{side}{n}" if n else "full" for side, n in pads)


# ---------------------------------------------------------------------------
# export + verify


def export_torchscript(model, fam: Family, opset: int, path: str) -> None:
    names = input_names(fam)
    feeds = make_inputs(fam, *CHECK_CASES[0][:2], CHECK_CASES[0][2], seed=SEED)
    axes = {n: {0: "batch", 1: "sequence"} for n in names + ["last_hidden_state"]}
    torch.onnx.export(
        model, tuple(torch.from_numpy(feeds[n]) for n in names), path,
        dynamo=False, opset_version=opset, do_constant_folding=True,
        input_names=names, output_names=["last_hidden_state"], dynamic_axes=axes,
    )


def export_dynamo(model, fam: Family, opset: int, path: str) -> None:
    names = input_names(fam)
    feeds = make_inputs(fam, *CHECK_CASES[0][:2], CHECK_CASES[0][2], seed=SEED)
    batch = torch.export.Dim("batch")
    seq = torch.export.Dim("sequence", max=fam.config["max_position_embeddings"] - 2)
    torch.onnx.export(
        model, tuple(torch.from_numpy(feeds[n]) for n in names), path,
        dynamo=True, opset_version=opset, external_data=False, optimize=True,
        input_names=names, output_names=["last_hidden_state"],
        dynamic_shapes={n: {0: batch, 1: seq} for n in names},
    )
    strip_debug_metadata(path)


# Per-node debug metadata the dynamo exporter attaches: ~75% of a tiny model's
# bytes, and the stack traces hold this machine's paths. "namespace" (the module
# path and aten op of each node) is kept.
DROP_METADATA = ("pkg.torch.onnx.stack_trace", "pkg.torch.onnx.fx_node",
                 "pkg.torch.onnx.name_scopes", "pkg.torch.onnx.class_hierarchy")


def strip_debug_metadata(path: str) -> None:
    m = onnx.load(path)
    for n in m.graph.node:
        keep = [p for p in n.metadata_props if p.key not in DROP_METADATA]
        del n.metadata_props[:]
        n.metadata_props.extend(keep)
    onnx.save(m, path)


def verify(model, fam: Family, path: str) -> dict:
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    names = input_names(fam)
    got = [i.name for i in m.graph.input]
    assert got == names, (got, names)
    for vi in list(m.graph.input) + list(m.graph.output):
        dims = vi.type.tensor_type.shape.dim
        assert not dims[0].HasField("dim_value") and not dims[1].HasField("dim_value"), (
            f"{vi.name} has static batch/sequence: {dims}")
    assert [o.name for o in m.graph.output] == ["last_hidden_state"], m.graph.output
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    diffs = {}
    for i, case in enumerate(CHECK_CASES):
        feeds = make_inputs(fam, case[0], case[1], case[2], seed=100 + i)
        (out,) = sess.run(None, feeds)
        with torch.no_grad():
            ref = model(*(torch.from_numpy(feeds[n]) for n in names)).numpy()
        assert ref.shape == out.shape, (ref.shape, out.shape)
        d = float(np.max(np.abs(ref - out)))
        diffs[case_label(case)] = d
        print(f"    {case_label(case)}: max|ort-torch| = {d:.2e}")
        if not d < ATOL:
            raise RuntimeError(f"{path}: onnxruntime differs from PyTorch by {d:.3e} on {case_label(case)}")
    return diffs


# ---------------------------------------------------------------------------
# graph summary (automatic facts next to the hand-written notes)


def _consts(m: onnx.ModelProto) -> dict[str, np.ndarray]:
    out = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    out[n.output[0]] = numpy_helper.to_array(a.t)
    return out


def _fmt_const(v: np.ndarray) -> str:
    if v.size == 1:
        x = v.reshape(-1)[0]
        return f"{float(x):.6g}" if np.issubdtype(v.dtype, np.floating) else str(x)
    return f"{v.dtype}{list(v.shape)}"


def _label(n: onnx.NodeProto, consts: dict) -> str:
    cs = [_fmt_const(consts[i]) for i in n.input if i in consts and consts[i].size == 1]
    return n.op_type + (f"({','.join(cs)})" if cs else "")


def attention_summary(m: onnx.ModelProto) -> dict:
    """Ops around the first Softmax: back to the QK MatMul, on to the V MatMul,
    the Q/K scaling, and the ops fed (transitively) by attention_mask up to
    where the mask joins the scores."""
    consts = _consts(m)
    nodes = list(m.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    consumers = collections.defaultdict(list)
    for n in nodes:
        for i in n.input:
            consumers[i].append(n)
    softmaxes = [n for n in nodes if n.op_type == "Softmax"]
    if not softmaxes:
        return {"softmax_count": 0}
    sm = softmaxes[0]

    # Backward from Softmax to the MatMul that makes the scores: follow the
    # non-constant input, preferring the one that leads to a MatMul soonest.
    def dist_to_matmul(t, depth=0):
        n = producer.get(t)
        if n is None or depth > 12:
            return 99
        if n.op_type == "MatMul":
            return 0
        return 1 + min((dist_to_matmul(i, depth + 1) for i in n.input if i and i not in consts), default=99)

    chain, t = [], sm.input[0]
    while True:
        n = producer.get(t)
        if n is None:
            break
        chain.append(n)
        if n.op_type == "MatMul":
            break
        ins = [i for i in n.input if i and i not in consts]
        if not ins:
            break
        t = min(ins, key=dist_to_matmul)
    qk = chain[-1] if chain and chain[-1].op_type == "MatMul" else None
    scores_path = {id(n) for n in chain}

    # Forward from Softmax to the next MatMul (the V product).
    after, t = [], sm.output[0]
    for _ in range(10):
        cs = consumers.get(t, [])
        if not cs:
            break
        n = next((c for c in cs if c.op_type == "MatMul"), cs[0])
        after.append(n)
        if n.op_type == "MatMul":
            break
        t = n.output[0]

    # Q and K sides of the QK MatMul: a few ops back on each input.
    def side(t, k=5):
        out = []
        for _ in range(k):
            n = producer.get(t)
            if n is None:
                break
            out.append(_label(n, consts))
            if n.op_type in ("MatMul", "Add") and any(i in consts and consts[i].size > 1 for i in n.input):
                break  # the projection (bias Add / weight MatMul)
            ins = [i for i in n.input if i and i not in consts]
            if not ins:
                break
            t = ins[0]
        return " <- ".join(out)

    # Mask path: everything reachable from attention_mask, stopping at nodes on
    # the scores path (where the mask joins), listed in graph order.
    # Shape consumers are skipped: they carry only dims, not mask values.
    reach, frontier = set(), ["attention_mask"]
    while frontier:
        t = frontier.pop()
        for c in consumers.get(t, []):
            if id(c) in reach or c.op_type == "Shape":
                continue
            reach.add(id(c))
            if id(c) in scores_path or c.op_type in ("Softmax", "MatMul"):
                continue
            frontier.extend(c.output)
    mask_ops = [_label(n, consts) for n in nodes if id(n) in reach]
    if len(mask_ops) > 40:
        mask_ops = mask_ops[:40] + [f"... (+{len(mask_ops) - 40})"]

    # The additive mask: the non-score input of the Add right before Softmax.
    mask_name = None
    if chain and chain[0].op_type == "Add":
        rest = [i for i in chain[0].input if i != (chain[1].output[0] if len(chain) > 1 else None)]
        mask_name = rest[0] if rest else None

    return {
        "softmax_count": len(softmaxes),
        "softmax_axis": next((a.i for a in sm.attribute if a.name == "axis"), None),
        "qk_matmul_to_softmax": " -> ".join(_label(n, consts) for n in reversed(chain)) + " -> Softmax",
        "softmax_to_v_matmul": "Softmax -> " + " -> ".join(_label(n, consts) for n in after),
        "q_input_of_qk": side(qk.input[0]) if qk else None,
        "k_input_of_qk": side(qk.input[1]) if qk else None,
        "mask_path_ops": mask_ops,
        "additive_mask": mask_name,
    }


def probe_mask(path: str, fam: Family, name: str | None) -> dict | None:
    """Run the model with the additive mask as an extra output on the
    batch 3 x seq 7 check case: its shape and distinct values."""
    if not name:
        return None
    m = onnx.load(path)
    m.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    b, s, pads = CHECK_CASES[-1]
    (val,) = sess.run([name], make_inputs(fam, b, s, pads, seed=0))
    uniq = np.unique(val)
    return {"case": case_label(CHECK_CASES[-1]), "shape": list(val.shape), "dtype": str(val.dtype),
            "values": [json_float(v) for v in uniq] if uniq.size <= 4 else f"{uniq.size} distinct"}


def json_float(v) -> float | str:
    """Finite floats as numbers; -inf/inf/nan as strings (strict JSON has none)."""
    v = float(v)
    return v if np.isfinite(v) else str(v)


def layer_norm_count(hist) -> int:
    return hist["LayerNormalization"] or hist["ReduceMean"] // 2


# ---------------------------------------------------------------------------
# manifest


def num_layers(fam: Family) -> int:
    return fam.config.get("num_hidden_layers", fam.config.get("n_layers"))


def num_heads(fam: Family) -> int:
    return fam.config.get("num_attention_heads", fam.config.get("n_heads"))


def hidden(fam: Family) -> int:
    return fam.config.get("hidden_size", fam.config.get("dim"))


def entry(fam: Family, exp_name: str, opset: int, attn: str, exporter_kind: str) -> dict:
    L = num_layers(fam)
    return {
        "family": fam.name,
        "model_class": fam.model_cls,
        "exporter": exp_name,
        "exporter_kind": exporter_kind,
        "opset": opset,
        "attn": attn,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "num_layers": L,
        "num_heads": num_heads(fam),
        "hidden": hidden(fam),
        "intermediate": fam.config.get("intermediate_size", fam.config.get("hidden_dim")),
        "embedding_size": fam.config.get("embedding_size", hidden(fam)),
        "shared_layer_weights": fam.name == "albert",
        "inputs": input_names(fam),
        "outputs": ["last_hidden_state"],
        "gelu_form": fam.gelu_form,
        "expected": {"attention": L, "layer_norm": 2 * L + 1, "gelu": L,
                     "embed_layer_norm": 1, "skip_layer_norm": 2 * L},
        "config": fam.config,
    }


def export_one(fam: Family, exp: Exporter, out_dir: str, suffix: str = "") -> tuple[dict, str | None]:
    fname = f"{fam.name}_{exp.name}{suffix}.onnx"
    path = os.path.join(out_dir, fname)
    print(f"\n== {fname}")
    model = build_model(fam, exp.attn)
    attn = attn_of(model)
    e = entry(fam, exp.name + suffix, exp.opset, attn, "dynamo" if exp.dynamo else "torchscript")
    if exp.dynamo:
        try:
            import onnxscript
            e["onnxscript"] = onnxscript.__version__
        except ImportError:
            e["onnxscript"] = None
    e["file"] = fname
    try:
        if exp.dynamo:
            export_dynamo(model, fam, exp.opset, path)
        else:
            export_torchscript(model, fam, exp.opset, path)
        e["max_abs_diff"] = verify(model, fam, path)
    except Exception as ex:  # noqa: BLE001 -- record any export failure, keep going
        if os.path.exists(path):
            os.remove(path)
        reason = f"{type(ex).__name__}: {str(ex).strip().splitlines()[0] if str(ex).strip() else ''}"
        print(f"  FAILED: {reason}")
        traceback.print_exc(limit=3)
        e.pop("file")
        e["status"] = "failed"
        e["reason"] = reason[:600]
        return e, None
    m = onnx.load(path)
    hist = op_histogram(path)
    e["status"] = "ok"
    e["size_bytes"] = os.path.getsize(path)
    e["nodes"] = sum(hist.values())
    e["ops"] = dict(sorted(hist.items()))
    e["observed"] = {
        "softmax": hist["Softmax"],
        "layer_norm": layer_norm_count(hist),
        "layer_norm_form": "LayerNormalization" if hist["LayerNormalization"] else "decomposed",
        "erf": hist["Erf"],
        "tanh": hist["Tanh"],
    }
    e["attention_summary"] = summary = attention_summary(m)
    summary["additive_mask_probe"] = probe_mask(path, fam, summary.get("additive_mask"))
    e["note"] = note_for(fam.name, exp.name + suffix)
    print(f"  ok: {e['size_bytes']} bytes, {e['nodes']} nodes, observed {e['observed']}")
    return e, fname


def write_manifest(out_dir: str, models: list[dict]) -> None:
    files = [e for e in models if e["status"] == "ok"]
    total = sum(os.path.getsize(os.path.join(out_dir, e["file"])) for e in files)
    manifest = {
        "description": "Tiny random-weight BERT-family encoders x exporters; "
                       "made by testmodels/export_corpus.py (see its docstring).",
        "check": {"atol": ATOL, "cases": [case_label(c) for c in CHECK_CASES]},
        "total_onnx_bytes": total,
        "failures": [{k: e[k] for k in ("family", "exporter", "reason")}
                     for e in models if e["status"] != "ok"],
        "models": sorted(models, key=lambda e: (e["family"], e["exporter"])),
    }
    with open(os.path.join(out_dir, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=False, allow_nan=False)
        f.write("\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", default=DEFAULT_OUT)
    parser.add_argument("--only", nargs="*", help="family or family_exporter names to (re)make; "
                        "others keep their manifest entries")
    parser.add_argument("--tf4", action="store_true",
                        help="transformers 4.x environment: export bert_ts14_eager<suffix>.onnx only")
    parser.add_argument("--suffix", default="_tf4", help="file/exporter suffix for --tf4")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="You are using the legacy TorchScript")
    os.makedirs(args.out_dir, exist_ok=True)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"onnx {onnx.__version__}, onnxruntime {ort.__version__}")

    mpath = os.path.join(args.out_dir, MANIFEST)
    old = []
    if os.path.exists(mpath):
        with open(mpath) as f:
            old = json.load(f)["models"]

    if args.tf4:
        major = int(transformers.__version__.split(".")[0])
        if major != 4:
            raise SystemExit(f"--tf4 needs transformers 4.x, found {transformers.__version__}")
        e, _ = export_one(FAMILIES[0], EXPORTERS[0], args.out_dir, suffix=args.suffix)
        keep = [x for x in old if x["exporter"] != e["exporter"] or x["family"] != e["family"]]
        write_manifest(args.out_dir, keep + [e])
    else:
        todo = [(f, x) for f in FAMILIES for x in EXPORTERS + (BERT_ONLY if f.name == "bert" else [])
                if not args.only or f.name in args.only or f"{f.name}_{x.name}" in args.only]
        redo = {(f.name, x.name) for f, x in todo}
        keep = [x for x in old if (x["family"], x["exporter"]) not in redo
                and ("_tf4" in x["exporter"] or args.only)]
        models = [export_one(f, x, args.out_dir)[0] for f, x in todo]
        write_manifest(args.out_dir, keep + models)

    with open(mpath) as f:
        manifest = json.load(f)
    total = sum(os.path.getsize(os.path.join(args.out_dir, n)) for n in os.listdir(args.out_dir))
    print("\nfile                                   bytes  status")
    for e in manifest["models"]:
        name = e.get("file") or f"{e['family']}_{e['exporter']}.onnx"
        print(f"  {name:36s} {e.get('size_bytes', 0):7d}  {e['status']}"
              + (f": {e['reason'][:100]}" if e["status"] != "ok" else ""))
    print(f"total size of {args.out_dir}: {total} bytes (limit {SIZE_LIMIT})")
    if total > SIZE_LIMIT:
        raise SystemExit("corpus over 2 MB")


if __name__ == "__main__":
    main()
