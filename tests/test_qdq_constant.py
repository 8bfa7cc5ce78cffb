"""--target openvino folds Q/DQ pairs on scalar constants, so a fully quantized model compiles."""
import numpy as np
import onnx
import openvino as ov
import pytest

import fusekit
from conftest import TESTMODELS
from fusekit.reports.int8 import analyze

ALL_OPS = TESTMODELS / "int8" / "all_ops.onnx"


def compiles(model) -> bool:
    try:
        ov.Core().compile_model(ov.Core().read_model(model.SerializeToString(), b""), "CPU",
                                {"INFERENCE_PRECISION_HINT": "f32"})
        return True
    except RuntimeError:
        return False


def test_fully_quantized_model_compiles_after_folding():
    original = onnx.load(ALL_OPS)  # OpenVINO 2026.4's MultiplyPartialTransformation throws on this one
    # the INT8 block, LayerNorm and attention fusions drop requantization pairs by design; the fold
    # alone must be exact
    fused, report = fusekit.optimize(ALL_OPS, target="openvino",
                                     disable=("QuantizedLinear", "LayerNorm", "QuantizedAttention"))
    assert report.counts["QDQConstant"] > 0 and report.verification.ok
    assert all(o.max_abs == 0 for o in report.verification.outputs)  # the fold is exact
    assert compiles(fused)
    # weights keep their pairs: every MatMul that ran in INT8 before still does
    before, after = analyze(original, "openvino"), analyze(fused, "openvino")
    assert [r.verdict for r in after.records] == [r.verdict for r in before.records]


def test_only_scalars_are_folded():
    fused, report = fusekit.optimize(ALL_OPS, target="openvino", verify=False)
    for record in report.fused:
        assert record.fusion == "QDQConstant" or "QDQConstant" not in record.steps
        if record.fusion == "QDQConstant":
            assert np.asarray(record.constants["c"]).size == 1


@pytest.mark.parametrize("target", ["ort", "onnx"])
def test_other_targets_keep_the_pairs(target):
    _, report = fusekit.optimize(ALL_OPS, target=target, verify=False)
    assert "QDQConstant" not in report.counts


@pytest.mark.parametrize("target", ["openvino", "ort"])
def test_openvino_fakequantize_models_fuse_and_verify_in_openvino(target):
    fused, report = fusekit.optimize(TESTMODELS / "int8" / "ov_fakequantize.onnx", target=target)
    assert report.counts["LayerNorm"] == 5 and report.counts["Gelu"] == 2
    # every FakeQuantize became the Q/DQ pair it stands for, so ONNX Runtime runs the result
    assert report.counts["FakeQuantize"] == 44 and report.counts["QuantizedLinear"] == 12
    assert not [n for n in fused.graph.node if n.op_type == "FakeQuantize"]
    assert report.verification.ok and "OpenVINO (f32)" in report.verification.message
