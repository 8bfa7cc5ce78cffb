"""QuantizedLinear (the INT8 dense block) in the pipeline: after the Gelu fusion, on the INT8 test models,
in the reports, the verifier, the CLI and OpenVINO."""
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import fusekit
from fusekit.verify import verify
from graphs.int8_blocks import block
from testmodels.quantized import compile_openvino, openvino_layers, openvino_summary

INT8 = Path(__file__).resolve().parents[1] / "testmodels" / "int8"
TARGETS = ("onnx", "ort", "openvino")


def ops(model):
    return Counter(n.op_type for n in model.graph.node)


# --------------------------------------------------------------------------- single blocks through the pipeline
# (each form alone, and the near misses: tests/fusions/test_quantized_linear.py)

def test_requantization_pair_is_dropped_and_named():
    fused, report = fusekit.optimize(block(), target="onnx", verify=False)
    (record,) = [f for f in report.fused if f.fusion == "QuantizedLinear"]
    replaced = Counter(op for _, op in record.replaced)
    assert replaced["QuantizeLinear"] == 2 and replaced["DequantizeLinear"] == 2  # requantization + weight, output Q
    assert replaced["Erf"] == 1 and "Gelu" not in replaced  # the GELU fused first; the record traces back
    assert record.steps == ["Gelu", "QuantizedLinear"]


def test_float_model_has_no_int8_near_misses():
    _, report = fusekit.optimize(Path(__file__).resolve().parents[1] / "testmodels" / "bert_tiny_opset14.onnx",
                                 target="ort", verify=False)
    assert not [m for m in report.misses if m.fusion == "QuantizedLinear"]


# --------------------------------------------------------------------------- the INT8 test models

# 2 layers × (Q, K, V, attention output, FFN up with GELU, FFN down)
EXPECTED = {
    "matmul_u8s8": {"gelu_quantized": 2, "float": 10},
    "matmul_s8s8_pc": {"gelu_quantized": 2, "float": 10},
    "all_ops": {"gelu_quantized[half_after,div_sqrt2]": 2, "quantized": 10},
    "all_ops_s8": {"gelu_quantized[half_after,div_sqrt2]": 2, "quantized": 10},
    "qat": {"gelu_quantized[fake_quantized_transposed]": 2, "float[fake_quantized_transposed]": 10},
    "ov_fakequantize": {"gelu_quantized": 2, "float": 10},
}


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_block_of_the_int8_models_fuses(name, target):
    fused, report = fusekit.optimize(INT8 / f"{name}.onnx", target=target)
    variants = Counter(f.variant for f in report.fused if f.fusion == "QuantizedLinear")
    assert variants == EXPECTED[name]
    assert report.verification.ok, report.verification.summary()
    assert all(o.step for o in report.verification.outputs)  # compared in quantization steps
    assert all(o.noise > 0 for o in report.verification.outputs)  # and against the reference's own noise
    assert "FakeQuantize" not in ops(fused)


def test_onnx_target_calls_a_model_local_function():
    fused, _ = fusekit.optimize(INT8 / "matmul_u8s8.onnx", target="onnx", verify=False)
    calls = Counter(n.op_type for n in fused.graph.node if n.domain == "fusekit")
    assert calls == {"QuantizedLinearGelu": 2, "QuantizedLinearToFloat": 10}
    bodies = {f.name: f for f in fused.functions}
    assert set(bodies) == set(calls)
    assert [n.op_type for n in bodies["QuantizedLinearGelu"].node] == [
        "DequantizeLinear", "DequantizeLinear", "MatMul", "Add", "Gelu", "QuantizeLinear"]
    assert ops(fused)["MatMul"] == 0 and ops(fused)["Attention"] == 2  # Q·Kᵀ and P·V: in the fused attention
    onnx.checker.check_model(fused)


def test_ort_target_runs_the_integer_matmul():
    fused, _ = fusekit.optimize(INT8 / "matmul_u8s8.onnx", target="ort", verify=False)
    # Q·Kᵀ and P·V in MultiHeadAttention (QuantizedAttention)
    assert ops(fused)["MatMulIntegerToFloat"] == 12 and ops(fused)["MatMul"] == 0
    # int8 activations: ONNX Runtime's int8×int8 kernels are slower than FP32; re-encoded as uint8
    # (UnsignedActivation, bit for bit) they take the integer MatMul too
    fused, _ = fusekit.optimize(INT8 / "matmul_s8s8_pc.onnx", target="ort", verify=False)
    assert ops(fused)["MatMulIntegerToFloat"] == 12 and ops(fused)["MatMul"] == 0
    fused, _ = fusekit.optimize(INT8 / "matmul_s8s8_pc.onnx", target="ort", verify=False,
                                disable=["UnsignedActivation"])
    assert "MatMulIntegerToFloat" not in ops(fused) and ops(fused)["MatMul"] == 12  # else the plain body


def _fakequantize_layers(compiled):
    return [layer["name"] for layer in openvino_layers(compiled) if layer["type"] == "FakeQuantize"]


@pytest.mark.parametrize("name", ["matmul_u8s8", "matmul_s8s8_pc", "ov_fakequantize"])
def test_openvino_folds_every_block_into_an_int8_fully_connected(name):
    fused, _ = fusekit.optimize(INT8 / f"{name}.onnx", target="openvino", verify=False)
    compiled, error = compile_openvino(fused)
    assert compiled is not None, error
    summary = openvino_summary(compiled)
    assert summary["fc_int8"] >= 12 and _fakequantize_layers(compiled) == []
    blocks = {f.node.rsplit("/", 1)[0] for f in fusekit.optimize(INT8 / f"{name}.onnx", target="openvino",
                                                                  verify=False)[1].fused if f.fusion == "QuantizedLinear"}
    fc = {o.split("/Dequantization")[0]: layer for layer in openvino_layers(compiled)
          if layer["type"] == "FullyConnected" for o in layer["original"] + [layer["name"]]}
    lowered = [n for n in fused.graph.node if n.op_type == "MatMul" and n.name.rsplit("/", 1)[0] in blocks]
    assert len(lowered) == 12
    for matmul in lowered:
        assert fc[matmul.name]["inputs"][0] in ("u8", "i8"), (matmul.name, fc[matmul.name])


def test_openvino_fully_quantized_model_compiles_and_leaves_only_attention_fakequantize():
    fused, report = fusekit.optimize(INT8 / "all_ops.onnx", target="openvino")
    assert report.counts["QuantizedLinear"] == 12 and report.verification.ok
    compiled, error = compile_openvino(fused)
    assert compiled is not None, error
    assert openvino_summary(compiled)["fc_int8"] >= 12
    # what stays: the Q/DQ around Q·Kᵀ, softmax and P·V, and the pooler's Gather — no dense block's
    left = _fakequantize_layers(compiled)
    assert left and all("attention/self" in name or "pooler" in name for name in left), left


# --------------------------------------------------------------------------- verification in steps

def test_a_real_difference_fails_in_steps(tmp_path):
    fused, _ = fusekit.optimize(INT8 / "matmul_u8s8.onnx", target="onnx", verify=False)
    bias = next(t for t in fused.graph.initializer if "layer.1.output.dense.bias" in t.name)
    noise = np.random.default_rng(0).standard_normal(bias.dims).astype(np.float32)  # LayerNorm removes a shift
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + noise, bias.name))
    result = verify(str(INT8 / "matmul_u8s8.onnx"), fused)
    assert not result.ok and result.outputs[0].max_steps > 4


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "fusekit.cli", *map(str, args)], capture_output=True, text=True)


def test_cli_reports_the_fp32_to_int8_error(tmp_path):
    fp32 = INT8.parent / "bert_tiny_opset14.onnx"
    out = tmp_path / "int8.fused.onnx"
    assert _cli("optimize", INT8 / "matmul_u8s8.onnx", "-o", out, "--target", "ort").returncode == 0
    done = _cli("verify", fp32, out, "--reference-kind", "fp32")
    assert done.returncode == 0, done.stderr
    assert "FP32 → INT8 error" in done.stdout and "steps of" in done.stdout
    plain = _cli("verify", fp32, out)  # an FP32 reference is no INT8 one: not equivalent, and it says what to use
    assert plain.returncode == 1 and "--reference-kind fp32" in plain.stdout
    refused = _cli("verify", fp32, fp32, "--reference-kind", "fp32")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------- the INT8 report on fused models

@pytest.mark.parametrize("target", ["onnx", "ort"])
def test_int8_report_names_every_fused_block(target):
    from fusekit.reports.int8 import analyze
    fused, _ = fusekit.optimize(INT8 / "matmul_u8s8.onnx", target=target, verify=False)
    report = analyze(fused, "ort")
    dense = [r for r in report.records if r.weight_constant and r.role != "pooler"]
    assert len(dense) == 12 and all(r.verdict == "int8" for r in dense)
    assert Counter(r.role for r in dense) == {"query": 2, "key": 2, "value": 2, "attn output": 2,
                                              "intermediate": 2, "output": 2}
    assert Counter(r.layer for r in dense) == {0: 6, 1: 6}  # the call's name keeps the layer


@pytest.mark.parametrize("target", TARGETS)
def test_diff_accounts_for_every_node_of_a_lowered_block(target):
    from fusekit.reports.diff import diff
    fused, _ = fusekit.optimize(INT8 / "matmul_u8s8.onnx", target=target, verify=False)
    result = diff(str(INT8 / "matmul_u8s8.onnx"), fused)
    assert result.ok and not result.unaccounted
    fused_into = Counter(r.record.get("fusion") for r in result.regions if r.source == "provenance")
    assert fused_into["QuantizedLinear"] == 12


def test_function_calls_run_in_openvino_through_the_backend(tmp_path):
    from fusekit.runtime import openvino as ov_backend
    fused, _ = fusekit.optimize(INT8 / "matmul_u8s8.onnx", target="onnx", verify=False)
    path = tmp_path / "int8.fused.onnx"
    onnx.save(fused, path)
    runner = ov_backend.load(path, "cpu", 2, "f32")  # OpenVINO's reader alone has no rule for the calls
    from fusekit.inputs import Setting, make_inputs
    feeds = make_inputs(fused, Setting("right", 2, 16), 0)
    got = runner.run(feeds)["last_hidden_state"]
    from fusekit.verify import session
    expected = session(fused).run(["last_hidden_state"], feeds)[0]
    assert np.abs(got - expected).max() < 1e-3


def test_an_inlined_body_is_no_near_miss():
    # the opset-14 openvino lowering inlines a decomposed GELU that the Gelu fusion may not touch there:
    # that is fusekit's own output, not a candidate of the model's
    _, report = fusekit.optimize(INT8 / "all_ops.onnx", target="openvino", verify=False)
    assert report.counts["QuantizedLinear"] == 12 and not report.misses

