"""fusekit bench: the table and JSON, the interleaving order, the ratios, the progress display, bad input."""
import io
import json
import shutil
import sys

import pytest

from fusekit.runtime import bench
from fusekit.cli import main
from fusekit.errors import FusekitError


@pytest.fixture
def two_models(bert14, tmp_path):
    shutil.copy(bert14, tmp_path / "copy.onnx")
    return [bert14, tmp_path / "copy.onnx"]


def test_bench_both_backends_table_and_json(two_models, tmp_path, capsys):
    code = main(["bench", *map(str, two_models), "--backend", "ort,openvino", "--batch", "1,2", "--seq", "8",
                 "--iterations", "3", "--warmup", "1", "--threads", "1", "--json", str(tmp_path / "bench.json")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "1 threads · device cpu · precision f32" in out
    assert "ort: onnxruntime" in out and "openvino: openvino" in out
    assert out.count("bert_tiny_opset14.onnx") == 4 and out.count("copy.onnx") == 4  # 2 backends × 2 batches
    assert "fusekit bench: openvino 2×8 done (32/32 runs)" in err  # not a terminal: a counter, no bar
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["schema"] == "fusekit.bench/1"
    assert report["settings"]["threads"] == 1 and report["settings"]["precision"] == "f32"
    assert report["models"] == [str(m) for m in two_models]
    assert set(report["backends"]) == {"ort", "openvino"}
    assert {"cpus", "onnxruntime", "openvino"} <= set(report["machine"])
    results = report["results"]
    assert len(results) == 8
    for r in results:
        assert set(r) == {"model", "backend", "batch", "seq", "device", "threads", "precision", "median_ms",
                          "p90_ms", "throughput", "ratio", "lengths", "samples_ms"}
        assert r["lengths"] is None  # every token real
        assert len(r["samples_ms"]) == 3 and r["threads"] == 1 and r["precision"] == "f32"
        assert r["p90_ms"] >= r["median_ms"] > 0
        assert r["throughput"] == pytest.approx(r["batch"] * 1000 / r["median_ms"])
        if r["model"] == str(two_models[0]):
            assert r["ratio"] == 1.0
    assert {(r["backend"], r["batch"]) for r in results} == {("ort", 1), ("ort", 2), ("openvino", 1), ("openvino", 2)}


def test_round_robin_rotates_the_first_model():
    assert bench.round_robin(3, 2) == [0, 1, 2, 1, 2, 0]
    assert bench.round_robin(1, 3) == [0, 0, 0]
    order = bench.round_robin(4, 8)
    assert all(order.count(i) == 8 for i in range(4))
    assert [order[4 * r] for r in range(8)] == [0, 1, 2, 3, 0, 1, 2, 3]  # each model leads a round in turn


def test_measure_warms_up_then_interleaves():
    calls = []

    class Fake:
        def __init__(self, name):
            self.name = name

        def run(self, feeds):
            calls.append(self.name)

    ticks = []
    samples = bench.measure([Fake("a"), Fake("b")], [{}, {}], iterations=2, warmup=1, tick=lambda: ticks.append(1))
    assert calls == ["a", "b", "a", "b", "b", "a"]
    assert [len(s) for s in samples] == [2, 2] and len(ticks) == 6


def test_ratios_are_against_the_first_model_of_the_same_backend_and_shape():
    def t(model, backend, batch, ms):
        return bench.Timing(model, backend, batch, 128, "CPU", 2, "f32", [ms])

    timings = [t("a", "ort", 1, 10.0), t("b", "ort", 1, 5.0), t("a", "ort", 8, 80.0), t("b", "ort", 8, 100.0),
               t("a", "openvino", 1, 4.0), t("b", "openvino", 1, 6.0)]
    bench.add_ratios(timings)
    assert [x.ratio for x in timings] == [1.0, 0.5, 1.0, 1.25, 1.0, 1.5]


def test_timing_statistics():
    t = bench.Timing("m", "ort", 8, 128, "CPU", 2, "f32", [float(x) for x in range(1, 11)])
    assert t.median_ms == 5.5 and t.p90_ms == pytest.approx(9.1) and t.throughput == pytest.approx(8000 / 5.5)


def test_progress_bar_only_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    tty, log = Terminal(), io.StringIO()
    for stream in (tty, log):
        p = bench.Progress(4, stream)
        p.start("ort 1×128")
        for _ in range(4):
            p.tick()
        p.finish("ort 1×128")
        p.close()
    assert "\r" in tty.getvalue() and "4/4  ort 1×128" in tty.getvalue() and "#" * 30 in tty.getvalue()
    assert log.getvalue() == "fusekit bench: ort 1×128 done (4/4 runs)\n"


def test_parse_list():
    assert bench.parse_list("1, 8", "batch") == [1, 8]
    assert bench.parse_list("ort,openvino", "backend", str) == ["ort", "openvino"]
    for bad in ("", "1,x", "0"):
        with pytest.raises(FusekitError, match="expected a comma-separated list"):
            bench.parse_list(bad, "batch")


def test_short_labels():
    assert bench.short_labels(["a/x.onnx", "b/y.onnx"]) == {"a/x.onnx": "x.onnx", "b/y.onnx": "y.onnx"}
    assert bench.short_labels(["a/x.onnx", "b/x.onnx"]) == {"a/x.onnx": "a/x.onnx", "b/x.onnx": "b/x.onnx"}


@pytest.mark.parametrize("args, message", [
    (["--batch", "1,x"], "--batch '1,x': expected a comma-separated list"),
    (["--backend", "ort,tvm"], "unknown backend 'tvm'"),
    (["--backend", "ort", "--precision", "bf16"], "bf16 is an OpenVINO setting"),
    (["--backend", "openvino", "--device", "gpu"], "OpenVINO has no GPU device here"),
    (["--seq", "128"], "ort 1×128: ONNX Runtime could not run the model"),  # the model has 64 positions
    (["--iterations", "0"], "--iterations must be at least 1"),
    (["--json", "/no/such/folder/b.json"], "does not exist"),
])
def test_bad_requests_are_one_line(bert14, capsys, args, message):
    if "gpu" in args:
        from fusekit.runtime import openvino as ov_backend
        if any(d.startswith("GPU") for d in ov_backend.ov.Core().available_devices):
            pytest.skip("this machine has an OpenVINO GPU")
    code = main(["bench", str(bert14), "--seq", "8", "--iterations", "1", *args])
    _, err = capsys.readouterr()
    assert code == 2, err
    error = err.splitlines()[-1]  # after any progress lines
    assert error.startswith("fusekit: error: ") and message in error, err


def test_every_backend_is_checked_before_any_is_timed(bert14, capsys):
    code = main(["bench", str(bert14), "--backend", "openvino,ort", "--precision", "bf16", "--seq", "8"])
    _, err = capsys.readouterr()
    assert code == 2 and "bf16 is an OpenVINO setting" in err and "runs)" not in err  # openvino never ran


def test_missing_model_is_refused_before_timing(bert14, tmp_path, capsys):
    code = main(["bench", str(bert14), str(tmp_path / "nope.onnx"), "--seq", "8"])
    _, err = capsys.readouterr()
    assert code == 2 and err == f"fusekit: error: {tmp_path / 'nope.onnx'}: no such file\n"


def test_plot_without_matplotlib_fails_before_measuring(bert14, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    code = main(["bench", str(bert14), "--seq", "8", "--plot", str(tmp_path / "b.png")])
    _, err = capsys.readouterr()
    assert code == 2 and "--plot needs matplotlib" in err and "runs)" not in err


def test_plot_writes_a_png(two_models, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    code = main(["bench", *map(str, two_models), "--backend", "ort,openvino", "--seq", "8", "--iterations", "2",
                 "--plot", str(tmp_path / "bench.png")])
    capsys.readouterr()
    assert code == 0
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
