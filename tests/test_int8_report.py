"""fusekit.reports.int8: which MatMul/Gemm runs in INT8, and why not.

Single-MatMul graphs plant one condition each; every expectation is also checked
against what ONNX Runtime (its optimized graph) and OpenVINO (its runtime graph)
actually do, so the rules cannot drift from the runtimes. Then the committed
variants, and planted cases inside a real quantized BERT.
"""
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from fusekit.reports.int8 import R_NO_ACT, R_NO_SECOND, R_NO_WEIGHT, analyze
from testmodels import quantized as Q

K, N = 32, 64
RNG = np.random.default_rng(0)
W = (RNG.standard_normal((K, N)) * 0.1).astype(np.float32)
BIAS = RNG.standard_normal(N).astype(np.float32)


def single(act="u8", w="s8", wzp=0, w_axis=None, w_scale_input=False, act_q=True, w_q=True, out="q",
           act_act=False, a_axis=None, static=False, fq=None, shared_act=False):
    """x [b, s, K] → (Q→DQ) → MatMul(W or a second activation) → `out`.

    out: "q" (→ Q → DQ → Add bias), "add" (→ Add bias → Relu), "add_q" (→ Add bias → Q → DQ),
    "relu" (→ Relu), "q+relu" (→ Q → DQ and → Relu). fq: "sym"/"asym" builds the OpenVINO
    FakeQuantize form instead of Q/DQ.
    """
    nodes, inits, extra_inputs = [], {}, []
    adt, azp = (np.uint8, 128) if act == "u8" else (np.int8, 0)

    def c(name, value):
        inits[name] = np.asarray(value)
        return name

    def qdq(x, s, z, tag, **kw):
        nodes.extend([helper.make_node("QuantizeLinear", [x, s, z], [f"{tag}_q"], name=f"{tag}Q", **kw),
                      helper.make_node("DequantizeLinear", [f"{tag}_q", s, z], [f"{tag}_d"], name=f"{tag}DQ", **kw)])
        return f"{tag}_d"

    if fq:
        dom = "org.openvinotoolkit"
        c("alo", np.float32(-128 * 0.03)), c("ahi", np.float32(127 * 0.03))
        nodes.append(helper.make_node("FakeQuantize", ["x", "alo", "ahi", "alo", "ahi"], ["xf"], domain=dom,
                                      levels=256, name="aFQ"))
        s = np.abs(W).max() / 127
        lo, hi = (np.float32(-128 * s), np.float32(127 * s)) if fq == "sym" else (np.float32(W.min()), np.float32(W.max()))
        c("W", W), c("wlo", lo), c("whi", hi)
        nodes.append(helper.make_node("FakeQuantize", ["W", "wlo", "whi", "wlo", "whi"], ["Wf"], domain=dom,
                                      levels=256, name="wFQ"))
        nodes.append(helper.make_node("MatMul", ["xf", "Wf"], ["mm"], name="mm"))
        c("olo", np.float32(-128 * 0.05)), c("ohi", np.float32(127 * 0.05))
        nodes.append(helper.make_node("FakeQuantize", ["mm", "olo", "ohi", "olo", "ohi"], ["of"], domain=dom,
                                      levels=256, name="oFQ"))
        nodes.append(helper.make_node("Add", ["of", c("b", BIAS)], ["y"], name="bias"))
        return _model(nodes, inits, extra_inputs, static, ov_domain=True)

    xin = "x"
    if act_q:
        if a_axis is None:
            xin = qdq("x", c("xs", np.float32(0.03)), c("xz", adt(azp)), "a")
        else:
            xin = qdq("x", c("xs", np.linspace(0.02, 0.05, K).astype(np.float32)), c("xz", np.full(K, azp, adt)),
                      "a", axis=a_axis)
    if act_act:
        nodes.append(helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1], name="T"))
        win = qdq("xt", c("ts", np.float32(0.03)), c("tz", adt(azp)), "t")
    elif w_q:
        sc = np.float32(np.abs(W).max() / 127) if w_axis is None else (np.abs(W).max(axis=1 - w_axis) / 127).astype(np.float32)
        wdt, base = (np.int8, 0) if w == "s8" else (np.uint8, 128)
        scb = sc if w_axis is None else (sc[:, None] if w_axis == 0 else sc[None, :])
        wq = np.clip(np.round(W / scb) + base + wzp, np.iinfo(wdt).min, np.iinfo(wdt).max).astype(wdt)
        zp = wdt(base + wzp) if w_axis is None else np.full(sc.shape, base + wzp, wdt)
        if w_scale_input:
            extra_inputs.append(helper.make_tensor_value_info("ws", TensorProto.FLOAT, list(np.shape(sc))))
        else:
            c("ws", sc)
        kw = {} if w_axis is None else {"axis": w_axis}
        nodes.append(helper.make_node("DequantizeLinear", [c("Wq", wq), "ws", c("wz", zp)], ["Wd"], name="wDQ", **kw))
        win = "Wd"
    else:
        win = c("W", W)
    nodes.append(helper.make_node("MatMul", [xin, win], ["mm"], name="mm"))
    if shared_act:  # a second MatMul reading the same activation DQ (like Q/K/V after a LayerNorm)
        nodes.append(helper.make_node("MatMul", [xin, win], ["mm2"], name="mm2"))
    ozp = np.uint8(128) if act == "u8" else np.int8(0)
    if out in ("q", "q+relu"):
        o = qdq("mm", c("os", np.float32(0.05)), c("oz", ozp), "o")
        if out == "q+relu":
            nodes.append(helper.make_node("Relu", ["mm"], ["r"], name="relu_side"))
            nodes.append(helper.make_node("Add", ["r", o], ["o2"], name="join"))
            o = "o2"
        if act_act:
            nodes.append(helper.make_node("Identity", [o], ["y"], name="id"))
        else:
            nodes.append(helper.make_node("Add", [o, c("b", BIAS)], ["y"], name="bias"))
    elif out == "add":
        nodes.append(helper.make_node("Add", ["mm", c("b", BIAS)], ["ab"], name="bias"))
        nodes.append(helper.make_node("Relu", ["ab"], ["y"], name="relu"))
    elif out == "add_q":
        nodes.append(helper.make_node("Add", ["mm", c("b", BIAS)], ["ab"], name="bias"))
        o = qdq("ab", c("os", np.float32(0.05)), c("oz", ozp), "o")
        nodes.append(helper.make_node("Identity", [o], ["y"], name="id"))
    elif out == "relu":
        nodes.append(helper.make_node("Relu", ["mm"], ["y"], name="relu"))
    if shared_act:
        o2 = qdq("mm2", "os", "oz", "o2q")
        nodes.append(helper.make_node("Add", ["y", o2], ["y2"], name="sum"))
        nodes[-1].output[0] = "y2"
        return _model(nodes, inits, extra_inputs, static, out_name="y2")
    return _model(nodes, inits, extra_inputs, static)


def _model(nodes, inits, extra_inputs, static, ov_domain=False, out_name="y"):
    shape = [2, 16, K] if static else ["batch", "seq", K]
    graph = helper.make_graph(nodes, "planted", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)] + extra_inputs,
                              [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    opsets = [helper.make_opsetid("", 21)] + ([helper.make_opsetid("org.openvinotoolkit", 1)] if ov_domain else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10
    return model


def feeds_for(model):
    feeds = {"x": RNG.standard_normal((2, 16, K)).astype(np.float32)}
    for vi in model.graph.input[1:]:  # the weight scale fed at run time
        feeds[vi.name] = np.array(np.abs(W).max(axis=0) / 127 if vi.type.tensor_type.shape.dim else np.abs(W).max() / 127,
                                  np.float32)
    return feeds


def observe_ort(model):
    """'int8' / 'fp32' / 'error' for the node 'mm', as ONNX Runtime actually runs it."""
    try:
        so = ort.SessionOptions()
        so.log_severity_level = 4
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds_for(model))
    except Exception:  # noqa: BLE001
        return "error"
    kernel = Q.ort_observed(model).get("mm")
    return "int8" if kernel in Q.ORT_INT8_OPS else "fp32"


def observe_ov(model):
    compiled, err = Q.compile_openvino(model)
    if compiled is None:
        return "error"
    compiled(feeds_for(model))
    observed = Q.openvino_observed(model, compiled)
    if "mm" in observed:
        return observed["mm"]["kind"]
    # the plugin sometimes lists the lone MatMul under another name; it is still the only one
    (layer,) = [l for l in Q.openvino_layers(compiled) if l["type"] in ("FullyConnected", "MatMul")]
    return Q.openvino_matmul_kind(layer)


# ONNX Runtime up to 1.31 makes a QLinearMatMul of a MatMul with a per-channel activation or a per-row weight and
# fails at run time; 1.32 leaves it in FP32. Tests judge for the installed release, as the report does.
ORT_VERSION = tuple(int(p) for p in ort.__version__.split(".")[:2])
PER_CHANNEL_QLINEAR = "fp32" if ORT_VERSION >= (1, 32) else "error"

# name: (builder kwargs, ORT verdict, OpenVINO verdict, a reason fragment for each non-int8 backend)
PLANTED = {
    "baseline": ({}, "int8", "int8", None),
    "no_activation_qdq": (dict(act_q=False), "fp32", "fp32", R_NO_ACT),
    "unquantized_weight": (dict(w_q=False), "fp32", "fp32", R_NO_WEIGHT),
    "weight_zero_point_3": (dict(wzp=3), "int8", "fp32", "zero point of the weight is not 0"),
    "uint8_weights": (dict(w="u8"), "int8", "fp32", "zero point of the weight is not 0"),
    "weight_scale_not_constant": (dict(w_scale_input=True), "int8", "fp32", "the weight scale is not a constant"),
    "weight_per_output_channel": (dict(w_axis=1), "int8", "int8", None),
    "weight_per_row": (dict(w_axis=0), PER_CHANNEL_QLINEAR, "fp32", "per row (along K)"),
    "weight_per_row_no_output_q": (dict(w_axis=0, out="relu"), "error", "fp32", "per row (along K)"),
    "weight_per_row_add_then_q_static": (dict(w_axis=0, out="add_q", static=True), "fp32", "fp32",
                                         "per row (along K)"),
    "activation_per_channel": (dict(a_axis=2), PER_CHANNEL_QLINEAR, "error", "per channel along K"),
    "activation_per_channel_static": (dict(a_axis=2, static=True), PER_CHANNEL_QLINEAR, "fp32",
                                      "per channel along K"),
    "output_q_and_other_consumer": (dict(out="q+relu"), "fp32", "int8", "feeds a QuantizeLinear and other nodes"),
    "no_output_q": (dict(out="relu"), "int8", "int8", None),
    "add_bias_no_q_static": (dict(out="add", static=True), "fp32", "int8", "MatMulAddFusion"),
    "add_bias_no_q_dynamic": (dict(out="add"), "int8", "int8", None),
    "add_bias_then_q_static": (dict(out="add_q", static=True), "int8", "int8", None),
    "act_x_act_uint8": (dict(act_act=True), "int8", "fp32", "nonzero zero point"),
    "act_x_act_int8": (dict(act_act=True, act="s8"), "int8", "int8", None),
    "int8_activation": (dict(act="s8"), "int8", "int8", None),
    "int8_activation_shared": (dict(act="s8", shared_act=True), "fp32", "int8", "QDQS8ToU8Transformer"),
    "fakequantize_op": (dict(fq="sym"), "error", "int8", "org.openvinotoolkit"),
    "fakequantize_asymmetric_weight": (dict(fq="asym"), "error", "fp32", "zero point of the weight is not 0"),
}


@pytest.mark.parametrize("case", sorted(PLANTED))
def test_planted_single_matmul(case):
    kwargs, want_ort, want_ov, fragment = PLANTED[case]
    model = single(**kwargs)
    rec = analyze(model)["mm"]
    assert rec.backends["ort"].verdict == want_ort, rec.backends["ort"]
    assert rec.backends["openvino"].verdict == want_ov, rec.backends["openvino"]
    assert rec.verdict == ("int8" if want_ort == want_ov == "int8" else "fp32")
    if fragment:
        assert any(fragment in r for r in rec.reasons), rec.reasons
    else:
        assert rec.reasons == []
    # the runtimes agree
    assert observe_ov(model) == want_ov
    if not kwargs.get("fq"):
        assert observe_ort(model) == want_ort


@pytest.mark.parametrize("case", ["weight_per_row", "activation_per_channel", "activation_per_channel_static"])
def test_ort_rules_follow_the_release(case):
    """The QLinearMatMul rule that changed in ONNX Runtime 1.32 is judged per release, whichever is installed."""
    model = single(**PLANTED[case][0])
    old = analyze(model, ort_version=(1, 31))["mm"].backends["ort"]
    new = analyze(model, ort_version=(1, 32))["mm"].backends["ort"]
    assert (old.verdict, old.kernel) == ("error", "QLinearMatMul")
    assert (new.verdict, new.kernel) == ("fp32", "MatMul")
    assert "fails at run time" in old.reasons[0] and "1.32 QDQ MatMul rule leaves it in FP32" in new.reasons[0]
    assert analyze(model)["mm"].backends["ort"].verdict == PER_CHANNEL_QLINEAR


def test_record_fields():
    rec = analyze(single())["mm"]
    assert (rec.input_quantized, rec.weight_quantized, rec.weight_scale_constant, rec.zero_point_ok,
            rec.output_requantized) == (True, True, True, True, True)
    assert rec.activation.kind == "qdq" and rec.activation.dtype == "uint8" and rec.activation.zero_point == 128
    assert rec.weight.kind == "dq" and rec.weight.dtype == "int8" and rec.weight.data_constant
    assert rec.backends["ort"].kernel == "QLinearMatMul" and rec.backends["openvino"].kernel == "FullyConnected"
    rec = analyze(single(w_scale_input=True, wzp=3))["mm"]
    assert rec.weight_scale_constant is False and rec.zero_point_ok is False
    assert analyze(single(out="relu"))["mm"].backends["ort"].kernel == "MatMulIntegerToFloat"
    assert analyze(single(out="relu"))["mm"].output_requantized is False
    rec = analyze(single(w_axis=1))["mm"]
    assert rec.weight.per_channel and rec.weight.axis == 1
    rec = analyze(single(act_act=True))["mm"]
    assert rec.role == "Q·Kᵀ" and not rec.weight_constant and rec.backends["openvino"].kernel == "MatMul"


def test_target_selects_backends():
    model = single(wzp=3)  # INT8 in ORT, FP32 in OpenVINO
    assert analyze(model, target="ort")["mm"].verdict == "int8"
    rec = analyze(model, target="openvino")["mm"]
    assert rec.verdict == "fp32" and rec.reasons[0].startswith("zero point of the weight is not 0")
    rec = analyze(model, target="onnx")["mm"]  # both backends: the reason says which one refuses
    assert rec.verdict == "fp32" and rec.reasons[0].startswith("OpenVINO: zero point of the weight is not 0")
    with pytest.raises(ValueError):
        analyze(model, target="tensorrt")


# --------------------------------------------------------------------------- the committed variants

# variant: (ORT int8, ORT fp32, ORT error, OpenVINO int8, OpenVINO fp32) over 16 MatMul + 1 Gemm
COUNTS = {
    "matmul_u8s8": (16, 1, 0, 12, 5),      # OV: Q·Kᵀ, P·V asymmetric uint8 → f32; pooler unquantized
    "matmul_s8s8_pc": (8, 9, 0, 16, 1),    # ORT: Q/K/V + intermediate read a shared int8 DQ → f32
    "all_ops": (17, 0, 0, 13, 4),          # (OpenVINO cannot compile this model at all, see test_int8_models)
    "qat": (12, 5, 0, 13, 4),              # no Q/DQ on the attention matmuls; ORT pooler Gemm float bias, no Q
    "ov_fakequantize": (0, 0, 17, 12, 5),  # ORT cannot load the OpenVINO op
}


@pytest.fixture(scope="module")
def reports():
    return {name: analyze(Q.load(name)) for name in Q.VARIANTS}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_variant_counts(reports, name):
    c = reports[name].counts()
    got = (c["ort_int8"], c["ort_fp32"], c["ort_error"], c["openvino_int8"], c["openvino_fp32"])
    assert got == COUNTS[name], reports[name].summary()


def test_variant_reasons(reports):
    u8 = reports["matmul_u8s8"]
    qk = u8["/encoder/layer.0/attention/self/MatMul"]
    assert qk.role == "Q·Kᵀ" and qk.layer == 0
    assert any("nonzero zero point" in r for r in qk.backends["openvino"].reasons)
    pooler = u8["/pooler/dense/Gemm"]
    assert pooler.layer is None and pooler.reasons == [R_NO_ACT, R_NO_WEIGHT]
    pc = reports["matmul_s8s8_pc"]["/encoder/layer.1/attention/self/query/MatMul"]
    assert pc.backends["openvino"].verdict == "int8" and pc.weight.per_channel
    assert any("QDQS8ToU8Transformer" in r for r in pc.backends["ort"].reasons)
    qat = reports["qat"]
    pv = qat["/encoder/layer.1/attention/self/MatMul_1"]
    assert pv.role == "P·V" and pv.reasons == [R_NO_ACT, R_NO_SECOND]
    dense = qat["/encoder/layer.0/intermediate/dense/MatMul"]
    assert dense.weight.via == ["Transpose"] and dense.weight.axis == 1  # axis 0 of [out, in] → N after Transpose
    assert dense.backends["ort"].kernel == "MatMulIntegerToFloat" and not dense.output_requantized
    fq = reports["ov_fakequantize"]["/encoder/layer.0/output/dense/MatMul"]
    assert fq.activation.kind == "fakequantize" and fq.weight.kind == "fakequantize" and fq.weight.symmetric


def test_summary_and_dict(reports):
    text = reports["matmul_u8s8"].summary()
    assert text.splitlines()[0].startswith("INT8 analysis for ONNX Runtime + OpenVINO: 12/17")
    assert "layer 0" in text and "layer 1" in text and "outside the layers" in text
    assert "QLinearMatMul" in text and "FullyConnected" in text
    d = json.loads(json.dumps(reports["qat"].to_dict()))
    assert d["counts"]["total"] == 17 and len(d["records"]) == 17
    assert {"node", "layer", "input_quantized", "weight_quantized", "weight_scale_constant", "zero_point_ok",
            "output_requantized", "verdict", "reasons", "backends"} <= set(d["records"][0])


@pytest.mark.parametrize("name", ["matmul_u8s8", "matmul_s8s8_pc", "qat", "ov_fakequantize"])
def test_agrees_with_openvino(name):
    model = Q.load(name)
    agree, total, bad = Q.agreement(model, "openvino", Q.openvino_observed(model, Q.compiled_variant(name)[0]))
    assert total >= 15 and agree == total, bad


@pytest.mark.parametrize("name", ["matmul_u8s8", "matmul_s8s8_pc", "all_ops", "qat"])
def test_agrees_with_onnx_runtime(name):
    model = Q.load(name)
    agree, total, bad = Q.agreement(model, "ort", Q.ort_observed(model))
    assert total == 17 and agree == total, bad


# --------------------------------------------------------------------------- planted in a real model

def _rewire(model, fn):
    out = onnx.ModelProto()
    out.CopyFrom(model)
    fn(out.graph)
    return out


def _init(graph, name, value):
    for i, t in enumerate(graph.initializer):
        if t.name == name:
            graph.initializer[i].CopyFrom(numpy_helper.from_array(np.asarray(value, dtype=numpy_helper.to_array(t).dtype), name))
            return
    raise KeyError(name)


def test_planted_in_bert():
    """(1) an unquantized MatMul, (2) a weight scale fed at run time, (3) a nonzero weight
    zero point — each on one MatMul of the real u8s8 model; the rest stay as they were."""
    base = Q.load("matmul_u8s8")
    key, value, inter = ("/encoder/layer.1/attention/self/key/MatMul", "/encoder/layer.0/attention/self/value/MatMul",
                         "/encoder/layer.1/intermediate/dense/MatMul")

    def plant(g):
        nodes = {n.name: n for n in g.node}
        # (1) key: read the float activation and the float weight, no Q/DQ
        k = nodes[key]
        k.input[0] = "/encoder/layer.0/output/LayerNorm/Add_1_output_0"
        wdq = next(n for n in g.node if n.output[0] == k.input[1])
        w = numpy_helper.to_array(next(t for t in g.initializer if t.name == wdq.input[0])).astype(np.float32)
        s = numpy_helper.to_array(next(t for t in g.initializer if t.name == wdq.input[1]))
        g.initializer.append(numpy_helper.from_array(w * s, "key_weight_float"))
        k.input[1] = "key_weight_float"
        # (2) value: its weight scale becomes a graph input
        vdq = next(n for n in g.node if n.output[0] == nodes[value].input[1])
        scale = numpy_helper.to_array(next(t for t in g.initializer if t.name == vdq.input[1]))
        g.initializer.append(numpy_helper.from_array(scale, "value_scale_runtime_default"))
        vdq.input[1] = "value_scale_input"
        g.input.append(helper.make_tensor_value_info("value_scale_input", TensorProto.FLOAT, []))
        # (3) intermediate: weight zero point 3
        idq = next(n for n in g.node if n.output[0] == nodes[inter].input[1])
        _init(g, idq.input[2], 3)

    model = _rewire(base, plant)
    report = analyze(model)
    k, v, i = report[key], report[value], report[inter]
    assert k.verdict == "fp32" and k.reasons == [R_NO_ACT, R_NO_WEIGHT] and not k.input_quantized
    assert v.weight_scale_constant is False and v.backends["ort"].verdict == "int8"
    assert v.reasons == ["OpenVINO: the weight scale is not a constant"]
    assert i.zero_point_ok is False and i.backends["ort"].verdict == "int8"
    assert i.reasons[0].startswith("OpenVINO: zero point of the weight is not 0")
    untouched = report["/encoder/layer.1/attention/self/query/MatMul"]
    assert untouched.verdict == "int8"

    # what the runtimes do with it
    feeds = Q._feeds(base)
    feeds["value_scale_input"] = np.array(numpy_helper.to_array(
        next(t for t in model.graph.initializer if t.name == "value_scale_runtime_default")))
    compiled, err = Q.compile_openvino(model)
    assert compiled is not None, err
    compiled(feeds)
    seen = Q.openvino_observed(model, compiled)
    assert {n: seen[n]["kind"] for n in (key, value, inter)} == {key: "fp32", value: "fp32", inter: "fp32"}
    ort_seen = Q.ort_observed(model)
    assert ort_seen[key] not in Q.ORT_INT8_OPS
    assert ort_seen[value] in Q.ORT_INT8_OPS and ort_seen[inter] in Q.ORT_INT8_OPS
    agree, total, bad = Q.agreement(model, "openvino", seen)
    assert agree == total, bad


def test_block_form_without_intermediate_requant():
    """The INT8 block the fusion targets, DQ → MatMul → Add(bias) → GELU → Q, made from the
    u8s8 model by dropping the Q→DQ pair the quantizer put on the intermediate MatMul's
    output: still INT8 in both runtimes (ORT: MatMulIntegerToFloat, dynamic shapes; OpenVINO:
    one FullyConnected that takes the bias, GELU and the output quantization as post-ops)."""
    def drop_requant(g):
        drop, rename = set(), {}
        for n in g.node:
            if n.op_type == "QuantizeLinear" and "intermediate/dense/MatMul_output_0" in n.name:
                dq = next(c for c in g.node if c.op_type == "DequantizeLinear" and c.input[0] == n.output[0])
                drop |= {n.name, dq.name}
                rename[dq.output[0]] = n.input[0]
        keep = [n for n in g.node if n.name not in drop]
        for n in keep:
            for i, x in enumerate(n.input):
                n.input[i] = rename.get(x, x)
        del g.node[:]
        g.node.extend(keep)

    model = _rewire(Q.load("matmul_u8s8"), drop_requant)
    name = "/encoder/layer.0/intermediate/dense/MatMul"
    rec = analyze(model)[name]
    assert rec.verdict == "int8" and not rec.output_requantized
    assert rec.backends["ort"].kernel == "MatMulIntegerToFloat"
    assert Q.ort_observed(model)[name] == "MatMulIntegerToFloat"
    compiled, err = Q.compile_openvino(model)
    assert compiled is not None, err
    fc = next(l for l in Q.openvino_layers(compiled) if l["type"] == "FullyConnected" and name in l["original"])
    assert Q.openvino_matmul_kind(fc) == "int8"
    absorbed = " ".join(fc["original"])
    assert "intermediate/dense/Add" in absorbed and "intermediate_act_fn/Mul_1_output_0_QuantizeLinear" in absorbed


def test_explain_int8_from_the_command_line(capsys):
    from fusekit.cli import main
    path = str(Path(__file__).resolve().parent.parent / "testmodels" / "int8" / "qat.onnx")
    assert main(["explain", path, "--int8", "--target", "openvino"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("INT8 analysis for OpenVINO: 13/17 MatMul/Gemm in INT8")
    assert "fp32  attention/self/MatMul          Q·Kᵀ" in out
    assert main(["explain", path, "--int8", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["counts"]["total"] == 17


# --------------------------------------------------------------------------- the quantizers' own integer ops

def test_qoperator_and_dynamic_ops_are_judged_by_what_the_runtimes_make_of_them(reports):
    """QLinearMatMul runs INT8 in both runtimes, QGemm does not load in OpenVINO; quantize_dynamic's
    MatMulInteger is INT8 in ONNX Runtime and an f32 FullyConnected in OpenVINO (measured: every
    FullyConnected of dynamic_s8pc is f32 in tests/test_int8_models.py)."""
    q = reports["qoperator"]
    assert (q.counts()["ort_int8"], q.counts()["openvino_int8"], q.counts()["openvino_error"]) == (17, 16, 1)
    assert q["/encoder/layer.0/attention/self/MatMul_1_quant"].role == "P·V"
    (gemm,) = [r for r in q.records if r.op_type == "QGemm"]
    assert "no conversion rule for com.microsoft.QGemm" in gemm.reasons[0]
    d = reports["dynamic_s8pc"]
    integer = [r for r in d.records if r.op_type == "MatMulInteger"]
    assert len(integer) == 13 and all(r.backends["ort"].verdict == "int8" and r.backends["openvino"].verdict == "fp32"
                                      for r in integer)
    assert "DynamicQuantizedLinear" in integer[0].reasons[0]
