"""SharedQuantizer alone (patterns/fusions/shared_quantizer.py, --target openvino): a Q→DQ pair whose
float input something else also reads (a LayerNorm output the residual Add reads, as INC's QDQ and
QAT exports write it) is a near miss that names that reader; nothing is ever rewritten."""
import numpy as np
import pytest

from graphs.variants import Graph, _gamma_beta
from one_rule import apply


def layer_norm_quantized(residual=True, shape_reader=False):
    """x ─► LayerNormalization ─► Q ─► DQ ─► MatMul(W) ─┐
                         └──────────(residual)──────────► Add ─► y"""
    g = Graph("shared_quantizer", 17)
    g.output("y")
    x = g.input("x", ["batch", "seq", 16])
    gamma, beta = _gamma_beta(shape=(16,))
    h = g.op("LayerNormalization", x, g.const("gamma", gamma), g.const("beta", beta), axis=-1, out="h")
    s, z = g.const("scale", 0.03), g.const("zero_point", 128, np.uint8)
    w = np.random.default_rng(0).normal(0, 0.2, (16, 16)).astype(np.float32)
    y = g.op("MatMul", g.op("DequantizeLinear", g.op("QuantizeLinear", h, s, z, out="h_q"), s, z), g.const("w", w))
    if shape_reader:
        y = g.op("Reshape", y, g.op("Shape", h))
    g.op("Add", y, h, out="y") if residual else g.op("Identity", y, out="y")
    return g.model()


def test_a_quantizer_beside_a_float_reader_is_a_near_miss_that_names_it():
    result = apply("SharedQuantizer", layer_norm_quantized(), target="openvino")
    assert result.rewrote == 0 and not result.made
    miss = result.miss()
    assert miss.reason.startswith("stays a standalone FakeQuantize on OpenVINO: Add ") and "also reads 'h' in float" \
        in miss.reason


@pytest.mark.parametrize("shape_reader", [False, True])
def test_a_quantizer_alone_on_its_input_says_nothing(shape_reader):
    """OpenVINO folds the pair into the LayerNorm: no near miss (a Shape reads no values)."""
    result = apply("SharedQuantizer", layer_norm_quantized(residual=False, shape_reader=shape_reader), target="openvino")
    assert result.rewrote == 0 and not result.misses


def test_only_for_openvino():
    with pytest.raises(AssertionError, match="SharedQuantizer does not run for target ort"):
        apply("SharedQuantizer", layer_norm_quantized(), target="ort")
