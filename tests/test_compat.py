"""Models ONNX Runtime loads in forms fusekit reads differently: each loads, fuses what it
holds, verifies against the file as it is, and the report says what was done to read it."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

import fusekit
from fusekit.errors import FusekitError
from conftest import TESTMODELS
from fusekit.modelio import read
from graphs import variants as V


def save(model, path):
    onnx.save(model, path)
    return path


def runs_in_ort(path):
    ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_nodes_out_of_topological_order_are_sorted(tmp_path):
    model = V.ln_pytorch()
    nodes = list(model.graph.node)[::-1]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    path = save(model, tmp_path / "reversed.onnx")
    runs_in_ort(path)
    fused, report = fusekit.optimize(path, target="ort")
    assert report.counts == {"LayerNorm": 1} and report.verification.ok
    assert any("not in topological order: sorted them" in n for n in report.notes), report.notes


def test_sorting_keeps_the_file_order_where_it_can():
    model = V.ln_pytorch()
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes[1:2] + nodes[:1] + nodes[2:])  # only the first two swapped
    from fusekit.compat import topological_order
    assert topological_order(model.graph, "m") == [1, 0, 2, 3, 4, 5, 6, 7, 8]


def test_opset_10_is_converted_and_verified(tmp_path):
    path = save(V.ln_pytorch(opset=10), tmp_path / "opset10.onnx")
    runs_in_ort(path)
    fused, report = fusekit.optimize(path, target="ort")
    assert (report.opset_before, report.opset_after) == (10, 17)  # LayerNormalization needs 17
    assert any("from opset 10 to 11" in n for n in report.notes), report.notes
    assert report.counts == {"LayerNorm": 1} and report.verification.ok


def test_opset_18_is_kept():
    """An opset that LayerNormalization needs no conversion for stays as it is (its ReduceMean
    reads its axes as an input)."""
    fused, report = fusekit.optimize(V.ln_pytorch_opset18(), target="ort")
    assert report.opset_before == report.opset_after == 18
    assert report.counts["LayerNorm"] == 1


def test_an_opset_that_cannot_be_converted_is_one_line(tmp_path):
    g = V.Graph("old", opset=9)
    g.output("y")
    g.op("ImageScaler", g.input("x"), out="y", scale=2.0)  # experimental in opset 9, gone since
    path = save(g.model(), tmp_path / "opset9.onnx")
    with pytest.raises(FusekitError, match="opset 9 cannot be converted to opset 11, which fusekit needs") as e:
        read(path)
    assert "\n" not in str(e.value)


def _ort_layer_norm(opset=14, stash_type=None, outputs=("y",)):
    """Add(x, skip) → LayerNormalization in the default domain below opset 17: ONNX Runtime's
    contrib op, as its transformers optimizer writes it."""
    g = V.Graph("ortln", opset)
    x, skip = g.input("x"), g.input("skip")
    gamma, beta = V._gamma_beta()
    total = g.op("Add", x, skip)
    attrs = {"epsilon": 1e-12, "axis": -1} | ({"stash_type": stash_type} if stash_type is not None else {})
    g.nodes.append(helper.make_node("LayerNormalization", [total, g.const("gamma", gamma), g.const("beta", beta)],
                                    list(outputs), name="ortln/LayerNormalization", **attrs))
    for name in outputs:
        g.output(name, shape=V.X_SHAPE if name == "y" else ["batch", "seq", 1])
    return g.model()


@pytest.mark.parametrize("target", fusekit.TARGETS)
def test_ort_layer_norm_below_17_reads_as_the_standard_op(tmp_path, target):
    path = save(_ort_layer_norm(), tmp_path / "ortln.onnx")
    runs_in_ort(path)
    with pytest.raises(onnx.checker.ValidationError):  # not ONNX: the contrib op ONNX Runtime registers
        onnx.checker.check_model(onnx.load(path))
    fused, report = fusekit.optimize(path, target=target)
    assert any("LayerNormalization node(s) are ONNX Runtime's contrib op" in n and "from opset 14 to 17" in n
               for n in report.notes), report.notes
    assert report.verification.ok, report.verification.summary()
    if target == "ort":
        assert report.counts == {"SkipLayerNorm": 1}
        total, node = fused.graph.node
        assert (total.op_type, node.op_type) == ("Sum", "LayerNormalization")
        assert next(a.f for a in node.attribute if a.name == "epsilon") == np.float32(1e-12)


def test_ort_layer_norm_keeps_its_attributes_and_statistics_outputs(tmp_path):
    path = save(_ort_layer_norm(opset=12, stash_type=1, outputs=("y", "mean", "inv_std")), tmp_path / "stats.onnx")
    runs_in_ort(path)
    model = read(path).model
    (ln,) = [n for n in model.graph.node if n.op_type == "LayerNormalization"]
    assert ln.domain == "" and list(ln.output) == ["y", "mean", "inv_std"]
    assert {a.name: onnx.helper.get_attribute_value(a) for a in ln.attribute} == {
        "epsilon": np.float32(1e-12), "axis": -1, "stash_type": 1}
    assert next(o.version for o in model.opset_import if o.domain == "") == 17
    fused, report = fusekit.optimize(path, target="ort")  # the residual respelled, the LayerNorm as it was
    assert report.counts == {"SkipLayerNorm": 1}
    (ln,) = [n for n in fused.graph.node if n.op_type == "LayerNormalization"]
    assert list(ln.output) == ["y", "mean", "inv_std"] and next(a.i for a in ln.attribute if a.name == "stash_type") == 1
    assert report.verification.ok and {o.name for o in report.verification.outputs} == {"y", "mean", "inv_std"}


def test_com_microsoft_ops_without_the_import_get_it(tmp_path):
    model = V.ln_pytorch()
    y = model.graph.output[0]
    for node in model.graph.node:
        if "y" in node.output:
            node.output[:] = ["ln_out"]
    model.graph.node.append(helper.make_node("FastGelu", ["ln_out"], ["y"], domain="com.microsoft"))
    assert y.name == "y" and not any(o.domain == "com.microsoft" for o in model.opset_import)
    path = save(model, tmp_path / "undeclared.onnx")
    runs_in_ort(path)
    fused, report = fusekit.optimize(path, target="ort")
    assert any("without importing the domain" in n for n in report.notes), report.notes
    assert report.counts == {"LayerNorm": 1} and report.verification.ok
    assert any(o.domain == "com.microsoft" for o in fused.opset_import)


def test_a_model_given_in_memory_is_read_the_same_and_left_as_it_was():
    model = V.ln_pytorch(opset=10)
    nodes = list(model.graph.node)[::-1]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    before = model.SerializeToString()
    fused, report = fusekit.optimize(model, target="ort")
    assert report.counts == {"LayerNorm": 1} and report.verification.ok
    assert "the nodes were not in topological order: sorted them" in report.notes
    assert any(n.startswith("converted the model from opset 10 to 11") for n in report.notes), report.notes
    assert model.SerializeToString() == before


def test_onnxruntime_optimizer_layer_norm_output_fuses_the_rest(tmp_path):
    """ONNX Runtime's transformers optimizer with only its LayerNorm fusion: contrib
    LayerNormalization in an opset-14 BERT, which fusekit reads and fuses further."""
    import logging
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model
    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    options = FusionOptions("bert")
    for name in ("skip_layer_norm", "bias_skip_layer_norm", "embed_layer_norm", "attention", "gelu", "bias_gelu"):
        setattr(options, f"enable_{name}", False)
    model = optimize_model(str(TESTMODELS / "bert_tiny_opset14.onnx"), model_type="bert", num_heads=4, hidden_size=32,
                           opt_level=0, optimization_options=options).model
    assert sum(n.op_type == "LayerNormalization" and n.domain == "" for n in model.graph.node) == 5
    path = save(model, tmp_path / "ort_layer_norm.onnx")
    fused, report = fusekit.optimize(path, target="ort")
    assert report.counts == {"Attention": 2, "BiasGelu": 2, "EmbedLayerNorm": 1, "Gelu": 2, "SkipLayerNorm": 4}
    assert report.verification.ok and any("5 LayerNormalization node(s)" in n for n in report.notes)
