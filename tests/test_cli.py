"""The command line: outputs, reports, and bad input that never loses anything."""
import json
import os
import shutil
import subprocess
import sys

import onnx
import pytest

from conftest import TESTMODELS


def fusekit(*args, cwd=None):
    env = {**os.environ, "FUSEKIT_DEBUG": ""}
    return subprocess.run([sys.executable, "-m", "fusekit.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


@pytest.fixture
def work(tmp_path):
    shutil.copy(TESTMODELS / "bert_tiny_opset14.onnx", tmp_path / "model.onnx")
    return tmp_path


def snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_optimize_writes_beside_input_and_reports(work):
    r = fusekit("optimize", work / "model.onnx", "--json", work / "report.json")
    assert r.returncode == 0, r.stderr
    out = work / "model.fused.onnx"
    onnx.checker.check_model(onnx.load(out))
    report = json.loads((work / "report.json").read_text())
    assert report["counts"] == {"Attention": 2, "LayerNorm": 5, "EmbedLayerNorm": 1, "SkipLayerNorm": 4, "Gelu": 2,
                                "BiasGelu": 2}
    fused_line = "fused: " + ", ".join(f"{k} {v}" for k, v in sorted(report["counts"].items()))
    assert fused_line in r.stdout
    assert f"nodes: 286 → {report['nodes_after']}" in r.stdout and "verification: equivalent" in r.stdout
    assert report["verification"]["ok"] and report["output"] == str(out)
    assert not [p for p in work.iterdir() if p.name.startswith(".")]  # no staging left over


def test_optimize_each_target_and_no_verify(work):
    for target in ("onnx", "openvino"):
        r = fusekit("optimize", work / "model.onnx", "-o", work / f"{target}.onnx", "--target", target, "--no-verify")
        assert r.returncode == 0, r.stderr
        assert "verification: skipped" in r.stdout
        # onnx: ONNX Attention needs 23; openvino keeps attention unfused and needs Gelu's 20
        assert onnx.load(work / f"{target}.onnx").opset_import[0].version == {"onnx": 23, "openvino": 20}[target]


def test_verify_exit_codes(work):
    assert fusekit("optimize", work / "model.onnx").returncode == 0
    ok = fusekit("verify", work / "model.onnx", work / "model.fused.onnx", "--trials", "2", "--shape", "input_ids=2x8",
                 "--shape", "attention_mask=2x8", "--shape", "token_type_ids=2x8")
    assert ok.returncode == 0 and "equivalent over 2 trials" in ok.stdout, ok.stdout + ok.stderr
    broken = onnx.load(work / "model.fused.onnx")
    ln = [t for t in broken.graph.initializer if t.name.endswith("LayerNorm.bias")][-1]  # the last LayerNorm
    arr = onnx.numpy_helper.to_array(ln).copy()
    arr[0] += 0.01
    ln.CopyFrom(onnx.numpy_helper.from_array(arr, ln.name))
    onnx.save(broken, work / "broken.onnx")
    bad = fusekit("verify", work / "model.onnx", work / "broken.onnx", "--json")
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["ok"] is False
    missing = fusekit("verify", work / "model.onnx", work / "nope.onnx")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1


def _bad_inputs(work):
    (work / "text.onnx").write_text("this is not a model\n")
    data = (work / "model.onnx").read_bytes()
    (work / "truncated.onnx").write_bytes(data[: len(data) // 3])
    (work / "empty.onnx").write_bytes(b"")
    m = onnx.load(work / "model.onnx")
    m.graph.node[-1].input[0] = "no_such_value"
    onnx.save(m, work / "invalid.onnx")
    m = onnx.load(work / "model.onnx")
    m.opset_import[0].version = 999
    onnx.save(m, work / "future_opset.onnx")
    m = onnx.load(work / "model.onnx")
    m.ir_version = 99
    onnx.save(m, work / "future_ir.onnx")
    m = onnx.load(work / "model.onnx")
    m.opset_import[0].version = 7  # older opsets are converted, but these nodes are not opset 7's
    onnx.save(m, work / "old_opset.onnx")
    (work / "folder.onnx").mkdir()
    return {
        "missing.onnx": "no such file", "folder.onnx": "is a directory", "text.onnx": "not a readable ONNX model",
        "truncated.onnx": "truncated", "empty.onnx": "file is empty", "invalid.onnx": "invalid ONNX model",
        "future_opset.onnx": "opset 999 is newer", "future_ir.onnx": "IR version 99 is newer",
        "old_opset.onnx": "invalid ONNX model: Node(/embeddings/Unsqueeze)",
    }


def test_bad_inputs_give_one_line_and_leave_everything_as_it_was(work):
    cases = _bad_inputs(work)
    before = snapshot(work)
    for name, message in cases.items():
        r = fusekit("optimize", work / name)
        assert r.returncode == 2, (name, r.stdout, r.stderr)
        assert r.stderr.startswith("fusekit: error: ") and r.stderr.count("\n") == 1, (name, r.stderr)
        assert message in r.stderr, (name, r.stderr)
        assert "Traceback" not in r.stderr + r.stdout
    assert snapshot(work) == before
    assert not [p for p in work.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("output, message", [
    ("missing_dir/out.onnx", "does not exist"),
    ("model.onnx", "refusing to overwrite the input"),
    ("/proc/out.onnx", "cannot write"),
])
def test_bad_outputs_are_refused_before_any_work(work, output, message):
    before = snapshot(work)
    r = fusekit("optimize", work / "model.onnx", "-o", output if output.startswith("/") else work / output)
    assert r.returncode == 2 and message in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert snapshot(work) == before


def test_bad_shape_option(work):
    r = fusekit("verify", work / "model.onnx", work / "model.onnx", "--shape", "input_ids=2by8")
    assert r.returncode == 2 and "expected NAME=DxD" in r.stderr


def test_external_data_stays_external(work):
    m = onnx.load(work / "model.onnx")
    onnx.save_model(m, work / "ext.onnx", save_as_external_data=True, location="ext.onnx.data", size_threshold=256)
    before = snapshot(work)
    r = fusekit("optimize", work / "ext.onnx", "-o", work / "ext_fused.onnx")
    assert r.returncode == 0, r.stderr
    assert (work / "ext_fused.onnx.data").exists()
    fused = onnx.load(work / "ext_fused.onnx", load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in fused.graph.initializer)
    assert {k: v for k, v in snapshot(work).items() if k in before} == before  # inputs untouched
    onnx.checker.check_model(str(work / "ext_fused.onnx"))
    # and the fused model verifies when read back from its two files
    assert fusekit("verify", work / "ext.onnx", work / "ext_fused.onnx", "--trials", "1").returncode == 0


def test_openvino_ir_output(work):
    import numpy as np
    import openvino as ov

    from fusekit.inputs import make_inputs
    from fusekit.verify import session

    r = fusekit("optimize", work / "model.onnx", "-o", work / "model.xml", "--target", "openvino")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in work.iterdir()) == ["model.bin", "model.onnx", "model.xml"]
    compiled = ov.Core().compile_model(str(work / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    feeds = make_inputs(onnx.load(work / "model.onnx"))
    expected = session(work / "model.onnx").run(None, feeds)[0]
    got = compiled(feeds)[compiled.output("last_hidden_state")]
    assert np.abs(got - expected).max() < 1e-4 * np.abs(expected).max()
