"""Inputs fusekit cannot make up: --inputs for optimize and verify, one line that says how to go on,
--shape checked up front, inputs too large to make, and reports that name the shapes fed."""
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from fusekit.cli import main
from fusekit import inputs
from fusekit.errors import InputsNeeded
from fusekit.inputs import Setting, make_inputs


def fusekit(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def save(tmp_path, name, nodes, inputs, outputs, opset=13):
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    onnx.save(model, tmp_path / name)
    return tmp_path / name


@pytest.fixture
def split_model(tmp_path):
    """A Split whose sizes are an int64 input: random ids cannot be valid split sizes."""
    return save(tmp_path, "split.onnx", [helper.make_node("Split", ["x", "split"], ["y0", "y1"], axis=1)],
                [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6]),
                 helper.make_tensor_value_info("split", TensorProto.INT64, [2])],
                [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, ["batch", None]) for i in range(2)])


@pytest.fixture
def split_feeds(tmp_path):
    np.savez(tmp_path / "feeds.npz", x=np.arange(12, dtype=np.float32).reshape(2, 6), split=np.array([2, 4]))
    return tmp_path / "feeds.npz"


@pytest.fixture
def fixed_inside(tmp_path):
    """Declared [batch, seq], but a Reshape inside runs only at 1 × 8."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [8, 1])
    return save(tmp_path, "reshape.onnx", [helper.make_node("Constant", [], ["shape"], value=shape),
                                           helper.make_node("Reshape", ["x", "shape"], ["y"])],
                [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq"])],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 1])])


def test_a_model_that_runs_at_one_shape_only_says_how_to_go_on(fixed_inside, tmp_path, capsys):
    code, _, err = fusekit(capsys, "optimize", fixed_inside, "-o", tmp_path / "out.onnx")
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("fusekit: error: cannot make up inputs the reference runs on (") and "--no-verify" in err
    code, out, err = fusekit(capsys, "optimize", fixed_inside, "-o", tmp_path / "out.onnx", "--shape", "x=1x8")
    assert code == 0 and "equivalent" in out, err


def test_inputs_that_cannot_be_made_up_say_how_to_go_on_in_one_line(split_model, tmp_path, capsys):
    # in a process of its own: ONNX Runtime logs to the stderr file descriptor, past capsys
    r = subprocess.run([sys.executable, "-m", "fusekit.cli", "optimize", str(split_model), "-o",
                        str(tmp_path / "out.onnx")], capture_output=True, text=True, timeout=300)
    code, err = r.returncode, r.stderr
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("fusekit: error: cannot make up inputs the reference runs on (Invalid value in 'split'")
    assert "--inputs FEEDS.npz" in err and "--shape NAME=DxD" in err and "--no-verify" in err
    assert "ONNXRuntimeError" not in err and not (tmp_path / "out.onnx").exists()
    code, _, err = fusekit(capsys, "verify", split_model, split_model)
    assert code == 2 and err.count("\n") == 1 and "--inputs FEEDS.npz" in err and "--no-verify" not in err


def test_optimize_and_verify_take_the_given_inputs(split_model, split_feeds, tmp_path, capsys):
    code, out, err = fusekit(capsys, "optimize", split_model, "-o", tmp_path / "out.onnx", "--inputs", split_feeds)
    assert code == 0, err
    assert "verification: equivalent over 1 trial (seed 0)" in out and (tmp_path / "out.onnx").exists()
    code, out, err = fusekit(capsys, "verify", split_model, tmp_path / "out.onnx", "--inputs", split_feeds, "--json")
    assert code == 0, err
    assert json.loads(out)["settings"] == ["given inputs: x [2, 6], split [2]"]


def test_given_inputs_are_checked_against_the_model_as_run_checks_them(bert14, split_model, tmp_path, capsys):
    ids = np.ones((2, 8), np.int64)
    np.savez(tmp_path / "dtype.npz", input_ids=ids.astype(np.int32), attention_mask=ids, token_type_ids=ids)
    for command in (["optimize", bert14, "-o", tmp_path / "out.onnx"], ["verify", bert14, bert14]):
        code, _, err = fusekit(capsys, *command, "--inputs", tmp_path / "dtype.npz")
        assert code == 2 and err.count("\n") == 1, err
        assert "input 'input_ids' is int32; the model takes int64" in err
        code, _, err = fusekit(capsys, *command, "--inputs", tmp_path / "dtype.npz", "--shape", "input_ids=2x8")
        assert code == 2 and "cannot be combined with --inputs" in err
    assert not (tmp_path / "out.onnx").exists()


def test_given_inputs_the_candidate_cannot_run_are_not_blamed_on_the_inputs(split_model, split_feeds, tmp_path,
                                                                           capsys):
    other = save(tmp_path, "other.onnx", [helper.make_node("Split", ["x", "split"], ["y0", "y1"], axis=0)],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6]),
                  helper.make_tensor_value_info("split", TensorProto.INT64, [2])],
                 [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [None, 6]) for i in range(2)])
    code, _, err = fusekit(capsys, "verify", split_model, other, "--inputs", split_feeds)
    assert code == 2 and err.startswith("fusekit: error: running the candidate failed") and "--inputs" not in err


@pytest.mark.parametrize("args, message", [
    (["--shape", "nope=2x8"], "--shape nope=…: 'nope' is not an input of the model (its inputs: input_ids, "),
    (["--shape", "input_ids=2x8x1"], "--shape: input 'input_ids' has shape [2, 8, 1]; the model takes [batch, sequence]"),
    (["--shape", "input_ids=2x8", "--shape", "attention_mask=2x9"],
     "--shape: inputs disagree on 'sequence': 'input_ids' has 8, 'attention_mask' has 9"),
])
def test_shape_is_checked_up_front(bert14, tmp_path, capsys, args, message):
    for command in (["optimize", bert14, "-o", tmp_path / "out.onnx"], ["verify", bert14, bert14]):
        code, _, err = fusekit(capsys, *command, *args)
        assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out.onnx").exists()


@pytest.fixture
def fixed_model(tmp_path):
    """Token ids and a mask fixed at 1 × 8."""
    return save(tmp_path, "fixed.onnx", [helper.make_node("Mul", ["input_ids", "attention_mask"], ["y"])],
                [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, 8]),
                 helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [1, 8])],
                [helper.make_tensor_value_info("y", TensorProto.INT64, [1, 8])])


def test_shape_contradicting_a_fixed_dimension_fails_up_front(fixed_model, capsys):
    code, _, err = fusekit(capsys, "verify", fixed_model, fixed_model, "--shape", "input_ids=2x8")
    assert code == 2 and err.count("\n") == 1
    assert "--shape: input 'input_ids' has shape [2, 8]; the model takes [1, 8]" in err


def test_a_fixed_shape_model_reports_the_shapes_it_was_fed(fixed_model, capsys):
    code, out, err = fusekit(capsys, "verify", fixed_model, fixed_model, "--json")
    assert code == 0, err
    assert json.loads(out)["settings"] == ["batch 1, seq 8, right padding", "batch 1, seq 8, left padding",
                                           "batch 1, seq 8, no padding", "batch 1, seq 8, right padding"]


def test_the_usual_report_still_names_the_settings(bert14, capsys):
    code, out, err = fusekit(capsys, "verify", bert14, bert14, "--json")
    assert code == 0, err
    assert json.loads(out)["settings"] == [str(s) for s in (Setting("right", 2, 16), Setting("left", 3, 9),
                                                            Setting("none", 1, 16), Setting("right", 4, 7))]


@pytest.fixture
def huge_model(tmp_path):
    """One float input declared [100000, 100000]: 37 GiB to make up."""
    return save(tmp_path, "huge.onnx", [helper.make_node("Relu", ["x"], ["y"])],
                [helper.make_tensor_value_info("x", TensorProto.FLOAT, [100000, 100000])],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [100000, 100000])])


@pytest.mark.parametrize("command", ["optimize", "verify", "run", "bench"])
def test_inputs_too_large_to_make_are_refused_before_allocating(huge_model, tmp_path, capsys, command):
    args = {"optimize": [huge_model, "-o", tmp_path / "out.onnx"], "verify": [huge_model, huge_model],
            "run": [huge_model], "bench": [huge_model, "--iterations", "1", "--warmup", "0"]}[command]
    code, _, err = fusekit(capsys, command, *args)
    assert code == 2 and err.count("\n") == 1, err
    assert "inputs would take 37.3 GiB (input 'x' is float32[100000, 100000])" in err
    assert "--inputs FEEDS.npz" in err and ("--no-verify" in err) == (command == "optimize")
    assert not (tmp_path / "out.onnx").exists()


def test_the_size_check_counts_every_input_and_lets_smaller_ones_pass(monkeypatch):
    monkeypatch.setattr(inputs, "INPUT_BUDGET", 1000)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [125, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [126, 1])
    model = helper.make_model(helper.make_graph([], "g", [x, y], [x]))
    with pytest.raises(InputsNeeded, match=r"inputs would take 1004 B \(input 'y' is float32\[126, 1\]\)"):
        make_inputs(model)
    model.graph.input.pop()  # half the budget: made
    assert make_inputs(model)["x"].shape == (125, 1)


def test_optimize_json_to_stdout_is_the_json_alone(bert14, tmp_path, capsys):
    code, out, err = fusekit(capsys, "optimize", bert14, "-o", tmp_path / "out.onnx", "--json", "-")
    assert code == 0, err
    assert json.loads(out)["verification"]["ok"]
    assert "verification: equivalent" in err and "→" in err
