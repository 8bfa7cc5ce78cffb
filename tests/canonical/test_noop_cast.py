"""NoOpCast (patterns/canonical/noop_cast.py): a float Cast to the type its input has is bypassed."""
import pytest
from onnx import TensorProto

from graphs import canonical as C
from graphs.variants import Graph
from one_rule import apply

F32, F16, F64, I64 = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.INT64


def cast(elem, to, writes_output=False):
    """x (elem) ─► Cast(to) ─► Abs ─► y, or with ``writes_output`` x ─► Abs ─► Cast(to) ─► y."""
    g = Graph("cast", 14)
    x = g.input("x", elem=elem)
    g.output("y", elem=to)
    if writes_output:
        g.op("Cast", g.op("Abs", x), to=to, out="y")
    else:
        g.op("Abs", g.op("Cast", x, to=to), out="y")
    return g.model()


@pytest.mark.parametrize("elem", [F32, F16, F64], ids=["float", "float16", "double"])
def test_a_float_cast_to_its_own_type_is_bypassed(elem):
    result = apply("NoOpCast", cast(elem, elem))
    assert result.made == {"Cast": -1} and result.rewrote == 1 and not result.misses
    assert result.records[0].variant == "same_type"
    result.assert_equivalent(atol=0, rtol=0)


def test_casts_inside_a_gelu_are_bypassed_but_the_one_writing_the_output_stays():
    """The float16 converter's spelling: Cast(float) on x before an erf GELU and on its result
    (the graph output 'y'), beside a Cast to float16 that does change the type."""
    result = apply("NoOpCast", C.noop_casts())
    assert result.made == {"Cast": -1} and result.rewrote == 1
    # the Cast writing the output 'y' keeps its name; the one that changes the type stays
    casts = [n for n in result.model.graph.node if n.op_type == "Cast"]
    assert sorted(n.output[0] for n in casts) == ["half", "y"]
    miss = result.miss()  # the float16 Cast is no near miss: it is what a Cast is for
    assert miss.anchor == "gelu/Cast_1" and "its output 'y' is a graph output" in miss.reason
    result.assert_equivalent(atol=0, rtol=0)


def test_near_miss_when_the_cast_writes_a_graph_output():
    result = apply("NoOpCast", cast(F32, F32, writes_output=True))
    assert not result.made
    assert result.miss().reason == "its output 'y' is a graph output"


@pytest.mark.parametrize("elem, to", [(I64, I64), (F32, F16)], ids=["integer_to_itself", "float_to_float16"])
def test_a_cast_that_is_no_float_identity_stays_and_is_no_near_miss(elem, to):
    """Integer Casts build masks and shapes that other checks read as written; a Cast that
    changes the type is what a Cast is for: neither is a miss to explain."""
    result = apply("NoOpCast", cast(elem, to))
    assert not result.made and not result.rewrote and not result.misses
