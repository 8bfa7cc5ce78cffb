"""How fusekit's commands scale with the graph: seconds per node from 1k to 200k nodes.

    python benchmarks/scaling.py [--quick] [--pack] [--profile] [--python PY ...] [--timeout S]

Times ``optimize --no-verify``, ``optimize`` (verified), ``inspect`` and ``explain``, each in a
fresh process (``PY -m fusekit.cli …`` run from a temporary folder, so ``--python`` picks which
installed fusekit is measured; given twice, the two alternate command by command, so both meet
the same load), on graphs built here without torch in a few seconds:

  chain    x → Relu → Relu → … → y: N nodes, each reading the last
  fanout   blocks of 100 Relus all reading one value, averaged into the next block's input
  islands  N/4 independent input → Relu → Neg → Relu → Abs → output subgraphs
  bert     testmodels/bert_tiny_opset14.onnx with its last encoder layer repeated: every copy's
           values renamed (``layer.K``), its weights shared, so L layers are L × 83 nodes

Prints wall seconds, µs per node and CPU seconds for every graph and command, then the ratios
the cost should keep near the size ratio (200k/20k nodes for the synthetic graphs, 96/12 layers
for BERT): linear passes give 10× and 8×. ``--profile`` runs each command once more under cProfile and
prints its top cumulative fusekit, onnx-graphsurgeon and networkx functions. Nothing is
asserted; the machine's load stretches the wall times, so compare runs made side by side.
"""
from __future__ import annotations

import argparse
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx
from onnx import TensorProto, helper

TINY_BERT = Path(__file__).resolve().parent.parent / "testmodels" / "bert_tiny_opset14.onnx"
FAN = 100  # Relus per fan-out block
COMMANDS = {
    "optimize --no-verify": ["optimize", "{model}", "-o", "{out}", "--no-verify"],
    "optimize": ["optimize", "{model}", "-o", "{out}"],
    "inspect": ["inspect", "{model}"],
    "explain": ["explain", "{model}"],
}


def _model(nodes, inputs, outputs, initializers=(), opset=14) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "scaling", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _value(name):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 4])


def chain(n: int) -> onnx.ModelProto:
    names = ["x", *(f"v{i}" for i in range(1, n)), "y"]
    nodes = [helper.make_node("Relu", [names[i]], [names[i + 1]], name=f"relu_{i}") for i in range(n)]
    return _model(nodes, [_value("x")], [_value("y")])


def fanout(n: int) -> onnx.ModelProto:
    """Blocks of FAN Relus reading one value and a Mean of them: n nodes, rounded to whole blocks."""
    nodes, source = [], "x"
    for b in range(max(1, n // (FAN + 1))):
        branches = [f"b{b}_{i}" for i in range(FAN)]
        nodes += [helper.make_node("Relu", [source], [v], name=f"relu_{b}_{i}") for i, v in enumerate(branches)]
        source = f"mean{b}"
        nodes.append(helper.make_node("Mean", branches, [source], name=f"mean_{b}"))
    nodes.append(helper.make_node("Identity", [source], ["y"], name="out"))
    return _model(nodes, [_value("x")], [_value("y")])


def islands(n: int) -> onnx.ModelProto:
    nodes, inputs, outputs = [], [], []
    for k in range(max(1, n // 4)):
        values = [f"x{k}", f"a{k}", f"b{k}", f"c{k}", f"y{k}"]
        for i, op in enumerate(("Relu", "Neg", "Relu", "Abs")):
            nodes.append(helper.make_node(op, [values[i]], [values[i + 1]], name=f"{op.lower()}_{k}_{i}"))
        inputs.append(_value(values[0]))
        outputs.append(_value(values[-1]))
    return _model(nodes, inputs, outputs)


def bert(layers: int) -> onnx.ModelProto:
    """The tiny BERT export with ``layers`` encoder layers: its layer.1 repeated, weights shared."""
    model = onnx.load(TINY_BERT)
    graph = model.graph
    last = [n for n in graph.node if "/encoder/layer.1/" in n.name]
    made = {o for n in last for o in n.output}
    before = [n for n in graph.node if "/encoder/layer.1/" not in n.name]
    layer_input = "/encoder/layer.0/output/LayerNorm/Add_1_output_0"
    out = "last_hidden_state"  # what the last layer makes and the pooler reads
    downstream = {out}  # the pooler: what reads the encoder's output, directly or not
    after = []
    for n in before:
        if downstream.intersection(n.input):
            downstream.update(n.output)
            after.append(n)
    nodes = [n for n in before if n not in after]
    source = layer_input
    for k in range(1, layers):
        tag = f"layer.{k}"
        rename = {v: (out if k == layers - 1 else f"/encoder/{tag}/output") if v == out
                  else v.replace("layer.1", tag) if "layer.1" in v else f"{v}_L{k}" for v in made}
        rename[layer_input] = source
        for n in last:
            copy = onnx.NodeProto()
            copy.CopyFrom(n)
            copy.name = n.name.replace("layer.1", tag)
            copy.input[:] = [rename.get(v, v) for v in n.input]
            copy.output[:] = [rename[v] for v in n.output]
            nodes.append(copy)
        source = rename[out]
    graph.ClearField("node")
    graph.node.extend(nodes + after)
    return model


SHAPES = {"chain": chain, "fanout": fanout, "islands": islands}


def plan(quick: bool) -> list[tuple[str, int]]:
    """(shape, size) pairs: nodes for the synthetic shapes, layers for bert."""
    if quick:
        return [("chain", 2_000), ("chain", 20_000), ("chain", 200_000), ("fanout", 20_000),
                ("fanout", 200_000), ("islands", 20_000), ("islands", 200_000), ("bert", 12), ("bert", 96)]
    sizes = (1_000, 5_000, 20_000, 50_000, 200_000)
    return [(s, n) for s in SHAPES for n in sizes] + [("bert", n) for n in (2, 6, 12, 24, 48, 96)]


def commands(shape: str, size: int, quick: bool) -> list[str]:
    """Verification runs the model in ONNX Runtime; --quick verifies the smaller graphs only."""
    verified = not quick or shape == "bert" or size <= 20_000
    return [c for c in COMMANDS if c != "optimize" or verified]


def _cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def run(python: str, argv: list[str], timeout: float, profile: Path | None = None) -> tuple[float, float] | None:
    """(wall, CPU) seconds of one command in a fresh process; None past ``timeout``. The CPU time
    is the one to read on a shared machine: other load stretches the wall time, not it."""
    prefix = ["-m", "cProfile", "-o", str(profile)] if profile else []
    start, cpu = time.perf_counter(), _cpu()
    try:
        proc = subprocess.run([python, *prefix, "-m", "fusekit.cli", *argv], cwd=tempfile.gettempdir(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed: {proc.stderr.decode(errors='replace').strip()[-400:]}")
    return time.perf_counter() - start, _cpu() - cpu


def print_profile(path: Path, top: int):
    """The top cumulative functions of fusekit and the graph libraries, imports left out."""
    stats = pstats.Stats(str(path))
    rows = [(cum, f"{Path(file).parent.name}/{Path(file).name}:{line}({name})", calls)
            for (file, line, name), (_, calls, _, cum, _) in stats.stats.items()
            if any(k in file for k in ("fusekit", "onnx_graphsurgeon", "networkx", "/onnx/"))
            and name != "<module>"]
    for cum, where, calls in sorted(rows, reverse=True)[:top]:
        print(f"      {cum:8.2f} s  {calls:>8}  {where}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes (a few minutes)")
    parser.add_argument("--pack", action="store_true", help="also time optimize --pack --no-verify")
    parser.add_argument("--profile", action="store_true", help="profile each command once more, print its top")
    parser.add_argument("--top", type=int, default=12, help="functions per profile (default 12)")
    parser.add_argument("--python", action="append",
                        help="a Python whose fusekit is timed (repeat to compare: runs alternate; default this one)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds before a command counts as '>' it")
    parser.add_argument("--only", choices=[*SHAPES, "bert"], action="append", help="only these graphs")
    args = parser.parse_args(argv)
    pythons = args.python or [sys.executable]
    if args.pack:
        COMMANDS["optimize --pack"] = ["optimize", "{model}", "-o", "{out}", "--pack", "--no-verify"]
    print(f"fusekit scaling, {os.cpu_count()} CPUs (load {os.getloadavg()[0]:.1f}); "
          "wall seconds (µs per node) / CPU seconds"
          + "".join(f"\n  [{k}] {p}" for k, p in enumerate(pythons)))
    times: dict[tuple[str, int, str, str], tuple[float, float] | None] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for shape, size in plan(args.quick):
            if args.only and shape not in args.only:
                continue
            model = bert(size) if shape == "bert" else SHAPES[shape](size)
            nodes = len(model.graph.node)
            path, out = Path(tmp) / f"{shape}{size}.onnx", Path(tmp) / "out.onnx"
            onnx.save(model, path)
            del model
            label = f"{shape} {size} layers" if shape == "bert" else f"{shape} {size}"
            for turn, command in enumerate(commands(shape, size, args.quick)):
                argv = [a.format(model=path, out=out) for a in COMMANDS[command]]
                # alternate which Python goes first, so that neither always meets the same load
                for python in pythons[::-1] if turn % 2 else pythons:
                    times[shape, size, command, python] = run(python, argv, args.timeout)
                cells = [f">{args.timeout:.0f}" if t is None else
                         f"{t[0]:6.2f} ({t[0] / nodes * 1e6:4.0f}) / {t[1]:6.2f}"
                         for t in (times[shape, size, command, p] for p in pythons)]
                print(f"{label:<17} {nodes:>7} nodes  {command:<21} " + "  ".join(cells), flush=True)
            if args.profile:
                for command in commands(shape, size, args.quick):
                    argv = [a.format(model=path, out=out) for a in COMMANDS[command]]
                    for k, python in enumerate(pythons):
                        prof = Path(tmp) / "run.prof"
                        if run(python, argv, args.timeout, prof) is not None:
                            print(f"    [{k}] {command}:")
                            print_profile(prof, args.top)
    print("ratios, wall / CPU (linear: 10× for 200k/20k nodes, 8× for 96/12 layers):")
    for shape, small, big in [*((s, 20_000, 200_000) for s in SHAPES), ("bert", 12, 96)]:
        for command in COMMANDS:
            cells = []
            for python in pythons:
                a, b = times.get((shape, small, command, python)), times.get((shape, big, command, python))
                if (shape, big, command, python) not in times or not a:
                    break
                cells.append(f"{b[0] / a[0]:5.1f}× / {b[1] / a[1]:5.1f}×" if b
                             else f">{args.timeout / a[0]:5.1f}×")
            if cells:
                print(f"  {shape:<8} {command:<21} " + "  ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
