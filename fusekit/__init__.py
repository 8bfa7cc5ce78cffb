"""fusekit: a graph-level fusion compiler for BERT-family ONNX models."""
from .errors import FusekitError
from .pipeline import TARGETS, optimize
from .verify import VerifyResult, verify

__version__ = "0.1.0"
__all__ = ["optimize", "verify", "VerifyResult", "FusekitError", "TARGETS", "__version__"]
