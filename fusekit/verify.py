"""Proving a rewritten model computes what the original computes.

Both models run in ONNX Runtime with its graph optimizations off, so none of the
runtime's own fusions can hide a difference, on the same seeded inputs over several
settings (right and left padding, all-ones masks, other batch sizes and lengths).
Each output passes when its largest error is within ``atol + rtol · scale``, where
scale is the largest magnitude of the reference output.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
import onnxruntime as ort

from .errors import FusekitError
from .modelio import TWO_GB, load, write
from .inputs import SETTINGS, Setting, make_inputs, valid_positions

# Relative to the output's scale; float32 sums in another order differ by ~1e-6.
DEFAULT_RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-9, np.dtype(np.float16): 1e-2}


@dataclass
class OutputDiff:
    name: str
    max_abs: float
    scale: float
    tolerance: float
    ok: bool
    valid_max_abs: float | None = None  # on token positions the mask keeps
    padded_max_abs: float | None = None  # on padded positions
    worst_setting: str = ""

    @property
    def max_rel(self) -> float:
        return self.max_abs / self.scale if self.scale > 0 else (0.0 if self.max_abs == 0 else float("inf"))


@dataclass
class VerifyResult:
    ok: bool
    outputs: list[OutputDiff] = field(default_factory=list)
    settings: list[str] = field(default_factory=list)
    seed: int = 0
    message: str = ""

    def summary(self) -> str:
        verdict = "equivalent" if self.ok else "NOT equivalent"
        lines = [f"verification: {verdict} over {len(self.settings)} trials (seed {self.seed})"]
        if self.message:
            lines.append(f"  {self.message}")
        for o in self.outputs:
            split = ""
            if o.valid_max_abs is not None:
                split = f", valid tokens {o.valid_max_abs:.2e}, padded {o.padded_max_abs:.2e}"
            lines.append(f"  {'ok  ' if o.ok else 'FAIL'} {o.name}: max abs {o.max_abs:.2e}, "
                         f"max rel {o.max_rel:.2e} of scale {o.scale:.3g} (tolerance {o.tolerance:.2e}){split}"
                         + ("" if o.ok else f" — worst at {o.worst_setting}"))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        d = asdict(self)
        for o, od in zip(self.outputs, d["outputs"]):
            od["max_rel"] = o.max_rel
        return d


def session(model: onnx.ModelProto | str | os.PathLike, optimize: bool = False, threads: int = 0) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if isinstance(model, onnx.ModelProto) and model.ByteSize() >= TWO_GB:
        with tempfile.TemporaryDirectory() as tmp:  # one protobuf cannot hold it: go through a file
            write(model, Path(tmp) / "model.onnx", external=True)
            return session(Path(tmp) / "model.onnx", optimize, threads)
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own exception types for every load failure
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if OPENVINO_DOMAIN in first:
            return OpenVinoSession(source)
        raise FusekitError(f"ONNX Runtime cannot load the model: {first[:300]}") from None


OPENVINO_DOMAIN = "org.openvinotoolkit"


class OpenVinoSession:
    """A model with OpenVINO-domain ops (FakeQuantize) runs in the one runtime that has
    them: OpenVINO, at f32, behind the few InferenceSession methods the verifier uses."""

    runtime = "OpenVINO (f32)"

    def __init__(self, source: bytes | str):
        import openvino as ov
        core = ov.Core()
        model = core.read_model(source, b"") if isinstance(source, bytes) else core.read_model(source)
        self.compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        self.inputs = [_Named(p.get_any_name()) for p in self.compiled.inputs]
        self.outputs = [_Named(p.get_any_name()) for p in self.compiled.outputs]

    def get_inputs(self):
        return self.inputs

    def get_outputs(self):
        return self.outputs

    def run(self, _names, feeds):
        result = self.compiled(feeds)
        return [np.asarray(result[self.compiled.output(o.name)]) for o in self.outputs]


@dataclass
class _Named:
    name: str


def _as_model(m) -> onnx.ModelProto:
    return m if isinstance(m, onnx.ModelProto) else load(m)


def _run(sess: ort.InferenceSession, feeds: dict, what: str) -> dict[str, np.ndarray]:
    names = {i.name for i in sess.get_inputs()}
    try:
        outputs = sess.run(None, {k: v for k, v in feeds.items() if k in names})
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FusekitError(f"running {what} failed: {first[:300]}") from None
    return dict(zip([o.name for o in sess.get_outputs()], outputs))


def _settings(trials: int, shapes: dict) -> list[Setting]:
    if shapes:  # the user fixed the sizes: vary only the padding
        batch, seq = next((s for s in shapes.values() if len(s) == 2), (2, 16))
        base = [Setting("right", batch, seq), Setting("left", batch, seq), Setting("none", batch, seq)]
    else:
        base = SETTINGS
    return [base[i % len(base)] for i in range(trials)]


def verify(reference, candidate, trials: int = 4, seed: int = 0, atol: float | None = None,
           rtol: float | None = None, shapes: dict[str, tuple[int, ...]] | None = None,
           inputs_from: onnx.ModelProto | None = None) -> VerifyResult:
    """Run both models on the same meaningful random inputs and compare every output.

    Inputs are built from ``reference`` (or ``inputs_from``, e.g. its skeleton, which
    spares loading a large reference twice).
    """
    ref_model = inputs_from if inputs_from is not None else _as_model(reference)
    ref = session(reference if not isinstance(reference, onnx.ModelProto) else ref_model)
    cand = session(candidate)
    ref_names = [o.name for o in ref.get_outputs()]
    runtimes = {getattr(sess, "runtime", "ONNX Runtime") for sess in (ref, cand)}
    cand_names = {o.name for o in cand.get_outputs()}
    settings = _settings(max(1, trials), shapes or {})
    result = VerifyResult(ok=True, settings=[str(s) for s in settings], seed=seed)
    if runtimes != {"ONNX Runtime"}:
        result.message = f"ran in {' and '.join(sorted(runtimes))}: OpenVINO-domain ops (FakeQuantize) run nowhere else"
    missing = [n for n in ref_names if n not in cand_names]
    if missing:
        return VerifyResult(False, [], result.settings, seed, f"outputs missing from the candidate: {', '.join(missing)}")
    stats: dict[str, _Stats] = {name: _Stats() for name in ref_names}
    for i, setting in enumerate(settings):
        feeds = make_inputs(ref_model, setting, seed + i, shapes)
        expected, got = _run(ref, feeds, "the reference"), _run(cand, feeds, "the candidate")
        mask = valid_positions(feeds)
        for name in ref_names:
            stats[name].add(expected[name], got[name], mask, str(setting))
    result.outputs = [stats[name].result(name, atol, rtol) for name in ref_names]
    result.ok = all(o.ok for o in result.outputs)
    return result


class _Stats:
    """The largest error and magnitude of one output over all trials."""

    def __init__(self):
        self.err, self.scale, self.valid, self.padded = 0.0, 0.0, None, None
        self.dtype, self.worst, self.problem = None, "", ""

    def add(self, expected: np.ndarray, got: np.ndarray, mask, setting: str):
        self.dtype = expected.dtype
        if expected.shape != got.shape or expected.dtype != got.dtype:
            self.err, self.worst = float("inf"), setting
            self.problem = f"got {got.dtype}{list(got.shape)}, expected {expected.dtype}{list(expected.shape)}"
            return
        e64, g64 = expected.astype(np.float64), got.astype(np.float64)
        err = np.where(np.isnan(e64) & np.isnan(g64), 0.0, np.abs(e64 - g64))
        err = np.nan_to_num(err, nan=np.inf)
        worst = float(err.max(initial=0))
        if worst > self.err:
            self.err, self.worst = worst, setting
        self.scale = max(self.scale, float(np.abs(np.nan_to_num(e64, posinf=0, neginf=0)).max(initial=0)))
        if mask is not None and err.ndim >= 2 and err.shape[:2] == mask.shape:
            self.valid = max(self.valid or 0.0, float(err[mask].max(initial=0)))
            self.padded = max(self.padded or 0.0, float(err[~mask].max(initial=0)))

    def result(self, name: str, atol, rtol) -> OutputDiff:
        exact = self.dtype is None or not np.issubdtype(self.dtype, np.floating)
        r = 0.0 if exact else (rtol if rtol is not None else DEFAULT_RTOL.get(np.dtype(self.dtype), 1e-2))
        tol = (atol or 0.0) + r * self.scale
        worst = f"{self.worst}: {self.problem}" if self.problem else self.worst
        return OutputDiff(name, self.err, self.scale, tol, self.err <= tol, self.valid, self.padded, worst)
