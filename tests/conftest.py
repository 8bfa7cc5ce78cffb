import sys
from collections import Counter
from pathlib import Path

import onnx
import pytest

from fusekit.branches import view

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # testmodels/ is not an installed package

TESTMODELS = ROOT / "testmodels"


def op_histogram(model: onnx.ModelProto) -> Counter:
    """The ops of ``model``; of a packed model in the branch form, those of its packed branch."""
    return Counter((n.domain or "", n.op_type) for n in view(model).graph.node)


def ops(model: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in view(model).graph.node}


@pytest.fixture
def bert14():
    return TESTMODELS / "bert_tiny_opset14.onnx"


def fuse_only(model, *fusions: str, target: str = "ort"):
    """``fusekit.optimize`` with only ``fusions`` on and no verification: a rule's own test,
    untouched by the other fusions. Returns (fused model, report)."""
    import fusekit
    from fusekit import patterns
    others = [name for name in patterns.BY_NAME if name not in fusions]
    return fusekit.optimize(model, target=target, verify=False, disable=others)
