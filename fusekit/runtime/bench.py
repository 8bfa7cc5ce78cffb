"""``fusekit bench``: latency and throughput of models × backends × shapes, measured alike.

Within one configuration (backend, batch, sequence length) every model is loaded
and warmed up, then the timed runs go round-robin — model 1, 2, …, n, then again
starting one further along — so drift of the machine (turbo, other load, thermal)
falls on every model alike and the ratios stay honest even when the absolute
numbers wander. Inputs are :func:`fusekit.inputs.make_inputs` at the given batch and
length with all-ones masks (every token real), the same seed for every model, or with
``lengths`` a mask that keeps each row's first L tokens: a list of lengths (cycled over the
batch) or a distribution, ``uniform:LO:HI`` or ``skewed:LO:HI`` (most rows short, a few
long: LO + (HI − LO)·u³), drawn per row with a fixed seed.
"""
from __future__ import annotations

import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from ..errors import FusekitError
from ..inputs import Setting, input_role, make_inputs
from ..modelio import load, staged
from . import backends

SCHEMA = "fusekit.bench/1"


@dataclass
class Timing:
    """One model on one backend at one shape."""

    model: str
    backend: str
    batch: int
    seq: int
    device: str
    threads: int
    precision: str
    samples_ms: list[float] = field(default_factory=list)
    ratio: float | None = None  # median / the first model's median, same backend and shape
    lengths: list[int] | None = None  # each row's real tokens (the rest padding); None: all real

    @property
    def shape(self) -> str:
        real = f" {100 * sum(self.lengths) / (self.batch * self.seq):.0f}%" if self.lengths else ""
        return f"{self.batch}×{self.seq}{real}"

    @property
    def median_ms(self) -> float:
        return float(np.median(self.samples_ms))

    @property
    def p90_ms(self) -> float:
        return float(np.percentile(self.samples_ms, 90))

    @property
    def throughput(self) -> float:
        """Sequences per second at the median latency."""
        return self.batch * 1000.0 / self.median_ms

    def to_dict(self) -> dict:
        return {"model": self.model, "backend": self.backend, "batch": self.batch, "seq": self.seq,
                "device": self.device, "threads": self.threads, "precision": self.precision,
                "median_ms": self.median_ms, "p90_ms": self.p90_ms, "throughput": self.throughput,
                "ratio": self.ratio, "lengths": self.lengths, "samples_ms": self.samples_ms}


@dataclass
class BenchReport:
    models: list[str]
    timings: list[Timing]
    descriptions: dict[str, str]  # backend → what its runners said about themselves
    settings: dict

    def table(self) -> str:
        s = self.settings
        lines = [(f"fusekit bench · {s['threads']} threads · device {s['device']} · precision {s['precision']} · "
                  f"{s['warmup']} warm-up + {s['iterations']} timed runs per model, interleaved round-robin")]
        lines += [f"  {backend}: {text}" for backend, text in self.descriptions.items()]
        labels = short_labels(self.models)
        width = max(len("model"), *(len(v) for v in labels.values()))
        lines.append("")
        shape = max(len("shape"), *(len(t.shape) for t in self.timings))
        lines.append(f"{'backend':<9} {'shape':<{shape}} {'model':<{width}}  {'median ms':>10} {'p90 ms':>10} "
                     f"{'seq/s':>9} {'vs first':>9}")
        for t in self.timings:
            lines.append(f"{t.backend:<9} {t.shape:<{shape}} {labels[t.model]:<{width}}  {t.median_ms:>10.2f} "
                         f"{t.p90_ms:>10.2f} {t.throughput:>9.1f} {t.ratio:>8.2f}×")
        lines.append("")
        lines.append("vs first: median latency ÷ the first model's, same backend and shape (below 1.00× = faster)")
        if self.settings.get("lengths"):
            lines.append(f"lengths {self.settings['lengths']}: each row keeps its first L tokens, the rest is padding "
                         "(shape: batch × padded length, then the share of real tokens)")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "settings": self.settings, "machine": machine(), "models": self.models,
                "backends": self.descriptions, "results": [t.to_dict() for t in self.timings]}


def machine() -> dict:
    import onnxruntime
    import openvino
    return {"cpus": backends.default_threads(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
            "openvino": openvino.get_version().split("-")[0]}


def short_labels(models: list[str]) -> dict[str, str]:
    """File names when they tell the models apart, the paths as given otherwise."""
    names = [Path(m).name for m in models]
    unique = len(set(names)) == len(names)
    return {m: (n if unique else m) for m, n in zip(models, names)}


def parse_list(text: str, what: str, cast=int) -> list:
    """``"1,8"`` → ``[1, 8]``; the backends' ``"ort,openvino"`` with ``cast=str``."""
    items = [x.strip() for x in text.split(",") if x.strip()]
    try:
        values = [cast(x) for x in items]
    except ValueError:
        values = []
    if not values or (cast is int and min(values) < 1):
        raise FusekitError(f"--{what} {text!r}: expected a comma-separated list of "
                           + ("positive integers, e.g. 1,8" if cast is int else "names, e.g. ort,openvino"))
    return values


DISTRIBUTIONS = ("uniform", "skewed")


def parse_lengths(text: str) -> list[int] | tuple[str, int, int]:
    """``"112,87,73"`` → a list; ``"uniform:16:128"`` / ``"skewed:16:128"`` → a distribution."""
    kind, _, bounds = text.partition(":")
    if kind in DISTRIBUTIONS:
        try:
            low, high = (int(x) for x in bounds.split(":"))
        except ValueError:
            low = high = 0
        if not 1 <= low <= high:
            raise FusekitError(f"--lengths {text!r}: expected {kind}:LO:HI with 1 ≤ LO ≤ HI, e.g. {kind}:16:128")
        return kind, low, high
    return parse_list(text, "lengths")


def row_lengths(spec, batch: int, seq: int, seed: int = 0) -> list[int]:
    """Each row's number of real tokens for ``spec`` (see :func:`parse_lengths`), at most ``seq``."""
    if isinstance(spec, tuple):
        kind, low, high = spec
        u = np.random.default_rng(seed).random(batch)
        lengths = low + (high - low) * (u if kind == "uniform" else u ** 3)
        lengths = [int(round(x)) for x in lengths]
    else:
        lengths = [spec[i % len(spec)] for i in range(batch)]
    if max(lengths) > seq:
        raise FusekitError(f"--lengths: a row of {max(lengths)} tokens does not fit in --seq {seq}")
    return [min(x, seq) for x in lengths]


def with_lengths(feeds: dict[str, np.ndarray], lengths: list[int]) -> dict[str, np.ndarray]:
    """``feeds`` with every attention mask keeping each row's first ``lengths[b]`` tokens."""
    out = dict(feeds)
    for name, value in feeds.items():
        if input_role(name, value.dtype) == "mask" and value.ndim == 2:
            mask = np.zeros_like(value)
            for b, n in enumerate(lengths):
                mask[b, :n] = 1
            out[name] = mask
    return out


def round_robin(n_models: int, iterations: int) -> list[int]:
    """The order of the timed runs: each round visits every model once, starting one further along."""
    return [(r + k) % n_models for r in range(iterations) for k in range(n_models)]


def add_ratios(timings: list[Timing]):
    """Each timing's median over the first model's, for the same backend and shape."""
    first: dict[tuple, float] = {}
    for t in timings:  # timings are in model order within a configuration
        key = (t.backend, t.batch, t.seq, tuple(t.lengths or ()))
        first.setdefault(key, t.median_ms)
        t.ratio = t.median_ms / first[key]


def measure(runners: list, feeds: list[dict], iterations: int, warmup: int,
            tick: Callable[[], None] = lambda: None) -> list[list[float]]:
    """Latencies in ms of each runner: warm-up runs first, then the timed runs interleaved round-robin."""
    for runner, f in zip(runners, feeds):
        for _ in range(warmup):
            runner.run(f)
            tick()
    samples: list[list[float]] = [[] for _ in runners]
    for i in round_robin(len(runners), iterations):
        start = time.perf_counter()
        runners[i].run(feeds[i])
        samples[i].append((time.perf_counter() - start) * 1e3)
        tick()
    return samples


class Progress:
    """A bar on a terminal; elsewhere (logs, CI) one line per finished configuration."""

    def __init__(self, total: int, stream: TextIO | None = None):
        stream = stream or sys.stderr  # looked up now, so a redirected stderr is honoured
        self.total, self.done, self.stream, self.label = total, 0, stream, ""
        self.tty = stream.isatty()
        self.drawn = 0.0

    def start(self, label: str):
        self.label = label
        self._draw()

    def tick(self):
        self.done += 1
        if time.monotonic() - self.drawn > 0.1 or self.done == self.total:  # a tiny model's runs outpace a terminal
            self._draw()

    def finish(self, label: str):
        if not self.tty:
            print(f"fusekit bench: {label} done ({self.done}/{self.total} runs)", file=self.stream, flush=True)

    def close(self):
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def _draw(self):
        self.drawn = time.monotonic()
        if self.tty:
            filled = int(30 * self.done / max(self.total, 1))
            self.stream.write(f"\r\033[K[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total}  {self.label}")
            self.stream.flush()


def _interface(path: str):
    """The model without its weights' bytes: make_inputs needs only names, dtypes and table sizes."""
    model = load(path)  # clear errors for missing or broken files, before anything is timed
    for t in model.graph.initializer:
        t.ClearField("raw_data")
    return model


def bench(models: list[str], backend_names: list[str], batches: list[int], seqs: list[int], device: str = "cpu",
          threads: int | None = None, precision: str = "f32", iterations: int = 20, warmup: int = 2,
          stream: TextIO | None = None, lengths=None) -> BenchReport:
    if iterations < 1 or warmup < 0:
        raise FusekitError("--iterations must be at least 1 and --warmup at least 0")
    for name in backend_names:  # fail before measuring, not after the first backend's runs
        backends.check(name, device, precision)
    if threads is not None and threads < 1:
        raise FusekitError(f"--threads must be at least 1, got {threads}")
    threads = threads or backends.default_threads()
    interfaces = {m: _interface(m) for m in models}
    rows = {(b, s): row_lengths(lengths, b, s) for b in batches for s in seqs} if lengths else {}
    shapes = [(b, s) for b in batches for s in seqs]
    progress = Progress(len(backend_names) * len(shapes) * len(models) * (warmup + iterations), stream)
    timings, descriptions = [], {}
    try:
        for name in backend_names:
            runners = [backends.load(name, m, device, threads, precision) for m in models]
            descriptions[name] = runners[0].describe()
            for batch, seq in shapes:
                label = f"{name} {batch}×{seq}"
                progress.start(label)
                feeds = [make_inputs(interfaces[m], Setting("none", batch, seq), seed=0) for m in models]
                if lengths:
                    feeds = [with_lengths(f, rows[batch, seq]) for f in feeds]
                try:
                    samples = measure(runners, feeds, iterations, warmup, progress.tick)
                except FusekitError as e:
                    raise FusekitError(f"{label}: {e}") from None
                timings += [Timing(m, name, batch, seq, r.device, r.threads, r.precision, s,
                                   lengths=rows.get((batch, seq)))
                            for m, r, s in zip(models, runners, samples)]
                progress.finish(label)
            del runners  # free one backend's models before loading the next
    finally:
        progress.close()
    add_ratios(timings)
    settings = {"backends": backend_names, "device": device, "threads": threads, "precision": precision,
                "batches": batches, "seqs": seqs, "iterations": iterations, "warmup": warmup,
                "order": "round-robin, rotating the first model each round",
                "inputs": "make_inputs, seed 0, " + ("masks keeping each row's first L tokens" if lengths
                                                     else "all-ones masks"),
                "lengths": None if not lengths else (":".join(map(str, lengths)) if isinstance(lengths, tuple)
                                                     else ",".join(map(str, lengths)))}
    return BenchReport(list(models), timings, descriptions, settings)


def require_matplotlib():
    """Fail before measuring, not after, when --plot cannot be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise FusekitError("--plot needs matplotlib: pip install matplotlib (or pip install 'fusekit[bench]')") \
            from None


def plot(report: BenchReport, dest: Path):
    """One panel per configuration (its own y scale), a bar per model labelled with its median and ratio."""
    import matplotlib
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    configs = list(dict.fromkeys((t.backend, t.batch, t.seq) for t in report.timings))
    labels = short_labels(report.models)
    colors = plt.get_cmap("tab10").colors
    cols = min(len(configs), 4)
    rows = (len(configs) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols + 1, 3.4 * rows + 0.8), squeeze=False)
    for ax, (backend, batch, seq) in zip(axes.flat, configs):
        ts = [t for t in report.timings if (t.backend, t.batch, t.seq) == (backend, batch, seq)]
        x = np.arange(len(ts))
        medians = [t.median_ms for t in ts]
        spread = [[0] * len(ts), [t.p90_ms - t.median_ms for t in ts]]
        ax.bar(x, medians, yerr=spread, capsize=3, color=[colors[i % 10] for i in range(len(ts))],
               error_kw={"ecolor": "0.4", "elinewidth": 1})
        for i, t in enumerate(ts):  # above the whisker, so the two never overlap
            ax.annotate(f"{t.median_ms:.3g} ms\n{t.ratio:.2f}×", (i, t.p90_ms),
                        ha="center", va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
        ax.set_title(f"{backend} · batch {batch} × seq {seq}", fontsize=10)
        ax.set_xticks([])
        ax.set_ylabel("median latency (ms)")
        ax.margins(y=0.25)
    for ax in list(axes.flat)[len(configs):]:
        ax.set_visible(False)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[i % 10]) for i in range(len(report.models))]
    fig.legend(handles, [labels[m] for m in report.models], loc="lower center", ncol=min(len(report.models), 3),
               fontsize=9, frameon=False)
    s = report.settings
    fig.suptitle(f"fusekit bench · {s['threads']} threads · {s['device']} · {s['precision']} "
                 "(bars: median, whiskers: p90; ratio vs the first model)", fontsize=10)
    fig.tight_layout(rect=(0, 0.08 + 0.02 * ((len(report.models) - 1) // 3), 1, 0.95))
    with staged(dest) as p:
        fig.savefig(p, dpi=120, format="png")  # the format explicitly: no extension appended
    plt.close(fig)
