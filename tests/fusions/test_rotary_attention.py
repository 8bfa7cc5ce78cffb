"""RotaryAttention alone on one ModernBERT layer (graphs/rotary_attention.py): eager and sdpa, global
and local, fuse for both targets with the rotary embedding inside and verify, padded tokens whose
window holds no real one included; each near miss is refused for the reason a user would need."""
import numpy as np
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest

from fusekit.engine import probe, shapes
from graphs.rotary_attention import HIDDEN, INV_FREQ, LOWEST, SIZE, rotary_attention
from one_rule import apply

# ONNX's RotaryEmbedding and Attention need opset 23: the onnx form's layer is built there
OPSET = {"ort": 17, "onnx": 23}
OPS = {"ort": ("MultiHeadAttention", "com.microsoft"), "onnx": ("Attention", "")}


def fuse(target="ort", **form):
    return apply("RotaryAttention", rotary_attention(opset=OPSET[target], **form), target=target)


def run(model, mask, seed=0):
    x = np.random.default_rng(seed).standard_normal(mask.shape + (HIDDEN,)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x, "attention_mask": mask})[0]


@pytest.mark.parametrize("target", ["ort", "onnx"])
@pytest.mark.parametrize("form, variant", [("eager", "packed_rotary"),
                                           ("sdpa", "packed_rotary[nan_guard,sqrt_scale_qk]")])
@pytest.mark.parametrize("window", [None, 2], ids=["global", "local"])
def test_fuses_with_its_rotary_embedding_and_verifies(target, form, variant, window):
    result = fuse(target, form=form, window=window)
    assert result.rewrote == 1 and not result.misses, result.misses
    assert [r.variant for r in result.records] == [variant]
    attention, domain = OPS[target]
    fused = [(n.op_type, n.domain) for n in result.model.graph.node if n.op_type in (attention, "RotaryEmbedding")]
    assert sorted(fused) == sorted([(attention, domain)] + [("RotaryEmbedding", domain)] * 2)
    assert {"Softmax", "Neg", "Transpose"}.isdisjoint(result.ops())
    result.assert_equivalent()  # right, left and no padding, sequences longer than the window


@pytest.mark.parametrize("target", ["ort", "onnx"])
@pytest.mark.parametrize("form", ["eager", "sdpa"])
def test_a_padded_token_whose_window_holds_no_real_one_is_carried_as_exported(target, form):
    """eager's softmax of a row all at the fill is uniform, sdpa's NaN guard makes it 0; the fused
    ops do otherwise (MultiHeadAttention averages, ONNX Attention gives 0), and the rewrite puts
    those rows right."""
    result = fuse(target, form=form, window=2)
    mask = np.array([[1] * 3 + [0] * 10, [0] * 9 + [1] * 4], np.int64)  # rows 6.. and ..5 keep no key
    expected, got = run(result.original, mask), run(result.model, mask)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # the case is really there: each such row is the mean of all V (one vector) or 0
    dead = expected[0, 6:]
    assert np.abs(dead).max() > 0 if form == "eager" else np.abs(dead).max() == 0
    np.testing.assert_allclose(dead, np.broadcast_to(dead[:1], dead.shape), rtol=1e-5, atol=1e-6)


def test_torchscript_split_reads_as_the_slices_after_canonicalization():
    """The Split into pieces of one is rewritten into Slices first (SlicesAsSplit); the fusion reads those."""
    split = apply("SlicesAsSplit", rotary_attention(unbind="split"))
    assert split.made == {"Split": -1, "Slice": 3} and split.rewrote == 1
    result = apply("RotaryAttention", split.model)
    assert result.rewrote == 1 and not result.misses
    result.assert_equivalent()


@pytest.mark.parametrize("target", ["ort", "onnx"])
@pytest.mark.parametrize("rows", [64, 20], ids=["longer_than_the_probes", "shorter"])
def test_a_constant_cache_sliced_to_the_sequence_fuses(target, rows):
    """cos_cached[:, :, :S]: the rows the cache has are proven; past them the original cannot run
    (its Mul does not broadcast), and neither can the fused model (the ops refuse a short cache)."""
    result = fuse(target, table="cached", rows=rows)
    assert result.rewrote == 1 and not result.misses, result.misses
    result.assert_equivalent()
    graph = gs.import_onnx(shapes.infer(result.original))
    cos, sin = (next(n.outputs[0] for n in graph.nodes if n.op == "Slice" and n.inputs[0].name.endswith(f"{t}_cached"))
                for t in ("cos", "sin"))
    assert probe.rotary_table(graph, cos, sin, SIZE, {}).rows == (None if rows > 33 else rows)
    long = np.ones((2, rows + 5), np.int64)
    for model in (result.original, result.model):
        with pytest.raises(Exception):
            run(model, long)


@pytest.mark.parametrize("form, reason", [
    (dict(positions="shifted"), "the rotary table is not cos/sin(p · f) for positions p = 0..S-1"),
    (dict(table="halves"), "the rotary table's two halves differ: not the rotate-half layout"),
    (dict(table="fixed", rows=20), "the rotary table has shape [1, 1, 20, 8] for a 2×6 input, not (1, 1, 6, 8): "
                                   "one row per position, the same for every batch row and head"),
    (dict(window=2, band="counted"),
     "the mask's padded and out-of-band keys take several values ([-3.4028234663852886e+38, 0.0])"),
], ids=["positions_not_from_0", "not_rotate_half", "cache_not_sliced", "band_moves_with_the_padding"])
def test_near_misses(form, reason):
    result = fuse("ort", **form)
    assert not result.rewrote and "MultiHeadAttention" not in result.ops()
    assert result.miss().reason == reason


def _proofs(model):
    """What the probes find in one layer: its rotary table and its mask."""
    graph = gs.import_onnx(shapes.infer(model))
    cos, sin = (next(n for n in graph.nodes if n.op == op).outputs[0].outputs[0].outputs[0] for op in ("Cos", "Sin"))
    added = next(n for n in graph.nodes if n.op == "Where").outputs[0]
    return probe.rotary_table(graph, cos, sin, SIZE, {}), probe.windowed_mask(graph, added, {}, None, 2)


@pytest.mark.parametrize("window, found, rows", [(None, None, False), (2, 2, True), (5000, None, True)],
                         ids=["global", "local", "wider_than_the_probes"])
def test_the_probes_read_the_frequencies_and_the_window(window, found, rows):
    table, mask = _proofs(rotary_attention(window=window))
    np.testing.assert_allclose(table.inv_freq, INV_FREQ, rtol=1e-6)
    assert (mask.window, mask.rows, mask.kept, mask.fill, mask.input.name) == (found, rows, 0.0, LOWEST,
                                                                               "attention_mask")


@pytest.mark.parametrize("window, carried", [(None, "key_padding_mask"), (5000, "attention_bias")],
                         ids=["one_value_per_key", "per_query"])
def test_a_mask_computed_per_query_is_carried_as_computed(window, carried):
    """No probe tells a band of ±5000 from none: a mask with a row per query stays as computed."""
    result = fuse("ort", window=window)
    (node,) = [n for n in result.model.graph.node if n.op_type == "MultiHeadAttention"]
    roles = ("query", "key", "value", "bias", "key_padding_mask", "attention_bias")
    assert [role for role, name in zip(roles, node.input) if name][3:] == [carried]
    result.assert_equivalent()
