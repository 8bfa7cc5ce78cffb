"""EmbedLayerNorm alone (patterns/fusions/embed_layer_norm.py) on small graphs in the form it reads,
the LayerNormalization already there (opset 17): the embedding lookups, their sum and the
LayerNorm as one op, for each position scheme exporters write, and the near misses."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from one_rule import apply

VOCAB, POSITIONS, TYPES, WIDTH = 30, 16, 2, 8
MS = "com.microsoft"


def _positions(form: str, nodes: list, inits: list, width: int, seq) -> str:
    """The position term, in one of the forms exporters write; returns its value's name.

    slice_buffer  BERT (TorchScript): Gather(table, Slice(position_ids buffer, 0, S)), S = Shape(input_ids)[1]
    word_shape    DistilBERT (TorchScript, transformers 4) and tf2onnx: S read off Shape of the word lookup
    range_expand  ONNX Runtime's tests (embed_layer_norm_format3): Expand(Unsqueeze(Range(0, S)), [B, S])
    keras_slice   Keras: Expand(Slice(table, [0, 0], [S, H]), [B, S, H])
    constant      ONNX Runtime's tests (format5): the looked-up rows as a constant [B, S, H]
    start_at_one  not positions 0..S-1: Slice(buffer, 1, S + 1)
    """
    rng = np.random.default_rng(1)
    table = rng.standard_normal((POSITIONS, width)).astype(np.float32)
    if form == "constant":
        inits.append(numpy_helper.from_array(np.broadcast_to(table[:seq], (2, seq, width)).copy(), "position_rows"))
        return "position_rows"
    inits.append(numpy_helper.from_array(table, "position_table"))
    shape_of = "word_rows" if form == "word_shape" else "input_ids"
    nodes += [helper.make_node("Shape", [shape_of], ["ids_shape"], name="shape"),
              helper.make_node("Gather", ["ids_shape", "one"], ["seq"], name="seq", axis=0),
              helper.make_node("Unsqueeze", ["seq", "zero_axis"], ["seq_1d"], name="seq_1d")]
    if form in ("slice_buffer", "word_shape", "start_at_one"):
        start = "one_1d" if form == "start_at_one" else "zero_1d"
        if form == "start_at_one":
            nodes.append(helper.make_node("Add", ["seq_1d", "one_1d"], ["end_1d"], name="end"))
        nodes += [helper.make_node("Slice", ["position_ids_all", start, "end_1d" if form == "start_at_one" else "seq_1d",
                                             "one_1d"], ["position_ids"], name="positions"),
                  helper.make_node("Gather", ["position_table", "position_ids"], ["position_rows"], name="position_lookup")]
        return "position_rows"
    nodes += [helper.make_node("Gather", ["ids_shape", "zero"], ["batch"], name="batch", axis=0),
              helper.make_node("Unsqueeze", ["batch", "zero_axis"], ["batch_1d"], name="batch_1d")]
    if form == "range_expand":
        nodes += [helper.make_node("Range", ["zero", "seq", "one"], ["range"], name="range"),
                  helper.make_node("Unsqueeze", ["range", "zero_axis"], ["range_2d"], name="range_2d"),
                  helper.make_node("Concat", ["batch_1d", "seq_1d"], ["ids_dims"], name="ids_dims", axis=0),
                  helper.make_node("Expand", ["range_2d", "ids_dims"], ["position_ids"], name="expand"),
                  helper.make_node("Gather", ["position_table", "position_ids"], ["position_rows"], name="position_lookup")]
        return "position_rows"
    assert form == "keras_slice"
    inits.append(numpy_helper.from_array(np.array([width], np.int64), "width_1d"))
    nodes += [helper.make_node("Concat", ["seq_1d", "width_1d"], ["slice_end"], name="slice_end", axis=0),
              helper.make_node("Slice", ["position_table", "zeros_2", "slice_end"], ["rows"], name="slice"),
              helper.make_node("Concat", ["batch_1d", "seq_1d", "width_1d"], ["rows_dims"], name="rows_dims", axis=0),
              helper.make_node("Expand", ["rows", "rows_dims"], ["position_rows"], name="expand")]
    return "position_rows"


def embeddings(segment=True, word_ids_input=True, gamma_width=WIDTH, order=("word", "segment", "position"),
               positions="slice_buffer", seq="seq", own_dims=False, segment_ids="input"):
    """input_ids, token_type_ids → Gather(word) + Gather(segment) + the position term → LayerNormalization.

    own_dims: each input declares dimensions of its own names, as tf2onnx writes them.
    segment_ids: "input" (token_type_ids), "zeros" (HF-TF's default, Expand(0, Shape(input_ids)))
    or "sliced" (token_type_ids[:, :S], S read off the input ids: not provably their shape).
    """
    rng = np.random.default_rng(0)
    tables = {"word": (VOCAB, "input_ids"), "segment": (TYPES, "token_type_ids")}
    buffer = np.minimum(np.arange(POSITIONS + 1), POSITIONS - 1).astype(np.int64)  # in range from 0 or 1 on
    inits = [numpy_helper.from_array(buffer[None, :], "position_ids_all"),
             numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array(1, np.int64), "one"),
             numpy_helper.from_array(np.array([0], np.int64), "zero_axis"),
             numpy_helper.from_array(np.array([0], np.int64), "zero_1d"),
             numpy_helper.from_array(np.array([0, 0], np.int64), "zeros_2"),
             numpy_helper.from_array(np.array([1], np.int64), "one_1d")]
    nodes = []
    terms = [t for t in order if segment or t != "segment"]
    for term in terms:
        if term == "position":
            continue
        rows, ids = tables[term]
        inits.append(numpy_helper.from_array(rng.standard_normal((rows, WIDTH)).astype(np.float32), f"{term}_table"))
        source = ids if word_ids_input or term != "word" else "input_ids_copy"
        if term == "segment" and segment_ids != "input":
            source = "segment_ids"
        nodes.append(helper.make_node("Gather", [f"{term}_table", source], [f"{term}_rows"], name=f"{term}_lookup"))
    if not word_ids_input:
        nodes.insert(0, helper.make_node("Abs", ["input_ids"], ["input_ids_copy"], name="copy"))
    _positions(positions, nodes, inits, WIDTH, seq)
    if segment_ids == "zeros":
        nodes.insert(0, helper.make_node("Shape", ["input_ids"], ["ids_dims_all"], name="zeros_dims"))
        nodes.insert(1, helper.make_node("Expand", ["zero", "ids_dims_all"], ["segment_ids"], name="zeros"))
    elif segment_ids == "sliced":
        nodes.append(helper.make_node("Slice", ["token_type_ids", "zero_1d", "seq_1d", "one_1d"], ["segment_ids"],
                                      name="slice_types"))
    total = f"{terms[0]}_rows"
    for term in terms[1:]:
        nodes.append(helper.make_node("Add", [total, f"{term}_rows"], [f"sum_{term}"], name=f"add_{term}"))
        total = f"sum_{term}"
    inits += [numpy_helper.from_array(np.ones(gamma_width, np.float32), "gamma"),
              numpy_helper.from_array(np.zeros(gamma_width, np.float32), "beta")]
    nodes.append(helper.make_node("LayerNormalization", [total, "gamma", "beta"], ["y"], name="ln", axis=-1,
                                  epsilon=1e-12))
    dims = [2 if isinstance(seq, int) else "batch", seq]
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, dims)]
    if segment and segment_ids != "zeros":
        types_dims = ["types_batch", "types_seq"] if own_dims else dims
        inputs.append(helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, types_dims))
    graph = helper.make_graph(nodes, "embeddings", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [*dims, WIDTH])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return model


def embed_node(model):
    (node,) = [n for n in model.graph.node if n.op_type == "EmbedLayerNormalization"]
    return node


@pytest.mark.parametrize("segment, label", [(True, "positions"), (False, "positions[no_segment]")])
def test_lookups_fuse_and_verify(segment, label):
    model = embeddings(segment=segment)
    applied = apply("EmbedLayerNorm", model)
    fused = applied.model
    assert applied.rewrote == 1 and applied.records[0].variant == label
    node = embed_node(fused)
    assert node.domain == MS and node.input[2] == "word_table" and node.input[3] == "position_table"
    assert (node.input[4] == "segment_table") == segment
    applied.assert_equivalent()


@pytest.mark.parametrize("form", ["slice_buffer", "word_shape", "range_expand", "keras_slice"])
@pytest.mark.parametrize("seq", ["seq", 3])
def test_positions_proven_to_count_up_are_dropped(form, seq):
    """Position ids proven to be 0..S-1 by running their chain: the op counts them itself,
    and the chain is gone (as ONNX Runtime's own EmbedLayerNorm tests assert)."""
    model = embeddings(positions=form, seq=seq)
    applied = apply("EmbedLayerNorm", model)
    fused = applied.model
    assert applied.rewrote == 1, applied.misses
    assert applied.records[0].variant == "positions"
    node = embed_node(fused)
    assert node.input[3] == "position_table" and (len(node.input) < 9 or not node.input[8])
    assert {n.op_type for n in fused.graph.node} == {"Cast", "EmbedLayerNormalization"}  # the ids to int32
    assert all(n.input[0] in ("input_ids", "token_type_ids") for n in fused.graph.node if n.op_type == "Cast")
    applied.assert_equivalent()


def _run(model, **feeds):
    import onnxruntime as ort
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def test_segment_ids_with_dimensions_of_their_own_are_expanded_to_the_ids():
    """tf2onnx names each input's dimensions apart: the token types are expanded to the ids'
    shape, as the embedding sum broadcasts them, so types given per row or per position
    still compute what the model does."""
    model = embeddings(own_dims=True)
    applied = apply("EmbedLayerNorm", model)
    fused = applied.model
    assert applied.rewrote == 1 and applied.records[0].variant == "positions", applied.misses
    (expand,) = [n for n in fused.graph.node if n.op_type == "Expand"]
    assert embed_node(fused).input[1] == expand.output[0]
    applied.assert_equivalent()
    ids = np.random.default_rng(2).integers(0, VOCAB, (3, 5))
    for types in (np.array([[1], [0], [1]]), np.array([[0, 1, 1, 0, 1]]), np.ones((3, 5), np.int64)):
        np.testing.assert_allclose(_run(fused, input_ids=ids, token_type_ids=types),
                                   _run(model, input_ids=ids, token_type_ids=types), rtol=1e-5, atol=1e-5)
    with pytest.raises(Exception, match="same shape"):  # more token types than tokens: the op refuses
        _run(fused, input_ids=ids[:1], token_type_ids=np.ones((3, 5), np.int64))


def test_segment_ids_computed_from_the_ids_shape_need_no_expand():
    """HF-TF's token types when none are given: zeros of the ids' shape, proven to be it."""
    model = embeddings(own_dims=True, segment_ids="zeros")
    applied = apply("EmbedLayerNorm", model)
    fused = applied.model
    assert applied.rewrote == 1, applied.misses
    assert [n.name for n in fused.graph.node if n.op_type == "Expand"] == ["zeros"]  # the model's own, no other
    applied.assert_equivalent()


def test_segment_ids_neither_proven_nor_an_input_are_a_near_miss():
    applied = apply("EmbedLayerNorm", embeddings(own_dims=True, segment_ids="sliced"))
    assert not applied.rewrote and not applied.made
    (miss,) = applied.misses
    assert "provably (batch, sequence)" in miss.reason and "a model input" in miss.reason, miss


def test_a_constant_position_term_is_the_table():
    """ONNX Runtime's format5: the looked-up position rows are a constant [B, S, H] at a fixed length."""
    model = embeddings(positions="constant", seq=3)
    applied = apply("EmbedLayerNorm", model)
    fused = applied.model
    assert applied.rewrote == 1, applied.misses
    node = embed_node(fused)
    (table,) = [t for t in fused.graph.initializer if t.name == node.input[3]]
    assert list(table.dims) == [3, WIDTH] and (len(node.input) < 9 or not node.input[8])
    applied.assert_equivalent()


@pytest.mark.parametrize("segment, label", [(True, "lookups"), (False, "lookups[no_segment]")])
def test_positions_that_do_not_count_from_zero_are_handed_on(segment, label):
    """Slice(buffer, 1, S + 1): not 0..S-1, so the ids are given to the op as computed."""
    model = embeddings(positions="start_at_one", segment=segment)
    applied = apply("EmbedLayerNorm", model)
    fused = applied.model
    assert applied.rewrote == 1 and applied.records[0].variant == label
    (cast,) = [n for n in fused.graph.node if n.output[0] == embed_node(fused).input[8]]
    assert cast.op_type == "Cast" and cast.input[0] == "position_ids"
    applied.assert_equivalent()


def test_word_shape_positions_that_do_not_count_from_zero_are_a_near_miss():
    """DistilBERT's form with the ids starting at 1: not the table's first rows, so the ids
    must be handed on, and the Shape on the word lookup then keeps that lookup alive."""
    model = embeddings(positions="word_shape", segment=False)
    model.graph.node[next(i for i, n in enumerate(model.graph.node) if n.name == "positions")].input[1] = "one_1d"
    applied = apply("EmbedLayerNorm", model)
    assert not applied.rewrote and not applied.made
    (miss,) = applied.misses
    assert miss.variant == "lookups" and "'word_rows' (from Gather) is also used by Shape 'shape'" in miss.reason, miss


@pytest.mark.parametrize("change, reason", [
    ("seq", "the constant position term has 3 rows, but the sequence length is 'seq'"),
    ("batch_rows", "the constant position term has shape [2, 3, 8], not [sequence, 8]"),
])
def test_constant_position_term_near_miss(change, reason):
    model = embeddings(positions="constant", seq=3)
    if change == "seq":
        for vi in model.graph.input:
            vi.type.tensor_type.shape.dim[1].dim_param = "seq"
    else:
        (rows,) = [t for t in model.graph.initializer if t.name == "position_rows"]
        value = numpy_helper.to_array(rows).copy()
        value[1] += 1
        rows.CopyFrom(numpy_helper.from_array(value, "position_rows"))
    applied = apply("EmbedLayerNorm", model)
    assert not applied.rewrote and not applied.made
    (miss,) = applied.misses
    assert reason in miss.reason, miss


def test_roles_come_from_the_inputs_not_the_order():
    """The segment lookup first (as in TF graphs): the word table is still the one the ids index."""
    applied = apply("EmbedLayerNorm", embeddings(order=("segment", "position", "word")))
    node = embed_node(applied.model)
    assert (node.input[2], node.input[3], node.input[4]) == ("word_table", "position_table", "segment_table")
    assert applied.rewrote == 1 and applied.records[0].variant == "positions"
    applied.assert_equivalent()


@pytest.mark.parametrize("kwargs, reason", [
    (dict(word_ids_input=False, segment=False), "no lookup is indexed by a 2-D model input"),
    (dict(word_ids_input=False), "neither the segment nor the position ids are provably (batch, sequence)"),
    (dict(gamma_width=WIDTH + 1), "γ"),
])
def test_near_miss(kwargs, reason):
    applied = apply("EmbedLayerNorm", embeddings(**kwargs))
    fused = applied.model
    assert not applied.rewrote and not applied.made
    assert [n for n in fused.graph.node if n.op_type == "LayerNormalization"]
    miss = applied.miss()
    assert reason in miss.reason, miss


def test_only_for_ort():
    with pytest.raises(AssertionError, match="EmbedLayerNorm does not run for target openvino"):
        apply("EmbedLayerNorm", embeddings(), target="openvino")


def _rebuilt(model, nodes, extra):
    """``model`` with ``nodes`` as its graph and its float tables replaced by ``extra``."""
    graph = model.graph
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [t for t in graph.initializer if not t.name.endswith("_table")]
    del graph.initializer[:]
    graph.initializer.extend(kept + extra)
    return model


def quantized(model, scale=0.02, pairs=True):
    """``model`` as ONNX Runtime's quantizer writes it with every op type quantized: each table
    stored as uint8 behind a DequantizeLinear, each lookup and each sum through a Q→DQ pair
    (``pairs=False``: the tables alone, as NNCF stores them)."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    nodes, extra = [], []
    for node in graph.node:
        if node.op_type == "Gather" and node.input[0].endswith("_table"):
            table = numpy_helper.to_array(inits[node.input[0]])
            lo, hi = min(table.min(), 0), max(table.max(), 0)
            t_scale, t_zero = np.float32((hi - lo) / 255), np.uint8(round(-lo / ((hi - lo) / 255)))
            q = np.clip(np.round(table / t_scale) + t_zero, 0, 255).astype(np.uint8)
            name = node.input[0]
            extra += [numpy_helper.from_array(q, f"{name}_q"), numpy_helper.from_array(t_scale, f"{name}_s"),
                      numpy_helper.from_array(t_zero, f"{name}_z")]
            nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [f"{name}_dq"]))
            node.input[0] = f"{name}_dq"
        nodes.append(node)
        if pairs and ((node.op_type == "Gather" and node.input[0].endswith("_table_dq")) or
                      node.output[0].startswith("sum_")):
            out = node.output[0]
            node.output[0] = f"{out}_raw"
            nodes += [helper.make_node("QuantizeLinear", [f"{out}_raw", "pair_s", "pair_z"], [f"{out}_q"]),
                      helper.make_node("DequantizeLinear", [f"{out}_q", "pair_s", "pair_z"], [out])]
    extra += [numpy_helper.from_array(np.float32(scale), "pair_s"), numpy_helper.from_array(np.uint8(128), "pair_z")]
    return _rebuilt(model, nodes, extra)


def test_quantized_tables_and_pairs_fuse():
    """Tables stored quantized go to the op as the graph dequantizes them (exact); the pairs on
    the lookups and the sums are dropped (verified in steps); the position term proven rows 0..S-1
    of its table, which the op counts itself."""
    model = quantized(embeddings(positions="slice_buffer"))
    applied = apply("EmbedLayerNorm", model)
    assert applied.rewrote == 1 and applied.records[0].variant.startswith("positions"), applied.misses
    assert applied.made["QuantizeLinear"] == -5 and applied.made["DequantizeLinear"] == -8
    node = embed_node(applied.model)
    assert node.input[3].endswith("position_table") and not node.input[8]  # no position ids: the op counts
    applied.assert_equivalent()


@pytest.mark.parametrize("pairs", [False, True])
def test_quantized_position_table_read_off_the_word_lookups_shape_is_proven_rows(pairs):
    """DistilBERT as NNCF writes it: the position table stored quantized, its ids read off Shape of
    the word lookup. The probe evaluates the table's DequantizeLinear, proves the rows 0..S-1, and the
    op takes the table as the graph dequantizes it (the Shape chain dies with the match). With a pair
    on each lookup (all ops), the position term's is dropped as the others are."""
    model = quantized(embeddings(segment=False, positions="word_shape"), pairs=pairs)
    applied = apply("EmbedLayerNorm", model)
    assert applied.rewrote == 1 and applied.records[0].variant.startswith("positions"), applied.misses
    node = embed_node(applied.model)
    table = {t.name: numpy_helper.to_array(t) for t in applied.model.graph.initializer}[node.input[3]]
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    q, s, z = (inits[f"position_table_{k}"] for k in "qsz")
    assert np.array_equal(table, (q.astype(np.int32) - z).astype(np.float32) * s)
    assert "Shape" not in {n.op_type for n in applied.model.graph.node}
    applied.assert_equivalent()


def gathered(model, per_channel=False):
    """``model`` as Intel Neural Compressor's QOperator model reads its tables: each Gather takes the
    stored uint8 table, and the gathered rows are dequantized (per tensor; ``per_channel``: one scale
    per column, a near miss)."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    nodes, extra = [], []
    for node in graph.node:
        nodes.append(node)
        if node.op_type != "Gather" or not node.input[0].endswith("_table"):
            continue
        name, table = node.input[0], numpy_helper.to_array(inits[node.input[0]])
        lo, hi = min(table.min(), 0), max(table.max(), 0)
        scale = np.float32((hi - lo) / 255)
        zero = np.uint8(round(-lo / scale))
        scales = np.full(table.shape[1], scale, np.float32) if per_channel else scale
        zeros = np.full(table.shape[1], zero, np.uint8) if per_channel else zero
        extra += [numpy_helper.from_array(np.clip(np.round(table / scale) + zero, 0, 255).astype(np.uint8), f"{name}_q"),
                  numpy_helper.from_array(scales, f"{name}_s"), numpy_helper.from_array(zeros, f"{name}_z")]
        out = node.output[0]
        node.input[0], node.output[0] = f"{name}_q", f"{out}_q"
        nodes.append(helper.make_node("DequantizeLinear", [f"{out}_q", f"{name}_s", f"{name}_z"], [out],
                                      **({"axis": -1} if per_channel else {})))
    return _rebuilt(model, nodes, extra)


@pytest.mark.parametrize("positions", ["slice_buffer", "word_shape"])
def test_rows_gathered_from_stored_integers_then_dequantized_are_the_dequantized_table(positions):
    """INC's QOperator BERT (canonicalized): Gather(table_q, ids) → DQ per tensor is Gather(DQ(table_q), ids),
    bit for bit (DequantizeLinear is elementwise): the op takes the dequantized tables, the position
    term proven rows 0..S-1 of the dequantized position table."""
    model = gathered(embeddings(positions=positions))
    applied = apply("EmbedLayerNorm", model)
    assert applied.rewrote == 1 and applied.records[0].variant.startswith("positions"), applied.misses
    assert applied.made["DequantizeLinear"] == -3 and applied.made["Gather"] <= -3
    node = embed_node(applied.model)
    inits = {t.name: numpy_helper.to_array(t) for t in applied.model.graph.initializer}
    source = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    q, s, z = (source[f"word_table_{k}"] for k in "qsz")
    assert np.array_equal(inits[node.input[2]], (q.astype(np.int32) - z).astype(np.float32) * s)
    applied.assert_equivalent(atol=0, rtol=0)  # no pair dropped: the same arithmetic


def test_rows_dequantized_per_channel_are_a_near_miss():
    applied = apply("EmbedLayerNorm", gathered(embeddings(positions="slice_buffer"), per_channel=True))
    assert applied.rewrote == 0
    assert "dequantized per channel" in applied.miss().reason


def test_rows_dequantized_after_the_lookup_with_ids_that_start_at_one_are_handed_on():
    """quantize_dynamic's lookups with Gather quantized (Optimum's avx512_vnni) are the same form; ids
    that are not rows 0..S-1 go to the op as computed, the tables as the graph dequantizes them."""
    applied = apply("EmbedLayerNorm", gathered(embeddings(positions="start_at_one")))
    assert applied.rewrote == 1 and applied.records[0].variant == "lookups", applied.misses
    assert applied.made["DequantizeLinear"] == -3
    tables = {t.name: t for t in applied.model.graph.initializer}
    assert tables[embed_node(applied.model).input[2]].data_type == TensorProto.FLOAT
    verdict = applied.assert_equivalent()
    assert all(o.max_abs < 1e-5 for o in verdict.outputs)  # nothing rounded is dropped
