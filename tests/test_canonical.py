"""Canonicalization rules: each rewrites its spelling exactly, and refuses a near miss with the reason."""
import fusekit
from conftest import fuse_only, ops
from testmodels import canonical as C


def rule_only(model, *names, target="ort"):
    fused, report = fuse_only(model, *names, target=target)
    return fused, report


def test_global_average_pool_becomes_the_last_axis_mean():
    fused, report = rule_only(C.ln_global_average_pool(), "MeanAsGlobalAveragePool")
    assert report.canonical == {"MeanAsGlobalAveragePool": 2}
    assert not report.counts  # a rule fuses nothing
    assert "GlobalAveragePool" not in ops(fused) and "ReduceMean" in ops(fused)
    assert fusekit.verify(C.ln_global_average_pool(), fused).ok


def test_global_average_pool_layer_norm_fuses_with_provenance():
    model = C.ln_global_average_pool()
    fused, report = fusekit.optimize(model, target="ort")
    assert report.counts == {"LayerNorm": 1}, report.summary()
    assert report.verification.ok
    (record,) = report.fused
    assert record.rules == ["MeanAsGlobalAveragePool", "MeanAsGlobalAveragePool"]
    assert record.steps == ["LayerNorm"]
    # the record names the original nodes, GlobalAveragePools included
    assert sorted(op for _, op in record.replaced).count("GlobalAveragePool") == 2
    assert {n.name for n in model.graph.node} >= {name for name, _ in record.replaced}


def test_global_average_pool_at_opset_18_reads_axes_as_input():
    fused, report = rule_only(C.ln_global_average_pool(opset=18), "MeanAsGlobalAveragePool")
    means = [n for n in fused.graph.node if n.op_type == "ReduceMean"]
    assert len(means) == 2 and all(len(n.input) == 2 for n in means)
    assert fusekit.verify(C.ln_global_average_pool(opset=18), fused).ok


def test_global_average_pool_near_misses():
    for model, reason in ((C.global_average_pool_rank4(), "rank 4: it averages over axes 2…3"),
                          (C.global_average_pool_rank_unknown(), "rank is unknown")):
        fused, report = fusekit.optimize(model, target="ort", verify=False)  # nothing changed to verify
        assert "GlobalAveragePool" in ops(fused) and not report.canonical
        (miss,) = report.misses
        assert miss.fusion == "MeanAsGlobalAveragePool" and reason in miss.reason, miss
