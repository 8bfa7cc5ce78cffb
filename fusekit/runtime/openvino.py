"""OpenVINO: CPU and GPU through openvino.Core, with the precision set explicitly.

On CPUs with bf16 support OpenVINO infers in bf16 unless told otherwise, which
rounds BERT's outputs by ~1e-2. fusekit asks for f32 unless the user asks for bf16,
and reads back what the compiled model really uses.
"""
from __future__ import annotations

import os
import re
import tempfile

import numpy as np
import onnx
import onnx.inliner
import openvino as ov

from ..errors import FusekitError
from ..modelio import TWO_GB
from ..provenance import runtime_options

DEVICES = {"cpu": "CPU", "gpu": "GPU"}


def device_for(device: str, available: list[str]) -> str:
    """OpenVINO's name for ``device``, if this machine has one (GPUs list as GPU, GPU.0, GPU.1 …)."""
    if device not in DEVICES:
        raise FusekitError(f"OpenVINO has no '{device}' device; choose from {', '.join(DEVICES)}")
    name = DEVICES[device]
    if not any(d.split(".")[0] == name for d in available):
        raise FusekitError(f"OpenVINO has no {name} device here (available: {', '.join(available) or 'none'})")
    return name


def _message(e: Exception) -> str:
    """OpenVINO's error without its 'Exception from src/…cpp:N:' lines and 'Check … failed at …' clauses."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.startswith("Exception from")]
    text = " ".join(re.sub(r" ?Check '.*' failed at \S+:\d+:?", ":", ln) for ln in lines)
    return (text or type(e).__name__)[:300]


class OpenVinoRunner:
    backend = "openvino"

    def __init__(self, compiled: ov.CompiledModel, device: str):
        self.compiled, self.device = compiled, device
        self.request = compiled.create_infer_request()
        self.output_names = [o.get_any_name() for o in compiled.outputs]
        self.precision = _precision_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.threads = int(compiled.get_property("INFERENCE_NUM_THREADS")) if device == "CPU" else 0

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            # share_inputs: no copy of the feeds into the request; the outputs are copies
            results = self.request.infer(feeds, share_inputs=True)
        except Exception as e:
            shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in feeds.items())
            raise FusekitError(f"OpenVINO could not run the model on {shapes}: {_message(e)}") from None
        return {name: results[port] for name, port in zip(self.output_names, self.compiled.outputs)}

    def describe(self) -> str:
        threads = f"{self.threads} threads" if self.threads else "GPU"
        return f"openvino {ov.get_version().split('-')[0]} {self.device}, {threads}, {self.precision}"


def _precision_name(element_type: ov.Type) -> str:
    return element_type.get_type_name()  # "f32", "bf16", "f16"


def check(device: str, precision: str) -> str:
    """OpenVINO's name for ``device``, or a FusekitError when this machine has none (every precision is a hint)."""
    return device_for(device, ov.Core().available_devices)


def read(path: str | os.PathLike) -> ov.Model:
    """OpenVINO's reading of an ONNX file, with the compile options fusekit wrote into its metadata
    (``provenance.runtime_options``) as OpenVINO's ``runtime_options``, which ``compile_model`` and
    an IR saved from it apply."""
    header = onnx.load(str(path), load_external_data=False)
    model = _read(path, header)
    for key, value in runtime_options(header).items():
        model.set_rt_info(value, ["runtime_options", key])
    return model


def _read(path, header: onnx.ModelProto) -> ov.Model:
    """Its reader has no rule for calls of model-local functions (fusekit's ``--target onnx`` INT8
    blocks), so those are inlined first."""
    core = ov.Core()
    if not header.functions:
        return core.read_model(str(path))
    inlined = onnx.inliner.inline_local_functions(onnx.load(str(path)))
    if inlined.ByteSize() < TWO_GB:
        return core.read_model(inlined.SerializeToString(), b"")
    # OpenVINO maps the weights file; the mapping outlives the file's removal (POSIX)
    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(inlined, os.path.join(tmp, "model.onnx"), save_as_external_data=True, location="model.data")
        return core.read_model(os.path.join(tmp, "model.onnx"))


def load(path: str | os.PathLike, device: str, threads: int, precision: str) -> OpenVinoRunner:
    core = ov.Core()
    name = device_for(device, core.available_devices)
    config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
    if name == "CPU":
        config["INFERENCE_NUM_THREADS"] = str(threads)
    try:
        compiled = core.compile_model(read(path), name, config)
    except Exception as e:  # OpenVINO raises RuntimeError and types of its own
        raise FusekitError(f"OpenVINO cannot compile {path} for {name}: {_message(e)}") from None
    return OpenVinoRunner(compiled, name)


def save_ir(onnx_path: str | os.PathLike, xml_path: str | os.PathLike):
    """Convert an ONNX file to OpenVINO IR (``.xml`` + ``.bin``) with OpenVINO's own reader.

    Weights stay float32 (OpenVINO would otherwise compress them to fp16 on save).
    """
    try:
        model = read(onnx_path)
        ov.save_model(model, str(xml_path), compress_to_fp16=False)
    except Exception as e:  # OpenVINO raises plain RuntimeErrors with C++ traces
        raise FusekitError(f"OpenVINO cannot convert the fused model to IR: {_message(e)}") from None
