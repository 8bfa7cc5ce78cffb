#!/usr/bin/env python3
"""Export tiny random-weight BERTs from the TensorFlow routes through tf2onnx.

Writes testmodels/exporters/<family>_tf2onnx_<opset>.onnx and merges their
entries into testmodels/exporters/manifest.json (see testmodels/README.md).

Routes (every model: 2 layers, hidden 32, 4 heads, intermediate 64, vocabulary
128, 64 positions; every weight drawn at random, biases and LayerNorm γ/β
included, so tf2onnx neither drops zero bias Adds nor shares equal constants):

  tfkeras-bert a BERT encoder built from tf_keras layers (Embedding,
               LayerNormalization, MultiHeadAttention, Dense with erf GELU)
  kerashub-bert keras-hub's BertBackbone on Keras 3 (TensorFlow backend)
  hftf-bert, hftf-roberta, hftf-distilbert
               transformers 4.57's TFBertModel, TFRobertaModel, TFDistilBertModel

each converted with tf2onnx.convert.from_function at opsets 13, 17 and 18
(int32 inputs [batch, sequence], both dynamic, as the TF models take them).

Every file is checked against TensorFlow on right- and left-padded batches.

Regenerate (in a virtualenv of its own: these are not fusekit's dependencies):

    python -m venv /work/venvs/tf
    /work/venvs/tf/bin/pip install tensorflow-cpu tf2onnx tf-keras keras-hub 'transformers==4.57.*' onnxruntime
    /work/venvs/tf/bin/python testmodels/export_tf.py
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from exporters_common import OUT_DIR, check_against, merge_manifest  # noqa: E402

LAYERS, HIDDEN, HEADS, INTERMEDIATE, VOCAB, POSITIONS = 2, 32, 4, 64, 128, 64
OPSETS = (13, 17, 18)


def randomize(variables) -> None:
    """Every weight random: γ around 1, the rest around 0, none zero or shared."""
    rng = np.random.default_rng(0)
    for v in variables:
        name = v.name.lower()
        values = rng.normal(0.0, 0.1, v.shape)
        if "gamma" in name:  # LayerNormalization scale, in tf_keras, Keras 3 and transformers alike
            values += 1.0
        v.assign(values.astype(np.float32))


# ---- tf_keras: a BERT from layers ----------------------------------------------------------

def erf_gelu(x):
    # tf.nn.gelu (Keras' "gelu") computes 0.5·x·erfc(−x/√2) in TF 2.21, and tf2onnx 1.17 has no Erfc;
    # BERT's own TF code writes the erf form
    return 0.5 * x * (1.0 + tf.math.erf(x / tf.cast(tf.sqrt(2.0), x.dtype)))


def tfkeras_bert():
    import tf_keras as keras

    class Encoder(keras.layers.Layer):
        def __init__(self, i):
            super().__init__(name=f"layer_{i}")
            self.attention = keras.layers.MultiHeadAttention(HEADS, HIDDEN // HEADS, name="attention")
            self.attention_norm = keras.layers.LayerNormalization(epsilon=1e-12, name="attention_norm")
            self.intermediate = keras.layers.Dense(INTERMEDIATE, activation=erf_gelu, name="intermediate")
            self.output_dense = keras.layers.Dense(HIDDEN, name="output")
            self.output_norm = keras.layers.LayerNormalization(epsilon=1e-12, name="output_norm")

        def call(self, x, mask):
            x = self.attention_norm(x + self.attention(x, x, attention_mask=mask))
            return self.output_norm(x + self.output_dense(self.intermediate(x)))

    class Bert(keras.Model):
        def __init__(self):
            super().__init__(name="bert")
            self.words = keras.layers.Embedding(VOCAB, HIDDEN, name="word_embeddings")
            self.positions = keras.layers.Embedding(POSITIONS, HIDDEN, name="position_embeddings")
            self.types = keras.layers.Embedding(2, HIDDEN, name="token_type_embeddings")
            self.norm = keras.layers.LayerNormalization(epsilon=1e-12, name="embeddings_norm")
            self.encoder = [Encoder(i) for i in range(LAYERS)]

        def call(self, input_ids, attention_mask, token_type_ids):
            positions = tf.range(tf.shape(input_ids)[1])[tf.newaxis, :]
            x = self.norm(self.words(input_ids) + self.positions(positions) + self.types(token_type_ids))
            mask = tf.cast(attention_mask[:, tf.newaxis, :], tf.bool)  # [B, 1, S]: every query sees the same keys
            for layer in self.encoder:
                x = layer(x, mask)
            return x

    model = Bert()
    ids = tf.ones((1, 4), tf.int32)
    model(ids, ids, ids)
    randomize(model.variables)

    def run(input_ids, attention_mask, token_type_ids):
        return {"last_hidden_state": model(input_ids, attention_mask, token_type_ids)}
    return run, ["input_ids", "attention_mask", "token_type_ids"], {"keras": keras.__version__}


# ---- Keras 3 / keras-hub ------------------------------------------------------------------

def kerashub_bert():
    import keras
    import keras_hub

    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=VOCAB, num_layers=LAYERS, num_heads=HEADS, hidden_dim=HIDDEN,
        intermediate_dim=INTERMEDIATE, max_sequence_length=POSITIONS, num_segments=2, dropout=0.0)
    randomize(backbone.weights)

    def run(token_ids, padding_mask, segment_ids):
        out = backbone({"token_ids": token_ids, "padding_mask": padding_mask, "segment_ids": segment_ids},
                       training=False)
        return {"sequence_output": out["sequence_output"]}
    return run, ["token_ids", "padding_mask", "segment_ids"], {"keras": keras.__version__,
                                                               "keras_hub": keras_hub.__version__}


# ---- transformers 4.x TF classes ------------------------------------------------------------

def hftf(family: str):
    import transformers
    from transformers import activations_tf
    from transformers import (BertConfig, DistilBertConfig, RobertaConfig, TFBertModel, TFDistilBertModel,
                              TFRobertaModel)

    # "gelu" is tf_keras' gelu, which TF 2.21 computes with Erfc, an op tf2onnx 1.17 cannot convert;
    # transformers' own _gelu is the erf form that tf.nn.gelu was before
    activations_tf.ACT2FN["gelu"] = activations_tf._gelu
    if family == "distilbert":
        config = DistilBertConfig(vocab_size=VOCAB, n_layers=LAYERS, n_heads=HEADS, dim=HIDDEN,
                                  hidden_dim=INTERMEDIATE, max_position_embeddings=POSITIONS)
        model, names = TFDistilBertModel(config), ["input_ids", "attention_mask"]
    else:
        common = dict(vocab_size=VOCAB, num_hidden_layers=LAYERS, num_attention_heads=HEADS, hidden_size=HIDDEN,
                      intermediate_size=INTERMEDIATE, max_position_embeddings=POSITIONS)
        if family == "roberta":  # position ids count from padding_idx + 1, as roberta-base's do
            config = RobertaConfig(**common, type_vocab_size=1, pad_token_id=1)
            config.max_position_embeddings = POSITIONS + 2
            model, names = TFRobertaModel(config), ["input_ids", "attention_mask"]
        else:
            config = BertConfig(**common, type_vocab_size=2)
            model, names = (TFBertModel(config, add_pooling_layer=False),
                            ["input_ids", "attention_mask", "token_type_ids"])
    ids = tf.constant([[2, 3, 4, 5]], tf.int32)
    model(**{n: ids if n == "input_ids" else tf.ones_like(ids) for n in names})
    randomize(model.weights)

    def run(*args):
        out = model(**dict(zip(names, args)), training=False)
        return {"last_hidden_state": out.last_hidden_state}
    return run, names, {"transformers": transformers.__version__, "tf_keras": _tf_keras_version()}


def _tf_keras_version() -> str:
    import tf_keras
    return tf_keras.__version__


ROUTES = {
    "tfkeras-bert": (tfkeras_bert, "bert", "tf_keras layers: Embedding, MultiHeadAttention, Dense(gelu)"),
    "kerashub-bert": (kerashub_bert, "bert", "keras-hub BertBackbone (Keras 3)"),
    "hftf-bert": (lambda: hftf("bert"), "bert", "transformers TFBertModel"),
    "hftf-roberta": (lambda: hftf("roberta"), "roberta", "transformers TFRobertaModel"),
    "hftf-distilbert": (lambda: hftf("distilbert"), "distilbert", "transformers TFDistilBertModel"),
}


def export(route: str, opsets, out_dir: Path) -> list[dict]:
    import tf2onnx

    build, family, description = ROUTES[route]
    run, names, extra = build()
    signature = [tf.TensorSpec([None, None], tf.int32, name=n) for n in names]
    function = tf.function(run, input_signature=signature)
    entries = []
    for opset in opsets:
        name = f"{route}_tf2onnx_{opset}"
        path = out_dir / f"{name}.onnx"
        model, _ = tf2onnx.convert.from_function(function, input_signature=signature, opset=opset)
        model.producer_version = tf2onnx.__version__  # no git hash: reproducible bytes
        path.write_bytes(model.SerializeToString())

        def reference(feeds):
            out = function(*[tf.constant(feeds[n]) for n in names])
            return {k: v.numpy() for k, v in out.items()}
        entry = check_against(path, reference, names, vocab=VOCAB)
        entry.update(family=family, route=route, description=description, exporter="tf2onnx", opset=opset,
                     versions={"tensorflow": tf.__version__, "tf2onnx": tf2onnx.__version__, **extra},
                     layers=LAYERS, hidden=HIDDEN, heads=HEADS, intermediate=INTERMEDIATE)
        entries.append(entry)
        print(f"{path.name}: {entry['size_bytes']:,} bytes, {entry['nodes']} nodes, "
              f"max abs diff {entry['max_abs_diff']:.2e}")
    return entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", default=",".join(ROUTES))
    parser.add_argument("--opsets", default=",".join(map(str, OPSETS)))
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    entries, failures = [], {}
    for route in args.routes.split(","):
        try:
            entries += export(route, [int(o) for o in args.opsets.split(",")], args.out_dir)
        except Exception as e:  # one route failing must not cost the others
            failures[route] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            print(f"{route}: FAILED {failures[route]}", file=sys.stderr)
    merge_manifest(args.out_dir, entries, failures)


if __name__ == "__main__":
    main()
