"""Small INT8 (QDQ / FakeQuantize) test models made from the committed FP32 exports.

Every builder returns an ``onnx.ModelProto`` made from ``bert_tiny_opset14.onnx``
(or another FP32 export passed as ``source``), calibrated on seeded inputs from
``fusekit.inputs.make_inputs`` (ids inside the vocabulary, padded 0/1 masks):

=====================  ==================================================================
``matmul_u8s8``        (a) ``quantize_static`` QDQ, MatMul only, per-tensor int8 weights
                       (symmetric), uint8 activations (asymmetric).
``matmul_s8s8_pc``     (b) MatMul only, per-channel symmetric int8 weights, int8
                       symmetric activations (``ActivationSymmetric``/``WeightSymmetric``).
``all_ops``            (c) default op types of the QDQ quantizer (MatMul, Gemm, Gather,
                       Reshape, Transpose, Unsqueeze, Where, …), uint8/int8 per-tensor.
``all_ops_s8``         (c') (c) with symmetric int8 activations and ``reduce_range`` (7-bit
                       weights): Q/DQ pairs inside every LayerNorm, GELU and Softmax.
``qat``                (d) hand-made, the way a PyTorch eager-mode QAT export looks:
                       QuantizeLinear→DequantizeLinear on the inputs of every Linear
                       (uint8 asymmetric activations; per-output-channel symmetric int8
                       weights on the float ``[out, in]`` weight, then ``Transpose`` for
                       MatMul or ``transB=1`` for Gemm). Nothing on outputs, nothing on
                       the attention matmuls (torch.matmul is not a quantized module).
``ov_fakequantize``    (e) (a) with every Q→DQ pair replaced by one OpenVINO
                       ``FakeQuantize`` (domain ``org.openvinotoolkit``, levels 256) and
                       every int8 weight DQ by float weights + ``FakeQuantize``. Runs in
                       OpenVINO only.
``qoperator``          (f) ``quantize_static`` in the QOperator format (QLinearMatMul,
                       QLinearAdd, QLinearMul, QLinearSoftmax, QGemm), default op types.
``dynamic_s8pc``       (g) ``quantize_dynamic``, int8 weights per column (Optimum avx512_vnni).
``dynamic_u8``         (h) ``quantize_dynamic``, uint8 weights per tensor (transformers.js).
=====================  ==================================================================

``python -m testmodels.quantized`` (from the repository root) writes them to
``testmodels/int8/`` and prints, for each, the op histogram, the file size, whether
ONNX Runtime runs it, whether OpenVINO compiles it (CPU, f32 inference precision),
the OpenVINO runtime graph's layer types and precisions, and how
``fusekit.reports.int8.analyze`` compares with what each runtime actually chose.

Observation helpers (used by the tests and the report; they need the runtimes):
``ort_observed`` reads ONNX Runtime's optimized graph (QLinearMatMul /
MatMulIntegerToFloat / QGemm keep the MatMul's node name), ``openvino_observed``
reads OpenVINO's runtime graph and maps each original MatMul/Gemm by
``originalLayersNames``.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fusekit.inputs import Setting, make_inputs  # noqa: E402

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "int8"
SOURCE = HERE / "bert_tiny_opset14.onnx"
OV_DOMAIN = "org.openvinotoolkit"

# Calibration: the four verification settings (both padding sides, all-ones masks,
# another length), each with its own seed.
CALIBRATION = [(Setting("right", 2, 16), 100), (Setting("left", 3, 9), 101),
               (Setting("none", 1, 16), 102), (Setting("right", 4, 7), 103)]


def calibration_feeds(model: onnx.ModelProto) -> list[dict[str, np.ndarray]]:
    return [make_inputs(model, setting, seed) for setting, seed in CALIBRATION]


def _load(source) -> onnx.ModelProto:
    return source if isinstance(source, onnx.ModelProto) else onnx.load(str(source))


def _quantize(source, quant_format="QDQ", **kwargs) -> onnx.ModelProto:
    """``quantize_static`` (QDQ by default, MinMax) on seeded, meaningful calibration inputs."""
    import logging

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    model = _load(source)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(calibration_feeds(model))

        def get_next(self):
            return next(self._it, None)

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # "Please consider pre-processing" warnings
    try:
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            onnx.save(model, src)
            quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat[quant_format],
                            calibration_providers=["CPUExecutionProvider"], **kwargs)
            out = onnx.load(str(dst))
    finally:
        root.setLevel(level)
    out.graph.name = model.graph.name
    return out


# --------------------------------------------------------------------------- (a) – (c)

def matmul_u8s8(source=SOURCE) -> onnx.ModelProto:
    """(a) MatMul only; per-tensor symmetric int8 weights, asymmetric uint8 activations."""
    from onnxruntime.quantization import QuantType
    return _quantize(source, op_types_to_quantize=["MatMul"], per_channel=False,
                     activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                     extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})


def matmul_s8s8_pc(source=SOURCE) -> onnx.ModelProto:
    """(b) MatMul only; per-channel symmetric int8 weights, symmetric int8 activations."""
    from onnxruntime.quantization import QuantType
    return _quantize(source, op_types_to_quantize=["MatMul"], per_channel=True,
                     activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                     extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})


def all_ops(source=SOURCE) -> onnx.ModelProto:
    """(c) The QDQ quantizer's default op types, uint8 activations, int8 weights."""
    from onnxruntime.quantization import QuantType
    return _quantize(source, op_types_to_quantize=None, per_channel=False,
                     activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def qoperator(source=SOURCE) -> onnx.ModelProto:
    """(f) The QOperator format (QLinearMatMul, QLinearAdd, QLinearMul, QLinearSoftmax, QGemm), default op
    types, uint8 activations, int8 per-tensor weights: ONNX Runtime's documented defaults."""
    from onnxruntime.quantization import QuantType
    return _quantize(source, "QOperator", op_types_to_quantize=None, per_channel=False,
                     activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def _quantize_dynamic(source, **kwargs) -> onnx.ModelProto:
    """``quantize_dynamic``: weights quantized ahead, activations by DynamicQuantizeLinear at run time."""
    from onnxruntime.quantization import quantize_dynamic

    model = _load(source)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, src)
        quantize_dynamic(str(src), str(dst), **kwargs)
        out = onnx.load(str(dst))
    out.graph.name = model.graph.name
    return out


def dynamic_s8pc(source=SOURCE) -> onnx.ModelProto:
    """(g) ``quantize_dynamic`` as Optimum's ``avx512_vnni`` config sets it: int8 weights per output
    column, uint8 activations (MatMulInteger + DynamicQuantizeLinear)."""
    from onnxruntime.quantization import QuantType
    return _quantize_dynamic(source, per_channel=True, weight_type=QuantType.QInt8)


def dynamic_u8(source=SOURCE) -> onnx.ModelProto:
    """(h) ``quantize_dynamic`` as transformers.js quantizes: uint8 weights per tensor."""
    from onnxruntime.quantization import QuantType
    return _quantize_dynamic(source, per_channel=False, weight_type=QuantType.QUInt8)


def all_ops_s8(source=SOURCE) -> onnx.ModelProto:
    """(c') Every op type quantized, symmetric int8 activations and weights, ``reduce_range``."""
    from onnxruntime.quantization import QuantType
    return _quantize(source, op_types_to_quantize=None, per_channel=False, reduce_range=True,
                     activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                     extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})


# --------------------------------------------------------------------------- (d) QAT

def _ranges(model: onnx.ModelProto, names: list[str]) -> dict[str, tuple[float, float]]:
    """Min/max of intermediate tensors over the calibration inputs (ORT, no optimizations)."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    for n in names:
        if n not in have:
            probe.graph.output.append(helper.make_empty_tensor_value_info(n))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    lo = {n: np.inf for n in names}
    hi = {n: -np.inf for n in names}
    for feeds in calibration_feeds(model):
        for n, v in zip(names, sess.run(names, feeds)):
            lo[n] = min(lo[n], float(v.min()))
            hi[n] = max(hi[n], float(v.max()))
    return {n: (lo[n], hi[n]) for n in names}


def _uint8_params(lo: float, hi: float) -> tuple[np.float32, np.uint8]:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255.0 or 1.0
    zp = int(np.clip(round(-lo / scale), 0, 255))
    return np.float32(scale), np.uint8(zp)


def qat(source=SOURCE) -> onnx.ModelProto:
    """(d) Q→DQ pairs inserted by hand on the inputs of every Linear, as QAT exports look.

    For a MatMul with weight W [in, out]: the float weight is stored as Wᵀ [out, in]
    (PyTorch's Linear layout), fake-quantized per output channel (axis 0, symmetric
    int8), then ``Transpose``d into the MatMul. For Gemm(transB=1) the DQ feeds it
    directly. Activations get a per-tensor uint8 Q→DQ pair calibrated like (a).
    """
    model = _load(source)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inits = {t.name: t for t in g.initializer}
    graph_inputs = {i.name for i in g.input}

    linears = [n for n in g.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in inits
               and n.input[1] not in graph_inputs and len(inits[n.input[1]].dims) == 2]
    ranges = _ranges(model, sorted({n.input[0] for n in linears}))
    used_weights = {n.input[1] for n in linears}

    new_inits, act_dq = [], {}
    for tensor, (lo, hi) in ranges.items():
        scale, zp = _uint8_params(lo, hi)
        s, z = f"{tensor}_qat_scale", f"{tensor}_qat_zero_point"
        new_inits += [numpy_helper.from_array(np.array(scale), s), numpy_helper.from_array(np.array(zp), z)]
        act_dq[tensor] = (s, z)

    inserted: dict[int, list[onnx.NodeProto]] = {}
    for node in linears:
        idx = list(g.node).index(node)
        before = inserted.setdefault(idx, [])
        base = node.name.rsplit("/", 1)[0] if "/" in node.name else node.name
        # activation: one Q→DQ pair per consumer (PyTorch gives every Linear its own observer)
        a = node.input[0]
        s, z = act_dq[a]
        before += [helper.make_node("QuantizeLinear", [a, s, z], [f"{base}/input_quant"], name=f"{base}/input_quant/QuantizeLinear"),
                   helper.make_node("DequantizeLinear", [f"{base}/input_quant", s, z], [f"{base}/input_dequant"],
                                    name=f"{base}/input_quant/DequantizeLinear")]
        node.input[0] = f"{base}/input_dequant"
        # weight: float [out, in], per-output-channel symmetric int8
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        trans_b = any(at.name == "transB" and at.i for at in node.attribute)
        wt = w if (node.op_type == "Gemm" and trans_b) else w.T.copy()   # [out, in]
        amax = np.maximum(np.abs(wt).max(axis=1), 1e-8)
        wscale = (amax / 127.0).astype(np.float32)
        wname = f"{base}.weight"
        new_inits += [numpy_helper.from_array(wt, wname),
                      numpy_helper.from_array(wscale, f"{wname}_scale"),
                      numpy_helper.from_array(np.zeros(wt.shape[0], np.int8), f"{wname}_zero_point")]
        before += [helper.make_node("QuantizeLinear", [wname, f"{wname}_scale", f"{wname}_zero_point"], [f"{wname}_quant"],
                                    name=f"{base}/weight_quant/QuantizeLinear", axis=0),
                   helper.make_node("DequantizeLinear", [f"{wname}_quant", f"{wname}_scale", f"{wname}_zero_point"],
                                    [f"{wname}_dequant"], name=f"{base}/weight_quant/DequantizeLinear", axis=0)]
        if node.op_type == "Gemm" and trans_b:
            node.input[1] = f"{wname}_dequant"
        else:
            before.append(helper.make_node("Transpose", [f"{wname}_dequant"], [f"{wname}_t"],
                                           name=f"{base}/weight_quant/Transpose", perm=[1, 0]))
            node.input[1] = f"{wname}_t"

    nodes = []
    for i, node in enumerate(g.node):
        nodes += inserted.get(i, [])
        nodes.append(node)
    del g.node[:]
    g.node.extend(nodes)
    keep = [t for t in g.initializer if t.name not in used_weights
            or any(t.name in n.input for n in g.node)]
    del g.initializer[:]
    g.initializer.extend(keep + new_inits)
    # QuantizeLinear with per-axis parameters needs opset ≥ 13; keep the source's opset if higher
    for op in out.opset_import:
        if op.domain in ("", "ai.onnx") and op.version < 13:
            op.version = 13
    onnx.checker.check_model(out)
    return out


# --------------------------------------------------------------------------- (e) FakeQuantize

def _const(model: onnx.ModelProto, name: str) -> np.ndarray:
    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            return numpy_helper.to_array(n.attribute[0].t)
    raise KeyError(name)


def _qrange(dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def to_fakequantize(qdq: onnx.ModelProto) -> onnx.ModelProto:
    """Replace every QuantizeLinear→DequantizeLinear pair by one OpenVINO FakeQuantize.

    levels = 256, input_low = output_low = (q_min − zp)·scale, input_high = output_high =
    (q_max − zp)·scale. A DequantizeLinear of a constant int8 weight becomes the float
    weight (exactly the dequantized values) followed by a FakeQuantize with the same
    range, so the whole model uses one representation. Per-channel parameters become
    broadcastable range tensors along the DQ axis.
    """
    out = onnx.ModelProto()
    out.CopyFrom(qdq)
    g = out.graph
    producers = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    inits = {t.name for t in g.initializer}
    new_inits: list[onnx.TensorProto] = []
    drop: set[int] = set()
    replace: dict[int, onnx.NodeProto] = {}

    def ranges(scale_name, zp_name, dtype, axis, rank, tag):
        scale = _const(out, scale_name).astype(np.float32)
        zp = _const(out, zp_name).astype(np.int64) if zp_name else np.zeros_like(scale, np.int64)
        qmin, qmax = _qrange(dtype)
        lo = ((qmin - zp) * scale).astype(np.float32)
        hi = ((qmax - zp) * scale).astype(np.float32)
        if scale.ndim == 1 and scale.size > 1:     # per-axis: make it broadcast along `axis`
            shape = [1] * rank
            shape[axis % rank] = scale.size
            lo, hi = lo.reshape(shape), hi.reshape(shape)
        lo_name, hi_name = f"{tag}_fq_low", f"{tag}_fq_high"
        new_inits.extend([numpy_helper.from_array(lo, lo_name), numpy_helper.from_array(hi, hi_name)])
        return lo_name, hi_name

    def zp_dtype(q_or_dq):
        if len(q_or_dq.input) > 2 and q_or_dq.input[2]:
            return _const(out, q_or_dq.input[2]).dtype
        return np.uint8

    index = {id(n): i for i, n in enumerate(g.node)}
    for dq in [n for n in g.node if n.op_type == "DequantizeLinear"]:
        src = dq.input[0]
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        q = producers.get(src)
        if q is not None and q.op_type == "QuantizeLinear":
            if len(consumers.get(src, [])) != 1:
                raise ValueError(f"{q.name}: quantized tensor has several consumers")
            rank = 4  # activations: ranges are per-tensor in these models; rank only matters per-axis
            lo, hi = ranges(dq.input[1], dq.input[2] if len(dq.input) > 2 else "", zp_dtype(dq), axis, rank, src)
            fq = helper.make_node("FakeQuantize", [q.input[0], lo, hi, lo, hi], [dq.output[0]],
                                  name=q.name.replace("_QuantizeLinear", "") + "_FakeQuantize",
                                  domain=OV_DOMAIN, levels=256)
            replace[index[id(q)]] = fq
            drop.add(index[id(dq)])
        elif src in inits:  # constant int8 weight → float weight + FakeQuantize
            wq = _const(out, src)
            scale = _const(out, dq.input[1]).astype(np.float32)
            zp = _const(out, dq.input[2]).astype(np.int64) if len(dq.input) > 2 and dq.input[2] else 0
            if scale.ndim == 1 and scale.size > 1:
                shape = [1] * wq.ndim
                shape[axis % wq.ndim] = scale.size
                scale_b, zp_b = scale.reshape(shape), np.asarray(zp).reshape(shape) if np.ndim(zp) else zp
            else:
                scale_b, zp_b = scale, zp
            wf = ((wq.astype(np.int64) - zp_b) * scale_b).astype(np.float32)
            fname = f"{src}_float"
            new_inits.append(numpy_helper.from_array(wf, fname))
            lo, hi = ranges(dq.input[1], dq.input[2] if len(dq.input) > 2 else "", wq.dtype, axis, wq.ndim, src)
            replace[index[id(dq)]] = helper.make_node("FakeQuantize", [fname, lo, hi, lo, hi], [dq.output[0]],
                                                      name=dq.name.replace("_DequantizeLinear", "") + "_FakeQuantize",
                                                      domain=OV_DOMAIN, levels=256)
        else:
            raise ValueError(f"{dq.name}: DequantizeLinear of a non-constant, non-Q tensor")

    nodes = []
    for i, n in enumerate(g.node):
        if i in drop:
            continue
        nodes.append(replace.get(i, n))
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep + [t for t in new_inits if t.name in used])
    if not any(op.domain == OV_DOMAIN for op in out.opset_import):
        out.opset_import.append(helper.make_opsetid(OV_DOMAIN, 1))
    return out


def ov_fakequantize(source=SOURCE) -> onnx.ModelProto:
    """(e) variant (a) with OpenVINO FakeQuantize ops instead of Q/DQ."""
    return to_fakequantize(matmul_u8s8(source))


VARIANTS = {
    "matmul_u8s8": matmul_u8s8,
    "matmul_s8s8_pc": matmul_s8s8_pc,
    "all_ops": all_ops,
    "all_ops_s8": all_ops_s8,
    "qat": qat,
    "ov_fakequantize": ov_fakequantize,
    "qoperator": qoperator,
    "dynamic_s8pc": dynamic_s8pc,
    "dynamic_u8": dynamic_u8,
}

# What each committed variant is expected to do (checked by tests/test_int8_models.py).
EXPECTED = {
    "matmul_u8s8": {"ort": True, "openvino": True},
    "matmul_s8s8_pc": {"ort": True, "openvino": True},
    "all_ops": {"ort": True, "openvino": False},
    "all_ops_s8": {"ort": True, "openvino": False},
    "qat": {"ort": True, "openvino": True},
    "ov_fakequantize": {"ort": False, "openvino": True},
    "qoperator": {"ort": True, "openvino": False},
    "dynamic_s8pc": {"ort": True, "openvino": True},
    "dynamic_u8": {"ort": True, "openvino": True},
}


def path(name: str) -> Path:
    return OUT_DIR / f"{name}.onnx"


def load(name: str) -> onnx.ModelProto:
    return onnx.load(str(path(name)))


_COMPILED: dict[str, tuple] = {}


def compiled_variant(name: str):
    """(compiled model or None, error) for a committed variant, compiled once per process (f32)."""
    if name not in _COMPILED:
        _COMPILED[name] = compile_openvino(load(name))
    return _COMPILED[name]


# --------------------------------------------------------------------------- observation

def histogram(model: onnx.ModelProto) -> Counter:
    return Counter((f"{n.domain}:" if n.domain not in ("", "ai.onnx") else "") + n.op_type for n in model.graph.node)


def _feeds(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return make_inputs(model, Setting("right", 2, 16), 0)


def run_ort(model: onnx.ModelProto) -> tuple[bool, str]:
    import onnxruntime as ort
    try:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        sess.run(None, _feeds(model))
        return True, ""
    except Exception as e:  # noqa: BLE001 - reported
        return False, " ".join(str(e).split())


def ort_observed(model: onnx.ModelProto) -> dict[str, str]:
    """Node name → the op ONNX Runtime (CPU, all optimizations) runs it as.

    The QDQ selector/actions keep the MatMul's name on the QLinearMatMul /
    MatMulIntegerToFloat / QGemm that replaces it; MatMulAddFusion names its Gemm
    ``<matmul name>/MatMulAddFusion``.
    """
    import onnxruntime as ort
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.optimized_model_filepath = os.path.join(tmp, "opt.onnx")
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        opt = onnx.load(so.optimized_model_filepath)
    originals = [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm")]
    seen = {}
    for n in opt.graph.node:
        if n.op_type not in ("QLinearMatMul", "MatMulIntegerToFloat", "QGemm", "MatMulInteger",
                             "DynamicQuantizeMatMul", "MatMul", "Gemm", "FusedGemm", "FusedMatMul", "MatMulNBits"):
            continue
        name = n.name.removeprefix("fused ")
        for o in originals:  # "<name>", "<name>/MatMulAddFusion", "<name>/MatMulScaleFusion/", "fused <name>"
            if name == o or name.startswith(o + "/"):
                seen[o] = n.op_type
    return seen


ORT_INT8_OPS = {"QLinearMatMul", "MatMulIntegerToFloat", "QGemm", "MatMulInteger", "DynamicQuantizeMatMul"}


def compile_openvino(model: onnx.ModelProto, precision: str | None = "f32"):
    """(compiled model or None, error text). Writes the model to a temporary file first."""
    import openvino as ov
    core = ov.Core()
    with tempfile.TemporaryDirectory() as tmp:
        p = os.path.join(tmp, "m.onnx")
        onnx.save(model, p)
        try:
            ovm = core.read_model(p)
        except Exception as e:  # noqa: BLE001
            return None, "read_model: " + " ".join(str(e).split())
        try:
            config = {"INFERENCE_PRECISION_HINT": precision} if precision else {}
            return core.compile_model(ovm, "CPU", config), ""
        except Exception as e:  # noqa: BLE001
            return None, "compile_model: " + " ".join(str(e).split())


def openvino_layers(compiled) -> list[dict]:
    """The runtime graph: one dict per layer (type, precision, input precisions, original names)."""
    layers = []
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()

        def get(key, info=info):
            return info[key].astype(str) if key in info else ""
        layers.append({
            "name": op.get_friendly_name(),
            "type": get("layerType"),
            "precision": get("runtimePrecision"),
            "primitive": get("primitiveType"),
            "inputs": [op.get_input_element_type(i).get_type_name() for i in range(op.get_input_size())],
            "original": [s for s in get("originalLayersNames").split(",") if s],
        })
    return layers


def openvino_matmul_kind(layer: dict) -> str:
    """'int8' when the layer computes in int8: its data input is u8/i8.

    ``runtimePrecision`` alone misleads: a FullyConnected with int8 *weights* and f32
    activations (weight decompression, primitive ``brgemm_avx512_f32``) reports i8/u8 too.
    """
    return "int8" if layer["inputs"] and layer["inputs"][0] in ("u8", "i8") else "fp32"


def openvino_observed(model: onnx.ModelProto, compiled=None) -> dict[str, dict]:
    """MatMul/Gemm node name → {'layer', 'type', 'kind', 'precision', 'inputs'} in OpenVINO's runtime graph."""
    if compiled is None:
        compiled, err = compile_openvino(model)
        if compiled is None:
            raise RuntimeError(err)
    names = {n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm")}
    seen = {}
    for layer in openvino_layers(compiled):
        for orig in layer["original"] + [layer["name"]]:  # the friendly name when the MatMul's is not listed
            # LPT renames a transformed MatMul "<name>/DequantizationMultiply"
            orig = orig.split("/Dequantization")[0]
            if orig in names and (orig not in seen or layer["type"] in ("FullyConnected", "MatMul")):
                seen[orig] = {"layer": layer["name"], "type": layer["type"], "precision": layer["precision"],
                              "inputs": layer["inputs"], "primitive": layer["primitive"],
                              "kind": openvino_matmul_kind(layer) if layer["type"] in ("FullyConnected", "MatMul")
                              else "fp32" if all(t not in ("u8", "i8") for t in layer["inputs"][:1]) else "int8"}
    return seen


def openvino_summary(compiled) -> dict:
    layers = openvino_layers(compiled)
    count = Counter((l["type"], l["precision"]) for l in layers if l["type"] not in ("Const", "Input", "Output"))
    fc = [l for l in layers if l["type"] in ("FullyConnected", "MatMul")]
    return {
        "layers": count,
        "fc_int8": sum(openvino_matmul_kind(l) == "int8" for l in fc),
        "fc_total": len(fc),
        "fc_reported_i8u8": sum(l["precision"] in ("i8", "u8", "I8", "U8") for l in fc),
        "fakequantize": sum(l["type"] == "FakeQuantize" for l in layers),
    }


def agreement(model: onnx.ModelProto, backend: str, observed: dict) -> tuple[int, int, list[str]]:
    """(agree, total, disagreements) between fusekit.reports.int8 and what the runtime chose."""
    from fusekit.reports.int8 import analyze
    report = analyze(model, target=backend)
    agree, total, bad = 0, 0, []
    for rec in report.records:
        if rec.node not in observed:
            continue
        total += 1
        got = observed[rec.node]
        if backend == "ort":
            got_kind = "int8" if got in ORT_INT8_OPS else "fp32"
        else:
            got_kind = got["kind"]
        want = rec.backends[backend].verdict
        if want == got_kind:
            agree += 1
        else:
            bad.append(f"{rec.node}: fusekit {want}, {backend} {got_kind} ({got if backend == 'ort' else got['type']})")
    return agree, total, bad


# --------------------------------------------------------------------------- main

def _report(name: str, model: onnx.ModelProto, size: int) -> None:
    print(f"== {name}  ({size:,} bytes)")
    print("   ops:", ", ".join(f"{k} {v}" for k, v in sorted(histogram(model).items(), key=lambda kv: -kv[1])))
    ok, err = run_ort(model)
    print(f"   ONNX Runtime: {'runs' if ok else 'fails: ' + err[:300]}")
    if ok:
        a, t, bad = agreement(model, "ort", ort_observed(model))
        obs = Counter(ort_observed(model).values())
        print(f"   ORT kernels: {dict(obs)}; fusekit.reports.int8 agrees on {a}/{t}" + "".join(f"\n     ✗ {b}" for b in bad))
    for precision in ("f32", None):
        compiled, err = compile_openvino(model, precision)
        tag = "f32" if precision else "default (bf16 on AMX)"
        if compiled is None:
            print(f"   OpenVINO [{tag}]: fails: {err[:600]}")
            continue
        try:
            compiled(_feeds(model))
            ran = "runs"
        except Exception as e:  # noqa: BLE001
            ran = "compiles, fails to run: " + str(e)[:200]
        s = openvino_summary(compiled)
        print(f"   OpenVINO [{tag}]: {ran}; FullyConnected/MatMul int8 {s['fc_int8']}/{s['fc_total']} "
              f"(runtimePrecision i8/u8 on {s['fc_reported_i8u8']}), standalone FakeQuantize {s['fakequantize']}")
        if precision == "f32":
            print("   layers:", ", ".join(f"{t}/{p} {c}" for (t, p), c in sorted(s["layers"].items())))
            a, t, bad = agreement(model, "openvino", openvino_observed(model, compiled))
            print(f"   fusekit.reports.int8 agrees with OpenVINO on {a}/{t}" + "".join(f"\n     ✗ {b}" for b in bad))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-dir", type=Path, default=OUT_DIR)
    ap.add_argument("--source", type=Path, default=SOURCE)
    ap.add_argument("--only", action="append", choices=sorted(VARIANTS))
    ap.add_argument("--no-write", action="store_true", help="build and report, write nothing")
    args = ap.parse_args(argv)
    if not args.no_write:
        args.out_dir.mkdir(parents=True, exist_ok=True)
    for name in args.only or VARIANTS:
        model = VARIANTS[name](args.source)
        data = model.SerializeToString()
        if not args.no_write:
            (args.out_dir / f"{name}.onnx").write_bytes(data)
        _report(name, model, len(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
