"""What an optimization did: counts, provenance, near misses, verification, timing."""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from .engine.matcher import Miss
from .engine.rewrite import Fused

if TYPE_CHECKING:  # verify imports ONNX Runtime, which a report that was not verified does not need
    from .verify import VerifyResult


@dataclass
class Report:
    target: str
    nodes_before: int = 0
    nodes_after: int = 0
    opset_before: int = 0
    opset_after: int = 0
    fused: list[Fused] = field(default_factory=list)  # every fused node, traced back to the original nodes
    # what canonicalization rules left in the graph (a MatMul for a tensordot) or bypassed (a no-op Cast)
    rewrites: list[Fused] = field(default_factory=list)
    misses: list[Miss] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # the input computes wrongly on some inputs
    seconds: float = 0.0
    verify_seconds: float = 0.0
    verification: VerifyResult | None = None
    packed: dict | None = None  # --pack: the mask input and each output's kind (tokens | derived)

    @property
    def counts(self) -> Counter:
        """How often each fusion fired (a BiasGelu node counts as a Gelu and a BiasGelu)."""
        return Counter(step for f in self.fused for step in f.steps)

    @property
    def canonical(self) -> Counter:
        """How often each canonicalization rule rewrote the input (whether a fusion then took the result or not)."""
        return Counter(rule for f in self.fused + self.rewrites for rule in f.rules)

    @property
    def variants(self) -> Counter:
        return Counter(f"{f.fusion}/{f.variant}" for f in self.fused)

    def summary(self, max_misses: int = 10) -> str:
        opset = (f"opset {self.opset_before}" if self.opset_before == self.opset_after
                 else f"opset {self.opset_before} → {self.opset_after}")
        fused = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items())) or "nothing"
        lines = [f"target {self.target}, {opset}",
                 f"nodes: {self.nodes_before} → {self.nodes_after}",
                 f"fused: {fused}"]
        if self.canonical:
            lines.append("canonicalized: " + ", ".join(f"{k} {v}" for k, v in sorted(self.canonical.items())))
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"warning: {w}" for w in self.warnings]
        if self.misses:
            lines.append(f"near misses: {len(self.misses)}")
            lines += [f"  {m}" for m in self.misses[:max_misses]]
            if len(self.misses) > max_misses:
                lines.append(f"  … {len(self.misses) - max_misses} more (see --json)")
        if self.verification is not None:
            lines.append(self.verification.summary())
        else:
            lines.append("verification: skipped")
        timing = f" (verification {self.verify_seconds:.2f} s)" if self.verification else ""
        lines.append(f"time: {self.seconds:.2f} s{timing}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "nodes_before": self.nodes_before, "nodes_after": self.nodes_after,
            "opset_before": self.opset_before, "opset_after": self.opset_after,
            "counts": dict(self.counts), "canonical": dict(self.canonical), "variants": dict(self.variants),
            "fused": [f.to_dict() for f in self.fused], "rewrites": [f.to_dict() for f in self.rewrites],
            "misses": [asdict(m) for m in self.misses],
            "notes": self.notes, "warnings": self.warnings, "packed": self.packed,
            "seconds": self.seconds, "verify_seconds": self.verify_seconds,
            "verification": self.verification.to_dict() if self.verification else None,
        }
