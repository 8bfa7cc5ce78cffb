"""fusekit: a graph-level fusion compiler for BERT-family ONNX models."""
from .reports.diff import diff
from .errors import FusekitError
from .reports.explain import explain
from .reports.inspection import inspect_model
from .pipeline import TARGETS, optimize
from .verify import VerifyResult, verify

__version__ = "0.1.0"
__all__ = ["optimize", "verify", "explain", "diff", "inspect_model", "VerifyResult", "FusekitError", "TARGETS",
           "__version__"]
