"""SharedQuantizer alone (patterns/fusions/shared_quantizer.py, --target openvino): a Q→DQ pair whose
float input something else also reads (a LayerNorm output the residual Add reads, as INC's QDQ and
QAT exports write it) is a near miss that names that reader; a Shape beside it reads the LayerNorm's
input instead, so that OpenVINO folds the pair."""
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


def test_a_quantizer_alone_on_its_input_says_nothing():
    """OpenVINO folds the pair into the LayerNorm: nothing to do, no near miss."""
    result = apply("SharedQuantizer", layer_norm_quantized(residual=False), target="openvino")
    assert result.rewrote == 0 and not result.misses


def standalone_fakequantize(model) -> int:
    from testmodels.quantized import compile_openvino, openvino_layers
    compiled, error = compile_openvino(model)
    assert compiled is not None, error
    return sum(layer["type"] == "FakeQuantize" for layer in openvino_layers(compiled))


def test_a_shape_beside_the_quantizer_reads_the_layer_norms_input():
    """The LayerNorm keeps its input's shape, so the Shape reads that instead, bit for bit."""
    result = apply("SharedQuantizer", layer_norm_quantized(residual=False, shape_reader=True), target="openvino")
    assert result.rewrote == 1 and result.made == {} and not result.misses
    (shape,) = [n for n in result.model.graph.node if n.op_type == "Shape"]
    assert list(shape.input) == ["x"]
    result.assert_equivalent(atol=0, rtol=0)


def test_the_qoperator_models_embedding_quantizer_then_folds_on_openvino():
    """Intel Neural Compressor's QOperator model: a Shape reads the embeddings' LayerNorm output beside its
    quantizer, which OpenVINO then keeps standalone; moved upstream, no standalone FakeQuantize is left."""
    import fusekit
    from conftest import TESTMODELS
    path = TESTMODELS / "int8" / "quantizers" / "bert_inc_qoperator.onnx"
    kept, _ = fusekit.optimize(path, target="openvino", verify=False, disable=["SharedQuantizer"])
    moved, report = fusekit.optimize(path, target="openvino", verify=False)
    assert report.counts["SharedQuantizer"] == 2  # the embeddings' LayerNorm and layer 0's output LayerNorm
    assert standalone_fakequantize(kept) == 1 and standalone_fakequantize(moved) == 0


def test_a_shape_beside_a_float_reader_stays():
    """The residual keeps the pair standalone anyway: the near miss names it, the Shape stays."""
    result = apply("SharedQuantizer", layer_norm_quantized(shape_reader=True), target="openvino")
    assert result.rewrote == 0 and "also reads 'h' in float" in result.miss().reason


def test_only_for_openvino():
    with pytest.raises(AssertionError, match="SharedQuantizer does not run for target ort"):
        apply("SharedQuantizer", layer_norm_quantized(), target="ort")
