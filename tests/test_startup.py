"""What a command imports: ``fusekit --help`` loads nothing beyond the parser and its choices, and a
command loads what it runs (no report for ``optimize``, no runtime where nothing is run). Each check
runs in a fresh interpreter, where nothing else has imported anything yet. How long the imports
take is measured by benchmarks/startup.py, never asserted."""
import json
import subprocess
import sys

from conftest import ROOT, TESTMODELS

TINY = TESTMODELS / "bert_tiny_opset14.onnx"
PARSER_ONLY = ("onnx", "numpy", "onnxruntime", "openvino", "networkx", "onnx_graphsurgeon", "fusekit.pipeline",
               "fusekit.verify", "fusekit.reports", "fusekit.patterns")
COMMANDS = ("optimize", "verify", "run", "bench", "inspect", "explain", "diff")


def fresh(code: str) -> tuple[set[str], subprocess.CompletedProcess]:
    """Run ``code`` in a fresh interpreter: the modules it left loaded, and the process."""
    report = "\nimport json as _json, sys as _sys\nprint(_json.dumps(sorted(_sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code + report], capture_output=True, text=True, timeout=300,
                          cwd=ROOT / "tests")
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.splitlines()[-1])), proc


def among(modules: set[str], packages) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in packages))


def test_help_loads_only_the_parser():
    modules, proc = fresh(f"""
from fusekit.cli import main
for args in [["--help"], *[[command, "--help"] for command in {COMMANDS!r}]]:
    try:
        main(args)
    except SystemExit as e:
        assert e.code == 0
""")
    assert among(modules, PARSER_ONLY) == []
    assert proc.stdout.count("usage: fusekit") == 1 + len(COMMANDS)


def test_optimize_loads_no_report_and_no_openvino(tmp_path):
    out = tmp_path / "tiny.onnx"
    modules, proc = fresh(f"from fusekit.cli import main; assert main(['optimize', {str(TINY)!r}, '-o', {str(out)!r}]) == 0")
    assert "verification: equivalent" in proc.stdout
    assert among(modules, ("fusekit.reports", "networkx", "openvino")) == []


def test_fusing_where_nothing_is_probed_loads_no_runtime():
    """A GELU needs no probe and no fold run in ONNX Runtime: neither fusing nor inspecting it loads one."""
    modules, _ = fresh("""
import fusekit
from graphs import variants as V
fused, report = fusekit.optimize(V.GELU["bias_gelu"](), verify=False)
assert report.counts["BiasGelu"] == 1, report.summary()
assert fusekit.inspect_model(V.GELU["bias_gelu"]()).fusible
""")
    assert among(modules, ("onnxruntime", "openvino")) == []


def test_the_public_names_resolve_whatever_was_imported_first():
    """``fusekit.verify`` is the function even where the submodule of that name was imported first."""
    fresh("""
import fusekit.verify
import fusekit
from fusekit.pipeline import optimize
from fusekit.reports.diff import diff
from fusekit.verify import VerifyResult, verify
assert fusekit.verify is verify and callable(fusekit.verify)
assert fusekit.optimize is optimize and fusekit.diff is diff and fusekit.VerifyResult is VerifyResult
assert set(fusekit.__all__) <= set(dir(fusekit))
assert all(getattr(fusekit, name) is not None for name in fusekit.__all__)
from fusekit import *
assert fusekit.TARGETS == ("ort", "onnx", "openvino") and __version__ == fusekit.__version__
""")


def test_a_dependency_that_cannot_be_imported_is_one_line():
    proc = subprocess.run([sys.executable, "-c", f"""
import sys
sys.modules["openvino"] = None  # as if it were not installed
from fusekit.cli import main
sys.exit(main(["run", {str(TINY)!r}, "--backend", "openvino"]))
"""], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.startswith("fusekit: error: run needs openvino, which cannot be imported")
    assert len(proc.stderr.strip().splitlines()) == 1
