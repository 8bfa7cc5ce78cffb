"""ONNX Runtime: CPU, CUDA when this build has it and a GPU answers, the OpenVINO execution provider when installed."""
from __future__ import annotations

import os
import re

import numpy as np
import onnxruntime as ort

from ..errors import FusekitError, first_line

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


def _message(e: Exception) -> str:
    """ORT's run errors, without the status preamble and the C++ source location."""
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    m = re.search(r"running (\w+) node\. Name:'([^']*)' Status Message: (?:\S+:\d+ .*? was false\. )?(.*)", text)
    return (f"{m.group(1)} node '{m.group(2)}': {m.group(3)}" if m else text)[:300]


class OrtRunner:
    backend = "ort"

    def __init__(self, session: ort.InferenceSession, provider: str, threads: int):
        self.session, self.device, self.threads, self.precision = session, provider, threads, "f32"
        self.output_names = [o.name for o in session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            return dict(zip(self.output_names, self.session.run(self.output_names, feeds)))
        except Exception as e:  # ORT raises its own types; the message says what was wrong
            shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in feeds.items())
            raise FusekitError(f"ONNX Runtime could not run the model on {shapes}: {_message(e)}") from None

    def describe(self) -> str:
        threads = f"{self.threads} threads" if self.device != "CUDAExecutionProvider" else "GPU"
        return (f"onnxruntime {ort.__version__} {self.device}, {threads}, {self.precision}, "
                "graph optimizations all, no spin-wait")


def check(device: str, precision: str) -> str:
    """The provider that will run ``device``, or a FusekitError saying why none can."""
    if precision != "f32":
        raise FusekitError(f"ONNX Runtime runs a float32 model in float32; --precision {precision} is an OpenVINO "
                           "setting (use --backend openvino)")
    return provider_for(device, ort.get_available_providers())


def load(path: str | os.PathLike, device: str, threads: int, precision: str) -> OrtRunner:
    provider = check(device, precision)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.log_severity_level = 4  # errors reach the user as one FusekitError line, not as ORT's log too
    # Idle workers spin-wait by default; with two sessions alive (bench interleaves models) the idle one's
    # spinning took the cores from the running one: +40-60% latency on 2 cores. Off, a model times the same
    # alone or interleaved.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
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
