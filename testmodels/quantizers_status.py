#!/usr/bin/env python3
"""Record in testmodels/int8/quantizers/manifest.json what fusekit reaches on each quantizer's model.

For every quantized model and each target (`ort`, `openvino`), `fusekit optimize` with its
verification (in quantization steps), and:

  fusekit_today  counts    fused count per fusion (the floor tests/test_quantizers.py holds)
                 verifies  whether the output verifies against the quantizer's model
                 error     mean |output − FP32 source| on valid tokens, fusekit's output and the
                           quantizer's own (`as_written`), both run by ONNX Runtime
                 openvino  (target openvino) whether OpenVINO compiles fusekit's output, how many
                           FullyConnected layers take a u8/i8 data input, how many standalone
                           FakeQuantize and Softmax (attention outside its one-kernel Subgraph)
                           are left in its runtime graph; the same for the quantizer's model as
                           written (`openvino_as_written`)
                 near_misses  what fusekit recorded as not fusing, and why
  expected       what a full fusion gives: every fusion the FP32 source gets on that target
                 (the INT8 block takes BiasGelu's bias, so not BiasGelu; the attention between INT8
                 blocks is QuantizedAttention, not Attention), one QuantizedLinear
                 (DynamicQuantizedLinear in a dynamically quantized model) per quantized dense
                 layer, and on OpenVINO every one of them INT8, no standalone FakeQuantize, and
                 as many standalone Softmax as the FP32 source leaves
  pending        the `expected` items not reached today; tests/test_quantizers.py fails when one
                 is reached, so that this script is run again and the item leaves the list

Run with fusekit's own environment after export_quantized.py, or after a change to fusekit:

    python testmodels/quantizers_status.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import fusekit  # noqa: E402
from fusekit.inputs import SETTINGS, make_inputs  # noqa: E402
from testmodels.quantized import compile_openvino, openvino_layers  # noqa: E402

HERE = Path(__file__).resolve().parent
FOLDER = HERE / "int8" / "quantizers"
MANIFEST = FOLDER / "manifest.json"
TARGETS = ("ort", "openvino")

WEIGHT_INPUT = {"QLinearMatMul": 3, "MatMulInteger": 1, "QGemm": 3, "DynamicQuantizeMatMul": 1,
                "MatMulIntegerToFloat": 1, "MatMul": 1, "Gemm": 1}
THROUGH = ("Transpose", "Reshape", "Identity", "DequantizeLinear", "QuantizeLinear", "Cast")


def quantized_dense_layers(model: onnx.ModelProto) -> int:
    """MatMul-like nodes whose weight is a quantized constant: an integer op on a stored weight,
    or a float MatMul/Gemm whose weight is a DequantizeLinear of a constant (QAT: of a Q of one)."""
    constants = {t.name for t in model.graph.initializer} | {o for n in model.graph.node if n.op_type == "Constant"
                                                              for o in n.output}
    producer = {o: n for n in model.graph.node for o in n.output}

    def constant_through(value: str, dequantized=False) -> bool:
        while value in producer and producer[value].op_type in THROUGH:
            dequantized = dequantized or producer[value].op_type == "DequantizeLinear"
            value = producer[value].input[0]
        return value in constants and dequantized

    count = 0
    for n in model.graph.node:
        slot = WEIGHT_INPUT.get(n.op_type)
        if slot is None or len(n.input) <= slot:
            continue
        count += constant_through(n.input[slot], dequantized=n.op_type not in ("MatMul", "Gemm"))
    return count


def check_feeds(model: onnx.ModelProto) -> list[dict[str, np.ndarray]]:
    """fusekit's verification settings (right, left, no padding, another length), seeds of their own."""
    return [make_inputs(model, setting, 200 + i) for i, setting in enumerate(SETTINGS)]


def run_ort(model, feeds) -> list[np.ndarray]:
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 3
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return [session.run(["last_hidden_state"], f)[0] for f in feeds]


def error_to(reference: list[np.ndarray], outputs: list[np.ndarray], feeds) -> float:
    """Mean |output − reference| over the valid tokens of every feed."""
    diffs = [np.abs(o - r)[f["attention_mask"] == 1] for o, r, f in zip(outputs, reference, feeds)]
    return float(np.concatenate(diffs).mean())


def openvino_facts(model: onnx.ModelProto) -> dict:
    compiled, error = compile_openvino(model)
    if compiled is None:
        return {"compiles": False, "error": error[:300]}
    layers = openvino_layers(compiled)
    fc = [layer for layer in layers if layer["type"] == "FullyConnected"]
    return {"compiles": True, "fc_int8": sum(layer["inputs"][0] in ("u8", "i8") for layer in fc), "fc": len(fc),
            "standalone_fakequantize": sum(layer["type"] == "FakeQuantize" for layer in layers),
            "standalone_softmax": sum(layer["type"] == "Softmax" for layer in layers)}


def fp32_reference(source: Path) -> dict:
    """What fusekit makes of the FP32 source: its counts per target, and OpenVINO's facts on it."""
    fused = {t: fusekit.optimize(source, target=t, verify=False) for t in TARGETS}
    return {t: dict(report.counts) for t, (_, report) in fused.items()} | {
        "openvino_facts": openvino_facts(fused["openvino"][0])}


QUANTIZED = {"Attention": "QuantizedAttention"}


def expected(model: onnx.ModelProto, fp32: dict) -> dict:
    """Everything fusekit does to the FP32 source, each dense layer an INT8 block, and on OpenVINO
    every block INT8, no standalone FakeQuantize, and attention as OpenVINO runs the FP32 one
    (in one kernel: no Softmax of its own, but for the sdpa export, which it leaves apart in FP32 too)."""
    dense = quantized_dense_layers(model)
    # a dynamically quantized dense layer is a block too, of the fusion that reads that form
    block = "DynamicQuantizedLinear" if any(n.op_type == "DynamicQuantizeLinear" for n in model.graph.node) \
        else "QuantizedLinear"
    out = {}
    for target in TARGETS:
        # the attention between INT8 blocks is QuantizedAttention's
        counts = {QUANTIZED.get(f, f): n for f, n in fp32[target].items() if f != "BiasGelu"} | {block: dense}
        out[target] = {"counts": dict(sorted(counts.items()))}
    out["openvino"] |= {"compiles": True, "fc_int8": dense, "standalone_fakequantize": 0,
                        "standalone_softmax": fp32["openvino_facts"]["standalone_softmax"]}
    return out


def today(path: Path, target: str, reference: list[np.ndarray], as_written: list[np.ndarray], feeds) -> dict:
    try:
        fused, report = fusekit.optimize(path, target=target)
    except fusekit.FusekitError as e:
        return {"loads": False, "error": str(e)}
    outputs = report.verification.outputs
    now = {"loads": True, "counts": dict(sorted(report.counts.items())),
           "verifies": report.verification.ok, "in_steps": all(o.step for o in outputs),
           "verification": report.verification.summary().splitlines()[0],
           "worst_output": next((o.describe() for o in outputs if not o.ok), None),
           "error": {"fusekit": error_to(reference, run_ort(fused, feeds), feeds),
                     "as_written": error_to(reference, as_written, feeds)},
           "near_misses": sorted({str(m) for m in report.misses})}
    if target == "openvino":
        now["openvino"] = openvino_facts(fused)
    return now


def reached(expect: dict, now: dict) -> dict[str, bool]:
    """Each expected item of one target: reached today or not."""
    items = {f: now["counts"].get(f, 0) == n for f, n in expect["counts"].items()}
    for key in ("compiles", "fc_int8", "standalone_fakequantize", "standalone_softmax"):
        if key in expect:
            have = now.get("openvino", {}).get(key)
            # fewer standalone layers than the FP32 source leaves (an attention kernel it does not get) is reached too
            items[f"openvino.{key}"] = have == expect[key] or (key.startswith("standalone") and have is not None
                                                              and have <= expect[key])
    return items


def main() -> None:
    manifest = json.loads(MANIFEST.read_text())
    sources = {}
    for entry in manifest["models"]:
        if entry["form"] == "fp32":
            continue
        path, source = FOLDER / entry["file"], FOLDER / entry["source"]
        if source not in sources:
            sources[source] = fp32_reference(source)
        model = onnx.load(path)
        feeds = check_feeds(model)
        reference, as_written = run_ort(source, feeds), run_ort(model, feeds)
        entry["dense_layers"] = quantized_dense_layers(model)
        entry["openvino_as_written"] = openvino_facts(model)
        entry["fusekit_today"] = {t: today(path, t, reference, as_written, feeds) for t in TARGETS}
        entry["expected"] = expected(model, sources[source])
        entry["pending"] = {t: sorted(item for item, ok in reached(entry["expected"][t], entry["fusekit_today"][t]).items()
                                      if not ok) for t in TARGETS}
        print(f"{entry['file']}: " + "; ".join(
            f"{t} {entry['fusekit_today'][t].get('counts')} verifies {entry['fusekit_today'][t].get('verifies')}, "
            f"pending {entry['pending'][t]}" for t in TARGETS), file=sys.stderr)
    manifest["fusekit"] = fusekit.__version__
    MANIFEST.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
