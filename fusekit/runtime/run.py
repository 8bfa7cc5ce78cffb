"""``fusekit run``: one inference on one backend, and a summary of every output.

Inputs come from an .npz of named arrays or, by default, from
:func:`fusekit.inputs.make_inputs` (token ids inside the vocabulary, 0/1 masks with
padding). Either way they are checked against the model's declared inputs first,
so a wrong name, dtype or shape is one clear line rather than a runtime's trace.
"""
from __future__ import annotations

import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from ..errors import FusekitError
from ..inputs import Setting, make_inputs
from ..modelio import load, staged
from . import backends


@dataclass
class RunResult:
    description: str
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    load_seconds: float
    run_seconds: float

    def summary(self) -> str:
        lines = [f"backend: {self.description}", "inputs:"]
        lines += [f"  {name}  {_shape(a)}" for name, a in self.inputs.items()]
        lines.append("outputs:")
        lines += [f"  {name}  {_shape(a)}  {_stats(a)}" for name, a in self.outputs.items()]
        lines.append(f"time: load {self.load_seconds:.2f} s, run {self.run_seconds * 1e3:.1f} ms "
                     "(one cold run; `fusekit bench` measures steady state)")
        return "\n".join(lines)


def _shape(a: np.ndarray) -> str:
    return f"{a.dtype}[{', '.join(map(str, a.shape))}]"


def _stats(a: np.ndarray) -> str:
    if a.size == 0:
        return "empty"
    values = a.astype(np.float64)
    finite = values[np.isfinite(values)]
    text = (f"min {finite.min():.4g}  max {finite.max():.4g}  mean {finite.mean():.4g}" if finite.size
            else "no finite values")
    bad = values.size - finite.size
    return text + (f"  ({bad} NaN/inf)" if bad else "")


def load_feeds(path: str | Path) -> dict[str, np.ndarray]:
    """The named arrays of an .npz file (``np.savez(path, input_ids=…, …)``)."""
    p = Path(path)
    if not p.exists():
        raise FusekitError(f"{p}: no such file")
    if p.is_dir():
        raise FusekitError(f"{p}: is a directory, not an .npz file")
    if not zipfile.is_zipfile(p):
        with open(p, "rb") as f:
            npy = f.read(6) == b"\x93NUMPY"
        if npy:
            raise FusekitError(f"{p}: holds one unnamed array (.npy); give an .npz of named arrays "
                               "(np.savez(path, input_ids=…, attention_mask=…))")
        raise FusekitError(f"{p}: not an .npz archive (np.savez(path, input_ids=…, …) writes one)")
    try:
        with np.load(p, allow_pickle=False) as archive:  # pickles could run code: refused
            return {name: archive[name] for name in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise FusekitError(f"{p}: cannot read its arrays ({reason})") from None


def _declared(model: onnx.ModelProto) -> dict[str, tuple[np.dtype, list]]:
    """Each graph input the caller must feed: its dtype and dims (an int, a name, or None)."""
    initializers = {t.name for t in model.graph.initializer}
    declared = {}
    for vi in model.graph.input:
        if vi.name in initializers:
            continue
        t = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
        declared[vi.name] = (onnx.helper.tensor_dtype_to_np_dtype(t.elem_type) if t.elem_type else None, dims)
    return declared


def _spell(dims: list) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def check_feeds(feeds: dict[str, np.ndarray], model: onnx.ModelProto, source: str):
    """Refuse feeds the model cannot take: unknown or missing names, wrong dtype, rank or size."""
    declared = _declared(model)
    unknown = [n for n in feeds if n not in declared]
    if unknown:
        raise FusekitError(f"{source}: '{unknown[0]}' is not an input of the model (its inputs: {', '.join(declared)})")
    missing = [n for n in declared if n not in feeds]
    if missing:
        raise FusekitError(f"{source}: no array for the model's input '{missing[0]}' "
                           f"(its inputs: {', '.join(declared)})")
    sizes: dict[str, tuple[str, int]] = {}  # symbolic dim → (first input that bound it, its size)
    for name, (dtype, dims) in declared.items():
        a = feeds[name]
        if dtype is not None and a.dtype != dtype:
            raise FusekitError(f"{source}: input '{name}' is {a.dtype}; the model takes {dtype}")
        wrong_size = any(isinstance(d, int) and d > 0 and n != d for n, d in zip(a.shape, dims))
        if (dims and a.ndim != len(dims)) or wrong_size:
            raise FusekitError(f"{source}: input '{name}' has shape {list(a.shape)}; the model takes {_spell(dims)}")
        for size, dim in zip(a.shape, dims):
            if isinstance(dim, str):
                first, bound = sizes.setdefault(dim, (name, size))
                if bound != size:
                    raise FusekitError(f"{source}: inputs disagree on '{dim}': "
                                       f"'{first}' has {bound}, '{name}' has {size}")


def generated_feeds(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    """make_inputs' meaningful random inputs; ``--shape`` sizes set the batch and sequence of the rest."""
    declared = _declared(model)
    for name in shapes:
        if name not in declared:
            raise FusekitError(f"--shape {name}=…: '{name}' is not an input of the model "
                               f"(its inputs: {', '.join(declared)})")
    batch, seq = next((s for s in shapes.values() if len(s) == 2), (Setting.batch, Setting.seq))
    feeds = make_inputs(model, Setting("right", batch, seq), seed, shapes)
    check_feeds(feeds, model, "--shape")
    return feeds


def run_model(path: str | Path, backend: str = "ort", device: str = "cpu", threads: int | None = None,
              precision: str = "f32", inputs: str | Path | None = None,
              shapes: dict[str, tuple[int, ...]] | None = None, seed: int = 0) -> RunResult:
    if inputs and shapes:
        raise FusekitError("--shape sizes the generated inputs; it cannot be combined with --inputs")
    model = load(path)
    if inputs:
        feeds = load_feeds(inputs)
        check_feeds(feeds, model, str(inputs))
    else:
        feeds = generated_feeds(model, shapes or {}, seed)
    del model  # the runtime reads the file itself; don't hold the weights twice
    start = time.perf_counter()
    runner = backends.load(backend, path, device, threads, precision)
    loaded = time.perf_counter()
    outputs = runner.run(feeds)
    done = time.perf_counter()
    return RunResult(runner.describe(), feeds, outputs, loaded - start, done - loaded)


def save_outputs(outputs: dict[str, np.ndarray], dest: str | Path, protect: tuple = ()):
    """Write the outputs as an .npz, atomically (np.load(dest)[name] reads one back)."""
    with staged(dest, protect) as p, open(p, "wb") as f:  # a file object: np.savez would append ".npz"
        np.savez(f, **outputs)
