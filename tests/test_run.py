"""fusekit run: both backends, generated or given inputs, saved outputs, and bad input as one line."""
import numpy as np
import pytest

from fusekit.cli import main

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def fusekit(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("backend", ["ort", "openvino"])
def test_run_prints_outputs_and_saves_them(bert14, tmp_path, capsys, backend):
    code, out, err = fusekit(capsys, "run", bert14, "--backend", backend, "--threads", "1",
                             "--shape", "input_ids=1x32", "--save", tmp_path / "out.npz")
    assert code == 0, err
    assert "input_ids  int64[1, 32]" in out and "attention_mask  int64[1, 32]" in out
    assert "last_hidden_state  float32[1, 32, 32]  min " in out and "mean" in out
    assert "1 threads, f32" in out and "time: load" in out
    saved = np.load(tmp_path / "out.npz")
    assert sorted(saved.files) == ["last_hidden_state", "pooler_output"]
    assert saved["pooler_output"].shape == (1, 32)


def test_run_given_inputs_is_deterministic(bert14, tmp_path, capsys):
    ids = np.arange(16, dtype=np.int64).reshape(2, 8)
    np.savez(tmp_path / "feeds.npz", input_ids=ids, attention_mask=np.ones_like(ids), token_type_ids=np.zeros_like(ids))
    for backend in ("ort", "openvino"):
        code, _, err = fusekit(capsys, "run", bert14, "--backend", backend, "--inputs", tmp_path / "feeds.npz",
                               "--save", tmp_path / f"{backend}.npz")
        assert code == 0, err
    ort_out, ov_out = np.load(tmp_path / "ort.npz"), np.load(tmp_path / "openvino.npz")
    np.testing.assert_allclose(ov_out["last_hidden_state"], ort_out["last_hidden_state"], atol=1e-4)


def _write_bad_inputs(folder):
    i = np.ones((2, 8), np.int64)
    np.savez(folder / "extra.npz", input_ids=i, attention_mask=i, token_type_ids=i, foo=i)
    np.savez(folder / "missing.npz", input_ids=i, attention_mask=i)
    np.savez(folder / "dtype.npz", input_ids=i.astype(np.int32), attention_mask=i, token_type_ids=i)
    np.savez(folder / "rank.npz", input_ids=i[None], attention_mask=i, token_type_ids=i)
    np.savez(folder / "disagree.npz", input_ids=i, attention_mask=np.ones((2, 9), np.int64), token_type_ids=i)
    np.savez(folder / "objects.npz", input_ids=np.array([{"a": 1}], dtype=object))
    np.save(folder / "single.npy", i)
    (folder / "text.npz").write_text("not an archive")
    return {
        "extra.npz": "'foo' is not an input of the model",
        "missing.npz": "no array for the model's input 'token_type_ids'",
        "dtype.npz": "input 'input_ids' is int32; the model takes int64",
        "rank.npz": "input 'input_ids' has shape [1, 2, 8]; the model takes [batch, sequence]",
        "disagree.npz": "inputs disagree on 'sequence': 'input_ids' has 8, 'attention_mask' has 9",
        "objects.npz": "Object arrays cannot be loaded",
        "single.npy": "holds one unnamed array",
        "text.npz": "not an .npz archive",
        "absent.npz": "no such file",
    }


def test_bad_inputs_are_one_line_and_exit_2(bert14, tmp_path, capsys):
    for name, message in _write_bad_inputs(tmp_path).items():
        code, out, err = fusekit(capsys, "run", bert14, "--inputs", tmp_path / name)
        assert code == 2, (name, out, err)
        assert err.startswith("fusekit: error: ") and err.count("\n") == 1 and message in err, (name, err)


@pytest.mark.parametrize("args, message", [
    (["--shape", "nope=1x8"], "'nope' is not an input of the model"),
    (["--shape", "input_ids=1x8x2"], "input 'input_ids' has shape [1, 8, 2]; the model takes [batch, sequence]"),
    (["--shape", "input_ids=1x128"], "input_ids [1, 128]"),  # longer than the model's 64 positions
    (["--shape", "input_ids=1x128", "--backend", "openvino"], "input_ids [1, 128]"),
    (["--inputs", "x.npz", "--shape", "input_ids=1x8"], "cannot be combined with --inputs"),
    (["--backend", "openvino", "--device", "cuda"], "OpenVINO has no 'cuda' device"),
    (["--precision", "bf16"], "bf16 is an OpenVINO setting"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--save", "/no/such/folder/out.npz"], "does not exist"),
])
def test_bad_requests(bert14, capsys, args, message):
    code, out, err = fusekit(capsys, "run", bert14, *args)
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not out  # nothing ran


def test_bad_model(tmp_path, capsys):
    code, _, err = fusekit(capsys, "run", tmp_path / "missing.onnx")
    assert code == 2 and "no such file" in err
