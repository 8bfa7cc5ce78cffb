"""The verifier: meaningful inputs, per-output tolerances, and detecting real differences."""
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import fusekit
from fusekit.inputs import Setting, make_inputs, parse_shapes, valid_positions
from fusekit.verify import session
from graphs import variants as V


def test_inputs_respect_their_meaning(bert14):
    model = onnx.load(bert14)
    right = make_inputs(model, Setting("right", 4, 12), seed=1)
    assert right["input_ids"].dtype == np.int64 and right["input_ids"].shape == (4, 12)
    assert 0 <= right["input_ids"].min() and right["input_ids"].max() < 128  # the tiny vocabulary
    assert set(np.unique(right["token_type_ids"])) <= {0, 1}
    mask = right["attention_mask"]
    assert set(np.unique(mask)) == {0, 1}
    assert (mask[:, 0] == 1).all() and (np.diff(mask, axis=1) <= 0).all()  # zeros only at the end
    left = make_inputs(model, Setting("left", 4, 12), seed=1)["attention_mask"]
    assert (left[:, -1] == 1).all() and (np.diff(left, axis=1) >= 0).all() and (left == 0).any()
    assert (make_inputs(model, Setting("none", 2, 5))["attention_mask"] == 1).all()


def test_shape_override_and_parse(bert14):
    shapes = parse_shapes(["input_ids=3x10", "attention_mask = 3x10"])
    assert shapes == {"input_ids": (3, 10), "attention_mask": (3, 10)}
    feeds = make_inputs(onnx.load(bert14), shapes=shapes)
    assert feeds["input_ids"].shape == (3, 10)
    with pytest.raises(fusekit.FusekitError):
        parse_shapes(["input_ids"])


def test_identical_models_are_equivalent_and_errors_split_by_padding(bert14):
    result = fusekit.verify(bert14, bert14, trials=3)
    assert result.ok and len(result.settings) == 3
    hidden = next(o for o in result.outputs if o.name == "last_hidden_state")
    assert hidden.max_abs == 0 and hidden.valid_max_abs == 0 and hidden.padded_max_abs == 0


def test_a_small_change_is_caught():
    original = V.ln_pytorch()
    changed = V.ln_pytorch()
    gamma = next(t for t in changed.graph.initializer if "gamma" in t.name)
    value = onnx.numpy_helper.to_array(gamma).copy()
    value[3] *= 1.001  # 0.1% on one feature
    gamma.CopyFrom(onnx.numpy_helper.from_array(value, gamma.name))
    result = fusekit.verify(original, changed)
    assert not result.ok and "NOT equivalent" in result.summary()


def test_missing_output_is_not_equivalent():
    a = V.ln_pytorch()
    b = V.ln_pytorch()
    b.graph.output[0].name = "renamed"
    b.graph.node[-1].output[0] = "renamed"
    result = fusekit.verify(a, b)
    assert not result.ok and "missing" in result.message


def test_reference_runs_without_runtime_fusions():
    # ONNX Runtime's own LayerNorm fusion drops this graph's ε = 1e-12 for 1e-5: a verifier
    # that let it run would compare against the wrong numbers.
    model = V.ln_commuted()
    assert session(model).get_session_options().graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    feeds = make_inputs(model)
    exact = session(model).run(None, feeds)[0]
    fused = fusekit.optimize(model)[0]
    assert np.abs(session(fused).run(None, feeds)[0] - exact).max() < 1e-5 * np.abs(exact).max()


def test_valid_positions_come_from_the_mask():
    feeds = {"input_ids": np.zeros((2, 3), np.int64), "attention_mask": np.array([[1, 1, 0], [1, 1, 1]])}
    assert valid_positions(feeds).tolist() == [[True, True, False], [True, True, True]]


def test_inputs_from_a_weightless_skeleton_are_the_inputs_from_the_model():
    # optimize verifies with inputs built from the skeleton; verify from the model: the same ids
    from fusekit.inputs import SETTINGS, make_inputs
    from fusekit.modelio import skeleton
    model = onnx.load(str(Path(__file__).resolve().parents[1] / "testmodels" / "int8" / "qat.onnx"))
    for setting in SETTINGS:
        full, skel = make_inputs(model, setting, 0), make_inputs(skeleton(model), setting, 0)
        assert all(np.array_equal(full[k], skel[k]) for k in full)


@pytest.fixture
def bert_fp16(bert14, tmp_path):
    """ONNX Runtime's float16 conversion with float32 inputs and outputs: float16 inside."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    onnx.save(convert_float_to_float16(onnx.load(bert14), keep_io_types=True), tmp_path / "fp16.onnx")
    return tmp_path / "fp16.onnx"


def test_compute_precision_is_read_from_inside_the_graph(bert14, bert_fp16):
    from fusekit.verify import compute_precision
    model = onnx.load(bert_fp16)
    assert {i.type.tensor_type.elem_type for i in model.graph.input} == {onnx.TensorProto.INT64}
    assert {o.type.tensor_type.elem_type for o in model.graph.output} == {onnx.TensorProto.FLOAT}
    assert compute_precision(model) == onnx.TensorProto.FLOAT16
    assert compute_precision(onnx.load(bert14)) is None


def test_a_float16_model_with_float32_outputs_is_optimized_verified_and_written(bert_fp16, tmp_path, capsys):
    from fusekit.cli import main
    assert main(["optimize", str(bert_fp16), "-o", str(tmp_path / "out.onnx")]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "verification: equivalent" in out and "computes in float16 inside" in out
    assert "(tolerance 3.75e-02)" in out  # rtol 1e-2 of the scale 3.75, not float32's 1e-4
    assert (tmp_path / "out.onnx").exists()


def test_a_float16_candidate_of_a_float32_reference_is_compared_at_float32_and_says_how_to_loosen(bert14, bert_fp16):
    result = fusekit.verify(bert14, bert_fp16, trials=1)
    assert not result.ok  # the conversion does change the numbers beyond float32's tolerance
    assert "candidate computes in float16 inside and the reference does not: --rtol 0.01" in result.message
    assert fusekit.verify(bert14, bert_fp16, trials=1, rtol=1e-2).ok


def test_a_failed_optimize_is_a_tolerance_question_not_a_bug_report(bert14, tmp_path, capsys, monkeypatch):
    import importlib
    import fusekit.cli
    from fusekit.verify import OutputDiff, VerifyResult
    failed = VerifyResult(False, [OutputDiff("y", 9.5e-4, 1.0, 1e-4, False, worst_setting="batch 2, seq 16")],
                          ["batch 2, seq 16"])
    # the command imports the verifier from its module when it verifies (fusekit.verify is the function)
    monkeypatch.setattr(importlib.import_module("fusekit.verify"), "verify", lambda *a, **k: failed)
    assert fusekit.cli.main(["optimize", str(bert14), "-o", str(tmp_path / "out.onnx")]) == 1
    out, err = capsys.readouterr()
    assert "FAIL y: max abs 9.50e-04" in out and err.count("\n") == 1
    assert "not equivalent to" in err and "within the tolerance above" in err and "--rtol R" in err
    assert "bug" not in err and not (tmp_path / "out.onnx").exists()
