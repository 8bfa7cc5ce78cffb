"""Proving a rewritten model computes what the original computes.

Both models run in ONNX Runtime with its graph optimizations off, so none of the
runtime's own fusions can hide a difference, on the same seeded inputs over several
settings (right and left padding, all-ones masks, other batch sizes and lengths).
Each output passes when its largest error is within ``atol + rtol · scale``, where
scale is the largest magnitude of the reference output.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
import onnxruntime as ort

from .errors import FusekitError
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
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own exception types for every load failure
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FusekitError(f"ONNX Runtime cannot load the model: {first[:300]}") from None


def _as_model(m) -> onnx.ModelProto:
    if isinstance(m, onnx.ModelProto):
        return m
    from .modelio import load
    return load(m)


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
           rtol: float | None = None, shapes: dict[str, tuple[int, ...]] | None = None) -> VerifyResult:
    """Run both models on the same meaningful random inputs and compare every output."""
    ref_model = _as_model(reference)
    ref = session(reference if not isinstance(reference, onnx.ModelProto) else ref_model)
    cand = session(candidate)
    ref_names = [o.name for o in ref.get_outputs()]
    cand_names = {o.name for o in cand.get_outputs()}
    settings = _settings(max(1, trials), shapes or {})
    result = VerifyResult(ok=True, settings=[str(s) for s in settings], seed=seed)
    missing = [n for n in ref_names if n not in cand_names]
    if missing:
        return VerifyResult(False, [], result.settings, seed, f"outputs missing from the candidate: {', '.join(missing)}")
    diffs: dict[str, OutputDiff] = {}
    for i, setting in enumerate(settings):
        feeds = make_inputs(ref_model, setting, seed + i, shapes)
        expected, got = _run(ref, feeds, "the reference"), _run(cand, feeds, "the candidate")
        mask = valid_positions(feeds)
        for name in ref_names:
            diffs[name] = _compare(name, expected[name], got[name], mask, atol, rtol, str(setting), diffs.get(name))
    result.outputs = list(diffs.values())
    result.ok = all(o.ok for o in result.outputs)
    return result


def _compare(name, expected, got, mask, atol, rtol, setting, previous: OutputDiff | None) -> OutputDiff:
    if expected.shape != got.shape:
        return OutputDiff(name, float("inf"), 0.0, 0.0, False, worst_setting=f"{setting}: shape {got.shape} != {expected.shape}")
    if not np.issubdtype(expected.dtype, np.floating):
        err = np.where(expected != got, np.inf, 0.0)
        scale, tol = float(np.abs(expected).max(initial=0)), 0.0
    else:
        e64, g64 = expected.astype(np.float64), got.astype(np.float64)
        both_nan = np.isnan(e64) & np.isnan(g64)
        err = np.where(both_nan, 0.0, np.abs(e64 - g64))
        err = np.where(np.isnan(err), np.inf, err)
        scale = float(np.abs(np.nan_to_num(e64)).max(initial=0))
        r = rtol if rtol is not None else DEFAULT_RTOL.get(expected.dtype, 1e-2)
        tol = (atol or 0.0) + r * scale
    valid = padded = None
    if mask is not None and err.ndim >= 2 and err.shape[:2] == mask.shape:
        valid = float(err[mask].max(initial=0))
        padded = float(err[~mask].max(initial=0))
    diff = OutputDiff(name, float(err.max(initial=0)), scale, tol, float(err.max(initial=0)) <= tol,
                      valid, padded, setting)
    if previous is None:
        return diff
    worst = diff if diff.max_abs - diff.tolerance > previous.max_abs - previous.tolerance else previous
    worst_valid = _max(previous.valid_max_abs, valid)
    worst_padded = _max(previous.padded_max_abs, padded)
    return OutputDiff(name, max(diff.max_abs, previous.max_abs), max(diff.scale, previous.scale),
                      worst.tolerance, previous.ok and diff.ok, worst_valid, worst_padded, worst.worst_setting)


def _max(a, b):
    vals = [v for v in (a, b) if v is not None]
    return max(vals) if vals else None
