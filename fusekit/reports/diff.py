"""`fusekit diff ORIGINAL FUSED`: what became of every node of the original.

Every original node is accounted for as exactly one of

- **kept**: the fused model has a node of the same op with the same name (or, for a
  node the original left unnamed, the same outputs);
- **replaced**: it is part of a fused node's region;
- **bypassed**: an op that can be a no-op (Identity, Cast, Reshape …) is gone and
  the kept nodes that read it now read a value from upstream of it instead — how
  optimizers drop an Identity of a tied weight, a Cast to the same type, a Reshape
  to the same shape;
- **dead**: only removed nodes needed it, so nothing the original's outputs need is
  lost with it (shape side chains of a fused attention, the constants a fusion
  absorbed, the mask arithmetic a fused op does itself) — decided on the original graph;
- **unaccounted**: none of these. The fused model dropped a value a kept node or an
  output still needs; that is a bug in whatever produced it, and the command exits 1.

The accounting is structural: that each fused node computes what its region did is
what ``fusekit verify`` shows.

Regions come from fusekit's provenance (``fusekit.provenance`` in the model's
metadata) when the fused node has a record. Otherwise — another optimizer's output,
such as ONNX Runtime's transformers optimizer, which keeps the names of the nodes it
leaves and names new ones ``Attention_0`` … — they are read off the structure. Values
keep their names across both tools, so each new node is seeded with the original
nodes that produce the values it writes and the original nodes that read the values
only it reads (its γ, its bias, the MatMul output it adds a bias to); regions then
grow backwards from all seeds at once, one node at a time, and each removed node
goes to the fused node that reaches it first. A new node that only converts a value
another reads (ONNX Runtime's int32 Casts) is an *added* helper, not a fusion.

JSON (``--json``), schema ``fusekit.diff/1``::

    {"schema": "fusekit.diff/1", "original": str, "fused": str,
     "alignment": "provenance" | "structure" | "provenance+structure",
     "summary": {"nodes": [before, after], "parameters": [before, after],
                 "parameter_bytes": [before, after], "file_bytes": [before, after] | null,
                 "opsets": [{domain: version}, {domain: version}]},
     "ops": {"before": {op: count}, "after": {op: count}},
     "accounting": {"original_nodes": int, "kept": int, "replaced": int, "bypassed": int, "dead": int,
                    "unaccounted": int, "ok": bool},
     "fused_nodes": [{"name": str, "op": str, "layer": int | null, "source": "provenance" | "structure",
                "fusion": str | null, "variant": str | null, "steps": [str],
                "replaced": [{"name": str, "op": str, "layer": int | null}],
                "constants": {name: value}, "absorbed": [initializer name],
                "inputs": [{"index": int, "name": str,
                            "from": "original" | "constant" | "added" | "fused" | "input", "detail": str}],
                "outputs": [{"name": str, "takes_over": bool, "users": [node name]}]}],
     "bypassed": [{"name": str, "op": str, "layer": int | null}], "dead": [same],
     "unaccounted": [{"name": str, "op": str, "layer": int | null, "users": [node name]}],
     "added": [{"name": str, "op": str, "users": [node name]}],
     "layers": {"count": int, "method": str,
                "rows": [{"layer": int | null, "original": int, "kept": int, "replaced": int, "bypassed": int,
                          "dead": int, "unaccounted": int, "fused": {op: count}}]}}

Op names carry their domain when it is not the default (``com.microsoft.Attention``);
``layer`` is the encoder layer (see ``fusekit.reports.layers``), null outside every layer.
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import networkx as nx
import onnx

from .. import provenance
from . import layers as layers_
from .dataflow import Dataflow, attribute, load_to_read, op_histogram, parameter_count, readable_size, stored_bytes

SCHEMA = "fusekit.diff/1"
STATUSES = ("kept", "replaced", "bypassed", "dead", "unaccounted")
# Ops that change nothing for some attributes or input types, which optimizers remove.
MAYBE_NO_OP = {"Identity", "Cast", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Dropout", "Expand", "Transpose",
               "Slice", "Concat", "CastLike"}


@dataclass
class FusedNode:
    index: int  # in the fused model
    source: str  # "provenance" or "structure"
    replaced: list[int] = field(default_factory=list)  # original node indices
    record: dict = field(default_factory=dict)  # the provenance record, when there is one


@dataclass
class Diff:
    original: Dataflow
    fused: Dataflow
    original_model: onnx.ModelProto
    fused_model: onnx.ModelProto
    original_path: str = "<model>"
    fused_path: str = "<model>"
    kept: dict[int, int] = field(default_factory=dict)  # original index -> fused index
    regions: list[FusedNode] = field(default_factory=list)
    bypassed: list[int] = field(default_factory=list)
    dead: list[int] = field(default_factory=list)
    unaccounted: list[int] = field(default_factory=list)
    added: list[int] = field(default_factory=list)  # fused-model nodes that are new and replace nothing
    layers: layers_.Layers | None = None
    file_bytes: tuple[int, int] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def replaced(self) -> dict[int, FusedNode]:
        return {i: r for r in self.regions for i in r.replaced}

    @property
    def ok(self) -> bool:
        return not self.unaccounted

    @property
    def alignment(self) -> str:
        sources = {r.source for r in self.regions}
        return "+".join(s for s in ("provenance", "structure") if s in sources) or "structure"

    def layer_of_region(self, region: FusedNode) -> int | None:
        """The layer most of its replaced nodes are in; outside only when none is in a layer."""
        found = Counter(self.layers.of[i] for i in region.replaced if self.layers.of[i] is not None)
        return found.most_common(1)[0][0] if found else None

    def to_dict(self) -> dict:
        o, f = self.original, self.fused
        params = [parameter_count(m.graph) for m in (self.original_model, self.fused_model)]
        return {
            "schema": SCHEMA, "original": self.original_path, "fused": self.fused_path,
            "alignment": self.alignment,
            "summary": {"nodes": [len(o.nodes), len(f.nodes)], "parameters": [p[0] for p in params],
                        "parameter_bytes": [p[1] for p in params],
                        "file_bytes": list(self.file_bytes) if self.file_bytes else None,
                        "opsets": [{d.domain or "ai.onnx": d.version for d in m.opset_import}
                                   for m in (self.original_model, self.fused_model)]},
            "ops": {"before": op_histogram(o.graph), "after": op_histogram(f.graph)},
            "accounting": {"original_nodes": len(o.nodes), "kept": len(self.kept), "replaced": len(self.replaced),
                           "bypassed": len(self.bypassed), "dead": len(self.dead),
                           "unaccounted": len(self.unaccounted), "ok": self.ok},
            "fused_nodes": [self._region_dict(r) for r in self.regions],
            "bypassed": [self._node_dict(i) for i in self.bypassed],
            "dead": [self._node_dict(i) for i in self.dead],
            "unaccounted": [{**self._node_dict(i), "users": [o.names[u] for u in o.users(i)]}
                            for i in self.unaccounted],
            "added": [{"name": f.names[j], "op": f.op(j), "users": [f.names[u] for u in f.users(j)]}
                      for j in self.added],
            "layers": {"count": self.layers.count, "method": self.layers.method, "rows": self._layer_rows()},
        }

    def _node_dict(self, i: int) -> dict:
        return {"name": self.original.names[i], "op": self.original.op(i), "layer": self.layers.of[i]}

    def _region_dict(self, region: FusedNode) -> dict:
        f, j = self.fused, region.index
        record = region.record
        return {
            "name": f.names[j], "op": f.op(j), "layer": self.layer_of_region(region), "source": region.source,
            "fusion": record.get("fusion"), "variant": record.get("variant"), "steps": record.get("steps", []),
            "replaced": [self._node_dict(i) for i in region.replaced],
            "constants": record.get("constants") or _attributes(f.nodes[j]),
            "absorbed": self._absorbed(region),
            "inputs": [self._input(j, k, name) for k, name in enumerate(f.nodes[j].input) if name],
            "outputs": [{"name": t, "takes_over": t in self.original.value_names,
                         "users": [f.names[u] for u in f.consumers.get(t, ())]} for t in f.nodes[j].output if t],
        }

    def _absorbed(self, region: FusedNode) -> list[str]:
        """Weights the region read that the fused model no longer has (packed or folded into the node)."""
        read = {t for i in region.replaced for t in self.original.nodes[i].input}
        return sorted(t for t in read if t in self.original.initializers and t not in self.fused.value_names)

    def _input(self, j: int, k: int, name: str) -> dict:
        """Where input ``k`` of fused node ``j`` comes from."""
        f = self.fused
        entry = {"index": k, "name": name}
        producer = f.producer.get(name)
        if name in self.original.value_names and (producer is None or producer in self._kept_fused):
            return {**entry, "from": "original", "detail": "the original value"}
        if name in f.initializers or (producer is not None and f.nodes[producer].op_type == "Constant"):
            return {**entry, "from": "constant", "detail": f"a new constant {f.shape_of(name)}"}
        if producer is None:
            return {**entry, "from": "input", "detail": "a graph input the original does not have"}
        if producer in self.added:
            reads = ", ".join(f"'{t}'" for t in f.nodes[producer].input if t)
            return {**entry, "from": "added", "detail": f"added {f.op(producer)} '{f.names[producer]}' of {reads}"}
        return {**entry, "from": "fused", "detail": f"{f.op(producer)} '{f.names[producer]}'"}

    @cached_property
    def _kept_fused(self) -> set[int]:
        return set(self.kept.values())

    def status(self) -> dict[int, str]:
        """What became of each original node: kept, replaced, bypassed, dead or unaccounted."""
        return {i: "kept" for i in self.kept} | {i: "replaced" for i in self.replaced} \
            | {i: "bypassed" for i in self.bypassed} | {i: "dead" for i in self.dead} \
            | {i: "unaccounted" for i in self.unaccounted}

    def _layer_rows(self) -> list[dict]:
        rows: dict = {}

        def row(layer):
            return rows.setdefault(layer, {"layer": layer, "original": 0, **dict.fromkeys(STATUSES, 0),
                                           "fused": Counter()})

        status = self.status()
        for i, layer in enumerate(self.layers.of):
            row(layer)["original"] += 1
            row(layer)[status[i]] += 1
        for region in self.regions:
            row(self.layer_of_region(region))["fused"][self.fused.op(region.index)] += 1
        ordered = sorted(rows.values(), key=lambda r: (r["layer"] is None, r["layer"] or 0))
        return [{**r, "fused": dict(sorted(r["fused"].items()))} for r in ordered]

    def summary(self, limit: int = 12) -> str:
        data = self.to_dict()
        s, acct = data["summary"], data["accounting"]
        lines = [f"{self.original_path} → {self.fused_path} (regions from {data['alignment']})",
                 f"nodes: {s['nodes'][0]} → {s['nodes'][1]}",
                 (f"parameters: {s['parameters'][0]:,} → {s['parameters'][1]:,} "
                  f"({readable_size(s['parameter_bytes'][0])} → {readable_size(s['parameter_bytes'][1])})")]
        if s["file_bytes"]:
            lines.append(f"file size: {readable_size(s['file_bytes'][0])} → {readable_size(s['file_bytes'][1])}")
        bypassed = f" + {acct['bypassed']} bypassed" if acct["bypassed"] else ""
        lines.append(f"original nodes: {acct['original_nodes']} = {acct['kept']} kept + {acct['replaced']} replaced"
                     f"{bypassed} + {acct['dead']} removed as dead"
                     + (f" + {acct['unaccounted']} UNACCOUNTED" if not self.ok else ""))
        before, after = data["ops"]["before"], data["ops"]["after"]
        changed = [f"{_short(op)} {before.get(op, 0)} → {after.get(op, 0)}"
                   for op in sorted(set(before) | set(after)) if before.get(op, 0) != after.get(op, 0)]
        lines += _wrap("ops changed:", changed or ["none"])
        lines.append(f"per layer — {self.layers.describe()}:")
        lines.append(f"  {'layer':<8}{'nodes':>6}{'kept':>6}{'replaced':>9}{'bypassed':>9}{'dead':>6}  fused into")
        for row in data["layers"]["rows"]:
            name = "outside" if row["layer"] is None else str(row["layer"])
            fused = ", ".join(f"{_short(op)} {n}" for op, n in row["fused"].items()) or "-"
            lost = f"  UNACCOUNTED {row['unaccounted']}" if row["unaccounted"] else ""
            lines.append(f"  {name:<8}{row['original']:>6}{row['kept']:>6}{row['replaced']:>9}{row['bypassed']:>9}"
                         f"{row['dead']:>6}  {fused}{lost}")
        lines.append(f"fused nodes: {len(data['fused_nodes'])}")
        for region in data["fused_nodes"][:limit]:
            lines += _describe_region(region)
        if len(data["fused_nodes"]) > limit:
            lines.append(f"  … {len(data['fused_nodes']) - limit} more (see --json)")
        if data["added"]:
            lines += _wrap("added:", [f"{a['op']} '{a['name']}' (for {' and '.join(map(repr, a['users']))})"
                                      for a in data["added"][:limit]])
        for entry in data["unaccounted"]:
            needed_by = ", ".join(entry["users"]) or "an output"
            lines.append(f"UNACCOUNTED: {entry['op']} '{entry['name']}' is gone, but {needed_by} still needed it")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _describe_region(region: dict) -> list[str]:
    where = "outside layers" if region["layer"] is None else f"layer {region['layer']}"
    made = f" by {'→'.join(region['steps'])}/{region['variant']}" if region["fusion"] else ""
    ops = Counter(r["op"] for r in region["replaced"])
    lines = [f"  {_short(region['op'])} '{region['name']}' ({where}{made}) replaced {len(region['replaced'])}: "
             + ", ".join(f"{op} ×{n}" if n > 1 else op for op, n in sorted(ops.items()))]
    if region["constants"]:
        lines.append("      constants: " + ", ".join(f"{k}={_value(v)}" for k, v in region["constants"].items()))
    if region["absorbed"]:
        lines.append(f"      absorbed weights: {', '.join(region['absorbed'])}")
    rewired = [f"{i['index']} ← {i['detail'] if i['from'] != 'original' else repr(i['name'])}"
               for i in region["inputs"]]
    lines.append("      inputs: " + "; ".join(rewired))
    lines.append("      outputs: " + "; ".join(
        f"'{o['name']}'" + (" (takes over the original value)" if o["takes_over"] else " (new)")
        for o in region["outputs"]))
    return lines


def _wrap(head: str, items: list[str], width: int = 116) -> list[str]:
    """``head`` and comma-separated items, wrapped between items."""
    lines, line = [], head
    for k, item in enumerate(items):
        piece = item + ("," if k < len(items) - 1 else "")
        if len(line) + 1 + len(piece) > width:
            lines.append(line)
            line = " "
        line += " " + piece
    return [*lines, line]


def _short(op: str) -> str:
    return op.removeprefix("com.microsoft.")


def _value(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _attributes(node: onnx.NodeProto) -> dict:
    found = {}
    for a in node.attribute:
        value = attribute(node, a.name)
        if isinstance(value, (int, float, str, bytes)):
            found[a.name] = value.decode() if isinstance(value, bytes) else value
        elif isinstance(value, list) and len(value) <= 8:
            found[a.name] = value
    return found


# --------------------------------------------------------------------------- alignment

def _kind(node: onnx.NodeProto) -> tuple[str, str]:
    return (node.domain if node.domain != "ai.onnx" else "", node.op_type)


def align_kept(o: Dataflow, f: Dataflow, fused_names=frozenset()) -> dict[int, int]:
    """Original nodes the fused model still has: same op and name, or, unnamed, same outputs.
    A node fusekit's provenance calls fused (``fused_names``) is never a kept one, even
    when it writes the original's value with the same op (a lowered block's final Q)."""
    by_name = {(f.nodes[j].name, _kind(f.nodes[j])): j for j in range(len(f.nodes)) if f.nodes[j].name}
    by_outputs = {(tuple(f.nodes[j].output), _kind(f.nodes[j])): j for j in range(len(f.nodes))
                  if f.nodes[j].name not in fused_names}
    kept, taken = {}, set()
    for i, node in enumerate(o.nodes):
        j = by_name.get((node.name, _kind(node))) if node.name else None
        if j is None or j in taken:
            j = by_outputs.get((tuple(node.output), _kind(node)))
        if j is not None and j not in taken:
            kept[i] = j
            taken.add(j)
    return kept


def _helpers(o: Dataflow, f: Dataflow, new: list[int]) -> dict[int, str]:
    """New nodes that only convert one original value (an int32 Cast of the mask): node -> that value."""
    known = o.value_names
    return {j: f.nodes[j].input[0] for j in new
            if len([t for t in f.nodes[j].input if t]) == 1 and f.nodes[j].input[0] in known
            and not any(t in known for t in f.nodes[j].output)}


def chains(o: Dataflow, f: Dataflow, new: list[int]) -> dict[int, int]:
    """Each new node's owner: itself, or, where it writes only new values and the new nodes of
    one owner alone read them, theirs. A replacement of several nodes (the residual sum respelled
    as ``skip − (−bias − input)``) is one region, owned by the node that writes the original's value."""
    owner = {j: j for j in new}
    written = o.value_names | set(f.outputs)
    for j in reversed(f.order):
        if j not in owner or written & set(f.nodes[j].output):
            continue
        heads = {owner.get(u) for u in f.users(j)}
        if len(heads) == 1 and None not in heads:
            owner[j] = heads.pop()
    return owner


def attribute_regions(o: Dataflow, f: Dataflow, owners: dict[int, int], claimed: dict[int, int],
                      helpers: dict[int, str], kept: set[int]) -> dict[int, int]:
    """Give removed original nodes to the new fused-model nodes ``owners`` maps to (original index ->
    owner; :func:`chains`).

    ``claimed`` holds nodes already given (by provenance); they, like kept nodes, stop
    the growth. Seeds: the producers of values an owner writes, and the readers of
    values only that owner reads; then every region grows backwards, breadth first.
    A grown node whose users are not all in its region (the mask arithmetic every
    attention shares) and a constant are left to be found dead, as provenance leaves them.
    """
    known = o.value_names
    claimed = dict(claimed)
    readers: dict[str, set[int]] = {}  # original value -> the owners reading it (-1: some other node)
    for j in range(len(f.nodes)):
        if j in helpers:
            continue
        for t in f.nodes[j].input:
            source = helpers.get(f.producer.get(t), t)  # a helper's output stands for what it converts
            if source in known:
                readers.setdefault(source, set()).add(owners.get(j, -1))
    queue: deque[int] = deque()

    def claim(i: int, j: int):
        if i not in kept and i not in claimed and not _is_constant_node(o, i):
            claimed[i] = j
            queue.append(i)

    for j, owner in owners.items():
        for t in f.nodes[j].output:
            if t in known and t in o.producer:
                claim(o.producer[t], owner)
    for t, users in readers.items():
        if len(users) == 1 and -1 not in users:
            for i in o.consumers.get(t, ()):
                claim(i, next(iter(users)))
    seeds = set(claimed)
    while queue:
        i = queue.popleft()
        for p in o.feeders(i):
            claim(p, claimed[i])
    for i in reversed(o.order):  # users before producers, so a shared chain is released whole
        if i in claimed and i not in seeds and {claimed.get(u) for u in o.users(i)} != {claimed[i]}:
            del claimed[i]
    return claimed


def _is_constant_node(o: Dataflow, i: int) -> bool:
    return all(o.is_constant(t) for t in o.nodes[i].output)


def account_bypassed(o: Dataflow, f: Dataflow, kept: dict[int, int], removed: set[int]) -> list[int]:
    """Removed ops that can be no-ops whose kept users now read a value from upstream of them.

    That is how an optimizer drops a no-op (an Identity of a tied weight, a Cast to the
    same type, a Reshape to the same shape): the users are rewired past it. A removed
    op that computes something (a Gemm) is never a no-op, so it stays unaccounted.
    """
    bypassed = []
    for i in sorted(i for i in removed if o.nodes[i].op_type in MAYBE_NO_OP):
        rewired = []
        for t in o.nodes[i].output:
            for u in o.consumers.get(t, ()):
                if u in kept:
                    now = f.nodes[kept[u]].input
                    rewired += [k < len(now) and now[k] != t and now[k] for k, name in enumerate(o.nodes[u].input)
                                if name == t]
        if rewired and all(rewired):
            upstream = {v for a in nx.ancestors(o.dag, i) | {i} for v in o.nodes[a].input}
            if all(v in upstream for v in rewired):
                bypassed.append(i)
    return bypassed


def account_dead(o: Dataflow, kept: set[int], gone: set[int]) -> tuple[list[int], list[int]]:
    """Split the original nodes neither kept nor ``gone`` (replaced, bypassed) into dead —
    only feeding removed nodes, so nothing the outputs need — and unaccounted."""
    outputs = set(o.outputs)
    removed = set(gone)
    dead = []
    for i in reversed(o.order):
        if i in kept or i in gone:
            continue
        if not outputs & set(o.nodes[i].output) and all(u in removed for u in o.users(i)):
            dead.append(i)
            removed.add(i)
    rest = set(range(len(o.nodes))) - kept - removed
    return sorted(dead), sorted(rest)


def diff(original, fused, use_provenance: bool = True) -> Diff:
    """Account for every node of ``original`` in ``fused`` (paths or ModelProtos)."""
    (o_model, o_notes), (f_model, f_notes) = load_to_read(original), load_to_read(fused)
    o, f = Dataflow(o_model.graph), Dataflow(f_model.graph)
    result = Diff(o, f, o_model, f_model, _label(original), _label(fused), layers=layers_.assign(o),
                  notes=[f"original: {n}" for n in o_notes] + [f"fused: {n}" for n in f_notes])
    if not isinstance(original, onnx.ModelProto) and not isinstance(fused, onnx.ModelProto):
        result.file_bytes = (stored_bytes(original, o_model), stored_bytes(fused, f_model))
    records = provenance.records(f_model) if use_provenance else {}
    result.kept = align_kept(o, f, set(records))
    kept_f = set(result.kept.values())
    new = [j for j in range(len(f.nodes)) if j not in kept_f]

    regions = _from_provenance(result, new, records)
    claimed = {i: j for j, region in regions.items() for i in region.replaced}
    helpers = _helpers(o, f, [j for j in new if j not in regions])
    owners = chains(o, f, [j for j in new if j not in regions and j not in helpers])
    for i, j in sorted(attribute_regions(o, f, owners, claimed, helpers, set(result.kept)).items()):
        if i not in claimed:
            regions.setdefault(j, FusedNode(j, "structure")).replaced.append(i)
    result.regions = [regions[j] for j in f.order if j in regions and regions[j].replaced]
    result.added = [j for j in f.order if j in new and (j not in regions or not regions[j].replaced)]

    replaced = {i for r in result.regions for i in r.replaced}
    result.bypassed = account_bypassed(o, f, result.kept, set(range(len(o.nodes))) - set(result.kept) - replaced)
    result.dead, result.unaccounted = account_dead(o, set(result.kept), replaced | set(result.bypassed))
    return result


def _from_provenance(result: Diff, new: list[int], records: dict) -> dict[int, FusedNode]:
    """The regions fusekit recorded, for the new nodes that have a record: fused index -> region."""
    o, f = result.original, result.fused
    regions: dict[int, FusedNode] = {}
    claimed: set[int] = set()
    for j in new:
        record = records.get(f.names[j])
        if record is None:
            continue
        region = regions[j] = FusedNode(j, "provenance", record=record)
        for entry in record["replaced"]:
            i = o.index.get(entry["name"])
            if i is None or i in result.kept or i in claimed:
                result.notes.append(f"provenance of '{f.names[j]}' names '{entry['name']}', "
                                    "which the original does not have or the fused model keeps")
                continue
            claimed.add(i)
            region.replaced.append(i)
    return regions


def _label(model_or_path) -> str:
    return "<model>" if isinstance(model_or_path, onnx.ModelProto) else str(Path(model_or_path))


__all__ = ["SCHEMA", "STATUSES", "Diff", "FusedNode", "diff"]
