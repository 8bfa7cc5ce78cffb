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


def residual_adds_into_layer_norms(model) -> list[str]:
    """The Adds a LayerNormalization reads: ONNX Runtime fuses each pair into its slow CPU
    SkipLayerNormalization kernel, which the respelled sum avoids."""
    producers = {o: n for n in model.graph.node for o in n.output}
    fed = [producers.get(n.input[0]) for n in model.graph.node if n.op_type == "LayerNormalization"]
    return [p.name for p in fed if p is not None and p.op_type == "Add"]
