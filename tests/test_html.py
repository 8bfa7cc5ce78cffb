"""The --html reports: one self-contained file each, which a real browser renders.

The browser check runs Debian's chromium headless (``apt-get install chromium``; .ci/run
installs it) and skips, saying so, where it is absent.
"""
import os
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser

import numpy as np
import onnx
import pytest

import fusekit
from conftest import TESTMODELS
from fusekit.cli import main
from graphs.edits import node, set_constant
from test_diff import ort_optimized

BERT_TINY = TESTMODELS / "bert_tiny_opset14.onnx"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Opens every <details>, then records each picture's rendered size on <body>.
MEASURE = ("<script>window.addEventListener('load',()=>{"
           "document.querySelectorAll('details').forEach(d=>d.open=true);"
           "document.body.dataset.svgSizes=[...document.querySelectorAll('svg')]"
           ".map(s=>{const r=s.getBoundingClientRect();return r.width+'x'+r.height}).join(' ')});</script>")


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """The four reports, written by the command line: inspect, explain (with a near miss), diff × 2."""
    folder = tmp_path_factory.mktemp("html")
    planted = onnx.load(BERT_TINY)
    set_constant(planted, node(planted, "/encoder/layer.1/intermediate/intermediate_act_fn/Mul_1").input[1],
                 np.float32(0.505))
    onnx.save(planted, folder / "planted.onnx")
    onnx.save(fusekit.optimize(BERT_TINY, verify=False)[0], folder / "fused.onnx")
    onnx.save(ort_optimized(BERT_TINY, 4, 32), folder / "ort.onnx")
    commands = {"inspect": ["inspect", BERT_TINY], "explain": ["explain", folder / "planted.onnx"],
                "diff": ["diff", BERT_TINY, folder / "fused.onnx"],
                "diff_ort": ["diff", BERT_TINY, folder / "ort.onnx"]}
    for name, args in commands.items():
        assert main([*map(str, args), "--json", "--html", str(folder / f"{name}.html")]) == 0
    return {name: folder / f"{name}.html" for name in commands}


class Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.open, self.counts, self.attrs = [], {}, []

    def handle_starttag(self, tag, attrs):
        self.counts[tag] = self.counts.get(tag, 0) + 1
        self.attrs += [(tag, k, v) for k, v in attrs]
        if tag not in ("meta", "rect", "path", "br"):
            self.open.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.counts[tag] = self.counts.get(tag, 0) + 1
        self.attrs += [(tag, k, v) for k, v in attrs]

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1] if self.open else None}>"
        self.open.pop()


def test_pages_are_self_contained_and_well_formed(pages):
    for name, path in pages.items():
        text = path.read_text(encoding="utf-8")
        tags = Tags()
        tags.feed(text)
        assert not tags.open, (name, tags.open)
        assert not {"script", "link", "img", "iframe", "object"} & set(tags.counts), name  # nothing to fetch or run
        refs = [v for _, k, v in tags.attrs if k in ("src", "href") or (v and "url(" in v and "url(#" not in v)]
        assert not refs and "@import" not in text and "http" not in text, (name, refs)
        assert tags.counts.get("svg", 0) >= 2 and "<style>" in text
    explain = pages["explain"].read_text(encoding="utf-8")
    assert "is [0.505], expected 0.5" in explain and explain.count("class=\"stop\"") == 1  # where the miss stopped
    # each fused node: the original subgraph beside it. fusekit's 13: EmbedLayerNorm, 2 Attention,
    # 2 BiasGelu, 4 LayerNorm and the 4 residual sums respelled before them; ONNX Runtime's 9 has
    # SkipLayerNormalization for each LayerNorm and its sum
    for name, fused in (("diff", 13), ("diff_ort", 9)):
        text = pages[name].read_text(encoding="utf-8")
        captions = [text.count(f"<div class=\"caption\">{side}</div>") for side in ("original", "fused")]
        assert captions == [fused, fused] and f"<h2>Fused nodes ({fused})</h2>" in text, (name, captions)
        assert "every original node is accounted for" in text


def run_chromium(html_path, profile):
    return subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--window-size=1400,1000", "--dump-dom",
         html_path.as_uri()],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "LANG": "C.UTF-8"})


def console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium): "
                                             "the HTML reports were not rendered in a browser")
def test_pages_render_in_headless_chromium(pages, tmp_path):
    control = tmp_path / "control.html"  # proves a console error would be seen
    control.write_text("<!DOCTYPE html><html><body><svg width='5' height='5'></svg>"
                       "<script>console.error('planted error')</script></body></html>")
    copies = {"control": control}
    for name, path in pages.items():  # measured copies: the reports themselves carry no script
        copies[name] = tmp_path / path.name
        copies[name].write_text(path.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>"),
                                encoding="utf-8")
    with tempfile.TemporaryDirectory() as profiles:
        running = {name: run_chromium(path, os.path.join(profiles, name)) for name, path in copies.items()}
        results = {name: p.communicate(timeout=180) for name, p in running.items()}
    assert any("planted error" in line for line in console_lines(results["control"][1])), results["control"][1]
    for name, (dom, stderr) in results.items():
        if name == "control":
            continue
        assert running[name].returncode == 0, stderr[-2000:]
        assert not console_lines(stderr), (name, console_lines(stderr))
        found = re.search(r'data-svg-sizes="([^"]*)"', dom)
        assert found, f"{name}: the page did not finish loading"
        sizes = [tuple(map(float, s.split("x"))) for s in found.group(1).split()]
        assert len(sizes) == pages[name].read_text(encoding="utf-8").count("<svg"), name
        assert sizes and all(w > 20 and h > 20 for w, h in sizes), (name, sizes)
