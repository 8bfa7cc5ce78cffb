"""engine.graph.toposort: onnx-graphsurgeon's node order, in time linear in the graph."""
import random

import numpy as np
import onnx_graphsurgeon as gs
import pytest

from fusekit.engine.graph import toposort
from fusekit.errors import FusekitError


def _shuffled_dag(seed: int) -> gs.Graph:
    """A random DAG of multi-input, multi-output nodes, its node list shuffled; built alike for a seed."""
    rng = random.Random(seed)
    x = gs.Variable("x", np.float32, [1])
    values, nodes = [x], []
    for i in range(rng.randint(1, 60)):
        inputs = [rng.choice(values) for _ in range(rng.randint(1, 3))]  # repeats and diamonds too
        outputs = [gs.Variable(f"v{i}_{k}", np.float32, [1]) for k in range(rng.randint(1, 2))]
        nodes.append(gs.Node("Sum", f"n{i}", inputs=inputs, outputs=outputs))
        values += outputs
    rng.shuffle(nodes)
    return gs.Graph(nodes=nodes, inputs=[x], outputs=[values[-1]])


@pytest.mark.parametrize("seed", range(200))
def test_the_order_is_onnx_graphsurgeons(seed):
    theirs, ours = _shuffled_dag(seed), _shuffled_dag(seed)
    theirs.toposort()
    toposort(ours)
    assert [n.name for n in ours.nodes] == [n.name for n in theirs.nodes]


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
