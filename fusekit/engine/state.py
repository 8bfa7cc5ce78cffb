"""What one optimization run shares between its matches and rewrites, and how it keys graph objects.

onnx-graphsurgeon nodes and tensors compare by value and cannot be hashed, so they are
keyed by identity. ``id()`` alone aliases: once a node is freed, a new one may get its
id. :class:`IdentitySet` and :class:`IdentityMap` hold the objects they key, so an id
stays theirs for as long as it is there.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Generic, Iterable, Iterator, TypeVar

import onnx
import onnx_graphsurgeon as gs

K = TypeVar("K")
V = TypeVar("V")


class IdentityMap(Generic[K, V]):
    """A mapping keyed by the objects themselves (``is``, not ``==``); it holds its keys."""

    def __init__(self, items: Iterable[tuple[K, V]] = ()):
        self._entries: dict[int, tuple[K, V]] = {}
        for key, value in items:
            self[key] = value

    def __setitem__(self, key: K, value: V):
        self._entries[id(key)] = (key, value)

    def __getitem__(self, key: K) -> V:
        entry = self._entries.get(id(key))
        if entry is None or entry[0] is not key:
            raise KeyError(key)
        return entry[1]

    def __contains__(self, key) -> bool:
        entry = self._entries.get(id(key))
        return entry is not None and entry[0] is key

    def get(self, key: K, default: V | None = None) -> V | None:
        return self[key] if key in self else default

    def setdefault(self, key: K, default: V) -> V:
        if key not in self:
            self[key] = default
        return self[key]

    def __iter__(self) -> Iterator[K]:
        return (key for key, _ in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def values(self) -> list[V]:
        return [value for _, value in self._entries.values()]


class IdentitySet(Generic[K]):
    """A set of objects by identity, in insertion order; it holds its members."""

    def __init__(self, members: Iterable[K] = ()):
        self._members: dict[int, K] = {}
        self.update(members)

    def add(self, member: K):
        self._members[id(member)] = member

    def update(self, members: Iterable[K]):
        for m in members:
            self.add(m)

    def __contains__(self, member) -> bool:
        return self._members.get(id(member)) is member

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._members.values()))

    def __len__(self) -> int:
        return len(self._members)


@dataclass
class RunState:
    """The state of one run of the passes, shared by every match and rewrite in it.

    ``passes.run`` makes one; each field says what it holds and who writes it.
    """

    target: str  # the target the fused forms are built for (passes.run)
    opset: int  # the model's default-domain opset (passes.run)
    names: set[str] = field(default_factory=set)  # every node and tensor name, so new ones are unique (Emitter)
    # the nodes each fusion's rewrites built: never that fusion's candidates again (rewrite.apply)
    made: dict[str, IdentitySet[gs.Node]] = field(default_factory=dict)
    lowered: IdentitySet[gs.Node] = field(default_factory=IdentitySet)  # inlined function bodies: no near misses (Emitter.inline)
    notes: dict[str, int] = field(default_factory=dict)  # what the report says, with how often (Emitter.note)
    constants: dict[tuple, gs.Constant] = field(default_factory=dict)  # small constants, one per value (Emitter.small)
    functions: dict[tuple[str, str], onnx.FunctionProto] = field(default_factory=dict)  # called functions (Emitter.call)
    # caches of facts the patterns work out once per run
    probes: dict[tuple, object] = field(default_factory=dict)  # what probing found a mask or bias computes (engine.probe)
    memos: dict[str, object] = field(default_factory=dict)  # each pattern's own caches, by the module that owns it (memo)

    def memo(self, owner: str, make: Callable[[], V]) -> V:
        """The cache ``owner`` (a pattern's module, by ``__name__``) keeps for this run, made by
        ``make`` on first use: what its check works out once for several matches (a weight
        evaluated for every variant that reads it)."""
        if owner not in self.memos:
            self.memos[owner] = make()
        return self.memos[owner]

    def made_by(self, fusion: str, node: gs.Node) -> bool:
        """Whether ``fusion``'s rewrites built ``node``."""
        return node in self.made.get(fusion, ())

    def record(self, fusion: str, built: Iterable[gs.Node]):
        self.made.setdefault(fusion, IdentitySet()).update(built)
