"""fusekit: a graph-level fusion compiler for BERT-family ONNX models.

The public functions are imported on first use, not with the package: ``import fusekit`` (and so
``fusekit --help``) loads no ONNX, runtime or report, and a command loads what it runs.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

from .errors import FusekitError
from .targets import TARGETS

if TYPE_CHECKING:  # the names __getattr__ provides, as type checkers should see them
    from .pipeline import optimize
    from .reports import explain as _explain, inspection as _inspection
    from .reports.diff import diff
    from .verify import VerifyResult, verify

__version__ = "0.1.0"

# public name → the module that defines it, imported when the name is first read
_LAZY = {"optimize": ".pipeline", "verify": ".verify", "VerifyResult": ".verify", "diff": ".reports.diff"}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


class _Package(types.ModuleType):
    """``fusekit.verify`` is the function, as when the package imported everything at once: a
    first import of the submodule of that name, anywhere, would otherwise bind the module to it."""

    def __setattr__(self, name: str, value):
        if name == "verify" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


# The reports read models and never import the pipeline: the fusing they show is wired in here.

def explain(model_or_path, target: str = "ort", fusion: str | None = None, layer: int | None = None,
            pack: bool = False) -> _explain.Explanation:
    """Fuse in memory (nothing written, nothing verified) and explain every candidate
    (``fusekit.reports.explain``); raises FusekitError on bad input or filters."""
    from .pipeline import optimize
    from .reports import explain as report
    return report.explain(model_or_path, target, fusion, layer, pack, optimize=optimize)


def inspect_model(model_or_path) -> _inspection.Inspection:
    """Describe a model (a path or a ModelProto), what fusekit would fuse in it included
    (``fusekit.reports.inspection``); raises FusekitError on bad input."""
    from .pipeline import optimize
    from .reports import inspection
    return inspection.inspect_model(model_or_path, optimize=optimize)


__all__ = ["optimize", "verify", "explain", "diff", "inspect_model", "VerifyResult", "FusekitError", "TARGETS",
           "__version__"]
