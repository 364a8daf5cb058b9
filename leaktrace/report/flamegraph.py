"""Flame graph: one self-contained SVG of outstanding bytes, click to zoom.

Each box is a function, as wide as the outstanding bytes under it, callers
below callees (root at the bottom). Boxes are coloured by the strongest
verdict of the stacks through them: red for leak, orange for growing, blue
for stable, yellow when not judged. Clicking a box zooms to it; clicking the
bottom `all` box zooms out. The file needs nothing but a browser: the script
is inline and short. Hover shows the full name, bytes and share.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Dict, List, TextIO
from xml.sax.saxutils import escape, quoteattr

from leaktrace.base.model import Report
from leaktrace.report.frames import root_first
from leaktrace.base.units import format_bytes

WIDTH = 1200
ROW = 17
TOP = 44  # title and help line
CHAR_PX = 7.0  # monospace 12px, for fitting names into boxes
VERDICT_RANK = {"leak": 0, "growing": 1, "unknown": 2, "stable": 3, "": 4}
# (red, green, blue) base and spread per verdict rank
PALETTE = {0: ((205, 40, 40), (40, 60, 40)), 1: ((225, 130, 30), (25, 60, 30)),
           2: ((200, 180, 60), (40, 50, 30)), 3: ((70, 120, 200), (30, 50, 40)),
           4: ((225, 150, 50), (30, 80, 40))}

SCRIPT = """
function fit(g, px) {
  var name = g.getAttribute('data-n'), t = g.querySelector('text'), n = Math.floor((px - 6) / %(char)s);
  t.textContent = n < 3 ? '' : (name.length <= n ? name : name.slice(0, n - 2) + '..');
}
function zoom(target) {
  var zx = +target.getAttribute('data-x'), zw = +target.getAttribute('data-w'), zd = +target.getAttribute('data-d');
  var e = 1e-9, all = document.querySelectorAll('g.f');
  for (var i = 0; i < all.length; i++) {
    var g = all[i], x = +g.getAttribute('data-x'), w = +g.getAttribute('data-w'), d = +g.getAttribute('data-d');
    var r = g.querySelector('rect'), t = g.querySelector('text'), nx, nw;
    if (d < zd && x <= zx + e && x + w >= zx + zw - e) { nx = 0; nw = 1; g.style.opacity = 0.6; }
    else if (d >= zd && x >= zx - e && x + w <= zx + zw + e) { nx = (x - zx) / zw; nw = w / zw; g.style.opacity = 1; }
    else { g.style.display = 'none'; continue; }
    g.style.display = '';
    r.setAttribute('x', nx * %(width)s); r.setAttribute('width', Math.max(0, nw * %(width)s - 1));
    t.setAttribute('x', nx * %(width)s + 3); fit(g, nw * %(width)s);
  }
}
document.querySelectorAll('g.f').forEach(function (g) {
  g.addEventListener('click', function () { zoom(g); });
});
""" % {"char": CHAR_PX, "width": WIDTH}


@dataclass
class Node:
    name: str
    value: int = 0
    rank: int = VERDICT_RANK[""]
    children: Dict[str, "Node"] = field(default_factory=dict)


def build_tree(report: Report) -> Node:
    """Names root first; a node's value is the bytes of every stack through it."""
    root = Node("all")
    for row in report.rows:
        if row.bytes <= 0:
            continue
        rank = VERDICT_RANK.get(row.verdict, VERDICT_RANK[""])
        path = [root]
        for name in root_first(row) or ("[no frames]",):
            path.append(path[-1].children.setdefault(name, Node(name)))
        for node in path:
            node.value += row.bytes
            node.rank = min(node.rank, rank)
    return root


def _depth(node: Node) -> int:
    return 1 + max((_depth(c) for c in node.children.values()), default=0)


def _colour(node: Node) -> str:
    (r, g, b), (dr, dg, db) = PALETTE[node.rank]
    h = hashlib.md5(node.name.encode("utf-8", "replace")).digest()  # stable hue per name
    return f"rgb({r + h[0] * dr // 255 - dr // 2},{g + h[1] * dg // 255 - dg // 2},{b + h[2] * db // 255 - db // 2})"


def _fit(name: str, px: float) -> str:
    n = int((px - 6) // CHAR_PX)
    return "" if n < 3 else (name if len(name) <= n else name[: n - 2] + "..")


def _boxes(node: Node, total: int, x: float, depth: int, height: int, out: List[str]) -> None:
    w = node.value / total
    y = height - (depth + 1) * ROW
    share = 100.0 * node.value / total
    tip = f"{node.name} ({format_bytes(node.value)}, {share:.1f}%)"
    out.append(
        f'<g class="f" data-n={quoteattr(node.name)} data-x="{x:.9f}" data-w="{w:.9f}" data-d="{depth}">'
        f"<title>{escape(tip)}</title>"
        f'<rect x="{x * WIDTH:.2f}" y="{y}" width="{max(0.0, w * WIDTH - 1):.2f}" height="{ROW - 1}" '
        f'fill="{_colour(node)}" rx="2"/>'
        f'<text x="{x * WIDTH + 3:.2f}" y="{y + ROW - 5}">{escape(_fit(node.name, w * WIDTH))}</text></g>'
    )
    for child in sorted(node.children.values(), key=lambda c: c.name):
        _boxes(child, total, x, depth + 1, height, out)
        x += child.value / total


def render_svg(report: Report) -> str:
    root = build_tree(report)
    depth = _depth(root) if root.value else 1
    height = TOP + depth * ROW + 8
    title = f"leaktrace: outstanding memory by stack ({format_bytes(root.value)})"
    body: List[str] = []
    if root.value:
        _boxes(root, root.value, 0.0, 0, height - 8, body)
    else:
        body.append(f'<text x="{WIDTH / 2}" y="{TOP + 12}" text-anchor="middle">no outstanding allocations</text>')
    return "\n".join([
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="monospace" font-size="12">',
        "<style>g.f{cursor:pointer} g.f:hover rect{stroke:#000;stroke-width:0.5} text{pointer-events:none}</style>",
        f'<rect width="{WIDTH}" height="{height}" fill="#fafafa"/>',
        f'<text x="{WIDTH / 2}" y="18" text-anchor="middle" font-size="15">{escape(title)}</text>',
        f'<text x="{WIDTH / 2}" y="34" text-anchor="middle" fill="#555">click a box to zoom, '
        "the bottom box to zoom out; red: leak, orange: growing, blue: stable</text>",
        *body,
        f"<script><![CDATA[{SCRIPT}]]></script>",
        "</svg>",
    ]) + "\n"


class FlamegraphReporter:
    binary = False

    def __init__(self, show_unwind: bool = False) -> None:
        del show_unwind

    def render(self, report: Report, out: TextIO) -> None:
        out.write(render_svg(report))
        out.flush()
