"""The runtimes fusekit can run a model on: a registry over the thin adapters beside it (``ort``, ``openvino``).

Each backend loads a model file for one device, thread count and precision and
returns a :class:`Runner`. No fusion logic lives here; the adapters only pick the
runtime's device, set its options explicitly and say what they set.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Protocol

from ..errors import FusekitError

if TYPE_CHECKING:  # the command line reads the choices below without loading numpy
    import numpy as np

BACKENDS = ("ort", "openvino")
DEVICES = ("cpu", "gpu", "cuda", "openvino")
PRECISIONS = ("f32", "bf16")


class Runner(Protocol):
    """A model loaded on one runtime, ready to run."""

    backend: str
    device: str  # what the runtime actually runs on, e.g. "CPUExecutionProvider" or "CPU"
    threads: int  # 0 where the runtime does not take a thread count (GPUs)
    precision: str

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name, in the model's output order."""

    def describe(self) -> str:
        """One line: runtime and version, device, threads, precision."""


def default_threads() -> int:
    """The CPUs this process may use; set explicitly so every report can say it."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _module(backend: str):
    if backend == "ort":
        from . import ort
        return ort
    if backend == "openvino":
        from . import openvino
        return openvino
    raise FusekitError(f"unknown backend '{backend}'; choose from {', '.join(BACKENDS)}")


def check(backend: str, device: str = "cpu", precision: str = "f32"):
    """Refuse an unknown backend, an absent device or a precision the runtime lacks, without loading anything."""
    if precision not in PRECISIONS:
        raise FusekitError(f"unknown precision '{precision}'; choose from {', '.join(PRECISIONS)}")
    _module(backend).check(device, precision)


def load(backend: str, path: str | os.PathLike, device: str = "cpu", threads: int | None = None,
         precision: str = "f32") -> Runner:
    """Load ``path`` on ``backend``; a missing device or runtime is a FusekitError."""
    check(backend, device, precision)
    if threads is not None and threads < 1:
        raise FusekitError(f"--threads must be at least 1, got {threads}")
    return _module(backend).load(path, device, threads or default_threads(), precision)


__all__ = ["BACKENDS", "DEVICES", "PRECISIONS", "Runner", "check", "default_threads", "load"]
