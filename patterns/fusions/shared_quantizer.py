"""A quantizer whose input is also read in float: why OpenVINO keeps it as a standalone FakeQuantize.

    h ─► LayerNorm ─┬─► Q ─► DQ ─► (the next INT8 blocks)
                    └─────────────► Add (the residual, in float)

Intel Neural Compressor (QDQ) and QAT exports quantize a LayerNorm's output for the blocks that
read it, while the residual Add reads the float value. OpenVINO folds a FakeQuantize into the op
that computes its input only where nothing else reads that input, so each such pair stays a
standalone FakeQuantize in its runtime graph (4 in the two-layer corpus models).

A ``Shape`` reading the value keeps the pair standalone too (OpenVINO counts it as a reader). Where
Shapes are the only other readers and the producer keeps its input's shape (a LayerNorm, a
unary activation), the Shapes read that input instead, exactly, and OpenVINO folds the pair
(Intel Neural Compressor's QOperator model reads the embeddings' LayerNorm output so).

Nothing else is rewritten. The one fold there would be, pointing the residual at the quantized
value (one pair per tensor, as ONNX Runtime's quantizer places them), rounds the residual
stream the model was trained or calibrated with: on the QAT test model the output moved by
10 steps, as much as the whole FP32 → INT8 error, beyond what the verification in steps
allows for a rewrite. So each such pair is a near miss that says which float reader keeps it.
``openvino`` only: ONNX Runtime runs the pair as part of the INT8 block that reads it.
"""
from fusekit.engine.graph import is_graph_output, producer
from fusekit.engine.pattern import Fusion, Var, Variant

from .._common import quantize

NOT_SHARED = "nothing else reads the quantized value's float input: OpenVINO folds the pair into its producer"
# ops whose output has their first input's shape, so a Shape of one is a Shape of the other
KEEPS_SHAPE = {"LayerNormalization", "Gelu", "Relu", "Tanh", "Sigmoid", "Erf", "Identity"}


def check(m) -> str | None:
    x, q = m["x"], m.node("q")
    readers = [r for r in x.outputs if r is not q and r.op != "Shape"]  # a Shape reads no values
    if not readers and not is_graph_output(m.graph, x):
        if any(r.op == "Shape" for r in x.outputs) and _shape_source(x) is not None:
            return None  # the Shapes can read upstream
        return NOT_SHARED
    reader = f"{readers[0].op} '{readers[0].name}'" if readers else "the graph output"
    return (f"stays a standalone FakeQuantize on OpenVINO: {reader} also reads '{x.name}' in float; reading the "
            "quantized value there instead would round that path too (the residual stream: 10 steps on the QAT "
            "test model, as much as the whole INT8 error)")


def _shape_source(x):
    """The input of x's producer where that producer keeps its shape, else None."""
    node = producer(x)
    return node.inputs[0] if node is not None and node.op in KEEPS_SHAPE and (node.domain or "") in ("", "com.microsoft") \
        else None


def rewrite(m, _, emit):
    """Each Shape of the quantized value's input reads the producer's input instead."""
    source = _shape_source(m["x"])
    return [(shape.outputs[0], emit.Shape(source, **shape.attrs)) for shape in m["x"].outputs if shape.op == "Shape"]


FUSION = Fusion(
    name="SharedQuantizer",
    # anchored at the Q: the DQ after it may be an INT8 block's inlined body by now
    variants=[Variant("float_reader", quantize(Var("x", "the quantized value"), bind="q"),
                      "Intel Neural Compressor (QDQ), QAT exports: a LayerNorm output the residual reads in float")],
    check=check,
    rewrite=rewrite,
    near_miss=lambda miss: miss.complete and miss.reason != NOT_SHARED,
    reads=("q",),  # the pair stays: only the Shapes beside it move
    after=("LayerNorm", "QuantizedLinear", "QuantizedAttention"),
    targets=("openvino",),
)
