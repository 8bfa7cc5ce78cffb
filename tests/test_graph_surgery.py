"""engine.graph.toposort and cleanup: onnx-graphsurgeon's results, in time linear in the graph."""
import random

import numpy as np
import onnx_graphsurgeon as gs
import pytest

from fusekit.engine.graph import cleanup, toposort
from fusekit.errors import FusekitError


def _shuffled_dag(seed: int) -> gs.Graph:
    """A random DAG of multi-input, multi-output nodes reading several inputs and a shared
    constant, some outputs and dead ends, its node list shuffled; built alike for a seed."""
    rng = random.Random(seed)
    inputs = [gs.Variable(f"x{k}", np.float32, [1]) for k in range(rng.randint(1, 4))]
    values, nodes = [*inputs, gs.Constant("c", np.ones(1, np.float32))], []
    for i in range(rng.randint(1, 60)):
        reads = [rng.choice(values) for _ in range(rng.randint(1, 3))]  # repeats and diamonds too
        outputs = [gs.Variable(f"v{i}_{k}", np.float32, [1]) for k in range(rng.randint(1, 2))]
        nodes.append(gs.Node("Sum", f"n{i}", inputs=reads, outputs=outputs))
        values += outputs
    rng.shuffle(nodes)
    made = values[len(inputs) + 1:]
    outputs = rng.sample(made, rng.randint(1, min(3, len(made))))
    return gs.Graph(nodes=nodes, inputs=inputs, outputs=outputs)


def _wiring(graph: gs.Graph) -> list:
    """Each node with what it reads and writes, and each value with its writers and readers, by name."""
    values = {t.name: t for n in graph.nodes for t in [*n.inputs, *n.outputs]}
    return [(n.name, [t.name for t in n.inputs], [t.name for t in n.outputs]) for n in graph.nodes] + \
        [(name, [n.name for n in t.inputs], [n.name for n in t.outputs]) for name, t in sorted(values.items())]


@pytest.mark.parametrize("seed", range(200))
def test_the_order_is_onnx_graphsurgeons(seed):
    theirs, ours = _shuffled_dag(seed), _shuffled_dag(seed)
    theirs.toposort()
    toposort(ours)
    assert [n.name for n in ours.nodes] == [n.name for n in theirs.nodes]


@pytest.mark.parametrize("seed", range(200))
def test_cleanup_keeps_what_onnx_graphsurgeon_keeps(seed):
    theirs, ours = _shuffled_dag(seed), _shuffled_dag(seed)
    theirs.cleanup(remove_unused_graph_inputs=False)
    cleanup(ours)
    assert _wiring(ours) == _wiring(theirs)
    assert [t.name for t in ours.inputs] == [t.name for t in theirs.inputs]


def test_cleanup_drops_what_no_output_reads():
    x, kept, dead = (gs.Variable(name, np.float32, [1]) for name in ("x", "kept", "dead"))
    nodes = [gs.Node("Relu", "used", inputs=[x], outputs=[kept]), gs.Node("Neg", "unused", inputs=[x], outputs=[dead])]
    graph = cleanup(gs.Graph(nodes=nodes, inputs=[x], outputs=[kept]))
    assert [n.name for n in graph.nodes] == ["used"]
    assert [n.name for n in x.outputs] == ["used"] and not dead.inputs


def test_a_chain_deeper_than_the_recursion_limit_sorts():
    x = gs.Variable("x", np.float32, [1])
    values = [x] + [gs.Variable(f"v{i}", np.float32, [1]) for i in range(5000)]
    nodes = [gs.Node("Relu", f"relu_{i}", inputs=[values[i]], outputs=[values[i + 1]]) for i in range(5000)]
    graph = toposort(gs.Graph(nodes=nodes[::-1], inputs=[x], outputs=[values[-1]]))
    assert [n.name for n in graph.nodes] == [f"relu_{i}" for i in range(5000)]


def test_a_cycle_is_an_internal_error_naming_a_node():
    x, a, b = (gs.Variable(name, np.float32, [1]) for name in "xab")
    nodes = [gs.Node("Add", "first", inputs=[x, b], outputs=[a]), gs.Node("Relu", "second", inputs=[a], outputs=[b])]
    with pytest.raises(FusekitError, match="cycle through '(first|second)'"):
        toposort(gs.Graph(nodes=nodes, inputs=[x], outputs=[b]))
