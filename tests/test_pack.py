"""optimize --pack: the token-wise ops run on the valid tokens alone, exactly, or a near miss says why not.

Verification's trials feed right padding, left padding and all-ones masks, so "verifies"
below covers the three. Timing is never asserted (benchmarks/pack_forms.py, bench_pack.py).
"""
import json
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import fusekit
from conftest import TESTMODELS, fuse_only, op_histogram
from fusekit.branches import BRANCH, view
from fusekit.cli import main
from fusekit.inputs import SETTINGS, make_inputs
from fusekit.runtime.bench import parse_lengths, row_lengths, with_lengths
from fusekit.verify import session
from graphs.attention import attention

CORPUS = TESTMODELS / "corpus"
MODELS = json.loads((CORPUS / "manifest.json").read_text())["models"]
MS = "com.microsoft"


def packed(path, target="ort", **kw):
    model, report = fusekit.optimize(path, target=target, pack=True, **kw)
    assert report.packed, report.summary()
    return model, report


@pytest.mark.parametrize("entry", MODELS, ids=lambda e: e["file"])
def test_corpus_packs_and_verifies_for_ort(entry):
    model, report = packed(CORPUS / entry["file"])
    assert report.verification.ok, report.verification.summary()
    layers = entry["expected"]["attention"]
    hist = op_histogram(model)
    assert hist[(MS, "MultiHeadAttention")] == layers and not hist[(MS, "Attention")]
    assert report.counts["Pack"] >= layers + 1  # the embeddings' pack, one per core output …
    assert report.packed["outputs"]["last_hidden_state"] == "tokens"


EXPORTERS = TESTMODELS / "exporters"
# ModernBERT, whose attention does not fuse yet (issue #21)
ATTENTION_PENDING = sorted(e["file"] for e in json.loads((EXPORTERS / "manifest.json").read_text())["models"]
                           if e["expected"].get("pending"))
# DeBERTa-v3: its disentangled bias, computed from Q and K outside the fused op, mixes positions
DISENTANGLED = sorted(p.name for p in EXPORTERS.glob("debertav3_*.onnx"))


@pytest.mark.parametrize("path", sorted(p for p in EXPORTERS.glob("*.onnx")
                                        if p.name not in ATTENTION_PENDING + DISENTANGLED), ids=lambda p: p.name)
def test_exporter_corpus_packs_and_verifies_for_ort(path):
    """tf2onnx, Optimum, float16 converters, MPNet: wherever attention fuses, --pack is exact."""
    model, report = packed(path, trials=3)
    assert report.verification.ok, report.verification.summary()
    assert [s.split(", ")[-1] for s in report.verification.settings] == ["right padding", "left padding", "no padding"]
    assert report.packed["outputs"]


@pytest.mark.parametrize("name", ATTENTION_PENDING)
def test_exporters_without_a_fused_attention_are_left_unpacked_with_the_reason(name):
    _, report = fusekit.optimize(EXPORTERS / name, target="ort", pack=True, trials=3)
    assert not report.packed and report.verification.ok, report.summary()
    (miss,) = [m for m in report.misses if m.fusion == "Pack"]
    assert "no attention core fusekit recognises" in miss.reason, miss


@pytest.mark.parametrize("target", ["ort", "onnx", "openvino"])
@pytest.mark.parametrize("name", DISENTANGLED)
def test_disentangled_attention_is_left_unpacked_with_the_reason(name, target):
    _, report = fusekit.optimize(EXPORTERS / name, target=target, pack=True, trials=3)
    assert not report.packed and report.verification.ok, report.summary()
    (miss,) = [m for m in report.misses if m.fusion == "Pack"]
    assert "a disentangled attention bias" in miss.reason and "mixes positions" in miss.reason, miss


@pytest.mark.parametrize("target", ["onnx", "openvino"])
@pytest.mark.parametrize("name", ["bert_dynamo18.onnx", "distilbert_ts14_sdpa.onnx", "albert_ts14_eager.onnx",
                                  "bert_ts14_eager_tf420.onnx"])
def test_corpus_packs_and_verifies_for_standard_targets(name, target):
    model, report = packed(CORPUS / name, target)
    assert report.verification.ok, report.verification.summary()
    assert not any(n.domain == MS for n in model.graph.node)


@pytest.mark.parametrize("target", ["ort", "onnx", "openvino"])
def test_tiny_bert_packs_on_every_target(bert14, target):
    model, report = packed(bert14, target)
    assert report.verification.ok, report.verification.summary()
    assert len(report.verification.settings) == 4  # right, left, none, right


def test_openvino_still_compiles_the_packed_core_into_its_attention_kernel(bert14, tmp_path):
    """The packed branch compiles as the unpacked model does, one attention kernel per layer; the
    branch form compiles with its If kept for run time."""
    import openvino as ov
    model, _ = packed(bert14, "openvino", verify=False)
    core = ov.Core()

    def compiled_layers(m):
        onnx.save(m, tmp_path / "m.onnx")
        compiled = core.compile_model(core.read_model(str(tmp_path / "m.onnx")), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return [op.get_rt_info()["layerType"].astype(str) for op in compiled.get_runtime_model().get_ops()]
    layers = compiled_layers(view(model))
    assert "Softmax" not in layers and "MatMul" not in layers  # Q·Kᵀ, softmax and ·V inside one kernel per layer
    assert layers.count("Subgraph") == 2
    assert "If" in compiled_layers(model)


def test_padded_positions_are_zero_and_valid_ones_match(bert14):
    """Right and left padding, and a row without padding: valid positions equal the original's,
    padded positions are 0; with no padding at all every output equals the original's."""
    model, _ = packed(bert14, verify=False)
    original, candidate = session(str(bert14)), session(model)
    interface = onnx.load(str(bert14))
    for setting in SETTINGS[:3]:
        feeds = make_inputs(interface, setting, seed=3)
        want = dict(zip(["h", "p"], original.run(None, feeds)))
        got = dict(zip(["h", "p"], candidate.run(None, feeds)))
        keep = feeds["attention_mask"].astype(bool)
        assert np.abs(got["h"][keep] - want["h"][keep]).max() < 1e-5
        assert not got["h"][~keep].any()
        rows = keep[:, 0]  # the pooler reads token 0: exact where it is a real token
        assert np.abs(got["p"][rows] - want["p"][rows]).max() < 1e-5
        if setting.padding == "none":
            assert np.abs(got["p"] - want["p"]).max() < 1e-5


@pytest.mark.parametrize("target", ["ort", "onnx", "openvino"])
def test_a_batch_without_any_token_runs(bert14, target):
    """The stream keeps one row to read even then; every position is padded, so all zeros."""
    model, _ = packed(bert14, verify=False, target=target)
    feeds = make_inputs(onnx.load(str(bert14)), SETTINGS[0], seed=0)
    feeds["attention_mask"][:] = 0
    hidden, _ = session(model).run(None, feeds)
    assert not hidden.any()


def test_verification_reports_packed_outputs(bert14):
    _, report = packed(bert14)
    text = report.verification.summary()
    assert "last_hidden_state" in text and "padded positions not computed (packed)" in text
    pooler = next(o for o in report.verification.outputs if o.name == "pooler_output")
    assert pooler.packed == "derived" and pooler.padded_rows >= 1  # the left-padded trial's rows
    assert "read from a padded position" in text


def test_provenance_records_the_packing_points(bert14, tmp_path):
    out = tmp_path / "packed.onnx"
    assert main(["optimize", str(bert14), "--pack", "-o", str(out)]) == 0
    model = onnx.load(str(out))
    props = {p.key: p.value for p in model.metadata_props}
    records = json.loads(props["fusekit.provenance"])
    assert {r["variant"] for r in records.values() if r["fusion"] == "Pack"} == {"pack", "unpack", "attention"}
    mha = next(r for r in records.values() if r["op"] == "MultiHeadAttention")
    assert mha["steps"] == ["Attention", "Pack"] and len(mha["replaced"]) > 10  # traced to the original nodes
    assert json.loads(props["fusekit.pack"])["mask"] == "attention_mask"
    explanation = fusekit.explain(str(bert14), pack=True)
    assert "Pack" in explanation.fusions() and explanation.per_fusion("Pack")["fused"] >= 3
    accounting = fusekit.diff(str(bert14), str(out)).to_dict()["accounting"]
    assert accounting["ok"]


def _with_node_between_layers(src, make) -> onnx.ModelProto:
    """``src`` with ``make(x) -> (nodes, y)`` inserted on the hidden states between layer 0 and 1."""
    model = onnx.load(str(src))
    x = "/encoder/layer.0/output/LayerNorm/Add_1_output_0"
    nodes, y = make(x)
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name == x and "layer.1" in node.name:
                node.input[i] = y
    last = max(i for i, n in enumerate(model.graph.node) if x in n.output)
    for k, node in enumerate(nodes):
        model.graph.node.insert(last + 1 + k, node)
    return model


def test_a_node_mixing_positions_is_a_near_miss(bert14):
    """x + mean over the sequence of x: every token reads every other, padding included."""
    def mean_over_sequence(x):
        mean = helper.make_node("ReduceMean", [x], ["seq_mean"], name="mixer/ReduceMean", axes=[1], keepdims=1)
        add = helper.make_node("Add", [x, "seq_mean"], ["mixed"], name="mixer/Add")
        return [mean, add], "mixed"
    model = _with_node_between_layers(bert14, mean_over_sequence)
    fused, report = fusekit.optimize(model, pack=True)
    assert not report.packed and report.verification.ok
    (miss,) = [m for m in report.misses if m.fusion == "Pack"]
    assert miss.at == "mixer/ReduceMean" and "across positions" in miss.reason and "mixer/Add" in miss.reason
    # a whole-graph pass has no pattern nodes to count: no "matched 0/0 nodes"
    assert str(miss).startswith("Pack/tokens at 'mixer/ReduceMean': stopped at 'mixer/ReduceMean': "), str(miss)
    assert not any(n.op_type in ("NonZero", "If") for n in fused.graph.node)  # left as it was, no branch
    assert any("not packed" in n for n in report.notes)


def test_a_token_wise_node_in_between_still_packs(bert14):
    """The same place, a mean over the hidden features instead: token-wise, so it packs."""
    def mean_over_features(x):
        mean = helper.make_node("ReduceMean", [x], ["feature_mean"], name="tokenwise/ReduceMean", axes=[2], keepdims=1)
        add = helper.make_node("Sub", [x, "feature_mean"], ["centered"], name="tokenwise/Sub")
        return [mean, add], "centered"
    model = _with_node_between_layers(bert14, mean_over_features)
    _, report = packed(model)
    assert report.verification.ok, report.verification.summary()


def _halves_multiplied(axis):
    """x + (x[…, :16] ⊙ x[…, 16:]) · W, as a GeGLU multiplies its projection's halves (``axis`` 2), or
    x + x[:, :1] ⊙ x[:, 1:2] · W read along the sequence (``axis`` 1)."""
    def make(x):
        bounds = [helper.make_tensor(n, TensorProto.INT64, [1], [v]) for n, v in
                  (("lo", 0), ("mid", 16 if axis == 2 else 1), ("hi", 32 if axis == 2 else 2), ("axis", axis))]
        consts = [helper.make_node("Constant", [], [f"{b.name}_value"], value=b) for b in bounds]
        weight = helper.make_tensor("w", TensorProto.FLOAT, [16 if axis == 2 else 32, 32],
                                    np.linspace(-0.1, 0.1, (16 if axis == 2 else 32) * 32).tolist())
        nodes = consts + [
            helper.make_node("Constant", [], ["w_value"], value=weight),
            helper.make_node("Slice", [x, "lo_value", "mid_value", "axis_value"], ["first"], name="halves/Slice"),
            helper.make_node("Slice", [x, "mid_value", "hi_value", "axis_value"], ["second"], name="halves/Slice_1"),
            helper.make_node("Mul", ["first", "second"], ["product"], name="halves/Mul"),
            helper.make_node("MatMul", ["product", "w_value"], ["projected"], name="halves/MatMul"),
            helper.make_node("Add", [x, "projected"], ["gated"], name="halves/Add")]
        return nodes, "gated"
    return make


def test_a_slice_of_the_features_is_token_wise(bert14):
    """A GeGLU's halves: Slices of the last axis (given as axis 2, moved to -1 on [T, ·])."""
    _, report = packed(_with_node_between_layers(bert14, _halves_multiplied(axis=2)))
    assert report.verification.ok, report.verification.summary()


def test_a_slice_of_the_sequence_is_a_near_miss(bert14):
    model = _with_node_between_layers(bert14, _halves_multiplied(axis=1))
    _, report = fusekit.optimize(model, pack=True, verify=False)
    (miss,) = [m for m in report.misses if m.fusion == "Pack"]
    assert miss.at == "halves/Slice" and "cuts axes [1], not only the last" in miss.reason


@pytest.mark.parametrize("target", ["ort", "openvino"])
def test_a_constant_broadcast_over_positions_is_reshaped(bert14, target):
    """x · a [1, 1, H] constant: the same at every position, so it packs ([H] on [T, H])."""
    def scale(x):
        gamma = helper.make_tensor("per_feature", TensorProto.FLOAT, [1, 1, 32], np.linspace(0.5, 1.5, 32).tolist())
        const = helper.make_node("Constant", [], ["per_feature_value"], value=gamma)
        return [const, helper.make_node("Mul", [x, "per_feature_value"], ["scaled"], name="scale/Mul")], "scaled"
    _, report = packed(_with_node_between_layers(bert14, scale), target)
    assert report.verification.ok, report.verification.summary()


def test_a_constant_varying_over_positions_is_a_near_miss(bert14):
    """x + a [1, 16, H] constant (a position table): position-dependent, so not packed."""
    def add_table(x):
        table = helper.make_tensor("table", TensorProto.FLOAT, [1, 16, 32], np.zeros(16 * 32).tolist())
        const = helper.make_node("Constant", [], ["table_value"], value=table)
        return [const, helper.make_node("Add", [x, "table_value"], ["shifted"], name="table/Add")], "shifted"
    model = _with_node_between_layers(bert14, add_table)
    _, report = fusekit.optimize(model, pack=True, verify=False)
    (miss,) = [m for m in report.misses if m.fusion == "Pack"]
    assert "table/Add" in miss.reason and "varies over positions" in miss.reason


def test_a_model_without_mask_has_nothing_to_pack():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "sequence", 4])
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], np.eye(4, dtype=np.float32).ravel().tolist())
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
                              "mlp", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    _, report = fusekit.optimize(model, pack=True)
    (miss,) = report.misses
    assert miss.fusion == "Pack" and "no attention mask input: nothing to pack" in miss.reason
    assert not report.packed and report.verification.ok


# ---------------------------------------------------------------- a position bias beside the mask (MPNet)

MPNET = TESTMODELS / "exporters" / "mpnet_ts14_tf5.onnx"


@pytest.mark.parametrize("target", ["ort", "onnx", "openvino"])
def test_mpnet_packs_with_its_position_bias_and_verifies(target):
    """MPNet adds a relative position bias [B, N, S, S] to the scores: it depends on S alone, so
    the packed core, on the unpacked layout, adds it exactly as before, whichever side the padding is on."""
    model, report = packed(MPNET, target)
    assert report.verification.ok, report.verification.summary()
    padding = [s.split(", ")[-1] for s in report.verification.settings]
    assert padding == ["right padding", "left padding", "no padding", "right padding"]
    if target == "ort":
        cores = [n for n in view(model).graph.node if n.op_type == "MultiHeadAttention"]
        assert len(cores) == 2 and not op_histogram(model)[(MS, "Attention")]
        assert all(len(n.input) == 6 and n.input[5] for n in cores)  # attention_bias carried


def _fused_with_bias(bias) -> onnx.ModelProto:
    """One attention layer fused into com.microsoft.Attention before --pack, its attention_bias
    replaced by what ``bias(nodes, graph_inputs) -> name`` builds."""
    fused, _ = fuse_only(attention("bias_and_mask", "scores_div"), "Attention")
    nodes = []
    core = next(n for n in fused.graph.node if n.op_type == "Attention")
    core.input[5] = bias(nodes, fused.graph.input)
    at = list(fused.graph.node).index(core)
    for k, node in enumerate(nodes):
        fused.graph.node.insert(at + k, node)
    return fused


@pytest.mark.parametrize("target", ["ort", "onnx", "openvino"])
def test_a_position_bias_broadcast_over_the_batch_packs(target):
    """[1, N, S, S], (k − q) times a slope per head, in one layer whose attention output is the model's."""
    _, report = packed(attention("bias_and_mask", "scores_div"), target)
    assert report.verification.ok, report.verification.summary()
    assert report.packed["outputs"] == {"y": "tokens"}


@pytest.mark.parametrize("target", ["onnx", "openvino"])
def test_an_attention_output_that_is_a_model_output_is_zero_at_padded_positions(target):
    """The unfused core computes its padded queries from zeros; the output reads them back as 0."""
    model = attention("add")
    fused, _ = packed(model, target, verify=False)
    original, candidate = session(model), session(fused)
    for setting in SETTINGS[:3]:
        feeds = make_inputs(model, setting, seed=1)
        (want,), (got,) = original.run(None, feeds), candidate.run(None, feeds)
        keep = feeds["attention_mask"].astype(bool)
        assert np.abs(got[keep] - want[keep]).max() < 1e-5 and not got[~keep].any()


def test_a_bias_that_depends_on_token_values_is_a_near_miss():
    """A bias computed from the ids' values is no position bias: the packed core is not proven to get it right."""
    def from_ids(nodes, inputs):
        inputs.append(helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]))
        ids = helper.make_tensor("ids_axes", TensorProto.INT64, [2], [1, 3])
        keys = helper.make_tensor("key_axes", TensorProto.INT64, [2], [1, 2])
        nodes += [helper.make_node("Cast", ["input_ids"], ["ids_f"], name="bias/Cast", to=TensorProto.FLOAT),
                  helper.make_node("Constant", [], ["ids_axes"], value=ids),
                  helper.make_node("Constant", [], ["key_axes"], value=keys),
                  helper.make_node("Unsqueeze", ["ids_f", "ids_axes"], ["rows"], name="bias/Rows"),
                  helper.make_node("Unsqueeze", ["ids_f", "key_axes"], ["cols"], name="bias/Cols"),
                  helper.make_node("Mul", ["rows", "cols"], ["ids_bias"], name="bias/Mul")]
        return "ids_bias"
    _, report = fusekit.optimize(_fused_with_bias(from_ids), pack=True)
    assert not report.packed and report.verification.ok
    (miss,) = [m for m in report.misses if m.fusion == "Pack"]
    assert "its bias 'ids_bias' is not a position bias (the bias changes with the values of 'input_ids'" \
        in miss.reason, miss.reason


def test_a_bias_read_from_the_hidden_states_is_a_near_miss():
    """A bias from the hidden states' values (the product of two tokens' largest features), not their shape."""
    def from_hidden(nodes, inputs):
        axes = helper.make_tensor("bias_axes", TensorProto.INT64, [1], [1])
        nodes += [helper.make_node("ReduceMax", ["x"], ["largest"], name="bias/ReduceMax", axes=[2], keepdims=1),
                  helper.make_node("Constant", [], ["bias_axes"], value=axes),
                  helper.make_node("Unsqueeze", ["largest", "bias_axes"], ["rows"], name="bias/Rows"),  # [B, 1, S, 1]
                  helper.make_node("Transpose", ["largest"], ["per_key"], name="bias/Transpose", perm=[0, 2, 1]),
                  helper.make_node("Unsqueeze", ["per_key", "bias_axes"], ["cols"], name="bias/Cols"),  # [B, 1, 1, S]
                  helper.make_node("Mul", ["rows", "cols"], ["hidden_bias"], name="bias/Mul")]
        return "hidden_bias"
    _, report = fusekit.optimize(_fused_with_bias(from_hidden), pack=True)
    assert not report.packed and report.verification.ok
    (miss,) = [m for m in report.misses if m.fusion == "Pack"]
    assert miss.at == "bias/Rows" and "mixes positions, and attention" in miss.reason \
        and "reads its result" in miss.reason, miss.reason


def test_cli_says_why_it_did_not_pack(tmp_path, capsys):
    src = TESTMODELS / "int8" / "matmul_u8s8.onnx"
    assert main(["optimize", str(src), "--pack", "--no-verify", "-o", str(tmp_path / "out.onnx")]) == 0
    out = capsys.readouterr().out
    # its attention fuses around the integers into a MultiHeadAttention, which packing does not take yet
    assert "not packed: " in out and "not yet a MultiHeadAttention" in out, out


def test_bench_lengths():
    assert parse_lengths("112,87,73") == [112, 87, 73]
    assert parse_lengths("uniform:16:128") == ("uniform", 16, 128)
    assert row_lengths([5, 3], 3, 8) == [5, 3, 5]
    drawn = row_lengths(("skewed", 16, 128), 64, 128)
    assert min(drawn) >= 16 and max(drawn) <= 128 and np.median(drawn) < 72  # most rows short
    feeds = with_lengths({"attention_mask": np.ones((2, 4), np.int64), "input_ids": np.ones((2, 4), np.int64)}, [3, 1])
    assert feeds["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]] and feeds["input_ids"].all()
    for bad in ("uniform:0:5", "uniform:9:5", "skewed:x", "1,0"):
        with pytest.raises(fusekit.FusekitError):
            parse_lengths(bad)
    with pytest.raises(fusekit.FusekitError, match="does not fit"):
        row_lengths([20], 1, 16)


def test_bench_cli_with_lengths(bert14, capsys):
    assert main(["bench", str(bert14), "--seq", "16", "--batch", "4", "--lengths", "uniform:2:16",
                 "--iterations", "2", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert "4×16 " in out and "% " in out and "lengths uniform:2:16" in out


# ---------------------------------------------------------------- the branch form


@pytest.mark.parametrize("target", ["ort", "onnx", "openvino"])
def test_the_branch_form_holds_the_packed_and_the_unpacked_graph_sharing_the_weights(bert14, target):
    """If(padding): the packed graph, else the model fused without --pack; every weight once, in the
    outer graph, so the file is the weights once and the two graphs."""
    model, _ = packed(bert14, target, verify=False)
    unpacked, _ = fusekit.optimize(bert14, target=target, verify=False)
    assert [n.op_type for n in model.graph.node] == ["ReduceMin", "Equal", "If"]
    branch = model.graph.node[2]
    assert branch.name == BRANCH
    then, other = (next(a.g for a in branch.attribute if a.name == k) for k in ("then_branch", "else_branch"))
    assert op_histogram(view(model, "else_branch")) == op_histogram(unpacked)  # no padding: the fused model itself
    assert op_histogram(view(model)) == Counter((n.domain, n.op_type) for n in then.node)
    assert any(n.op_type == "NonZero" for n in then.node) and not any(n.op_type == "NonZero" for n in other.node)
    assert not then.initializer and not other.initializer  # both read the outer graph's weights
    names = [t.name for t in model.graph.initializer]
    assert len(names) == len(set(names)) and set(names) >= {t.name for t in unpacked.graph.initializer}
    weights = lambda m: sum(t.ByteSize() for t in m.graph.initializer)  # noqa: E731
    size = lambda m: m.ByteSize()  # noqa: E731
    assert weights(model) < 1.05 * weights(unpacked)  # the packing points' few small constants
    # the file: the weights once, and the two graphs (a packed branch is its view without the weights)
    assert size(model) < size(unpacked) + size(view(model)) - weights(view(model)) + 1024
    original = onnx.load(str(bert14))
    assert [(o.name, o.type) for o in model.graph.output] == [(o.name, o.type) for o in original.graph.output]
    assert [(o.name, o.type) for o in model.graph.input] == [(o.name, o.type) for o in original.graph.input]


def test_the_branch_runs_the_packed_graph_exactly_when_the_mask_has_padding(bert14):
    """The condition alone, as the model computes it: right, left, all and no padding."""
    model, _ = packed(bert14, verify=False)
    condition = onnx.ModelProto()
    condition.CopyFrom(model)
    del condition.graph.node[2:], condition.graph.output[:]
    condition.graph.output.append(helper.make_tensor_value_info("fusekit/pack/padding", TensorProto.BOOL, []))
    sess = session(condition)
    feeds = make_inputs(onnx.load(str(bert14)), SETTINGS[0], seed=0)
    names = {i.name for i in sess.get_inputs()}
    for mask, padding in (([[1, 1, 1, 0], [1, 1, 1, 1]], True), ([[0, 1, 1, 1], [1, 1, 1, 1]], True),
                          ([[0, 0, 0, 0], [0, 0, 0, 0]], True), ([[1, 1, 1, 1], [1, 1, 1, 1]], False)):
        feeds["attention_mask"] = np.array(mask, np.int64)
        (got,) = sess.run(None, {k: v for k, v in feeds.items() if k in names})
        assert bool(got) is padding, mask


def test_verification_runs_both_branches(bert14):
    """Trials with padding run the packed graph, the one without runs the unpacked one; with fewer
    trials than that takes, a trial without padding is added, so that both always run."""
    _, report = packed(bert14)
    assert report.verification.branches == {"padding": [1, 2, 4], "no padding": [3]}
    assert "trials 1, 2, 4 ran the packed branch (padding); trial 3 ran the unpacked branch" \
        in report.verification.summary()
    _, report = packed(bert14, trials=1)
    assert report.verification.branches == {"padding": [1], "no padding": [2]} and report.verification.ok
    _, report = packed(bert14, "openvino", trials=2)  # left padding, then none added
    assert report.verification.branches == {"padding": [1, 2], "no padding": [3]} and report.verification.ok


def test_the_reports_read_into_the_branches(bert14, tmp_path):
    """inspect, explain, diff (structural too) and the provenance read the packed branch, as they read
    the packed graph alone, and say which graph they read; the else branch's fused nodes keep
    their records. Counts: each fusion once per layer, not once per branch."""
    out = tmp_path / "packed.onnx"
    assert main(["optimize", str(bert14), "--pack", "-o", str(out)]) == 0
    model = onnx.load(str(out))
    inspection = fusekit.inspect_model(str(out))
    assert inspection.fused_ops[f"{MS}.MultiHeadAttention"] == 2 and inspection.fused_ops["LayerNormalization"] == 4
    assert inspection.architecture.layers == 2 and inspection.architecture.heads == 4
    assert any("packed as a branch" in n for n in inspection.notes), inspection.notes
    for structural in (False, True):
        d = fusekit.diff(str(bert14), str(out), use_provenance=not structural)
        assert d.to_dict()["accounting"]["ok"] and d.ok
        ops_after = d.to_dict()["ops"]["after"]
        assert ops_after["com.microsoft.MultiHeadAttention"] == 2 and "If" not in ops_after
    records = json.loads({p.key: p.value for p in model.metadata_props}["fusekit.provenance"])
    else_nodes = {n.name for n in view(model, "else_branch").graph.node}
    attention = [r for r in records.values() if r["op"] == "Attention"]
    assert len(attention) == 2 and {r["node"] for r in attention} <= else_nodes  # the no-padding branch's cores
    explanation = fusekit.explain(str(bert14), pack=True)
    assert explanation.per_fusion("Attention")["layers_fused"] == [0, 1]
    assert explanation.per_fusion("Pack")["fused"] >= 3
    assert main(["inspect", str(out), "--html", str(tmp_path / "i.html")]) == 0
    assert main(["diff", str(bert14), str(out), "--html", str(tmp_path / "d.html")]) == 0


def test_run_and_bench_read_the_branch_form(bert14, tmp_path, capsys):
    """Made-up ids stay inside the vocabulary the packed branch's embedding lookup reads."""
    from fusekit.inputs import _vocab_size
    out = tmp_path / "packed.onnx"
    assert main(["optimize", str(bert14), "--pack", "--no-verify", "-o", str(out)]) == 0
    assert _vocab_size(onnx.load(str(out)), "input_ids") == 128
    assert main(["run", str(out), "--shape", "input_ids=2x16"]) == 0
    assert main(["bench", str(bert14), str(out), "--seq", "16", "--batch", "2", "--lengths", "16,9",
                 "--iterations", "2", "--warmup", "0", "--backend", "ort,openvino"]) == 0
    assert "last_hidden_state" in capsys.readouterr().out


@pytest.mark.parametrize("target", ["ort", "openvino"])
def test_openvino_runs_both_branches_exactly(bert14, target, tmp_path):
    """OpenVINO compiles the If with its branches: with padding and without, valid positions equal
    the original's (verification runs ONNX Runtime alone)."""
    import openvino as ov
    model, _ = packed(bert14, target, verify=False)
    onnx.save(model, tmp_path / "branch.onnx")
    compiled = ov.Core().compile_model(str(tmp_path / "branch.onnx"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    original = session(str(bert14))
    for setting in SETTINGS[:3]:  # right, left, none
        feeds = make_inputs(onnx.load(str(bert14)), setting, seed=5)
        want = original.run(None, feeds)[0]
        got = compiled(feeds)[compiled.output(0)]
        keep = feeds["attention_mask"].astype(bool)
        assert np.abs(got[keep] - want[keep]).max() < 1e-4 and not got[~keep].any(), setting


def test_a_bool_mask_branches_on_its_integers(bert14):
    """ReduceMin takes numbers: a bool mask is cast first; both branches verify."""
    model = onnx.load(str(bert14))
    next(i for i in model.graph.input if i.name == "attention_mask").type.tensor_type.elem_type = TensorProto.BOOL
    fused, report = packed(model)
    assert [n.op_type for n in fused.graph.node] == ["Cast", "ReduceMin", "Equal", "If"]
    assert report.verification.ok and report.verification.branches == {"padding": [1, 2, 4], "no padding": [3]}
    read = view(fused)  # the packed branch alone: the condition is not part of it
    assert op_histogram(read)[(MS, "MultiHeadAttention")] == 2 and "fusekit/pack/mask_as_int" not in {n.name for n in read.graph.node}
