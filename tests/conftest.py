import sys
from collections import Counter
from pathlib import Path

import onnx
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # testmodels/ is not an installed package

TESTMODELS = ROOT / "testmodels"


def op_histogram(model: onnx.ModelProto) -> Counter:
    return Counter((n.domain or "", n.op_type) for n in model.graph.node)


def ops(model: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in model.graph.node}


@pytest.fixture
def bert14():
    return TESTMODELS / "bert_tiny_opset14.onnx"
