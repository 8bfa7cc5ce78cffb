"""SkipLayerNorm alone (patterns/fusions/skip_layer_norm.py) on small graphs in the form it reads,
the LayerNormalization already there (opset 17): the residual sum, with or without a bias Add,
proven and respelled as ONNX Runtime runs it fastest on CPU (``skip − (−bias − input)`` or
``Sum(input, skip)``, which its own SkipLayerNorm fusion leaves alone); the sum handed on when
used later; refusals with their reasons."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphs.attention import folded_heads
from graphs.variants import Graph
from one_rule import apply

H = 16
RNG = np.random.RandomState(0)


def block(sum_used_later: bool, skip_shape=("batch", "seq", H), bias=True, statistics_used=False):
    """x·W (+ b) + skip → LayerNormalization, optionally reusing the sum (pre-LN style) or
    handing on the normalization's mean as a second output."""
    inits = [numpy_helper.from_array(RNG.randn(H, H).astype(np.float32), "W"),
             numpy_helper.from_array(RNG.randn(H).astype(np.float32), "b"),
             numpy_helper.from_array((1 + 0.1 * RNG.randn(H)).astype(np.float32), "gamma"),
             numpy_helper.from_array((0.1 * RNG.randn(H)).astype(np.float32), "beta")]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="dense/MatMul")]
    if bias:
        nodes.append(helper.make_node("Add", ["b", "h"], ["hb"], name="dense/Add"))
    else:
        inits.pop(1)
    nodes += [helper.make_node("Add", ["hb" if bias else "h", "skip"], ["sum"], name="residual/Add"),
              helper.make_node("LayerNormalization", ["sum", "gamma", "beta"], ["ln", "mean"] if statistics_used else ["ln"],
                               name="ln", epsilon=1e-12)]
    if sum_used_later:
        nodes.append(helper.make_node("Add", ["sum", "ln"], ["y"], name="reuse/Add"))
    else:
        nodes.append(helper.make_node("Identity", ["ln"], ["y"], name="out"))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", H])]
    if statistics_used:
        outputs.append(helper.make_tensor_value_info("mean", TensorProto.FLOAT, ["batch", "seq", 1]))
    graph = helper.make_graph(nodes, "skip", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", H]),
        helper.make_tensor_value_info("skip", TensorProto.FLOAT, list(skip_shape))], outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def normalized_sum(model):
    """The fused residual: (LayerNormalization, [input, skip], the bias or None), read back from
    ``LN(skip − (−bias − input))`` or ``LN(Sum(input, skip))``."""
    producer = {o: n for n in model.graph.node for o in n.output}
    (ln,) = [n for n in model.graph.node if n.op_type == "LayerNormalization" and n.name != "ln0"]
    total = producer[ln.input[0]]
    if total.op_type == "Sum":
        return ln, list(total.input), None
    assert total.op_type == "Sub"
    negated = producer[total.input[1]]
    assert negated.op_type == "Sub"
    (bias,) = [i for i in model.graph.initializer if i.name == negated.input[0]]
    return ln, [negated.input[1], total.input[0]], -numpy_helper.to_array(bias)


def ort_session_ops(model) -> set[str]:
    """The op types ONNX Runtime's CPU session runs, after its own fusions at load."""
    import tempfile

    import onnxruntime as ort
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.optimized_model_filepath = f"{tmp}/session.onnx"
        options.log_severity_level = 3
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        import onnx
        return {n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node}


def test_bias_and_residual_fold_into_the_layer_norm():
    model = block(sum_used_later=False)
    applied = apply("SkipLayerNorm", model)
    assert applied.made == {"Sub": 2, "Add": -2} and applied.records[0].variant == "bias"
    ln, addends, bias = normalized_sum(applied.model)
    assert addends == ["h", "skip"] and list(ln.input[1:]) == ["gamma", "beta"]
    np.testing.assert_array_equal(bias, numpy_helper.to_array(model.graph.initializer[1]))
    assert next(a.f for a in ln.attribute if a.name == "epsilon") == np.float32(1e-12)
    applied.assert_equivalent()


def test_onnx_runtime_keeps_the_fused_form_out_of_its_slow_kernel():
    """ONNX Runtime fuses Add + LayerNorm into SkipLayerNormalization at load, whose CPU kernel
    runs 3–5× slower (benchmarks/skip_layer_norm_forms.py): the written form must stay as it is."""
    for model in (block(sum_used_later=False), block(sum_used_later=False, bias=False)):
        assert "SkipLayerNormalization" in ort_session_ops(model)
        ops = ort_session_ops(apply("SkipLayerNorm", model).model)
        assert "SkipLayerNormalization" not in ops and "LayerNormalization" in ops


def test_a_residual_without_bias_folds_plain():
    applied = apply("SkipLayerNorm", block(sum_used_later=False, bias=False))
    assert applied.made == {"Sum": 1, "Add": -1}
    ln, addends, bias = normalized_sum(applied.model)
    assert addends == ["h", "skip"] and bias is None and list(ln.input[1:]) == ["gamma", "beta"]
    assert applied.rewrote == 1 and applied.records[0].variant == "plain"
    applied.assert_equivalent()


def test_sum_used_later_becomes_the_fourth_output():
    applied = apply("SkipLayerNorm", block(sum_used_later=True))
    fused = applied.model
    ln, _, _ = normalized_sum(fused)
    assert ln.input[0] == "sum" and len(ln.output) == 1
    assert any("sum" in n.input for n in fused.graph.node if n.name == "reuse/Add")
    assert applied.rewrote == 1
    applied.assert_equivalent()


def residual_of_one_value(input_from_other: bool):
    """a = LayerNorm(t); a·W + b + a → LayerNormalization, with a second model input whose
    dimensions are named apart (as tf2onnx names every input's), so that no input is provably
    (batch, sequence). With ``input_from_other`` the sublayer reads that input instead of a."""
    inits = [numpy_helper.from_array(RNG.randn(H, H).astype(np.float32), "W"),
             numpy_helper.from_array(RNG.randn(H).astype(np.float32), "b"),
             numpy_helper.from_array((1 + 0.1 * RNG.randn(H)).astype(np.float32), "gamma"),
             numpy_helper.from_array((0.1 * RNG.randn(H)).astype(np.float32), "beta")]
    nodes = [helper.make_node("LayerNormalization", ["t", "gamma", "beta"], ["a"], name="ln0", epsilon=1e-12),
             helper.make_node("MatMul", ["p" if input_from_other else "a", "W"], ["h"], name="dense/MatMul"),
             helper.make_node("Add", ["h", "b"], ["hb"], name="dense/Add"),
             helper.make_node("Add", ["hb", "a"], ["sum"], name="residual/Add"),
             helper.make_node("LayerNormalization", ["sum", "gamma", "beta"], ["y"], name="ln1", epsilon=1e-12)]
    graph = helper.make_graph(nodes, "skip", [
        helper.make_tensor_value_info("t", TensorProto.FLOAT, ["b1", "s1", H]),
        helper.make_tensor_value_info("p", TensorProto.FLOAT, ["b2", "s2", H])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b1", "s1", H])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_addends_computed_from_one_value_cannot_broadcast_against_each_other():
    applied = apply("SkipLayerNorm", residual_of_one_value(input_from_other=False))
    assert applied.rewrote == 1 and applied.made == {"Sub": 2, "Add": -2}, applied.misses
    assert applied.records[0].variant == "bias"
    applied.assert_equivalent()


@pytest.mark.parametrize("build", [
    lambda: block(sum_used_later=False, skip_shape=(1, "seq", H)),
    lambda: residual_of_one_value(input_from_other=True),
    lambda: pre_ln_residual("sequence", beta=False),
], ids=["skip over one batch row", "addends of unrelated inputs", "projection sliced on the sequence"])
def test_addends_that_may_broadcast_are_respelled_exactly(build):
    """Sub and Sum broadcast as Add does, so the respelled sum needs no proof of its shapes."""
    applied = apply("SkipLayerNorm", build())
    assert applied.rewrote == 1, applied.misses
    applied.assert_equivalent()


def test_the_statistics_outputs_stay():
    applied = apply("SkipLayerNorm", block(sum_used_later=False, statistics_used=True))
    ln, _, _ = normalized_sum(applied.model)
    assert list(ln.output) == ["ln", "mean"]
    applied.assert_equivalent()


def test_a_rounded_sum_read_outside_stays_for_its_reader():
    from graphs import quantized_forms as QF
    model = QF.skip_ln_all_ops()
    (add,) = [n for n in model.graph.node if n.op_type == "Add"]
    (q,) = [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == add.output[0]]
    model.graph.output.append(helper.make_tensor_value_info(q.output[0], TensorProto.UINT8, None))
    applied = apply("SkipLayerNorm", model)
    assert applied.made == {"Sum": 1, "Add": -1}, applied.misses
    applied.assert_equivalent()


def test_a_layer_norm_over_another_axis_is_a_near_miss():
    """Not the norm of each hidden vector, so not what ONNX Runtime fuses with the sum."""
    model = block(sum_used_later=False)
    ln = next(n for n in model.graph.node if n.op_type == "LayerNormalization")
    ln.attribute.append(helper.make_attribute("axis", 1))
    applied = apply("SkipLayerNorm", model)
    assert not applied.rewrote and not applied.made
    miss = applied.miss()
    assert "works from axis 1, not the last axis" in miss.reason and miss.variant == "bias", miss


def test_only_for_ort():
    with pytest.raises(AssertionError, match="SkipLayerNorm does not run for target onnx"):
        apply("SkipLayerNorm", block(sum_used_later=False), target="onnx")


def pre_ln_residual(cut: str, beta: bool):
    """ModernBERT's MLP residual: x + Wo·(GELU(a)·g), a and g the two halves of x·Wi cut along
    the last axis (``cut``: "split", or "sequence", which first slices one position off the
    sequence axis, so the sum broadcasts over it), then a LayerNormalization with or without β."""
    F = 2 * H
    inits = [numpy_helper.from_array(RNG.randn(H, 2 * F).astype(np.float32), "Wi"),
             numpy_helper.from_array(RNG.randn(F, H).astype(np.float32), "Wo"),
             numpy_helper.from_array((1 + 0.1 * RNG.randn(H)).astype(np.float32), "gamma"),
             numpy_helper.from_array((0.1 * RNG.randn(H)).astype(np.float32), "beta"),
             numpy_helper.from_array(np.array([0]), "zero"), numpy_helper.from_array(np.array([1]), "one")]
    nodes = [helper.make_node("MatMul", ["x", "Wi"], ["wi"], name="mlp/Wi")]
    if cut == "sequence":
        nodes.append(helper.make_node("Slice", ["wi", "zero", "one", "one"], ["first"], name="mlp/first"))
    nodes += [helper.make_node("Split", ["first" if cut == "sequence" else "wi"], ["a", "g"], name="mlp/chunk",
                               axis=-1, num_outputs=2),
              helper.make_node("Gelu", ["a"], ["act"], name="mlp/act"),
              helper.make_node("Mul", ["act", "g"], ["glu"], name="mlp/glu"),
              helper.make_node("MatMul", ["glu", "Wo"], ["mlp"], name="mlp/Wo"),
              helper.make_node("Add", ["x", "mlp"], ["sum"], name="residual/Add"),
              helper.make_node("LayerNormalization", ["sum", "gamma", "beta"] if beta else ["sum", "gamma"], ["y"],
                               name="ln", epsilon=1e-5)]
    io = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", "seq", H]) for name in ("x", "y")]
    graph = helper.make_graph(nodes, "skip", io[:1], io[1:], inits if beta else [i for i in inits if i.name != "beta"])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=9)


@pytest.mark.parametrize("beta", [True, False])
def test_a_residual_through_a_chunked_projection_folds(beta):
    """The halves of a Split along the last axis keep (batch, sequence), so the MLP output cannot
    broadcast against the residual; without β the LayerNormalization keeps omitting it."""
    applied = apply("SkipLayerNorm", pre_ln_residual("split", beta))
    assert applied.made == {"Sum": 1, "Add": -1}, applied.misses
    ln, addends, _ = normalized_sum(applied.model)
    assert addends == ["x", "mlp"] and list(ln.input[1:]) == (["gamma", "beta"] if beta else ["gamma"])
    assert applied.records[0].variant == ("plain" if beta else "plain[no_beta]")
    applied.assert_equivalent()


def test_without_beta_the_bias_still_folds():
    model = block(sum_used_later=False)
    ln = next(n for n in model.graph.node if n.op_type == "LayerNormalization")
    del ln.input[2]
    applied = apply("SkipLayerNorm", model)
    assert applied.made == {"Sub": 2, "Add": -2}
    ln, addends, _ = normalized_sum(applied.model)
    assert addends == ["h", "skip"] and list(ln.input[1:]) == ["gamma"]
    assert applied.records[0].variant == "bias[no_beta]"
    applied.assert_equivalent()


def attention_residual(unfold_heads: int):
    """x + (attention output)·W + b → LayerNormalization, the attention's heads folded into the
    batch and unfolded by ``[-1, unfold_heads, S, 2]`` (4: as they were folded; DeBERTa's
    TorchScript form)."""
    g = Graph("skip", 17)
    x = g.input("x", shape=["batch", "seq", 8])
    context = folded_heads(g, x, unfold_heads=unfold_heads)
    width = 8 if unfold_heads == 4 else 4
    dense = g.op("MatMul", context, g.const("W", RNG.randn(width, 8)))
    total = g.op("Add", g.op("Add", dense, g.const("b", RNG.randn(8))), x)
    g.op("LayerNormalization", total, g.const("gamma", 1 + 0.1 * RNG.randn(8)), g.const("beta", 0.1 * RNG.randn(8)),
         epsilon=1e-7, out="y")
    g.output("y", shape=["batch", "seq", 8])
    return g.model()


def test_an_attention_output_read_back_from_heads_folded_into_the_batch_folds():
    applied = apply("SkipLayerNorm", attention_residual(unfold_heads=4))
    assert applied.made == {"Sub": 2, "Add": -2}, applied.misses
    assert applied.records[0].variant == "bias"
    applied.assert_equivalent()


@pytest.mark.parametrize("per_channel", [False, True])
def test_the_requantization_pair_on_the_sum_stays(per_channel):
    """An all-ops quantizer rounds the residual sum before the LayerNorm: the pair stays on the
    respelled sum, so the output is exact."""
    from graphs import quantized_forms as QF
    applied = apply("SkipLayerNorm", QF.skip_ln_all_ops(per_channel=per_channel))
    assert applied.made == {"Sum": 1, "Add": -1}, applied.misses
    producer = {o: n for n in applied.model.graph.node for o in n.output}
    (ln,) = [n for n in applied.model.graph.node if n.op_type == "LayerNormalization"]
    dq = producer[ln.input[0]]
    q = producer[dq.input[0]]
    assert (dq.op_type, q.op_type, producer[q.input[0]].op_type) == ("DequantizeLinear", "QuantizeLinear", "Sum")
    applied.assert_equivalent()


def contrib_op(inputs=("x", "skip", "gamma", "beta", "b"), outputs=("y",), sum_read_later=False, epsilon=1e-12):
    """ONNX Runtime's own com.microsoft.SkipLayerNormalization (its transformers optimizer's output):
    ``inputs`` names the op's inputs ("" omits one), ``outputs`` its outputs ("mean" reads the
    statistics), ``sum_read_later`` reads the fourth output, the sum, after it."""
    inits = [numpy_helper.from_array((1 + 0.1 * RNG.randn(H)).astype(np.float32), "gamma"),
             numpy_helper.from_array((0.1 * RNG.randn(H)).astype(np.float32), "beta"),
             numpy_helper.from_array(RNG.randn(H).astype(np.float32), "b")]
    outs = list(outputs) + (["", "", "sum"][len(outputs) - 1:] if sum_read_later else [])
    attrs = {} if epsilon is None else {"epsilon": epsilon}
    nodes = [helper.make_node("SkipLayerNormalization", list(inputs), outs, name="sln", domain="com.microsoft", **attrs)]
    graph_outputs = [helper.make_tensor_value_info("z" if sum_read_later else "y", TensorProto.FLOAT, ["batch", "seq", H])]
    if sum_read_later:
        nodes.append(helper.make_node("Add", ["sum", "y"], ["z"], name="reuse/Add"))
    if "mean" in outputs:
        graph_outputs.append(helper.make_tensor_value_info("mean", TensorProto.FLOAT, ["batch", "seq", 1]))
    graph = helper.make_graph(nodes, "contrib", [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", "seq", H]) for name in ("x", "skip")],
        graph_outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                             ir_version=8)


@pytest.mark.parametrize("inputs, variant, summed_by, beta", [
    (("x", "skip", "gamma", "beta", "b"), "contrib_bias", "Sub", True),
    (("x", "skip", "gamma", "", "b"), "contrib_bias", "Sub", False),
    (("x", "skip", "gamma", "beta"), "contrib", "Sum", True),
    (("x", "skip", "gamma"), "contrib_no_beta", "Sum", False),
])
def test_onnx_runtimes_own_op_is_unfused_the_same_way(inputs, variant, summed_by, beta):
    applied = apply("SkipLayerNorm", contrib_op(inputs))
    assert applied.rewrote == 1 and applied.records[0].variant == variant, applied.misses
    assert applied.made["SkipLayerNormalization"] == -1 and applied.made["LayerNormalization"] == 1
    ln, addends, bias = normalized_sum(applied.model)
    assert sorted(addends) == ["skip", "x"] and (bias is None) == (summed_by == "Sum")
    assert list(ln.input[1:]) == (["gamma", "beta"] if beta else ["gamma"])
    assert next(a.f for a in ln.attribute if a.name == "epsilon") == np.float32(1e-12)
    assert "SkipLayerNormalization" not in ort_session_ops(applied.model)
    applied.assert_equivalent()


def test_the_contrib_ops_default_epsilon_and_its_sum_read_later():
    applied = apply("SkipLayerNorm", contrib_op(epsilon=None, sum_read_later=True))
    assert applied.rewrote == 1, applied.misses
    ln, _, _ = normalized_sum(applied.model)
    assert next(a.f for a in ln.attribute if a.name == "epsilon") == np.float32(1e-12)  # the contrib op's default
    reuse = next(n for n in applied.model.graph.node if n.name == "reuse/Add")
    assert reuse.input[0] == ln.input[0] == "sum"  # the LayerNorm and the later reader read one respelled sum
    applied.assert_equivalent()


def test_the_contrib_ops_statistics_read_are_a_near_miss():
    applied = apply("SkipLayerNorm", contrib_op(outputs=("y", "mean")))
    assert not applied.rewrote and not applied.made
    assert applied.miss().reason == "its statistics output 'mean' is read: a training-time output this rewrite does not carry"
    applied.assert_equivalent()
