"""fusekit: a graph-level fusion compiler for BERT-family ONNX models."""
from .errors import FusekitError
from .pipeline import TARGETS, optimize
from .reports import explain as _explain, inspection as _inspection
from .reports.diff import diff
from .verify import VerifyResult, verify

__version__ = "0.1.0"


# The reports read models and never import the pipeline: the fusing they show is wired in here.

def explain(model_or_path, target: str = "ort", fusion: str | None = None, layer: int | None = None,
            pack: bool = False) -> _explain.Explanation:
    """Fuse in memory (nothing written, nothing verified) and explain every candidate
    (``fusekit.reports.explain``); raises FusekitError on bad input or filters."""
    return _explain.explain(model_or_path, target, fusion, layer, pack, optimize=optimize)


def inspect_model(model_or_path) -> _inspection.Inspection:
    """Describe a model (a path or a ModelProto), what fusekit would fuse in it included
    (``fusekit.reports.inspection``); raises FusekitError on bad input."""
    return _inspection.inspect_model(model_or_path, optimize=optimize)


__all__ = ["optimize", "verify", "explain", "diff", "inspect_model", "VerifyResult", "FusekitError", "TARGETS",
           "__version__"]
