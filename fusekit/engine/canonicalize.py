"""The canonicalization stage: exporter noise rewritten into one form before any fusion looks.

Each exporter wraps the same math in its own spelling: tf2onnx writes a LayerNorm's
mean as ``GlobalAveragePool``, Keras 3 writes ``β − mean·g`` as ``−mean·g + β``, a
float16 converter leaves Casts that change nothing. Rather than one more fusion
variant per spelling, small exact rules (``patterns/canonical/``, in the pattern
language, each a :class:`~fusekit.engine.pattern.Rule`) rewrite the spelling into
the form the fusions read, and the fusions describe the math once.

The stage runs before the fusions, to a fixpoint: in each sweep the static shape
facts are folded first (``shapes.fold``: a head size read by ``Shape(Q)`` becomes
the constant it is), then every rule sweeps the graph. A rule that cannot fire
where it recognised its shape records a near miss with the reason, like a fusion;
each rewrite is recorded like a fused node, so the fusion that later takes its
output traces back to the original nodes (``rewrite.compose``), and ``diff`` and
``explain`` account for it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import onnx_graphsurgeon as gs

from .matcher import Miss
from .passes import fixpoint, new_state
from .pattern import Rule
from .rewrite import Fused
from .state import RunState


@dataclass
class Canonical:
    """What canonicalization did to a graph; ``passes.run`` carries it on."""

    state: RunState
    records: list[Fused] = field(default_factory=list)  # every rewrite, in order
    misses: dict[tuple[str, str], Miss] = field(default_factory=dict)  # per (rule, anchor)


def run(graph: gs.Graph, rules: list[Rule], target: str, opset: int, max_sweeps: int = 8,
        fold=None) -> Canonical:
    """Rewrite ``graph`` in place with ``rules`` (and ``fold``, the shape facts) to a fixpoint."""
    result = Canonical(new_state(graph, target, opset))
    result.records = fixpoint(graph, rules, result.state, result.misses, max_sweeps, before_sweep=fold)
    return result
