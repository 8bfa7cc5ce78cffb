"""Shared timing and runtime plumbing for the CPU form benchmarks.

benchmarks/op_forms.py and benchmarks/attention_forms.py both time several ONNX
forms of one computation against each other in ONNX Runtime and OpenVINO.  This
module holds what they do alike: page-aligned I/O buffers, the ORT global
intra-op pool, short error texts for table cells, the calibrated round-robin
timing loop (which returns raw samples; each script computes its own
statistics), /proc/stat counters, run-length compaction of layer listings, and the
progress log the whole-model benchmarks (bench_peers, bench_pack) print.

Not a public API: the scripts import it as ``_timing`` (their own folder is on
sys.path when run as ``python benchmarks/<script>.py``).
"""

from __future__ import annotations

import math
import random
import re
import statistics
import sys
import time
from collections.abc import Callable, Mapping

import numpy as np

PAGE = 4096
OUT_PAGE_OFFSET = 2048


def page_aligned_empty(shape, dtype=np.float32, offset: int = 0) -> np.ndarray:
    """Array starting `offset` bytes into a page.

    Inputs sit at offset 0 and every output at OUT_PAGE_OFFSET, so all forms see the same
    input/output address relation.  Left to the allocator, an output that happened to start
    16-32 bytes past the input modulo 4 KiB made two of three *identical* ORT Gelu graphs run
    2.3x slower than the third, reproducibly (presumably 4K aliasing between the kernel's
    stores and its next loads).
    """
    itemsize = np.dtype(dtype).itemsize
    n = int(np.prod(shape)) * itemsize
    raw = np.empty(n + 2 * PAGE, dtype=np.uint8)
    start = (-raw.ctypes.data) % PAGE + offset
    return raw[start:start + n].view(dtype).reshape(shape)


class Unsupported(Exception):
    """A form that a runtime cannot load, compile or bind: a table entry, not a crash."""


def short_error(exc: BaseException, limit: int = 70, ov_prefix: str = "no ONNX op ",
                detailed: bool = False) -> str:
    """First informative line of a (possibly multi-line, path-laden) error.

    detailed: also keep the human-readable tail of an ORT ENFORCE failure (with the node
    type) and strip file paths.
    """
    text = str(exc)
    m = re.search(r"not support the following ONNX operations:\s*([^\n]+)", text)
    if m:
        return (ov_prefix + m.group(1).strip())[:limit]
    if detailed:
        m = re.search(r"was false\.\s*([^\n]+)", text)  # ORT ENFORCE: keep the human-readable tail
        if m:
            node = re.search(r"running (\w+) node", text)
            return ((node.group(1) + ": " if node else "") + m.group(1).strip())[:limit]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("Exception from", "Check '", "Traceback"))] or lines \
        or [type(exc).__name__]
    msg = re.sub(r"\[ONNXRuntimeError\] : \d+ : \w+ : ", "", lines[0])
    if detailed:
        msg = re.sub(r"/\S+/", "", msg)
    msg = re.sub(r"\s+", " ", msg)
    return msg[:limit]


# --------------------------------------------------------------------------- #
# ONNX Runtime threading
# --------------------------------------------------------------------------- #

_ORT_GLOBAL_POOL: int | None = None


def ort_use_global_pool(threads: int) -> None:
    """One process-wide ORT intra-op pool shared by every session.

    With one pool per session, the idle workers of the *other* forms' sessions
    spin-wait after each of their runs; on a 2-core box that made the round-robin
    MatMul timings ~3x slower than a lone session.  A shared pool behaves like a
    single deployed model and keeps ORT's default spinning.  Must run before the
    first InferenceSession is created.
    """
    global _ORT_GLOBAL_POOL
    from onnxruntime.capi import _pybind_state

    _pybind_state.set_global_thread_pool_sizes(threads, 1)
    _ORT_GLOBAL_POOL = threads


def ort_set_threads(so, threads: int) -> None:
    """Thread settings of one ort.SessionOptions: the global pool if it is set up, else a
    pool of its own with `threads` intra-op threads."""
    if _ORT_GLOBAL_POOL:
        so.use_per_session_threads = False  # thread counts come from the global pool
    else:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1


# --------------------------------------------------------------------------- #
# Timing
# --------------------------------------------------------------------------- #


def calibrate(run: Callable[[], None], warmup: int, min_sample_ms: float, max_probe_runs: int = 50) -> int:
    """Warm up, then return how many back-to-back runs make a sample of >= min_sample_ms."""
    for _ in range(warmup):
        run()
    t0 = time.perf_counter()
    n = 0
    while True:
        run()
        n += 1
        el = time.perf_counter() - t0
        if el >= 0.02 or n >= max_probe_runs:
            break
    return max(1, math.ceil(min_sample_ms / 1e3 / (el / n)))


def round_robin_samples(runs: Mapping[str, Callable[[], None]], rounds: int, warmup: int,
                        min_sample_ms: float, max_probe_runs: int = 50) -> dict[str, list[float]]:
    """{form: [seconds per inference, one per round]}, forms interleaved round-robin.

    Interleaving makes slow drift and bursts of interference (turbo, other load on the
    cores, hypervisor steal) hit every form alike.
    """
    reps = {k: calibrate(run, warmup, min_sample_ms, max_probe_runs) for k, run in runs.items()}
    samples: dict[str, list[float]] = {k: [] for k in runs}
    keys = list(runs)
    shuffler = random.Random(0)
    for _ in range(rounds):
        # Fresh random order each round: no form is always first/last or always follows the same
        # one, and none can phase-lock with periodic interference (e.g. hypervisor CPU throttling).
        shuffler.shuffle(keys)
        for k in keys:
            run, n = runs[k], reps[k]
            t0 = time.perf_counter()
            for _ in range(n):
                run()
            samples[k].append((time.perf_counter() - t0) / n)
    return samples


def median_half_iqr(v: list[float]) -> tuple[float, float]:
    """(median, half the inter-quartile range as a fraction of the median)."""
    med = statistics.median(v)
    q = statistics.quantiles(v, n=4) if len(v) >= 2 else [med, med, med]
    return med, (q[2] - q[0]) / 2 / med


# --------------------------------------------------------------------------- #
# Reporting helpers
# --------------------------------------------------------------------------- #


def cpu_times() -> list[int] | None:
    """Aggregate /proc/stat cpu counters (Linux), to report hypervisor steal during the run."""
    try:
        with open("/proc/stat") as fh:
            return [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None


def compact(items: list[str], sep: str = ",") -> str:
    """Join a listing, collapsing consecutive repeats into name*count."""
    out: list[str] = []
    for t in items:
        if out and out[-1].split("*")[0] == t:
            base, _, n = out[-1].partition("*")
            out[-1] = f"{base}*{int(n or 1) + 1}"
        else:
            out.append(t)
    return sep.join(out) if out else "(none)"


T0 = time.perf_counter()  # when the script started


def log(message: str):
    """A progress line on stderr, stamped with the seconds since the script started."""
    print(f"[{time.perf_counter() - T0:6.0f} s] {message}", file=sys.stderr, flush=True)
