"""Plot: outstanding bytes over time for the top stacks, as one SVG file.

render_series() takes a recording's reports (oldest first) and draws one line
per stack of the last report (its top MAX_LINES rows, in report order: the
strongest evidence of leaking first), matched across reports by
compare.stack_signature. A stack missing from a report breaks its line
there: gone, or below the top N of a `--format json` file (recordings hold
every site). Written directly as SVG: no plotting library needed.
render() of a single report plots its rows' `history` (bytes per interval).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, TextIO, Tuple
from xml.sax.saxutils import escape

from leaktrace.judge.compare import stack_signature
from leaktrace.base.model import Report, ReportRow
from leaktrace.report.frames import row_title
from leaktrace.base.units import format_age, format_bytes

MAX_LINES = 8
WIDTH, HEIGHT = 960, 540
LEFT, RIGHT, TOP, BOTTOM = 90, 20, 40, 60 + 18 * 4  # room for axis labels and the legend
COLOURS = ("#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
Point = Tuple[float, Optional[int]]  # (seconds, bytes or None for a gap)


def series_of(reports: Sequence[Report]) -> List[Tuple[ReportRow, List[Point]]]:
    """(row of the last report, its bytes at each report) for the top rows."""
    if not reports:
        return []
    rows = reports[-1].rows[:MAX_LINES]
    by_report = [{stack_signature(r): r.bytes for r in report.rows} for report in reports]
    return [(row, [(report.elapsed_s, seen.get(stack_signature(row)))
                   for report, seen in zip(reports, by_report)]) for row in rows]


def _history_series(report: Report) -> List[Tuple[ReportRow, List[Point]]]:
    """A single report: each row's history, spaced evenly up to the report's time."""
    out = []
    for row in report.rows[:MAX_LINES]:
        history = row.history or (row.bytes,)
        step = report.elapsed_s / max(1, len(history) - 1) if len(history) > 1 else 0.0
        start = report.elapsed_s - step * (len(history) - 1)
        out.append((row, [(start + i * step, b) for i, b in enumerate(history)]))
    return out


def _ticks(top: float, count: int = 5) -> List[float]:
    return [top * i / count for i in range(count + 1)]


def _label(row: ReportRow) -> str:
    text = row_title(row)
    text = text if len(text) <= 70 else text[:67] + "..."
    verdict = f" [{row.verdict}]" if row.verdict else ""
    return f"{text}{verdict} ({format_bytes(row.bytes)})"


def render_lines(lines: List[Tuple[ReportRow, List[Point]]], title: str) -> str:
    points = [p for _, pts in lines for p in pts if p[1] is not None]
    t0 = min((t for t, _ in points), default=0.0)
    span = max((t for t, _ in points), default=1.0) - t0 or 1.0
    peak = max((b for _, b in points), default=0) or 1
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def xy(t: float, b: int) -> str:
        return f"{LEFT + (t - t0) / span * plot_w:.1f},{TOP + plot_h - b / peak * plot_h:.1f}"

    out = [f'<text x="{WIDTH / 2}" y="22" text-anchor="middle" font-size="15">{escape(title)}</text>',
           f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>']
    for value in _ticks(peak):
        y = TOP + plot_h - value / peak * plot_h
        out.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
                   f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{format_bytes(int(value))}</text>')
    for value in _ticks(span):
        x = LEFT + value / span * plot_w
        out.append(f'<text x="{x:.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">'
                   f"{format_age(t0 + value)}</text>")
    out.append(f'<text x="{LEFT + plot_w / 2}" y="{TOP + plot_h + 34}" text-anchor="middle">'
               "time traced</text>")
    for i, (row, pts) in enumerate(lines):
        colour = COLOURS[i % len(COLOURS)]
        for run in _runs(pts):
            out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                       f'points="{" ".join(xy(t, b) for t, b in run)}"/>')
            out.extend(f'<circle cx="{xy(t, b).split(",")[0]}" cy="{xy(t, b).split(",")[1]}" r="2.5" '
                       f'fill="{colour}"/>' for t, b in run)
        y = TOP + plot_h + 52 + 18 * (i // 2)
        x = LEFT + (i % 2) * plot_w / 2
        out.append(f'<rect x="{x:.1f}" y="{y - 10}" width="12" height="12" fill="{colour}"/>'
                   f'<text x="{x + 18:.1f}" y="{y}">{escape(_label(row))}</text>')
    if not lines:
        out.append(f'<text x="{WIDTH / 2}" y="{TOP + plot_h / 2}" text-anchor="middle">'
                   "no outstanding allocations</text>")
    return "\n".join([
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>', *out, "</svg>"]) + "\n"


def _runs(points: List[Point]) -> List[List[Tuple[float, int]]]:
    """Consecutive known points: a gap (None) ends a line."""
    runs: List[List[Tuple[float, int]]] = [[]]
    for t, b in points:
        if b is None:
            runs.append([])
        else:
            runs[-1].append((t, b))
    return [run for run in runs if run]


TITLE = "leaktrace: outstanding bytes over time, top stacks"


class PlotReporter:
    binary = False

    def __init__(self, show_unwind: bool = False) -> None:
        del show_unwind

    def render(self, report: Report, out: TextIO) -> None:
        out.write(render_lines(_history_series(report), TITLE))
        out.flush()

    def render_series(self, reports: Sequence[Report], out: TextIO) -> None:
        out.write(render_lines(series_of(reports), TITLE))
        out.flush()
