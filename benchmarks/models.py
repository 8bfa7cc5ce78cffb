"""Full-size BERT benchmark models, generated on demand and cached.

No model hub is reachable, so the models are built from a BertConfig with
random weights (torch.manual_seed(0); biases and LayerNorm parameters
re-drawn so none is trivially 0/1, exactly as for the tiny test models in
testmodels/export_bert.py) and exported to ONNX with the TorchScript
exporter (torch.onnx.export(..., dynamo=False, do_constant_folding=True)).

  bert-base   hidden 768,  12 layers, 12 heads, intermediate 3072
  bert-large  hidden 1024, 24 layers, 16 heads, intermediate 4096
  (both: vocab 30522, max_position_embeddings 512, type_vocab_size 2, gelu)

`layers` overrides the depth (e.g. 2, 6, 12, 24, 48 layers of bert-base for
scaling studies). Graph interface, the same as the test models:

  inputs:  input_ids, attention_mask, token_type_ids   int64 [batch, sequence]
  outputs: last_hidden_state [batch, sequence, hidden], pooler_output [batch, hidden]

Files are cached in benchmarks/models/ (git-ignored) under a name that encodes
every parameter, e.g. bert-base_L12_opset14_eager_torchscript.onnx. An
existing file is reused; a missing one is exported to a temporary name and
renamed into place, so an interrupted run never leaves a broken cache file.

    from benchmarks.models import get_model
    path = get_model("bert-base", layers=6)

    python -m benchmarks.models bert-base [--layers N] [--opset 14] [--attn eager|sdpa]
                                          [--dynamo] [--verify]

Needs torch and transformers (pip install torch==2.13.0, then
pip install -e '.[bench]'); importing this module does not.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import sys
import time
import warnings

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
MODELS_DIR = pathlib.Path(__file__).resolve().parent / "models"

SEED = 0
# Shared by both sizes (BERT's released configs).
_COMMON = {
    "vocab_size": 30522,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
}
CONFIGS: dict[str, dict] = {
    "bert-base": {
        **_COMMON,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
    },
    "bert-large": {
        **_COMMON,
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
    },
}
ATTN_IMPLEMENTATIONS = ("eager", "sdpa")
DYNAMO_MIN_OPSET = 18
# A single ONNX protobuf can't exceed 2 GiB; past that the weights must be
# stored as external data. Leave headroom for the graph itself.
_MAX_INLINE_BYTES = 2**31 - 64 * 2**20

INSTALL_HINT = (
    "benchmarks.models needs torch and transformers: "
    "pip install torch==2.13.0 && pip install -e '.[bench]'"
)


class MissingBenchDependencies(ImportError):
    """torch or transformers is not installed."""


class DynamoExportError(RuntimeError):
    """torch.onnx.export(dynamo=True) is not usable here."""


def model_path(
    name: str,
    *,
    layers: int | None = None,
    opset: int = 14,
    attn: str = "eager",
    dynamo: bool = False,
) -> pathlib.Path:
    """Where get_model() caches this model (validates the arguments; exports nothing)."""
    if name not in CONFIGS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(CONFIGS)}")
    if layers is None:
        layers = CONFIGS[name]["num_hidden_layers"]
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
        raise ValueError(f"layers must be a positive int, got {layers!r}")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 7:
        raise ValueError(f"opset must be an int >= 7, got {opset!r}")
    if attn not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"attn must be one of {ATTN_IMPLEMENTATIONS}, got {attn!r}")
    exporter = "dynamo" if dynamo else "torchscript"
    if dynamo:
        opset = max(opset, DYNAMO_MIN_OPSET)
    return MODELS_DIR / f"{name}_L{layers}_opset{opset}_{attn}_{exporter}.onnx"


def get_model(
    name: str,
    *,
    layers: int | None = None,
    opset: int = 14,
    attn: str = "eager",
    dynamo: bool = False,
) -> pathlib.Path:
    """Path to the cached ONNX model, exporting it first if it is missing.

    name: "bert-base" or "bert-large"; layers: depth override; opset: ONNX
    opset (with dynamo=True, max(opset, 18) is used); attn: transformers
    attention implementation, "eager" or "sdpa"; dynamo: use the dynamo
    exporter instead of the TorchScript one.

    Raises MissingBenchDependencies (an ImportError) without torch or
    transformers, and DynamoExportError when dynamo=True can't work here.
    """
    path = model_path(name, layers=layers, opset=opset, attn=attn, dynamo=dynamo)
    if path.is_file():
        return path
    if layers is None:
        layers = CONFIGS[name]["num_hidden_layers"]
    _export(name, layers, opset, attn, dynamo, path)
    return path


# --------------------------------------------------------------------------- export


def _require_deps():
    """Import torch, transformers and the test-model export helpers."""
    missing = [
        m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None
    ]
    if missing:
        raise MissingBenchDependencies(
            f"{INSTALL_HINT} (missing: {', '.join(missing)})"
        )
    if str(REPO_ROOT) not in sys.path:  # testmodels/ is not an installed package
        sys.path.insert(0, str(REPO_ROOT))
    try:
        from testmodels import export_bert
    except ImportError as exc:  # e.g. a broken torch install
        raise MissingBenchDependencies(f"{INSTALL_HINT} ({exc})") from exc
    return export_bert


def build_model(name: str, layers: int, attn: str):
    """The seeded random-weight model, in eval mode (a testmodels BertForExport)."""
    export_bert = _require_deps()
    import torch
    from transformers import BertConfig

    torch.manual_seed(SEED)
    config = BertConfig(
        **{**CONFIGS[name], "num_hidden_layers": layers}, attn_implementation=attn
    )
    model = export_bert.BertForExport(config)
    export_bert.randomize_trivial_params(model, torch.Generator().manual_seed(SEED))
    model.eval()
    assert model.config._attn_implementation == attn
    return model


def param_count(name: str, layers: int | None = None) -> int:
    """Number of parameters of the model (what BertModel with a pooler has)."""
    c = CONFIGS[name]
    h, i = c["hidden_size"], c["intermediate_size"]
    layers = c["num_hidden_layers"] if layers is None else layers
    embeddings = (
        c["vocab_size"] + c["max_position_embeddings"] + c["type_vocab_size"]
    ) * h + 2 * h
    # Q, K, V, attention output dense; FFN in and out; two LayerNorms.
    layer = 4 * (h * h + h) + (h * i + i) + (i * h + h) + 2 * 2 * h
    pooler = h * h + h
    return embeddings + layers * layer + pooler


def _remove_stale_temps(folder: pathlib.Path) -> None:
    """Delete temp files left in `folder` by killed exports (whose process is gone)."""
    for tmp in folder.glob(".*.onnx.tmp-*"):
        try:
            os.kill(int(tmp.name.rsplit("-", 1)[1]), 0)  # still running: leave it alone
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except (ValueError, OSError):
            pass


def _export(
    name: str, layers: int, opset: int, attn: str, dynamo: bool, path: pathlib.Path
) -> None:
    export_bert = _require_deps()
    import torch

    if dynamo:
        _check_dynamo_available()
    weight_bytes = 4 * param_count(name, layers)  # float32
    if weight_bytes > _MAX_INLINE_BYTES:
        raise ValueError(
            f"{name} with {layers} layers has {weight_bytes / 2**30:.2f} GiB of weights, over "
            "the 2 GiB ONNX protobuf limit; external-data models are not supported here"
        )
    model = build_model(name, layers, attn)
    example = export_bert.make_inputs(2, 16, SEED, pad=True)
    args = tuple(torch.from_numpy(example[n]) for n in export_bert.INPUT_NAMES)

    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path.parent)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # Expected and harmless for BERT (the test models get them too).
            warnings.filterwarnings(
                "ignore", message="You are using the legacy TorchScript"
            )
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message="Exporting aten::index operator")
            if dynamo:
                _export_dynamo(model, args, tmp, opset, export_bert)
            else:
                torch.onnx.export(
                    model,
                    args,
                    str(tmp),
                    dynamo=False,
                    opset_version=opset,
                    do_constant_folding=True,
                    input_names=export_bert.INPUT_NAMES,
                    output_names=export_bert.OUTPUT_NAMES,
                    dynamic_axes=export_bert.DYNAMIC_AXES,
                )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _check_dynamo_available() -> None:
    missing = [m for m in ("onnxscript",) if importlib.util.find_spec(m) is None]
    if missing:
        raise DynamoExportError(
            "torch.onnx.export(dynamo=True) needs the onnxscript package, which is not installed "
            "(pip install onnxscript); use dynamo=False (the TorchScript exporter) instead"
        )


def _export_dynamo(model, args, tmp: pathlib.Path, opset: int, export_bert) -> None:
    import torch

    batch = torch.export.Dim("batch")
    seq = torch.export.Dim("sequence", max=model.config.max_position_embeddings)
    axes = {0: batch, 1: seq}
    try:
        program = torch.onnx.export(
            model,
            args,
            dynamo=True,
            opset_version=max(opset, DYNAMO_MIN_OPSET),
            input_names=export_bert.INPUT_NAMES,
            output_names=export_bert.OUTPUT_NAMES,
            dynamic_shapes={n: axes for n in export_bert.INPUT_NAMES},
            external_data=False,
            verbose=False,
        )
        if program is None:
            raise RuntimeError("torch.onnx.export returned no ONNXProgram")
        program.save(str(tmp), external_data=False)
    except Exception as exc:
        raise DynamoExportError(
            f"torch.onnx.export(dynamo=True) failed with torch {torch.__version__}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc


# --------------------------------------------------------------------------- CLI


def _verify(path: pathlib.Path, name: str, layers: int, attn: str) -> None:
    """check_model + onnxruntime vs PyTorch on three shapes (testmodels' verify)."""
    export_bert = _require_deps()
    worst = export_bert.verify(build_model(name, layers, attn), str(path))
    print(
        f"verify: check_model ok; onnxruntime matches PyTorch (worst {worst:.2e} < {export_bert.ATOL})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.models",
        description="Export (or find cached) a random-weight BERT benchmark model and print its path.",
    )
    parser.add_argument("name", choices=sorted(CONFIGS))
    parser.add_argument(
        "--layers",
        type=int,
        default=None,
        help="number of encoder layers (default: the model's)",
    )
    parser.add_argument(
        "--opset",
        type=int,
        default=14,
        help="ONNX opset (default 14; dynamo uses at least 18)",
    )
    parser.add_argument(
        "--attn",
        choices=ATTN_IMPLEMENTATIONS,
        default="eager",
        help="attention implementation",
    )
    parser.add_argument(
        "--dynamo", action="store_true", help="use torch.onnx.export(dynamo=True)"
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="also check the file and compare onnxruntime with PyTorch",
    )
    args = parser.parse_args(argv)
    kwargs = {
        "layers": args.layers,
        "opset": args.opset,
        "attn": args.attn,
        "dynamo": args.dynamo,
    }
    try:
        path = model_path(args.name, **kwargs)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        cached = path.is_file()
        if not cached:
            _require_deps()  # so the time below is the export's, not torch's import
        start = time.perf_counter()
        get_model(args.name, **kwargs)
        elapsed = time.perf_counter() - start
        print(f"path: {path}")
        print(
            f"size: {path.stat().st_size:,} bytes ({path.stat().st_size / 2**20:.1f} MiB)"
        )
        print(
            "export time: cached (not exported)"
            if cached
            else f"export time: {elapsed:.1f} s"
        )
        if args.verify:
            layers = args.layers or CONFIGS[args.name]["num_hidden_layers"]
            _verify(path, args.name, layers, args.attn)
    except MissingBenchDependencies as exc:
        print(exc, file=sys.stderr)
        return 1
    except (DynamoExportError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
