"""QuickGelu alone (patterns/fusions/quick_gelu.py) on small graphs: x · sigmoid(α · x) becomes one
com.microsoft QuickGelu with α carried exactly, and is never taken for GELU."""
import pytest

from graphs import variants as V
from one_rule import apply


def quick_gelu(alpha=1.702):
    g, x = V._io("gelu")
    g.op("Mul", x, g.op("Sigmoid", g.op("Mul", x, g.const("alpha", alpha))), out="y")
    return g.model()


def test_sigmoid_form_fuses_with_alpha_carried():
    applied = apply("QuickGelu", V.gelu_quick())
    assert applied.made == {"QuickGelu": 1, "Mul": -2, "Sigmoid": -1} and applied.rewrote == 1
    assert applied.records[0].variant == "sigmoid"
    (node,) = applied.model.graph.node
    assert node.domain == "com.microsoft" and node.op_type == "QuickGelu"
    assert abs(node.attribute[0].f - 1.702) < 1e-6
    result = applied.assert_equivalent()
    assert all(o.max_rel <= 1e-5 for o in result.outputs), result.summary()


@pytest.mark.parametrize("fusion", ["Gelu", "FastGelu"])
def test_not_called_gelu(fusion):
    applied = apply(fusion, V.gelu_quick())
    assert not applied.rewrote and not applied.made


def test_only_for_ort():
    """No standard ONNX op computes it."""
    with pytest.raises(AssertionError, match="QuickGelu does not run for target onnx"):
        apply("QuickGelu", V.gelu_quick(opset=20), target="onnx")


NEAR_MISSES = {
    "sigmoid_silu": (V.gelu_sigmoid_silu, "expected Mul, found the graph input 'x'"),  # SiLU: α is 1, no Mul
    "alpha_vector": (lambda: quick_gelu(alpha=[1.702] * 16), "α must be a scalar, but has shape [16]"),
}


@pytest.mark.parametrize("name", sorted(NEAR_MISSES))
def test_near_miss_refused_with_reason(name):
    build, reason = NEAR_MISSES[name]
    applied = apply("QuickGelu", build())
    assert not applied.rewrote and not applied.made
    (miss,) = applied.misses
    assert miss.variant == "sigmoid" and reason in miss.reason, miss
    applied.assert_equivalent()
