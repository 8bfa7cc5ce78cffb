"""ONNX Runtime: CPU, CUDA when this build has it and a GPU answers, the OpenVINO execution provider when installed."""
from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort

from ..errors import FusekitError
from . import first_line

# fusekit's device names → the execution provider that runs them
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "gpu": "CUDAExecutionProvider",
             "openvino": "OpenVINOExecutionProvider"}
INSTALL = {"CUDAExecutionProvider": "install onnxruntime-gpu and a CUDA driver",
           "OpenVINOExecutionProvider": "install onnxruntime-openvino"}


def provider_for(device: str, available: list[str]) -> str:
    """The execution provider for ``device``, if this ONNX Runtime build has it."""
    if device not in PROVIDERS:
        raise FusekitError(f"ONNX Runtime has no '{device}' device; choose from {', '.join(PROVIDERS)}")
    provider = PROVIDERS[device]
    if provider not in available:
        short = ", ".join(p.removesuffix("ExecutionProvider") for p in available)
        raise FusekitError(f"ONNX Runtime here has no {provider.removesuffix('ExecutionProvider')} execution "
                           f"provider (available: {short}); {INSTALL[provider]}")
    return provider


def _provider_options(provider: str, threads: int) -> dict:
    if provider == "OpenVINOExecutionProvider":  # it keeps its own thread pool
        return {"device_type": "CPU", "precision": "FP32", "num_of_threads": str(threads)}
    return {}


class OrtRunner:
    backend = "ort"

    def __init__(self, session: ort.InferenceSession, provider: str, threads: int):
        self.session, self.device, self.threads, self.precision = session, provider, threads, "f32"
        self.output_names = [o.name for o in session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            return dict(zip(self.output_names, self.session.run(self.output_names, feeds)))
        except Exception as e:  # ORT raises its own types; the message says what was wrong
            raise FusekitError(f"ONNX Runtime could not run the model: {first_line(e)}") from None

    def describe(self) -> str:
        threads = f"{self.threads} threads" if self.device != "CUDAExecutionProvider" else "GPU"
        return f"onnxruntime {ort.__version__} {self.device}, {threads}, {self.precision}, graph optimizations all"


def load(path: str | os.PathLike, device: str, threads: int, precision: str) -> OrtRunner:
    if precision != "f32":
        raise FusekitError(f"ONNX Runtime runs a float32 model in float32; --precision {precision} is an OpenVINO "
                           "setting (use --backend openvino)")
    provider = provider_for(device, ort.get_available_providers())
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    providers = [(provider, _provider_options(provider, threads))]
    if provider != "CPUExecutionProvider":
        providers.append("CPUExecutionProvider")  # for the nodes the device lacks, as ORT does by default
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as e:
        raise FusekitError(f"ONNX Runtime cannot load {path}: {first_line(e)}") from None
    if session.get_providers()[0] != provider:  # ORT falls back to CPU with only a log line
        raise FusekitError(f"ONNX Runtime could not start {provider} (no usable device here?); "
                           f"it fell back to {session.get_providers()[0]}")
    return OrtRunner(session, provider, threads)
