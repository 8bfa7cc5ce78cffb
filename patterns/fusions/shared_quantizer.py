"""A quantizer whose input is also read in float: why OpenVINO keeps it as a standalone FakeQuantize.

    h ─► LayerNorm ─┬─► Q ─► DQ ─► (the next INT8 blocks)
                    └─────────────► Add (the residual, in float)

Intel Neural Compressor (QDQ) and QAT exports quantize a LayerNorm's output for the blocks that
read it, while the residual Add reads the float value. OpenVINO folds a FakeQuantize into the op
that computes its input only where nothing else reads that input, so each such pair stays a
standalone FakeQuantize in its runtime graph (4 in the two-layer corpus models).

Nothing here is rewritten. The one fold there would be, pointing the residual at the quantized
value (one pair per tensor, as ONNX Runtime's quantizer places them), rounds the residual
stream the model was trained or calibrated with: on the QAT test model the output moved by
10 steps, as much as the whole FP32 → INT8 error, beyond what the verification in steps
allows for a rewrite. So each such pair is a near miss that says which float reader keeps it.
``openvino`` only: ONNX Runtime runs the pair as part of the INT8 block that reads it.
"""
from fusekit.engine.graph import is_graph_output
from fusekit.engine.pattern import Fusion, Var, Variant

from .._common import quantize

NOT_SHARED = "nothing else reads the quantized value's float input: OpenVINO folds the pair into its producer"


def check(m) -> str:
    x, q = m["x"], m.node("q")
    readers = [r for r in x.outputs if r is not q and r.op != "Shape"]  # a Shape reads no values
    if not readers and not is_graph_output(m.graph, x):
        return NOT_SHARED
    reader = f"{readers[0].op} '{readers[0].name}'" if readers else "the graph output"
    return (f"stays a standalone FakeQuantize on OpenVINO: {reader} also reads '{x.name}' in float; reading the "
            "quantized value there instead would round that path too (the residual stream: 10 steps on the QAT "
            "test model, as much as the whole INT8 error)")


def rewrite(m, _, emit):  # never reached: check refuses every match
    raise AssertionError("SharedQuantizer rewrites nothing")


FUSION = Fusion(
    name="SharedQuantizer",
    # anchored at the Q: the DQ after it may be an INT8 block's inlined body by now
    variants=[Variant("float_reader", quantize(Var("x", "the quantized value"), bind="q"),
                      "Intel Neural Compressor (QDQ), QAT exports: a LayerNorm output the residual reads in float")],
    check=check,
    rewrite=rewrite,
    near_miss=lambda miss: miss.complete and miss.reason != NOT_SHARED,
    after=("LayerNorm", "QuantizedLinear", "QuantizedAttention"),
    targets=("openvino",),
)
