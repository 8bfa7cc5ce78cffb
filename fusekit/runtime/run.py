"""``fusekit run``: one inference on one backend, and a summary of every output.

Inputs come from an .npz of named arrays or, by default, from
:func:`fusekit.inputs.make_inputs` (token ids inside the vocabulary, 0/1 masks with
padding). Either way they are checked against the model's declared inputs first,
so a wrong name, dtype or shape is one clear line rather than a runtime's trace.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from ..errors import FusekitError
from ..inputs import Setting, check_feeds, load_feeds, make_inputs
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


def generated_feeds(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    """make_inputs' meaningful random inputs; ``--shape`` sizes set the batch and sequence of the rest."""
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
