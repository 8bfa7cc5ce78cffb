"""LayerNorm alone (patterns/fusions/layer_norm.py) on small graphs: every variant and label fuses into
one LayerNormalization that computes what the graph did; every near miss is refused with its reason.

The graphs are built at opset 17, where LayerNormalization exists: the harness raises no opset.
"""
from collections import Counter

import numpy as np
import onnx
import pytest

import fusekit
from graphs import forms as F
from graphs import variants as V
from graphs.variants import F16, F32, HIDDEN, KERAS_EPS, Graph, _gamma_beta, _io
from one_rule import apply

OPSET = 17


# ---------------------------------------------------------------- float16 Cast placements
# The forms of ONNX Runtime's fusion tests (layer_norm_fp16, layer_norm_with_cast_2 and _3),
# with random γ and β.

def _fp16_tail(g, n, out_type=F16):
    gamma, beta = _gamma_beta(np.float16 if out_type == F16 else np.float32)
    g.op("Add", g.op("Mul", n, g.const("gamma", gamma, gamma.dtype)), g.const("beta", beta, beta.dtype), out="y")


def ln_fp16_cast_centered(opset=OPSET):
    """Mean and x − mean in float16, Cast to float32 after the Sub, statistics in float32,
    Cast back to float16 after the Div, γ and β in float16."""
    g, x = _io("ln", opset, elem=F16)
    d = g.op("Cast", g.op("Sub", x, g.mean(x)), to=F32)
    var = g.mean(g.op("Pow", d, g.const("two", 2.0)))
    std = g.op("Sqrt", g.op("Add", var, g.const("eps", 1e-12)))
    _fp16_tail(g, g.op("Cast", g.op("Div", d, std), to=F16))
    return g.model()


def ln_fp32_stats_fp16_affine(opset=OPSET):
    """A float32 input and statistics, Cast to float16 after the Div, float16 γ and β and output."""
    g = Graph("ln", opset)
    g.output("y", elem=F16)
    x = g.input("x")
    d = g.op("Sub", x, g.mean(x))
    var = g.mean(g.op("Pow", d, g.const("two", 2.0)))
    std = g.op("Sqrt", g.op("Add", var, g.const("eps", 1e-12)))
    _fp16_tail(g, g.op("Cast", g.op("Div", d, std), to=F16))
    return g.model()


def ln_fp16_cast_exponent(opset=OPSET):
    """All in float16, the Pow exponent a float32 2 cast to float16."""
    g, x = _io("ln", opset, elem=F16)
    d = g.op("Sub", x, g.mean(x))
    var = g.mean(g.op("Pow", d, g.op("Cast", g.const("two", 2.0), to=F16)))
    std = g.op("Sqrt", g.op("Add", var, g.const("eps", 1e-5, np.float16)))
    _fp16_tail(g, g.op("Div", d, std))
    return g.model()


def ln_fp16_stats_fp32_affine(opset=OPSET):
    """Near miss: statistics in float16, then a Cast up to float32 γ and β: one LayerNormalization
    would have to round γ and β to float16, or compute the statistics in float32."""
    g, x = _io("ln", opset, elem=F16)
    g.outputs.clear()
    g.output("y")
    d = g.op("Sub", x, g.mean(x))
    var = g.mean(g.op("Pow", d, g.const("two", 2.0, np.float16)))
    std = g.op("Sqrt", g.op("Add", var, g.const("eps", 1e-5, np.float16)))
    _fp16_tail(g, g.op("Cast", g.op("Div", d, std), to=F32), out_type=F32)
    return g.model()


def ln_cast_to_float32(centered=False, back=None, opset=OPSET):
    """A float16 input cast to float32, x itself (``cast``) or x − mean computed in float16
    (``centered``); the normalized value cast to ``back`` (or not cast), then γ and β of that type."""
    g, x = _io("ln", opset, elem=F16)
    out = back or F32
    g.outputs.clear()
    g.output("y", elem=out)
    if centered:
        d = g.op("Cast", g.op("Sub", x, g.mean(x)), to=F32)
    else:
        x32 = g.op("Cast", x, to=F32)
        d = g.op("Sub", x32, g.mean(x32))
    var = g.mean(g.op("Pow", d, g.const("two", 2.0)))
    n = g.op("Div", d, g.op("Sqrt", g.op("Add", var, g.const("eps", 1e-12))))
    if back:
        n = g.op("Cast", n, to=back)
    gamma, beta = _gamma_beta(onnx.helper.tensor_dtype_to_np_dtype(out))
    g.op("Add", g.op("Mul", n, g.const("gamma", gamma, gamma.dtype)), g.const("beta", beta, beta.dtype), out="y")
    return g.model()


def ln_keras_broadcast_affine(shape=(1, 1, HIDDEN), eps=KERAS_EPS, opset=OPSET):
    """tf2onnx's LayerNorm with γ and β stored as ``shape`` (Keras 3 writes [1, 1, H])."""
    g, x = _io("ln", opset)
    gamma, beta = _gamma_beta()
    mean = g.mean(x)
    d = g.op("Sub", x, mean)
    var = g.mean(g.op("Mul", d, d))
    r = g.op("Reciprocal", g.op("Sqrt", g.op("Add", var, g.const("eps", eps))))
    s = g.op("Mul", r, g.const("gamma", gamma.reshape(shape)))
    g.op("Add", g.op("Mul", x, s), g.op("Sub", g.const("beta", beta.reshape(shape)), g.op("Mul", mean, s)), out="y")
    return g.model()


# ---------------------------------------------------------------- variants

# name: (graph, the variant and labels its record names, the ops left, max relative error)
VARIANTS = {
    "pytorch": (lambda: V.ln_pytorch(OPSET), "pytorch", {"LayerNormalization"}, 1e-5),
    "pytorch_opset18": (V.ln_pytorch_opset18, "pytorch", {"LayerNormalization"}, 1e-5),
    "commuted": (lambda: V.ln_commuted(OPSET), "pytorch", {"LayerNormalization"}, 1e-5),
    "sub_twice": (lambda: V.ln_sub_twice(OPSET), "pytorch", {"LayerNormalization"}, 1e-5),
    "mul_square": (lambda: V.ln_mul_square(OPSET), "pytorch[mul_square]", {"LayerNormalization"}, 1e-5),
    "reciprocal": (lambda: V.ln_reciprocal(OPSET), "pytorch[reciprocal]", {"LayerNormalization"}, 1e-5),
    "no_gamma": (lambda: V.ln_no_gamma(OPSET), "pytorch[no_gamma]", {"LayerNormalization"}, 1e-5),
    "no_beta": (lambda: V.ln_no_beta(OPSET), "pytorch[no_beta]", {"LayerNormalization"}, 1e-5),
    # float16 output rounds at ~1e-3
    "cast_fp16": (lambda: V.ln_cast_fp16(OPSET), "pytorch[cast,cast_back]", {"LayerNormalization"}, 1e-2),
    "cast": (ln_cast_to_float32, "pytorch[cast]", {"Cast", "LayerNormalization"}, 1e-5),
    "keras": (lambda: V.ln_keras(OPSET), "keras", {"LayerNormalization"}, 1e-5),
    "keras_broadcast_affine": (ln_keras_broadcast_affine, "keras", {"LayerNormalization"}, 1e-5),
}


@pytest.mark.parametrize("target", fusekit.TARGETS)
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_fuses_and_verifies(name, target):
    build, variant, left, rel = VARIANTS[name]
    applied = apply("LayerNorm", build(), target=target)
    assert applied.rewrote == 1 and applied.made["LayerNormalization"] == 1, applied.records
    (record,) = applied.records
    assert record.variant == variant
    assert applied.ops() == left
    result = applied.assert_equivalent()
    assert all(o.max_rel <= rel for o in result.outputs), result.summary()


def test_the_two_sub_form_replaces_both_subs():
    """x − mean computed twice: both Subs are the match's, none is left to compute it again."""
    applied = apply("LayerNorm", V.ln_sub_twice(OPSET))
    assert applied.made == {"LayerNormalization": 1, "ReduceMean": -2, "Sub": -2, "Pow": -1, "Add": -2,
                            "Sqrt": -1, "Div": -1, "Mul": -1}


def test_epsilon_carried_exactly():
    applied = apply("LayerNorm", V.ln_pytorch(OPSET), target="onnx")
    (node,) = applied.model.graph.node
    eps = next(a.f for a in node.attribute if a.name == "epsilon")
    assert eps == np.float32(1e-12)


def test_reduction_over_last_axis_at_opset18_reads_axes_input():
    model = V.ln_pytorch_opset18()
    assert [len(n.input) for n in model.graph.node if n.op_type == "ReduceMean"] == [2, 2]  # axes as an input
    applied = apply("LayerNorm", model)
    assert applied.rewrote == 1 and applied.ops() == {"LayerNormalization"}


def test_missing_gamma_becomes_ones():
    applied = apply("LayerNorm", V.ln_no_gamma(OPSET))
    (node,) = applied.model.graph.node
    gamma = next(t for t in applied.model.graph.initializer if t.name == node.input[1])
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(gamma), np.ones(16, np.float32))


def test_keras_broadcast_affine_is_given_as_vectors():
    """γ and β stored [1, 1, H] (Keras 3) reach LayerNormalization as the [H] vectors it takes."""
    applied = apply("LayerNorm", ln_keras_broadcast_affine())
    (node,) = applied.model.graph.node
    inits = {t.name: t for t in applied.model.graph.initializer}
    assert [list(inits[name].dims) for name in node.input[1:]] == [[HIDDEN], [HIDDEN]]


CAST_FORMS = {"ln_fp16_cast_centered": (ln_fp16_cast_centered, "pytorch[cast_back,cast_centered]"),
              "ln_fp32_stats_fp16_affine": (ln_fp32_stats_fp16_affine, "pytorch[cast_back]"),
              "ln_fp16_cast_exponent": (ln_fp16_cast_exponent, "pytorch[cast_exponent]")}


@pytest.mark.parametrize("target", fusekit.TARGETS)
@pytest.mark.parametrize("name", sorted(CAST_FORMS))
def test_float16_cast_placements_fuse_and_verify(name, target):
    build, variant = CAST_FORMS[name]
    applied = apply("LayerNorm", build(), target=target)
    assert applied.rewrote == 1 and applied.made["LayerNormalization"] == 1, applied.records
    assert applied.records[0].variant == variant
    applied.assert_equivalent()
    fused = applied.model
    (ln,) = [n for n in fused.graph.node if n.op_type == "LayerNormalization"]
    # one type for X, γ and β; a float32 normalization hands on float16 through one Cast
    assert {t.data_type for t in fused.graph.initializer if t.name in ln.input[1:]} == \
           ({onnx.TensorProto.FLOAT} if name == "ln_fp32_stats_fp16_affine" else {onnx.TensorProto.FLOAT16})
    assert applied.ops() == ({"LayerNormalization", "Cast"} if name == "ln_fp32_stats_fp16_affine"
                             else {"LayerNormalization"})


def test_cast_alone_runs_the_whole_normalization_in_float32():
    """x cast to float32 and never back: LayerNormalization reads the Cast of x, in float32."""
    applied = apply("LayerNorm", ln_cast_to_float32())
    (cast,) = [n for n in applied.model.graph.node if n.op_type == "Cast"]
    (ln,) = [n for n in applied.model.graph.node if n.op_type == "LayerNormalization"]
    assert cast.input[0] == "x" and ln.input[0] == cast.output[0]
    assert {t.data_type for t in applied.model.graph.initializer if t.name in ln.input[1:]} == {onnx.TensorProto.FLOAT}


# ONNX Runtime's own test graphs (layer_norm_with_cast_2 and _3, tests/graphs/forms.py)
ORT_CAST_FORMS = {"pow_exponent": "pytorch[cast_exponent]", "before_scale": "pytorch[cast_back]"}


@pytest.mark.parametrize("placement", sorted(ORT_CAST_FORMS))
def test_layer_norm_with_casts_fuses_as_ort_expects(placement):
    applied = apply("LayerNorm", F.layer_norm_with_cast(placement, opset=OPSET))
    assert applied.rewrote == 1 and applied.made["LayerNormalization"] == 1, applied.records
    assert applied.records[0].variant == ORT_CAST_FORMS[placement]
    applied.assert_equivalent()


def test_the_cast_forms_run_as_built():
    for placement in ("pow_exponent", "before_scale"):
        model = F.layer_norm_with_cast(placement)
        assert fusekit.verify(model, model).ok


# ---------------------------------------------------------------- near misses

NEAR_MISSES = {
    "ln_eps_input": "ε is not a constant: it is the graph input 'eps'",
    "ln_eps_vector": "ε must be a scalar",
    "ln_eps_cast": "ε is not a constant: it is produced by Cast 'ln/Cast_0'",
    "ln_axis_not_last": "reduces over axis 1, not the last axis",
    "ln_inner_used_elsewhere": "is also used by Add",
    "ln_inner_graph_output": "'std' (from Sqrt) is also a graph output",
    "ln_gamma_wrong_shape": "γ has shape [1, 1, 1, 16], expected [16]",
}


@pytest.mark.parametrize("name", sorted(NEAR_MISSES))
def test_near_miss_refused_with_reason(name):
    applied = apply("LayerNorm", V.NEAR_MISSES[name](OPSET))
    assert not applied.rewrote and not applied.made
    assert "LayerNormalization" not in applied.ops()
    miss = applied.miss()
    assert NEAR_MISSES[name] in miss.reason, miss
    assert miss.variant == "pytorch" and miss.matched >= 4
    applied.assert_equivalent()


CAST_NEAR_MISSES = {
    "fp16_stats_fp32_affine": (ln_fp16_stats_fp32_affine, "LayerNormalization wants one type for X, γ and β"),
    "cast_centered_not_back": (lambda: ln_cast_to_float32(centered=True),
                               "x − mean is cast to float32 but the normalized value is not cast back"),
    "cast_back_to_another_type": (lambda: ln_cast_to_float32(back=onnx.TensorProto.DOUBLE),
                                  "the Cast after the statistics does not return to the input's type"),
}


@pytest.mark.parametrize("name", sorted(CAST_NEAR_MISSES))
def test_casts_one_layer_norm_cannot_carry_are_a_near_miss(name):
    build, reason = CAST_NEAR_MISSES[name]
    applied = apply("LayerNorm", build())
    assert not applied.rewrote and not applied.made
    miss = applied.miss()
    assert reason in miss.reason and miss.variant == "pytorch", miss
    applied.assert_equivalent()


@pytest.mark.parametrize("shape, eps, reason", [
    ((1, 1, 1, HIDDEN), KERAS_EPS, "γ has shape [1, 1, 1, 16], expected [16]"),
    ((1, 1, HIDDEN), np.full(HIDDEN, KERAS_EPS), "ε must be a scalar, but has shape [16]"),
])
def test_keras_near_miss(shape, eps, reason):
    model = ln_keras_broadcast_affine(shape, eps)
    model.graph.output[0].type.tensor_type.shape.Clear()  # [1, 1, 1, H] makes the output 4-D
    applied = apply("LayerNorm", model)
    assert not applied.rewrote and not applied.made
    miss = applied.miss()
    assert reason in miss.reason and miss.variant == "keras", miss
    applied.assert_equivalent()


# ---------------------------------------------------------------- quantized (all ops, QDQ)

def _epsilon(model):
    (node,) = [n for n in model.graph.node if n.op_type == "LayerNormalization"]
    return next(a.f for a in node.attribute if a.name == "epsilon")


@pytest.mark.parametrize("stored, eps_pair, pairs", [(True, True, 4), (False, False, 4)])
def test_requantization_pairs_inside_are_absorbed(stored, eps_pair, pairs):
    """The pairs on the variance, ε + variance, the normalized value and its product with γ are
    dropped (verified in steps); γ and β stored as uint8 and ε through its pair are carried as the
    graph dequantizes them; the input's and the output's pairs stay."""
    from graphs import quantized_forms as QF
    result = apply("LayerNorm", QF.ln_all_ops(stored=stored, eps_pair=eps_pair))
    assert result.rewrote == 1 and result.made["LayerNormalization"] == 1
    assert result.made["QuantizeLinear"] == -(pairs + eps_pair)
    assert result.made["DequantizeLinear"] == -(pairs + eps_pair + 2 * stored)
    ops = Counter(n.op_type for n in result.model.graph.node)
    assert ops["QuantizeLinear"] == 2  # the boundary: x's and y's
    assert _epsilon(result.model) == np.float32(1e-12)  # 1e-12 / (1e-12 / 255) rounds to 255 steps: exact
    result.assert_equivalent()


@pytest.mark.parametrize("kwargs, reason", [
    ({"per_channel": True}, "quantizes an activation per channel, not per tensor"),
    ({"read_inside": True}, "'normalized_q' (from QuantizeLinear) is also a graph output"),
])
def test_quantized_near_misses(kwargs, reason):
    from graphs import quantized_forms as QF
    result = apply("LayerNorm", QF.ln_all_ops(**kwargs))
    assert result.rewrote == 0
    assert reason in result.miss("LayerNorm").reason
