"""Proving a rewritten model computes what the original computes.

Both models run in ONNX Runtime with its graph optimizations off, so none of the
runtime's own fusions can hide a difference, on the same seeded inputs over several
settings (right and left padding, all-ones masks, other batch sizes and lengths).
Each output passes when its largest error is within ``atol + rtol · scale``, where
scale is the largest magnitude of the reference output.

A quantized reference (QuantizeLinear/DequantizeLinear or FakeQuantize) is compared
in units of each output's quantization step instead: an INT8 fusion may round once
where the reference rounded twice, which moves an output by a step or two. The step
is the scale of the Q/DQ (or FakeQuantize) on the output; an output with none gets
the step an 8-bit per-tensor quantization of it would have (its range / 255).

``reference_kind="fp32"`` compares an INT8 model with its FP32 original: the result
is an accuracy report (the error in steps), not an equivalence claim.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
import onnxruntime as ort

from .errors import FusekitError, InputsNeeded
from .modelio import TWO_GB, load, write
from .inputs import SETTINGS, Setting, describe, make_inputs, valid_positions
from .branches import view, walk
from .provenance import PACK_KEY

# Relative to the output's scale; float32 sums in another order differ by ~1e-6.
DEFAULT_RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-9, np.dtype(np.float16): 1e-2}
# A model computing inside in a narrower float than its outputs (fp16 with fp32 I/O) is as
# precise as that narrower float; bfloat16 keeps 8 bits of mantissa where float16 keeps 11.
COMPUTE_RTOL = {onnx.TensorProto.FLOAT16: ("float16", 1e-2), onnx.TensorProto.BFLOAT16: ("bfloat16", 5e-2)}
# A fused INT8 block rounds once where the QDQ chain rounded at each requantization pair.
INT8_STEPS = 4.0
# Through many layers those roundings add up to the size of the reference's own activation
# quantization noise (the reference against itself with every activation pair removed);
# a fused model may differ from the reference by up to twice that.
NOISE_FACTOR = 2.0
QUANTIZE_OPS = {"QuantizeLinear", "DequantizeLinear", "FakeQuantize", "MatMulIntegerToFloat", "QLinearMatMul",
                "DynamicQuantizeMatMul", "MatMulInteger", "QGemm"}


@dataclass
class OutputDiff:
    name: str
    max_abs: float
    scale: float
    tolerance: float
    ok: bool
    valid_max_abs: float | None = None  # on token positions the mask keeps
    padded_max_abs: float | None = None  # on padded positions
    worst_setting: str = ""
    step: float | None = None  # the output's quantization step (INT8 comparisons)
    step_source: str = ""      # where the step comes from
    mean_abs: float | None = None
    noise: float | None = None  # the reference's own activation quantization noise (max abs)
    packed: str | None = None  # a packed candidate: "tokens" (padded positions not computed) or "derived"
    padded_rows: int = 0  # rows of a derived output that read a padded position, left out of the comparison

    @property
    def max_rel(self) -> float:
        return self.max_abs / self.scale if self.scale > 0 else (0.0 if self.max_abs == 0 else float("inf"))

    @property
    def max_steps(self) -> float | None:
        return None if not self.step else self.max_abs / self.step

    def describe(self, tolerance: bool = True) -> str:
        if self.step:
            return (f"max abs {self.max_abs:.2e} = {self.max_steps:.2f} steps of {self.step:.3g} ({self.step_source}), "
                    f"mean {self.mean_abs / self.step:.3f} steps, max rel {self.max_rel:.2e} of scale {self.scale:.3g}"
                    + (f"; the reference's own quantization noise {self.noise / self.step:.2f} steps"
                       if self.noise else "")
                    + (f" (tolerance {self.tolerance / self.step:.3g} steps)" if tolerance else ""))
        return (f"max abs {self.max_abs:.2e}, max rel {self.max_rel:.2e} of scale {self.scale:.3g} "
                f"(tolerance {self.tolerance:.2e})")


@dataclass
class VerifyResult:
    ok: bool
    outputs: list[OutputDiff] = field(default_factory=list)
    settings: list[str] = field(default_factory=list)
    seed: int = 0
    message: str = ""
    reference_kind: str = "same"  # "fp32": an accuracy report against the FP32 original
    # a packed candidate in the branch form: the trials (from 1) that ran each branch of its If
    branches: dict[str, list[int]] = field(default_factory=dict)

    def summary(self) -> str:
        if self.reference_kind == "fp32":
            verdict = "FP32 → INT8 error" + ("" if self.ok else " (outputs could not be compared)")
        elif any(o.step for o in self.outputs):  # a quantized reference: no exact claim to make
            verdict = "within the INT8 tolerance" if self.ok else "NOT within the INT8 tolerance"
        else:
            verdict = "equivalent" if self.ok else "NOT equivalent"
        trials = f"{len(self.settings)} trial" + ("" if len(self.settings) == 1 else "s")
        lines = [f"verification: {verdict} over {trials} (seed {self.seed})"]
        if self.message:
            lines.append(f"  {self.message}")
        for o in self.outputs:
            split = ""
            if o.packed == "tokens":
                split = ", padded positions not computed (packed)"
            elif o.valid_max_abs is not None:
                split = f", valid tokens {o.valid_max_abs:.2e}, padded {o.padded_max_abs:.2e}"
            if o.padded_rows:
                split += (f"; {o.padded_rows} row{'s' if o.padded_rows > 1 else ''} read from a padded position "
                          "(not computed (packed)), left out")
            mark = ("    " if np.isfinite(o.max_abs) else "FAIL") if self.reference_kind == "fp32" else \
                ("ok  " if o.ok else "FAIL")
            lines.append(f"  {mark} {o.name}: {o.describe(self.reference_kind != 'fp32')}{split}"
                         + ("" if o.ok else f" — worst at {o.worst_setting}"))
        return "\n".join(lines)

    def note(self, text: str):
        self.message = f"{self.message}; {text}" if self.message else text

    def to_dict(self) -> dict:
        d = asdict(self)
        for o, od in zip(self.outputs, d["outputs"]):
            od["max_rel"] = o.max_rel
            od["max_steps"] = o.max_steps
        return d


def session(model: onnx.ModelProto | str | os.PathLike, optimize: bool = False, threads: int = 0) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.intra_op_num_threads = threads
    options.log_severity_level = 4  # a failure reaches the user as one line, not as ORT's log too
    if isinstance(model, onnx.ModelProto) and model.ByteSize() >= TWO_GB:
        with tempfile.TemporaryDirectory() as tmp:  # one protobuf cannot hold it: go through a file
            write(model, Path(tmp) / "model.onnx", external=True)
            return session(Path(tmp) / "model.onnx", optimize, threads)
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own exception types for every load failure
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if OPENVINO_DOMAIN in first:
            return OpenVinoSession(source)
        raise FusekitError(f"ONNX Runtime cannot load the model: {first[:300]}") from None


OPENVINO_DOMAIN = "org.openvinotoolkit"


class OpenVinoSession:
    """A model with OpenVINO-domain ops (FakeQuantize) runs in the one runtime that has
    them: OpenVINO, at f32, behind the few InferenceSession methods the verifier uses."""

    runtime = "OpenVINO (f32)"

    def __init__(self, source: bytes | str):
        import openvino as ov
        core = ov.Core()
        model = core.read_model(source, b"") if isinstance(source, bytes) else core.read_model(source)
        self.compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        self.inputs = [_Named(p.get_any_name()) for p in self.compiled.inputs]
        self.outputs = [_Named(p.get_any_name()) for p in self.compiled.outputs]

    def get_inputs(self):
        return self.inputs

    def get_outputs(self):
        return self.outputs

    def run(self, _names, feeds):
        result = self.compiled(feeds)
        return [np.asarray(result[self.compiled.output(o.name)]) for o in self.outputs]


@dataclass
class _Named:
    name: str


def _as_model(m) -> onnx.ModelProto:
    return m if isinstance(m, onnx.ModelProto) else load(m)


def _run(sess: ort.InferenceSession, feeds: dict, what: str, made_up: bool = False) -> dict[str, np.ndarray]:
    """Run ``sess``; ``made_up`` inputs the reference cannot run on are fusekit's guess gone wrong."""
    names = {i.name for i in sess.get_inputs()}
    try:
        outputs = sess.run(None, {k: v for k, v in feeds.items() if k in names})
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if made_up:
            reason = first.split("Status Message: ")[-1][:200]  # without ORT's error-code preamble
            raise InputsNeeded(f"cannot make up inputs {what} runs on ({reason})") from None
        raise FusekitError(f"running {what} failed: {first[:300]}") from None
    return dict(zip([o.name for o in sess.get_outputs()], outputs))


def _settings(trials: int, shapes: dict) -> list[Setting]:
    if shapes:  # the user fixed the sizes: vary only the padding
        batch, seq = next((s for s in shapes.values() if len(s) == 2), (2, 16))
        base = [Setting("right", batch, seq), Setting("left", batch, seq), Setting("none", batch, seq)]
    else:
        base = SETTINGS
    return [base[i % len(base)] for i in range(trials)]


QOPERATOR_OPS = {"QLinearMatMul", "QLinearAdd", "QLinearMul", "QLinearSoftmax", "QGemm", "QLinearConcat",
                 "QLinearSigmoid", "QLinearLeakyRelu"}


def _as_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """A QOperator model (QLinearMatMul …) in the Q/DQ form its ops are defined as (the QDQAsQOperator
    rule alone), so its activation pairs can be bypassed like any other's."""
    import onnx_graphsurgeon as gs

    from . import patterns
    from .engine import canonicalize, shapes
    from .modelio import default_opset
    graph = gs.import_onnx(shapes.infer(model))
    canonicalize.run(graph, [patterns.BY_NAME["QDQAsQOperator"]], "onnx", default_opset(model))
    out = gs.export_onnx(graph.cleanup().toposort())
    out.ir_version = model.ir_version
    return out


def _unrounded(graph: onnx.GraphProto, matmul: onnx.NodeProto, quantizer: onnx.NodeProto,
               second: onnx.NodeProto | None = None) -> list[onnx.NodeProto]:
    """``MatMulInteger(DynamicQuantizeLinear(x), W, z, w_z)`` rewritten in place as the float
    ``(x / x_s) · (W − w_z)``: the integer product it stands for (x_s·w_s scales it back after)
    without the rounding of x, which is the z-shifted (x / x_s) rounded. Where W is itself an
    activation quantized at run time (``second``, the attention's Q·Kᵀ and P·V), it is unrounded
    the same way. Returns the nodes to put before it."""
    make = onnx.helper.make_node
    base = matmul.output[0] + "__unrounded"
    # an all-zero x has scale 0: 0 / tiny is its 0
    tiny = onnx.helper.make_tensor(base + "_tiny", onnx.TensorProto.FLOAT, [], [1e-30])
    nodes = [make("Constant", [], [base + "_tiny"], value=tiny),
             make("Max", [quantizer.output[1], base + "_tiny"], [base + "_s"]),
             make("Div", [quantizer.input[0], base + "_s"], [base + "_x"])]
    if second is not None:
        nodes += [make("Max", [second.output[1], base + "_tiny"], [base + "_ws"]),
                  make("Div", [second.input[0], base + "_ws"], [base + "_w"])]
        matmul.op_type = "MatMul"
        matmul.input[:] = [base + "_x", base + "_w"]
        return nodes
    nodes.append(make("Cast", [matmul.input[1]], [base + "_w"], to=onnx.TensorProto.FLOAT))
    weight = base + "_w"
    if len(matmul.input) > 3 and matmul.input[3]:
        nodes += [make("Cast", [matmul.input[3]], [base + "_wz"], to=onnx.TensorProto.FLOAT),
                  make("Sub", [weight, base + "_wz"], [base + "_wc"])]
        weight = base + "_wc"
    matmul.op_type = "MatMul"  # its Cast to float is then a no-op
    matmul.input[:] = [base + "_x", weight]
    return nodes


def quantization_steps(model: onnx.ModelProto) -> dict[str, tuple[float, str]]:
    """Graph output → (its quantization step, where it comes from), for the outputs a
    DequantizeLinear or FakeQuantize produces or a QuantizeLinear reads."""
    from .reports.dataflow import proto_constant
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    value = lambda name: proto_constant(name, inits, producers.get)  # noqa: E731
    steps: dict[str, tuple[float, str]] = {}
    outputs = {o.name for o in g.output}
    for n in g.node:
        step = None
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 1:
            scale = value(n.input[1])
            step = float(np.max(scale)) if scale is not None and scale.size else None
            tensor = n.output[0] if n.op_type == "DequantizeLinear" else n.input[0]
        elif n.op_type == "FakeQuantize" and len(n.input) == 5:
            lo, hi = value(n.input[3]), value(n.input[4])
            levels = next((a.i for a in n.attribute if a.name == "levels"), 256)
            step = float(np.max(hi - lo)) / (levels - 1) if lo is not None and hi is not None else None
            tensor = n.output[0]
        if step and tensor in outputs:
            steps.setdefault(tensor, (step, f"{n.op_type} '{n.name}'"))
    return steps


def without_activation_quantization(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """The model with every QuantizeLinear→DequantizeLinear pair (or FakeQuantize, or
    DynamicQuantizeLinear→DequantizeLinear) on a computed value bypassed (weights keep theirs),
    and every integer MatMul of a dynamically quantized input (``quantize_dynamic``) fed that input
    unrounded: what its activation quantization costs is the difference between the two. None when there is nothing to remove."""
    if any(n.op_type in QOPERATOR_OPS for n in model.graph.node):
        model = _as_qdq(model)
    g = model.graph
    producers = {o: n for n in g.node for o in n.output}
    constants = {t.name for t in g.initializer} | {n.output[0] for n in g.node if n.op_type == "Constant"}
    bypass = {}
    for n in g.node:
        q = producers.get(n.input[0]) if n.op_type == "DequantizeLinear" else None
        # a run-time pair (DynamicQuantizeLinear) as canonicalization reads quantize_dynamic's integer MatMuls
        if q is not None and q.op_type in ("QuantizeLinear", "DynamicQuantizeLinear") and q.input[0] not in constants:
            bypass[n.output[0]] = q.input[0]
        elif n.op_type == "FakeQuantize" and n.input[0] not in constants:
            bypass[n.output[0]] = n.input[0]
    dynamic = [n for n in g.node if n.op_type == "MatMulInteger" and not n.domain
               and getattr(producers.get(n.input[0]), "op_type", None) == "DynamicQuantizeLinear"]
    if not bypass and not dynamic:
        return None
    twin = onnx.ModelProto()
    twin.CopyFrom(model)
    if dynamic:
        names = {d.output[0] for d in dynamic}
        nodes = []
        for n in twin.graph.node:
            if n.op_type == "MatMulInteger" and n.output[0] in names:
                second = producers.get(n.input[1])
                second = second if getattr(second, "op_type", None) == "DynamicQuantizeLinear" else None
                nodes += _unrounded(twin.graph, n, producers[n.input[0]], second)
            nodes.append(n)
        twin.graph.ClearField("node")
        twin.graph.node.extend(nodes)
        kept = [v for v in twin.graph.value_info if v.name not in names]  # int32 no longer
        twin.graph.ClearField("value_info")
        twin.graph.value_info.extend(kept)
    for n in twin.graph.node:
        n.input[:] = [bypass.get(t, t) for t in n.input]
    for o in twin.graph.output:  # an output a pair produced: read it from the pair's input
        if o.name in bypass:
            twin.graph.node.append(onnx.helper.make_node("Identity", [bypass[o.name]], [o.name + "__unquantized"]))
            for n in twin.graph.node:
                if o.name in n.output and n.op_type in ("DequantizeLinear", "FakeQuantize"):
                    n.output[:] = [o.name + "__bypassed"]
            twin.graph.node[-1].output[:] = [o.name]
    return twin


def compute_precision(model: onnx.ModelProto) -> int | None:
    """The narrowest float type the graph computes in, read off its weights, Casts and
    declared values (a float16 model keeps float32 inputs and outputs but computes inside in float16)."""
    g = model.graph
    types = {t.data_type for t in g.initializer}
    types |= {v.type.tensor_type.elem_type for v in [*g.input, *g.value_info]}  # a skeleton's weights are inputs
    for n in walk(g):
        for a in n.attribute:
            if n.op_type == "Cast" and a.name == "to":
                types.add(a.i)
            elif n.op_type == "Constant" and a.name == "value":
                types.add(a.t.data_type)
    return next((t for t in COMPUTE_RTOL if t in types), None)


def is_quantized(model: onnx.ModelProto) -> bool:
    return any(n.op_type in QUANTIZE_OPS or n.domain == "fusekit" for n in walk(model.graph))


def verify(reference, candidate, trials: int = 4, seed: int = 0, atol: float | None = None,
           rtol: float | None = None, shapes: dict[str, tuple[int, ...]] | None = None,
           inputs_from: onnx.ModelProto | None = None, reference_kind: str = "same",
           steps: float | None = None, feeds: dict[str, np.ndarray] | None = None) -> VerifyResult:
    """Run both models on the same meaningful random inputs and compare every output.

    Inputs are built from ``reference`` (or ``inputs_from``, e.g. its skeleton, which
    spares loading a large reference twice). A quantized reference is compared in
    quantization steps (``steps`` of them allowed, INT8_STEPS by default);
    ``reference_kind="fp32"`` reports a quantized candidate's error against its
    FP32 original in the candidate's steps. ``feeds`` (checked against the model, e.g. by
    :func:`fusekit.inputs.check_feeds`) replaces the made-up inputs: one trial on them.

    Float outputs of a model that computes in float16 (or bfloat16) inside get that
    precision's tolerance, whatever the outputs' own type.
    """
    if reference_kind not in ("same", "fp32"):
        raise FusekitError(f"unknown reference kind {reference_kind!r}; choose same or fp32")
    ref_model = inputs_from if inputs_from is not None else _as_model(reference)
    ref = session(reference if not isinstance(reference, onnx.ModelProto) else ref_model)
    cand = session(candidate)
    ref_names = [o.name for o in ref.get_outputs()]
    runtimes = {getattr(sess, "runtime", "ONNX Runtime") for sess in (ref, cand)}
    cand_names = {o.name for o in cand.get_outputs()}
    settings = _settings(max(1, trials), shapes or {}) if feeds is None else [None]
    result = VerifyResult(ok=True, seed=seed)
    if runtimes != {"ONNX Runtime"}:
        result.message = f"ran in {' and '.join(sorted(runtimes))}: OpenVINO-domain ops (FakeQuantize) run nowhere else"
    missing = [n for n in ref_names if n not in cand_names]
    if missing:
        return VerifyResult(False, [], [], seed, f"outputs missing from the candidate: {', '.join(missing)}")
    quantized = view(_as_model(candidate)) if reference_kind == "fp32" else ref_model
    int8 = is_quantized(quantized)
    if reference_kind == "fp32" and not int8:
        raise FusekitError("--reference-kind fp32 compares a quantized model with its FP32 original, "
                           "but the candidate has no QuantizeLinear/DequantizeLinear/FakeQuantize")
    step_of = quantization_steps(quantized) if int8 else {}
    result.reference_kind = reference_kind
    packed, mask_name = packed_outputs(cand), packed_branch(cand)
    if mask_name:
        result.branches = {"padding": [], "no padding": []}
        if feeds is None and all(s.padding != "none" for s in settings):
            settings.append(_settings(3, shapes or {})[2])  # a batch without padding: the If's other branch
    stats: dict[str, _Stats] = {name: _Stats(packed.get(name)) for name in ref_names}
    noise: dict[str, _Stats] = {name: _Stats() for name in ref_names}
    twin = None
    if int8 and reference_kind == "same":
        unquantized = without_activation_quantization(_as_model(reference) if inputs_from is not None else ref_model)
        twin = session(unquantized) if unquantized is not None else None
    fed_names = {i.name for i in ref.get_inputs()}  # not the weights a skeleton declares as inputs
    for i, setting in enumerate(settings):
        trial = feeds if setting is None else make_inputs(ref_model, setting, seed + i, shapes, fed_names)
        fed = "given inputs: " + describe(trial, None) if setting is None else describe(trial, setting)
        result.settings.append(fed)
        expected = _run(ref, trial, "the reference", made_up=setting is not None)
        got = _run(cand, trial, "the candidate")
        mask = valid_positions(trial)
        if mask_name and mask_name in trial:  # which branch of the If this trial ran
            result.branches["padding" if (trial[mask_name] == 0).any() else "no padding"].append(i + 1)
        for name in ref_names:
            stats[name].add(expected[name], got[name], mask, fed)
        if twin is not None:
            plain = _run(twin, trial, "the reference without activation quantization")
            for name in ref_names:
                noise[name].add(expected[name], plain[name], mask, fed)
    if int8:
        result.outputs = [stats[name].result_in_steps(name, step_of.get(name), atol,
                                                      INT8_STEPS if steps is None else steps,
                                                      noise[name].err if twin is not None else 0.0)
                          for name in ref_names]
    else:
        computes = compute_precision(ref_model)
        result.outputs = [stats[name].result(name, atol, rtol, computes) for name in ref_names]
        if computes and rtol is None:
            kind, r = COMPUTE_RTOL[computes]
            result.note(f"the model computes in {kind} inside: float outputs are compared at its tolerance (rtol {r:g})")
    if mask_name:
        ran = {k: v for k, v in result.branches.items() if v}
        result.note("; ".join(f"trial{'s' if len(v) > 1 else ''} {', '.join(map(str, v))} ran the "
                              f"{'packed' if k == 'padding' else 'unpacked'} branch ({k})" for k, v in ran.items())
                    + ("" if len(ran) == 2 else f"; the {'unpacked' if 'padding' in ran else 'packed'} branch "
                       "did not run (no trial " + ("without" if "padding" in ran else "with") + " padding)"))
    if reference_kind == "fp32":
        result.ok = all(np.isfinite(o.max_abs) for o in result.outputs)
        for o in result.outputs:
            o.ok = bool(np.isfinite(o.max_abs))
    else:
        result.ok = all(o.ok for o in result.outputs)
        if not result.ok and not int8:
            cand_model = _as_model(candidate)
            narrower = compute_precision(cand_model)
            if is_quantized(cand_model):
                result.note("the candidate is quantized and the reference is not: "
                            "--reference-kind fp32 reports the FP32 → INT8 error instead")
            elif narrower and not compute_precision(ref_model) and rtol is None:
                kind, r = COMPUTE_RTOL[narrower]
                result.note(f"the candidate computes in {kind} inside and the reference does not: "
                            f"--rtol {r:g} compares at {kind} precision")
    return result


def packed_outputs(sess) -> dict[str, str]:
    """For a model packed by ``optimize(pack=True)``, as its session reads it: each output's kind.
    "tokens" outputs are computed at valid positions only (padded ones are 0); "derived" ones
    are computed from the unpacked hidden states, so a row whose value is read from a padded
    position differs."""
    meta = sess.get_modelmeta().custom_metadata_map if hasattr(sess, "get_modelmeta") else {}
    text = meta.get(PACK_KEY)
    return json.loads(text).get("outputs", {}) if text else {}


def packed_branch(sess) -> str | None:
    """For a packed model in the branch form (``fusekit.branches``), the mask input its If reads."""
    meta = sess.get_modelmeta().custom_metadata_map if hasattr(sess, "get_modelmeta") else {}
    packed = json.loads(meta.get(PACK_KEY) or "{}")
    return packed.get("mask") if packed.get("branch") else None


class _Stats:
    """The largest error and magnitude of one output over all trials.

    Of a packed candidate's "tokens" output only the valid positions are compared; of a
    "derived" output, rows that differ beyond the tolerance and have padding are counted
    as read from a padded position and left out of the comparison.
    """

    def __init__(self, packed: str | None = None):
        self.packed, self.rows = packed, []  # derived outputs: (row error, scale, row has padding)
        self.err, self.scale, self.valid, self.padded = 0.0, 0.0, None, None
        self.dtype, self.worst, self.problem = None, "", ""
        self.low, self.high, self.total, self.count = np.inf, -np.inf, 0.0, 0

    def add(self, expected: np.ndarray, got: np.ndarray, mask, setting: str):
        self.dtype = expected.dtype
        if expected.shape != got.shape or expected.dtype != got.dtype:
            self.err, self.worst = float("inf"), setting
            self.problem = f"got {got.dtype}{list(got.shape)}, expected {expected.dtype}{list(expected.shape)}"
            return
        e64, g64 = expected.astype(np.float64), got.astype(np.float64)
        err = np.where(np.isnan(e64) & np.isnan(g64), 0.0, np.abs(e64 - g64))
        err = np.nan_to_num(err, nan=np.inf)
        by_position = mask is not None and err.ndim >= 2 and err.shape[:2] == mask.shape
        if self.packed == "tokens" and by_position:
            err = np.where(mask.reshape(mask.shape + (1,) * (err.ndim - 2)), err, 0.0)
        elif self.packed == "derived" and mask is not None and err.ndim >= 1 and err.shape[0] == mask.shape[0]:
            rows = err.reshape(err.shape[0], -1).max(axis=1, initial=0)
            self.rows += [(float(r), setting, bool(not mask[b].all())) for b, r in enumerate(rows)]
        worst = float(err.max(initial=0))
        if worst > self.err:
            self.err, self.worst = worst, setting
        finite = np.nan_to_num(e64, posinf=0, neginf=0)
        self.scale = max(self.scale, float(np.abs(finite).max(initial=0)))
        self.low, self.high = min(self.low, float(finite.min(initial=np.inf))), max(self.high, float(finite.max(initial=-np.inf)))
        self.total, self.count = self.total + float(err.sum()), self.count + err.size
        if mask is not None and err.ndim >= 2 and err.shape[:2] == mask.shape:
            self.valid = max(self.valid or 0.0, float(err[mask].max(initial=0)))
            self.padded = max(self.padded or 0.0, float(err[~mask].max(initial=0)))

    def result(self, name: str, atol, rtol, computes: int | None = None) -> OutputDiff:
        exact = self.dtype is None or not np.issubdtype(self.dtype, np.floating)
        if exact:
            r = 0.0
        elif rtol is not None:
            r = rtol
        else:  # the output's own precision, or the narrower one the model computes in
            r = max(DEFAULT_RTOL.get(np.dtype(self.dtype), 1e-2), COMPUTE_RTOL[computes][1] if computes else 0.0)
        tol = (atol or 0.0) + r * self.scale
        excused = 0
        if self.rows and not self.problem:
            excused = sum(err > tol and padded for err, _, padded in self.rows)
            kept = [(err, setting) for err, setting, padded in self.rows if not (err > tol and padded)]
            self.err, self.worst = max(kept, default=(0.0, self.worst))
        worst = f"{self.worst}: {self.problem}" if self.problem else self.worst
        return OutputDiff(name, self.err, self.scale, tol, self.err <= tol, self.valid, self.padded, worst,
                          packed=self.packed, padded_rows=excused)

    def result_in_steps(self, name: str, step: tuple[float, str] | None, atol, steps: float,
                        noise: float = 0.0) -> OutputDiff:
        """The INT8 verdict: the error within ``steps`` quantization steps of this output, or
        within NOISE_FACTOR times the reference's own activation quantization noise."""
        if step is None:
            span = self.high - self.low if np.isfinite(self.high - self.low) else 0.0
            step = (span / 255 if span > 0 else 1.0, "no Q/DQ on it: its range / 255")
        tol = (atol or 0.0) + max(steps * step[0], NOISE_FACTOR * noise)
        worst = f"{self.worst}: {self.problem}" if self.problem else self.worst
        return OutputDiff(name, self.err, self.scale, tol, self.err <= tol, self.valid, self.padded, worst,
                          step[0], step[1], self.total / max(self.count, 1), noise)
