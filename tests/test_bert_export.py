"""The committed TorchScript BERT exports: every LayerNorm and GELU fuses, outputs agree."""
import json

import onnx
import pytest

import fusekit
from conftest import TESTMODELS, op_histogram

MS = "com.microsoft"
EXPORTS = ["bert_tiny_opset14.onnx", "bert_tiny_opset14_sdpa.onnx"]


@pytest.mark.parametrize("target", fusekit.TARGETS)
@pytest.mark.parametrize("export", EXPORTS)
def test_every_layer_norm_and_gelu_fuses(export, target):
    fused, report = fusekit.optimize(TESTMODELS / export, target=target)
    # 2 layers: 2 LayerNorms each plus the embedding one; one GELU each
    assert report.counts["LayerNorm"] == 5 and report.counts["Gelu"] == 2, report.summary()
    hist = op_histogram(fused)
    assert not {"ReduceMean", "Erf", "Pow", "Sqrt"} & {op for _, op in hist}
    if target == "ort":
        assert hist[(MS, "EmbedLayerNormalization")] == 1 and hist[("", "LayerNormalization")] == 4
        assert report.counts["SkipLayerNorm"] == 4 and hist[("", "Sub")] == 8 and ("", "Add") not in hist
        assert hist[(MS, "BiasGelu")] == 2 and hist[(MS, "Attention")] == 2
    else:
        assert hist[("", "LayerNormalization")] == 5 and hist[("", "Gelu")] == 2
    assert report.verification.ok, report.verification.summary()
    assert all(o.max_rel <= 1e-5 for o in report.verification.outputs), report.verification.summary()
    assert not report.misses, report.summary()


def test_provenance_names_replaced_nodes(bert14):
    original = onnx.load(bert14)
    fused, report = fusekit.optimize(bert14, verify=False)
    props = {p.key: p.value for p in fused.metadata_props}
    provenance = json.loads(props["fusekit.provenance"])
    original_names = {n.name for n in original.graph.node}
    fused_names = {n.name for n in fused.graph.node}
    assert set(provenance) == {f.node for f in report.fused} and set(provenance) <= fused_names
    for record in provenance.values():
        assert record["fusion"] and record["variant"]
        assert {r["name"] for r in record["replaced"]} <= original_names  # traced back through fused steps
    skip = next(r for r in provenance.values() if r["fusion"] == "SkipLayerNorm")
    assert skip["steps"] == ["SkipLayerNorm"]
    assert sorted(r["op"] for r in skip["replaced"]) == ["Add", "Add"]  # the residual and the bias Add
    assert skip["constants"]["bias"] == "float32[32]"


def test_fused_model_only_uses_ops_of_its_declared_opset(bert14):
    for target in fusekit.TARGETS:
        fused, _ = fusekit.optimize(bert14, target=target, verify=False)
        versions = {o.domain: o.version for o in fused.opset_import}
        for node in fused.graph.node:
            domain = node.domain or ""
            if domain == MS:
                continue  # contrib ops: checked by running them in ONNX Runtime
            onnx.defs.get_schema(node.op_type, versions[domain], domain)  # raises if absent
        onnx.checker.check_model(fused, full_check=True)


def test_fusions_can_be_disabled(bert14):
    _, report = fusekit.optimize(bert14, disable=["Gelu"], verify=False)
    assert "Gelu" not in report.counts and "BiasGelu" not in report.counts
    with pytest.raises(fusekit.FusekitError, match="unknown fusion"):
        fusekit.optimize(bert14, disable=["Nope"])


def test_onnx_runtimes_optimized_model_leaves_the_slow_skip_layer_norm_kernel(bert14):
    """ONNX Runtime's transformers optimizer writes SkipLayerNormalization, whose CPU kernel is slow:
    --target ort unfuses each into the respelled sum and a LayerNormalization."""
    import logging

    from onnxruntime.transformers.optimizer import optimize_model
    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    optimized = optimize_model(str(bert14), model_type="bert", num_heads=4, hidden_size=32, opt_level=0).model
    assert op_histogram(optimized)[(MS, "SkipLayerNormalization")] == 4
    fused, report = fusekit.optimize(optimized, target="ort")
    hist = op_histogram(fused)
    assert report.counts == {"SkipLayerNorm": 4} and report.variants == {"SkipLayerNorm/contrib_bias": 4}
    assert hist[(MS, "SkipLayerNormalization")] == 0 and hist[("", "LayerNormalization")] == 4
    assert report.verification.ok, report.verification.summary()
