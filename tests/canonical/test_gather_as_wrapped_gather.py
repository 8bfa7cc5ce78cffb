"""GatherAsWrappedGather (patterns/canonical/gather_as_wrapped_gather.py): a lookup that wraps negative
indices itself, ``T[i < 0 ? i + n : i]``, is the plain lookup ``T[i]``."""
import numpy as np
import pytest
from onnx import TensorProto, helper

from graphs.variants import Graph
from one_rule import apply


def wrapped_lookup(form="tf2onnx", wrap=10, sign=TensorProto.FLOAT, table_known=True):
    """A lookup in a [10, 16] table that wraps negative int32 ids first, as Keras 3 does:
    y = table[ids < 0 ? ids + wrap : ids], the select as tf2onnx writes it on integers
    (c·(ids + wrap) + (1 − c)·ids) or as ``Where``; the sign tested on ids cast to ``sign``, or on
    the ids themselves where ``sign`` is None. Near misses: ``wrap`` other than 10, an integer
    ``sign``, a table whose length nothing says (an input [n, 16], not ``table_known``)."""
    g = Graph("wrap", 13)
    ids = g.input("ids", shape=["batch", "seq"], elem=TensorProto.INT32)
    g.output("y", shape=["batch", "seq", 16])
    if table_known:
        table = g.const("table", np.random.default_rng(3).standard_normal((10, 16)))
    else:
        table = g.input("table", shape=["n", 16])
    compared = ids if sign is None else g.op("Cast", ids, to=sign)
    zero = g.const("zero", 0, helper.tensor_dtype_to_np_dtype(TensorProto.INT32 if sign is None else sign))
    negative = g.op("Less", compared, zero)
    wrapped = g.op("Add", ids, g.const("n", wrap, np.int32))
    if form == "where":
        chosen = g.op("Where", negative, wrapped, ids)
    else:
        chosen = g.op("Add", g.op("Mul", g.op("Cast", negative, to=TensorProto.INT32), wrapped),
                      g.op("Mul", ids, g.op("Cast", g.op("Not", negative), to=TensorProto.INT32)))
    g.op("Gather", table, chosen, axis=0, out="y")
    return g.model()


@pytest.mark.parametrize("sign", [TensorProto.FLOAT, None], ids=["sign_of_a_float_cast", "sign_of_the_ids"])
@pytest.mark.parametrize("form, made", [
    ("tf2onnx", {"Cast": -3, "Less": -1, "Add": -2, "Mul": -2, "Not": -1}),
    ("where", {"Cast": -1, "Less": -1, "Add": -1, "Where": -1}),
])
def test_wrapped_lookup_reads_as_a_plain_gather(form, made, sign):
    model = wrapped_lookup(form, sign=sign)
    result = apply("GatherAsWrappedGather", model)
    if sign is None:  # no Cast before the sign test to remove
        made = {**made, "Cast": made["Cast"] + 1}
        made = {op: k for op, k in made.items() if k}
    assert result.made == made and result.rewrote == 1 and not result.misses
    assert [r.variant for r in result.records] == [f"wrapped[{form}]"]
    (gather,) = result.model.graph.node
    assert gather.op_type == "Gather" and gather.input[1] == "ids"
    # every index Gather takes, negative ones included, reads the same row bit for bit (random ids would
    # mostly fall outside the 10 rows)
    result.assert_equivalent(atol=0, rtol=0, feeds={"ids": np.arange(-10, 10, dtype=np.int32).reshape(2, 10)})


@pytest.mark.parametrize("kwargs, reason", [
    (dict(wrap=9), "the wrap adds [9], but the table has 10 entries along axis 0"),
    (dict(sign=TensorProto.INT8), "the sign test compares the indices cast to an integer type, which may wrap"),
    (dict(table_known=False), "the table's length along the gathered axis is unknown"),
], ids=["wrap_is_not_the_table_length", "sign_of_an_integer_cast", "table_length_unknown"])
def test_near_misses(kwargs, reason):
    result = apply("GatherAsWrappedGather", wrapped_lookup(**kwargs))
    assert not result.made and "Less" in result.ops()
    assert result.miss().reason == reason
