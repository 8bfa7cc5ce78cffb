"""The probe (engine/probe.py) proves a mask by running the subgraph that computes it."""
import numpy as np
import onnx_graphsurgeon as gs

from fusekit.engine import probe


def _mask_reading_the_embeddings_shape(vocabulary):
    """transformers 5's form: the additive mask [B, 1, S, S] expanded to a shape read off the
    word lookup, so its subgraph holds the whole vocabulary table."""
    ids = gs.Variable("input_ids", np.int64, ["batch", "seq"])
    mask = gs.Variable("attention_mask", np.int64, ["batch", "seq"])
    table = gs.Constant("word", np.random.default_rng(0).standard_normal((vocabulary, 8)).astype(np.float32))
    graph = gs.Graph(inputs=[ids, mask], opset=17)
    words = graph.layer(op="Gather", inputs=[table, ids], outputs=["words"])[0]
    shape = graph.layer(op="Shape", inputs=[words], outputs=["shape"])[0]
    b = graph.layer(op="Slice", inputs=[shape, gs.Constant("b0", np.array([0])), gs.Constant("b1", np.array([1]))],
                    outputs=["b"])[0]
    s = graph.layer(op="Slice", inputs=[shape, gs.Constant("s0", np.array([1])), gs.Constant("s1", np.array([2]))],
                    outputs=["s"])[0]
    dims = graph.layer(op="Concat", inputs=[b, gs.Constant("one", np.array([1])), s, s], outputs=["dims"], attrs={"axis": 0})[0]
    kept = graph.layer(op="Cast", inputs=[mask], outputs=["kept"], attrs={"to": 1})[0]
    fill = graph.layer(op="Mul", inputs=[graph.layer(op="Sub", inputs=[gs.Constant("c1", np.array(1, np.float32)), kept],
                                                     outputs=["padded"])[0], gs.Constant("big", np.array(-1e9, np.float32))],
                       outputs=["fill"])[0]
    rows = graph.layer(op="Unsqueeze", inputs=[fill, gs.Constant("axes", np.array([1, 2]))], outputs=["rows"])[0]
    value = graph.layer(op="Expand", inputs=[rows, dims], outputs=["bias"])[0]
    graph.outputs = [value]
    return graph, value, table


def test_a_mask_reading_a_large_vocabularys_shape_is_proven_and_the_table_left_whole():
    """The probe carries the vocabulary cut to the rows its ids reach; the model keeps all of it."""
    graph, value, table = _mask_reading_the_embeddings_shape(vocabulary=probe.PROBE_ROWS * 4)
    whole = table.values.copy()
    found = probe.key_padding_mask(graph, value, {})
    assert isinstance(found, probe.KeyPaddingMask), found
    assert found.input.name == "attention_mask" and found.fill <= -1e9
    assert table.values.shape == whole.shape and np.array_equal(table.values, whole)


def test_only_tables_that_model_inputs_index_are_cut_and_only_while_the_probe_is_built():
    graph, value, table = _mask_reading_the_embeddings_shape(vocabulary=probe.PROBE_ROWS + 1)
    nodes = [n for n in graph.nodes]
    with probe._cut_tables(nodes, graph.inputs):
        assert table.shape[0] == probe.PROBE_ROWS
    assert table.shape[0] == probe.PROBE_ROWS + 1
    with probe._cut_tables(nodes, []):  # indexed by something the probe does not feed: whole
        assert table.shape[0] == probe.PROBE_ROWS + 1
