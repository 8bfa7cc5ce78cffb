"""MeanAsGlobalAveragePool (patterns/canonical/mean_as_global_average_pool.py): GlobalAveragePool
over a rank-3 tensor is ReduceMean over its last axis."""
import pytest

from graphs import canonical as C
from graphs.variants import Graph
from one_rule import apply


def rank4(opset=13):
    """Near miss: on a rank-4 input GlobalAveragePool averages over two axes."""
    g = Graph("gap", opset)
    x = g.input("x", shape=["batch", "seq", 4, 4])
    g.output("y", shape=["batch", "seq", 1, 1])
    g.op("GlobalAveragePool", x, out="y")
    return g.model()


@pytest.mark.parametrize("opset", [13, 18])  # ReduceMean's axes: an attribute, then an input from 18 on
def test_both_means_of_a_tf2onnx_layer_norm_become_last_axis_means(opset):
    model = C.ln_global_average_pool(opset=opset)
    result = apply("MeanAsGlobalAveragePool", model)
    assert result.made == {"GlobalAveragePool": -2, "ReduceMean": 2} and result.rewrote == 2
    assert not result.misses
    means = [n for n in result.model.graph.node if n.op_type == "ReduceMean"]
    if opset >= 18:
        assert all(len(n.input) == 2 for n in means)
    else:
        assert all(len(n.input) == 1 and [list(a.ints) for a in n.attribute if a.name == "axes"] == [[-1]]
                   for n in means)
    result.assert_equivalent()  # the same mean, but ONNX Runtime's two kernels sum in another order


@pytest.mark.parametrize("model, reason", [
    (rank4, "the input has rank 4: it averages over axes 2…3, not only the last axis"),
    (C.global_average_pool_rank_unknown, "the input's rank is unknown, so the axes it averages over are unknown"),
], ids=["rank4", "rank_unknown"])
def test_near_misses(model, reason):
    result = apply("MeanAsGlobalAveragePool", model())
    assert not result.made and not result.rewrote
    assert result.miss().reason == reason
