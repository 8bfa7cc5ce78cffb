"""The ``--html`` reports: one self-contained file per command.

Everything is inline — the CSS, and every graph drawn here as SVG — and there is
no script, so the file opens offline, fetches nothing, and can be attached to a bug
report. Each fused region is drawn twice, side by side: the original nodes it
replaced, and the fused node with the values it reads and writes. A near miss is
drawn with the nodes it matched in green and the node where it stopped in red.

Graphs are laid out in layers (Sugiyama style): each node sits one row below its
lowest producer, edges spanning several rows bend through placeholder points, and
a few sweeps order each row by the mean position of its neighbours.
"""
from __future__ import annotations

import html
import itertools
from collections import Counter
from dataclasses import dataclass

from .dataflow import Dataflow

MAX_PICTURE_NODES = 150  # a region larger than this is listed, not drawn
ROW, GAP, BOX_H, PAD = 60, 14, 28, 16

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1400px;
  padding:0 16px;color:#1d2733;background:#fbfcfd}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d8dee6;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}
code,.mono{font-family:ui-monospace,"SFMono-Regular",Menlo,Consolas,monospace;font-size:12.5px}
table{border-collapse:collapse;margin:6px 0 12px}
th,td{border:1px solid #d8dee6;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eef2f6;font-weight:600} td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#1b7f3b;font-weight:600} .bad{color:#c62828;font-weight:600} .muted{color:#6b7785}
.fusedcell{background:#e3f2e1} .misscell{background:#fde2e2}
.region{border:1px solid #d8dee6;border-radius:6px;background:#fff;margin:10px 0;padding:8px 12px}
.region>summary{cursor:pointer;font-weight:600}
.pictures{display:flex;flex-wrap:wrap;align-items:center;gap:18px;overflow-x:auto;padding:8px 0}
.pictures .arrow{font-size:28px;color:#8a97a6}
.picture{flex:none} .caption{font-size:12px;color:#6b7785;text-align:center}
.bar{display:inline-block;height:10px;background:#7a9cc6;border-radius:2px;vertical-align:middle}
svg text{font:11.5px ui-monospace,Menlo,Consolas,monospace;fill:#1d2733;text-anchor:middle;dominant-baseline:central}
svg .edge{fill:none;stroke:#8a97a6;stroke-width:1.2}
svg .op rect{fill:#eef2f7;stroke:#7d90a8} svg .matmul rect{fill:#dde8f7;stroke:#4f78ab}
svg .shape rect{fill:#f5f5f0;stroke:#b9b49a} svg .norm rect{fill:#e6f1ea;stroke:#5f9c73}
svg .fused rect{fill:#ffe2bf;stroke:#d9822b;stroke-width:2}
svg .value rect{fill:#fff;stroke:#b4bcc6;stroke-dasharray:3 2}
svg .matched rect{fill:#dff0dc;stroke:#4c9a45} svg .stop rect{fill:#fdd;stroke:#c62828;stroke-width:2}
"""

MATMUL = {"MatMul", "Gemm", "Einsum"}
SHAPE = {"Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Reshape", "Transpose", "Slice", "Constant", "Cast",
         "Expand", "Range", "ConstantOfShape", "Flatten", "Identity"}
NORM = {"ReduceMean", "Sqrt", "Pow", "Softmax", "Erf", "Tanh", "Sigmoid", "Reciprocal"}


def esc(text) -> str:
    return html.escape(str(text), quote=True)


def page(title: str, body: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def table(header: list[str], rows: list[list], numeric: set[int] = frozenset(), raw: bool = False) -> str:
    """Rows of cells; ``raw`` cells are HTML already (a tuple ``(html, css_class)`` sets a class)."""
    out = ["<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        cells = []
        for k, cell in enumerate(row):
            cls = "num" if k in numeric else ""
            if isinstance(cell, tuple):
                cell, extra = cell
                cls = f"{cls} {extra}".strip()
            text = cell if raw else esc(cell)
            cells.append(f"<td class=\"{cls}\">{text}</td>" if cls else f"<td>{text}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "".join(out) + "</table>"


def bars(counts: dict[str, int]) -> str:
    """An op histogram as a table with inline bars."""
    top = max(counts.values(), default=1)
    rows = [[esc(op), str(n), f"<span class=\"bar\" style=\"width:{max(2, round(160 * n / top))}px\"></span>"]
            for op, n in sorted(counts.items(), key=lambda kv: -kv[1])]
    return table(["op", "count", ""], rows, numeric={1}, raw=True)


# --------------------------------------------------------------------------- graph drawing

@dataclass
class Box:
    key: object
    label: str
    title: str
    kind: str  # css class: op, matmul, shape, norm, fused, value, matched, stop


_ids = itertools.count()


def _box_width(label: str, widest: int = 240) -> int:
    return max(64, min(widest, 7 * len(label) + 20))


def svg(boxes: list[Box], edges: list[tuple]) -> str:
    """Draw a small DAG top to bottom; ``edges`` are (from key, to key)."""
    width_of = {b.key: _box_width(b.label) for b in boxes}
    rank = _ranks([b.key for b in boxes], edges)
    rows, chains = _with_placeholders(rank, edges)
    _order(rows, chains)
    x, y = {}, {}
    row_widths = [sum(width_of.get(k, 8) for k in row) + GAP * (len(row) - 1) for row in rows]
    total_w = max(row_widths, default=0) + 2 * PAD
    for r, row in enumerate(rows):
        left = (total_w - row_widths[r]) / 2
        for k in row:
            w = width_of.get(k, 8)
            x[k], y[k] = left + w / 2, PAD + r * ROW + BOX_H / 2
            left += w + GAP
    paths = []
    for chain in chains:
        points = [(x[chain[0]], y[chain[0]] + BOX_H / 2)] + [(x[k], y[k]) for k in chain[1:-1]] \
            + [(x[chain[-1]], y[chain[-1]] - BOX_H / 2)]
        d = f"M{points[0][0]:.1f},{points[0][1]:.1f}"
        for (x0, y0), (x1, y1) in itertools.pairwise(points):
            mid = (y0 + y1) / 2
            d += f" C{x0:.1f},{mid:.1f} {x1:.1f},{mid:.1f} {x1:.1f},{y1:.1f}"
        paths.append(d)
    placed = [(b, x[b.key], y[b.key], width_of[b.key], BOX_H) for b in boxes]
    return _draw(total_w, PAD * 2 + (len(rows) - 1) * ROW + BOX_H, placed, paths)


def _draw(width: float, height: float, placed: list[tuple], paths: list[str]) -> str:
    """Boxes centred at (x, y) with their width and height, and edge paths ending in arrows."""
    marker = f"arrow{next(_ids)}"  # ids are per document: every picture gets its own
    out = [f"<svg width=\"{width:.0f}\" height=\"{height:.0f}\" viewBox=\"0 0 {width:.0f} {height:.0f}\" role=\"img\">",
           (f"<defs><marker id=\"{marker}\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" "
            "markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#8a97a6\"/>"
            "</marker></defs>")]
    out += [f"<path class=\"edge\" d=\"{d}\" marker-end=\"url(#{marker})\"/>" for d in paths]
    for b, cx, cy, w, h in placed:
        rx = 13 if b.kind == "value" else 5
        out.append(f"<g class=\"{b.kind}\"><title>{esc(b.title)}</title>"
                   f"<rect x=\"{cx - w / 2:.1f}\" y=\"{cy - h / 2:.1f}\" width=\"{w}\" height=\"{h}\" rx=\"{rx}\"/>"
                   f"<text x=\"{cx:.1f}\" y=\"{cy:.1f}\">{esc(_fit(b.label, w))}</text></g>")
    out.append("</svg>")
    return "".join(out)


def _fit(label: str, width: float) -> str:
    room = int((width - 12) / 7)
    return label if len(label) <= room else label[: room - 1] + "…"


def _ranks(keys: list, edges: list[tuple]) -> dict:
    """Each node one row below its lowest producer (longest path from the sources)."""
    preds = {k: [] for k in keys}
    for a, b in edges:
        preds[b].append(a)
    rank: dict = {}

    def visit(k, seen=()):
        if k not in rank:
            rank[k] = 0 if k in seen else 1 + max((visit(p, seen + (k,)) for p in preds[k]), default=-1)
        return rank[k]

    for k in keys:
        visit(k)
    for a in keys:  # a value entering from outside sits just above its first reader, not at the top
        readers = [rank[b] for x, b in edges if x == a]
        if not preds[a] and readers:
            rank[a] = min(readers) - 1
    used = {r: i for i, r in enumerate(sorted(set(rank.values())))}  # no empty rows
    return {k: used[r] for k, r in rank.items()}


def _with_placeholders(rank: dict, edges: list[tuple]) -> tuple[list[list], list[list]]:
    """Rows of keys, and each edge as the chain of keys it passes (placeholders for long edges)."""
    rows: list[list] = [[] for _ in range(max(rank.values(), default=-1) + 1)]
    for k in rank:
        rows[rank[k]].append(k)
    chains = []
    for a, b in edges:
        chain = [a] + [("via", a, b, r) for r in range(rank[a] + 1, rank[b])] + [b]
        for k in chain[1:-1]:
            rows[k[3]].append(k)
        chains.append(chain)
    return rows, chains


def _order(rows: list[list], chains: list[list]):
    """Order each row by the mean position of its neighbours in the row above, then below."""
    up, down = {}, {}
    for chain in chains:
        for a, b in itertools.pairwise(chain):
            up.setdefault(b, []).append(a)
            down.setdefault(a, []).append(b)
    for _ in range(4):
        for sweep, links, step in ((range(1, len(rows)), up, -1), (range(len(rows) - 2, -1, -1), down, 1)):
            for r in sweep:
                pos = {k: i for i, k in enumerate(rows[r + step])}
                center = {}
                for i, k in enumerate(rows[r]):
                    found = [pos[n] for n in links.get(k, []) if n in pos]
                    center[k] = sum(found) / len(found) if found else i  # unlinked: stays where it is
                rows[r].sort(key=center.__getitem__)


def _kind(op: str) -> str:
    return "matmul" if op in MATMUL else "shape" if op in SHAPE else "norm" if op in NORM else "op"


def short_value(name: str) -> str:
    """A value's name cut to what tells it apart: 'LayerNorm/Add_1', 'output.LayerNorm.weight'."""
    name = name.removesuffix("_output_0")
    parts = [p for p in name.split("/") if p]
    if len(parts) > 1:
        name = "/".join(parts[-2:])
    elif name.count(".") > 2:
        name = ".".join(name.split(".")[-3:])
    return name if len(name) <= 30 else name[:13] + "…" + name[-15:]


def region_svg(flow: Dataflow, indices: list[int], matched: set[int] = frozenset(), stop: int | None = None) -> str:
    """The nodes ``indices`` of ``flow`` with the values that enter and leave them."""
    inside = set(indices)
    if len(inside) > MAX_PICTURE_NODES:
        return f"<p class=\"muted\">({len(inside)} nodes: too many to draw)</p>"
    boxes = []
    for i in indices:
        kind = "stop" if i == stop else "matched" if i in matched else _kind(flow.nodes[i].op_type)
        boxes.append(Box(i, flow.nodes[i].op_type, f"{flow.op(i)} '{flow.names[i]}'", kind))
    edges, values = [], {}
    for i in indices:
        for t in dict.fromkeys(flow.nodes[i].input):
            p = flow.producer.get(t)
            if p in inside:
                edges.append((p, i))
            elif t and not flow.is_constant(t):
                values.setdefault(("in", t), Box(("in", t), short_value(t), t, "value"))
                edges.append((("in", t), i))
        for t in flow.nodes[i].output:
            if t in flow.outputs or any(u not in inside for u in flow.consumers.get(t, ())):
                values.setdefault(("out", t), Box(("out", t), short_value(t), t, "value"))
                edges.append((i, ("out", t)))
    return svg(boxes + list(values.values()), list(dict.fromkeys(edges)))


def node_svg(flow: Dataflow, j: int) -> str:
    """One (fused) node as a tall box, every value it reads on its left, what it writes on its right."""
    ins = [(k, t) for k, t in enumerate(flow.nodes[j].input) if t]
    outs = [(k, t) for k, t in enumerate(flow.nodes[j].output) if t]

    def label(k, t):
        shape = flow.shape_of(t) if flow.is_constant(t) else None
        return f"{k}: {short_value(t)}" + (f" {shape}" if shape is not None else "")

    in_boxes = [Box(("in", k), label(k, t), t, "value") for k, t in ins]
    out_boxes = [Box(("out", k), label(k, t), t, "value") for k, t in outs]
    op = flow.op(j).removeprefix("com.microsoft.")
    in_w = max((_box_width(b.label, 340) for b in in_boxes), default=0)
    out_w = max((_box_width(b.label, 340) for b in out_boxes), default=0)
    node_w, step = _box_width(op), BOX_H + 10
    height = 2 * PAD + max(len(ins), len(outs), 1) * step - 10
    node_x = PAD + in_w + 50 + node_w / 2
    width = node_x + node_w / 2 + 50 + out_w + PAD

    def column(boxes, cx, w):
        top = (height - len(boxes) * step + 10) / 2
        return [(b, cx, top + i * step + BOX_H / 2, w, BOX_H) for i, b in enumerate(boxes)]

    left, right = column(in_boxes, PAD + in_w / 2, in_w), column(out_boxes, width - PAD - out_w / 2, out_w)
    node = (Box(j, op, f"{flow.op(j)} '{flow.names[j]}'", "fused"), node_x, height / 2, node_w, height - 2 * PAD)
    x0, x1 = node_x - node_w / 2, node_x + node_w / 2
    paths = [f"M{cx + w / 2:.1f},{cy:.1f} C{x0 - 25:.1f},{cy:.1f} {x0 - 25:.1f},{cy:.1f} {x0:.1f},{cy:.1f}"
             for _, cx, cy, w, _ in left]
    paths += [f"M{x1:.1f},{cy:.1f} C{x1 + 25:.1f},{cy:.1f} {x1 + 25:.1f},{cy:.1f} {cx - w / 2:.1f},{cy:.1f}"
              for _, cx, cy, w, _ in right]
    return _draw(width, height, left + [node] + right, paths)


def side_by_side(before: str, after: str, before_caption: str, after_caption: str) -> str:
    def picture(svg_text, caption):
        return f"<div class=\"picture\">{svg_text}<div class=\"caption\">{esc(caption)}</div></div>"

    return (f"<div class=\"pictures\">{picture(before, before_caption)}<div class=\"arrow\">⇒</div>"
            f"{picture(after, after_caption)}</div>")


def _fmt(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _where(layer) -> str:
    return "outside the layers" if layer is None else f"layer {layer}"


# --------------------------------------------------------------------------- pages

def inspect_page(insp) -> str:
    d, a = insp.to_dict(), insp.architecture
    facts = [["file", insp.model], ["size", f"{insp.file_bytes:,} bytes" if insp.file_bytes else "—"],
             ["exporter", f"{d['exporter']['name']} — {'; '.join(d['exporter']['evidence'])}"],
             *[["rewritten by", f"{r['name']} ({r['evidence']})"] for r in d["rewritten_by"]],
             ["opsets", ", ".join(f"{k} {v}" for k, v in d["opsets"].items()) + f"; IR version {d['ir_version']}"],
             ["nodes", str(d["nodes"])],
             ["parameters", (f"{d['parameters']['count']:,} ({d['parameters']['bytes']:,} bytes in "
                             f"{d['parameters']['tensors']} tensors)")],
             ["fused ops present", ", ".join(f"{k} {v}" for k, v in d["fused_ops"].items()) or "none"],
             ["fusekit would fuse", ", ".join(f"{k} {v}" for k, v in d["fusible"].items()) or "nothing"],
             ["near misses", str(d["near_misses"])]]
    arch = [[k.replace("_", " "), "—" if v is None else (", ".join(map(str, v)) if isinstance(v, list) else str(v))]
            for k, v in d["architecture"].items()]
    io = [[direction, v["name"], v["dtype"], "[" + ", ".join(map(str, v["shape"])) + "]"]
          for direction, values in (("input", d["inputs"]), ("output", d["outputs"])) for v in values]
    body = [f"<h1>fusekit inspect: {esc(insp.model)}</h1>",
            f"<p class=\"muted\">{esc(a.kind or 'architecture not recognised')}</p>",
            "<h2>Summary</h2>", table(["", ""], facts), "<h2>Architecture</h2>", table(["", ""], arch),
            "<h2>Inputs and outputs</h2>", table(["", "name", "type", "shape"], io)]
    if d["layers"]:
        rows = [[_where(r["layer"]), r["nodes"], ", ".join(f"{op} {n}" for op, n in list(r["ops"].items())[:8]),
                 ", ".join(f"{f} {n}" for f, n in r["fusible"].items()) or "—"] for r in d["layers"]]
        body += [f"<h2>Per layer</h2><p class=\"muted\">{a.layers} encoder layers</p>",
                 table(["layer", "nodes", "most frequent ops", "fusekit would fuse"], rows, numeric={1})]
    if insp.examples:
        body.append("<h2>What fusekit would fuse (one region of each kind)</h2>")
        for record in insp.examples:
            body.append(_fused_region(record, insp.original_flow, insp.fused_flow, open_=True))
    body += ["<h2>Op histogram</h2>", bars(d["ops"])]
    body += [f"<p class=\"muted\">note: {esc(n)}</p>" for n in d["notes"]]
    body += [f"<p><strong>warning:</strong> {esc(w)}</p>" for w in d["warnings"]]
    return page(f"fusekit inspect {insp.model}", body)


def _fused_region(record, original: Dataflow, fused: Dataflow, open_: bool = False, layer=None) -> str:
    """A fused node from its provenance record: the original nodes beside the fused node."""
    replaced = [original.index[n] for n, _ in record.replaced if n in original.index]
    j = fused.index.get(record.node)
    steps = "→".join(record.steps) if len(record.steps) > 1 else record.fusion
    head = (f"{esc(steps)}/{esc(record.variant)}: <code>{esc(record.op)}</code> "
            f"<span class=\"mono muted\">{esc(record.node)}</span> — replaced {len(record.replaced)} nodes"
            + (f" ({_where(layer)})" if layer is not None else ""))
    constants = ", ".join(f"{k}={_fmt(v)}" for k, v in record.constants.items())
    picture = side_by_side(region_svg(original, replaced), node_svg(fused, j) if j is not None else "",
                           "original", "fused") if replaced else ""
    return (f"<details class=\"region\"{' open' if open_ else ''}><summary>{head}</summary>"
            + (f"<p class=\"mono\">constants: {esc(constants)}</p>" if constants else "") + picture + "</details>")


def explain_page(expl) -> str:
    d = expl.to_dict()
    body = [f"<h1>fusekit explain: {esc(expl.model)}</h1>",
            f"<p>{esc(expl.layers.describe())}; target {esc(expl.target)}</p>", "<h2>Summary</h2>",
            table(["fusion", "fused", "near misses", "in words"],
                  [[f["fusion"], f["fused"], (f["missed"], "bad" if f["missed"] else ""),
                    f["summary"].split(": ", 1)[1]] for f in d["fusions"]], numeric={1, 2})]
    if expl.layers.count and d["fusions"]:
        names = [f["fusion"] for f in d["fusions"]]
        rows = []
        keys = [k for k in range(expl.layers.count) if expl.layer in (None, k)] + ([None] if expl.layer is None else [])
        for k in keys:
            row = [_where(k)]
            for f in names:
                here = [c for c in expl.candidates if c.layer == k]
                fused = sum(c.status in ("fused", "earlier") and c.counts_for(f) for c in here)
                missed = sum(c.status in ("missed", "considered") and c.fusion == f for c in here)
                text = ("✓" * fused + "✗" * missed) or "·"
                row.append((text, "misscell" if missed else "fusedcell" if fused else ""))
            rows.append(row)
        body += ["<h2>Per layer</h2><p class=\"muted\">✓ fused, ✗ near miss</p>", table(["layer", *names], rows)]
    shown = expl.shown()
    misses = [c for c in shown if c.status in ("missed", "considered")]
    if misses:
        body.append("<h2>Near misses</h2>")
        for c in misses:
            m = c.miss
            if m is None:  # considered: the sign of a fusion, where no variant starts
                at = expl.fused.index.get(c.node)
                body.append(f"<details class=\"region\" open><summary>{esc(_where(c.layer))}: {esc(c.fusion)} "
                            f"at <span class=\"mono\">{esc(c.node)}</span></summary><p>{esc(c.describe())}</p>"
                            f"<div class=\"pictures\">{region_svg(expl.fused, [at])}</div></details>")
                continue
            matched = {expl.fused.index[n] for n in m.nodes if n in expl.fused.index}
            stop = expl.fused.index.get(m.at)
            nodes = sorted(matched | ({stop} if stop is not None else set()))
            body.append(f"<details class=\"region\" open><summary>{esc(_where(c.layer))}: "
                        f"{esc(c.fusion)}/{esc(m.variant)} at <span class=\"mono\">{esc(m.anchor)}</span> "
                        f"{' — ' + esc(m.progress.rstrip(', ')) if m.total else ''}</summary>"
                        f"<p><span class=\"bad\">stopped</span>{' at <code>' + esc(m.at) + '</code>' if m.at else ''}: "
                        f"{esc(m.reason)}</p>"
                        f"<div class=\"pictures\">{region_svg(expl.fused, nodes, matched, stop)}</div></details>")
    fused = [c for c in shown if c.status in ("fused", "earlier")]
    if fused:
        body.append("<h2>Fused regions</h2>")
        for layer, group in itertools.groupby(fused, key=lambda c: c.layer):
            group = list(group)
            body.append(f"<h3>{esc(_where(layer))}: {len(group)} fused</h3>")
            body += [_fused_region(c, expl.original, expl.fused, open_=len(fused) <= 24) for c in group]
    body += [f"<p class=\"muted\">note: {esc(n)}</p>" for n in d["notes"]]
    return page(f"fusekit explain {expl.model}", body)


def diff_page(diff) -> str:
    d = diff.to_dict()
    s, acct = d["summary"], d["accounting"]
    facts = [["nodes", f"{s['nodes'][0]} → {s['nodes'][1]}"],
             ["parameters", f"{s['parameters'][0]:,} → {s['parameters'][1]:,}"],
             ["parameter bytes", f"{s['parameter_bytes'][0]:,} → {s['parameter_bytes'][1]:,}"]]
    if s["file_bytes"]:
        facts.append(["file bytes", f"{s['file_bytes'][0]:,} → {s['file_bytes'][1]:,}"])
    facts.append(["regions from", d["alignment"]])
    verdict = ("<p class=\"ok\">every original node is accounted for</p>" if acct["ok"] else
               f"<p class=\"bad\">{acct['unaccounted']} original nodes are unaccounted for: "
               "the fused model lost values that kept nodes or outputs still need</p>")
    accounting = table(["original nodes", "kept", "replaced", "bypassed", "removed as dead", "unaccounted"],
                       [[acct["original_nodes"], acct["kept"], acct["replaced"], acct["bypassed"], acct["dead"],
                         (acct["unaccounted"], "bad" if acct["unaccounted"] else "ok")]], numeric=set(range(6)))
    before, after = d["ops"]["before"], d["ops"]["after"]
    ops = [[op, before.get(op, 0), after.get(op, 0), f"{after.get(op, 0) - before.get(op, 0):+d}"]
           for op in sorted(set(before) | set(after)) if before.get(op, 0) != after.get(op, 0)]
    same = ", ".join(f"{op} {n}" for op, n in before.items() if after.get(op) == n) or "none"
    layer_rows = [[_where(r["layer"]), r["original"], r["kept"], r["replaced"], r["bypassed"], r["dead"],
                   (r["unaccounted"], "bad" if r["unaccounted"] else ""),
                   ", ".join(f"{op.removeprefix('com.microsoft.')} {n}" for op, n in r["fused"].items()) or "—"]
                  for r in d["layers"]["rows"]]
    body = [f"<h1>fusekit diff</h1><p class=\"mono\">{esc(diff.original_path)} → {esc(diff.fused_path)}</p>",
            "<h2>Summary</h2>", table(["", ""], facts), "<h2>Accounting</h2>", verdict, accounting,
            f"<h2>Per layer</h2><p class=\"muted\">{esc(diff.layers.describe())}</p>",
            table(["layer", "nodes", "kept", "replaced", "bypassed", "dead", "unaccounted", "fused into"], layer_rows,
                  numeric={1, 2, 3, 4, 5, 6}),
            "<h2>Ops before and after</h2>", table(["op", "before", "after", "change"], ops, numeric={1, 2, 3}),
            f"<p class=\"muted\">unchanged: {esc(same)}</p>"]
    if d["unaccounted"]:
        body += ["<h2 class=\"bad\">Unaccounted</h2>",
                 table(["node", "op", "layer", "still needed by"],
                       [[u["name"], u["op"], _where(u["layer"]), ", ".join(u["users"]) or "an output"]
                        for u in d["unaccounted"]])]
    body.append(f"<h2>Fused nodes ({len(d['fused_nodes'])})</h2>")
    for region, entry in zip(diff.regions, d["fused_nodes"]):
        body.append(_diff_region(diff, region, entry, open_=len(d["fused_nodes"]) <= 24))
    if d["added"]:
        body += ["<h2>Added nodes</h2>", table(["node", "op", "feeds"],
                                               [[a["name"], a["op"], ", ".join(a["users"])] for a in d["added"]])]
    for title, key in (("Bypassed", "bypassed"), ("Removed as dead", "dead")):
        if d[key]:
            counts = Counter(e["op"] for e in d[key])
            body.append(f"<details class=\"region\"><summary>{title}: {len(d[key])} nodes ("
                        + esc(", ".join(f"{op} {n}" for op, n in counts.most_common())) + ")</summary>"
                        + table(["node", "op", "layer"], [[e["name"], e["op"], _where(e["layer"])] for e in d[key]])
                        + "</details>")
    body += [f"<p class=\"muted\">note: {esc(n)}</p>" for n in diff.notes]
    return page("fusekit diff", body)


def _diff_region(diff, region, entry: dict, open_: bool) -> str:
    made = f" — {'→'.join(entry['steps'])}/{entry['variant']}" if entry["fusion"] else ""
    head = (f"<code>{esc(entry['op'].removeprefix('com.microsoft.'))}</code> "
            f"<span class=\"mono muted\">{esc(entry['name'])}</span> ({esc(_where(entry['layer']))}{esc(made)}) "
            f"replaced {len(entry['replaced'])} nodes <span class=\"muted\">[{esc(entry['source'])}]</span>")
    constants = ", ".join(f"{k}={_fmt(v)}" for k, v in entry["constants"].items())
    wiring = table(["", "value", "comes from / goes to"],
                   [[f"input {i['index']}", i["name"], i["detail"]] for i in entry["inputs"]]
                   + [["output", o["name"], ("takes over the original value" if o["takes_over"] else "new value")
                       + (f"; read by {', '.join(o['users'])}" if o["users"] else "")] for o in entry["outputs"]])
    picture = side_by_side(region_svg(diff.original, region.replaced), node_svg(diff.fused, region.index),
                           "original", "fused")
    return (f"<details class=\"region\"{' open' if open_ else ''}><summary>{head}</summary>"
            + (f"<p class=\"mono\">constants: {esc(constants)}</p>" if constants else "")
            + (f"<p class=\"mono\">absorbed weights: {esc(', '.join(entry['absorbed']))}</p>"
               if entry["absorbed"] else "")
            + picture + wiring + "</details>")


__all__ = ["diff_page", "explain_page", "inspect_page", "node_svg", "page", "region_svg", "svg"]
