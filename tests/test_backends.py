"""Backends: device selection (with the runtimes' device lists faked), precision, descriptions."""
import numpy as np
import onnx
import pytest

from fusekit.runtime import backends
from fusekit.runtime import openvino as ov_backend
from fusekit.runtime import ort as ort_backend
from fusekit.errors import FusekitError
from fusekit.inputs import make_inputs


def test_ort_device_selection():
    cpu_only = ["AzureExecutionProvider", "CPUExecutionProvider"]
    assert ort_backend.provider_for("cpu", cpu_only) == "CPUExecutionProvider"
    with pytest.raises(FusekitError, match=r"no CUDA execution provider \(available: Azure, CPU\)"):
        ort_backend.provider_for("cuda", cpu_only)
    with pytest.raises(FusekitError, match="no OpenVINO execution provider .*onnxruntime-openvino"):
        ort_backend.provider_for("openvino", cpu_only)
    with_gpu = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert ort_backend.provider_for("cuda", with_gpu) == "CUDAExecutionProvider"
    assert ort_backend.provider_for("gpu", with_gpu) == "CUDAExecutionProvider"
    assert ort_backend.provider_for("openvino", ["OpenVINOExecutionProvider", "CPUExecutionProvider"]) \
        == "OpenVINOExecutionProvider"
    with pytest.raises(FusekitError, match="no 'tpu' device"):
        ort_backend.provider_for("tpu", with_gpu)


def test_openvino_device_selection():
    assert ov_backend.device_for("cpu", ["CPU"]) == "CPU"
    with pytest.raises(FusekitError, match=r"^OpenVINO has no GPU device here \(available: CPU\)$"):
        ov_backend.device_for("gpu", ["CPU"])
    assert ov_backend.device_for("gpu", ["CPU", "GPU.0", "GPU.1"]) == "GPU"  # numbered GPUs count
    with pytest.raises(FusekitError, match="no 'cuda' device; choose from cpu, gpu"):
        ov_backend.device_for("cuda", ["CPU", "GPU"])


def test_absent_devices_through_load(bert14, monkeypatch):
    # the runtimes' own device lists, as seen on a machine without GPUs
    monkeypatch.setattr(ort_backend.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(FusekitError, match="ONNX Runtime here has no CUDA execution provider"):
        backends.load("ort", bert14, "gpu")
    class CpuOnlyCore:
        available_devices = ("CPU",)

    monkeypatch.setattr(ov_backend.ov, "Core", CpuOnlyCore)
    with pytest.raises(FusekitError, match=r"OpenVINO has no GPU device here \(available: CPU\)"):
        backends.load("openvino", bert14, "gpu")


def test_ort_fallback_to_cpu_is_an_error(bert14, monkeypatch):
    """A build that lists CUDA but finds no GPU falls back to CPU silently; fusekit says so."""
    monkeypatch.setattr(ort_backend.ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    real = ort_backend.ort.InferenceSession

    def session(path, options, providers):  # what ORT does when CUDA cannot start: CPU only
        return real(path, options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort_backend.ort, "InferenceSession", session)
    with pytest.raises(FusekitError, match="could not start CUDAExecutionProvider .*fell back to CPUExecutionProvider"):
        backends.load("ort", bert14, "cuda")


@pytest.mark.parametrize("backend, precision", [("ort", "f32"), ("openvino", "f32"), ("openvino", "bf16")])
def test_runners_run_and_say_what_they_are(bert14, backend, precision):
    runner = backends.load(backend, bert14, "cpu", threads=1, precision=precision)
    feeds = make_inputs(onnx.load(bert14))
    outputs = runner.run(feeds)
    assert list(outputs) == ["last_hidden_state", "pooler_output"]
    assert outputs["last_hidden_state"].shape == (2, 16, 32)
    assert runner.threads == 1
    text = runner.describe()
    assert "CPU" in text and "1 threads" in text
    # OpenVINO reports the precision it really uses; bf16 falls back to f32 on CPUs without it
    assert runner.precision in (precision, "f32") and runner.precision in text


def test_openvino_f32_matches_ort(bert14):
    feeds = make_inputs(onnx.load(bert14))
    expected = backends.load("ort", bert14).run(feeds)
    got = backends.load("openvino", bert14, precision="f32").run(feeds)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], atol=1e-4)


def test_bad_requests(bert14):
    with pytest.raises(FusekitError, match="bf16 is an OpenVINO setting"):
        backends.load("ort", bert14, precision="bf16")
    with pytest.raises(FusekitError, match="unknown backend 'tvm'"):
        backends.load("tvm", bert14)
    with pytest.raises(FusekitError, match="--threads must be at least 1"):
        backends.load("ort", bert14, threads=0)
    assert backends.default_threads() >= 1


def test_run_errors_are_one_line(bert14):
    too_long = {n: np.ones((1, 128), np.int64) for n in ("input_ids", "attention_mask", "token_type_ids")}
    for backend in ("ort", "openvino"):
        with pytest.raises(FusekitError) as e:
            backends.load(backend, bert14).run(too_long)  # 128 tokens, 64 positions
        assert "\n" not in str(e.value) and "input_ids [1, 128]" in str(e.value)
        assert "Exception from" not in str(e.value) and "onnxruntime_src" not in str(e.value)
