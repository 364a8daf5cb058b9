"""The human report: a header block, then one table row per site with its stack.

Sizes are human-readable (8.0 KiB), ages compact (12.3s, 4m05s). Sampled
figures are marked "~" and the header says they are estimates. Non-zero loss
counters are flagged, in red when writing to a terminal.
"""
from __future__ import annotations

import os

from datetime import datetime
from typing import List, Sequence, TextIO

from tabulate import tabulate

from leaktrace.base.model import (REACH_CLASSES, Frame, KernelPointer, Report, ReportRow, RowContents, RowReach,
                             Target)
from leaktrace.judge.reach.content import hex_lines
from leaktrace.base.units import format_age, format_bytes

RED, RESET = "\033[1;31m", "\033[0m"
FRAME_INDENT = "      "
# Optional identity columns, shown only when some row has a value.
IDENTITY_COLUMNS = (("pid", "pid"), ("comm", "comm"), ("cache", "cache"), ("cgroup", "cgroup"))
REACH_NAMES = ("unreferenced", "indirectly lost", "reachable")  # REACH_CLASSES for people
SAMPLE_SHOWN_BYTES = 32  # of each content sample, in the table (JSON has them all)


def printable(text: str) -> str:
    """Control characters (a comm may hold any byte) would break the layout."""
    return "".join(c if c.isprintable() else "?" for c in text)


class TableReporter:
    def __init__(self, show_unwind: bool = False) -> None:
        self.show_unwind = show_unwind

    def render(self, report: Report, out: TextIO) -> None:
        color = bool(getattr(out, "isatty", lambda: False)())
        lines = self._header(report, color)
        lines.append("")
        lines.extend(self._sites(report) if report.rows else [_empty_message(report)])
        if report.allocations:
            lines.append("")
            lines.extend(_allocations(report))
        out.write("\n".join(lines) + "\n\n")
        out.flush()

    def _header(self, report: Report, color: bool) -> List[str]:
        when = datetime.fromtimestamp(report.timestamp).strftime("%Y-%m-%d %H:%M:%S")
        lines = [f"leaktrace {when}  {report.mode} mode, traced {format_age(report.elapsed_s)}"]
        lines.extend(f"target: {_target_line(t)}" for t in report.targets)
        lines.extend(_hooked_line(t) for t in report.targets if t.hooked)
        lines.extend(f"probes: {printable(p)}" for p in report.probes)
        if report.events:
            lines.append("events: " + _counters(report.events))
        if report.losses:
            lines.append("losses: " + _counters(report.losses, flag=True, color=color))
        lines.append(_totals_line(report))
        if report.sample_rate > 1:
            lines.append(
                f"estimates: 1 sample per {report.sample_rate} bytes; "
                "bytes and counts marked ~ are scaled from samples"
            )
        lines.extend(f"warning: {printable(w)}" for w in report.warnings)
        lines.extend(_reach_header(report))
        return lines

    def _sites(self, report: Report) -> List[str]:
        extra = [(head, attr) for head, attr in IDENTITY_COLUMNS
                 if any(getattr(r, attr) for r in report.rows)]
        judged = any(r.verdict for r in report.rows)
        growth = ["verdict", "growth"] if judged else []
        uncertain = ["uncertain"] if any(r.uncertain_bytes for r in report.rows) else []
        headers = (["#", "outstanding", "allocs", "avg size", "oldest", "kind"] + [h for h, _ in extra]
                   + growth + uncertain)
        cells = [_row_cells(r) + [printable(str(getattr(r, a) or "")) for _, a in extra]
                 + (_growth_cells(r) if judged else [])
                 + ([format_bytes(r.uncertain_bytes) if r.uncertain_bytes else ""] if uncertain else [])
                 for r in report.rows]
        align = (["right"] * 5 + ["left"] * (1 + len(extra)) + ["left", "right"][: len(growth)]
                 + ["right"] * len(uncertain))
        table = tabulate(cells, headers=headers, tablefmt="simple",
                         disable_numparse=True, colalign=align).splitlines()
        lines = table[:2]  # "simple": header, rule, then one line per row
        for row, line in zip(report.rows, table[2:]):
            lines.append(line)
            if row.verdict_reason:
                lines.append(f"{FRAME_INDENT}{row.verdict or 'verdict'}: {printable(row.verdict_reason)}")
            if row.reach:
                lines.extend(FRAME_INDENT + line for line in _reach_lines(row.reach))
            if row.contents:
                lines.append(FRAME_INDENT + _contents_line(row.contents))
            lines.extend(FRAME_INDENT + self._frame_text(f) for f in row.frames)
            for number, stack in enumerate(row.more_stacks, start=2):
                lines.append(FRAME_INDENT + f"-- stack {number} --")
                lines.extend(FRAME_INDENT + self._frame_text(f) for f in stack)
        return lines

    def _frame_text(self, frame: Frame) -> str:
        if frame.placeholder:
            return frame.name()
        text = printable(frame.label())
        if self.show_unwind:
            text += f"  <{frame.unwind}>"
        if frame.note:
            text += f"  ({printable(frame.note)})"
        return text


def _row_cells(row: ReportRow) -> List[str]:
    mark = "~" if row.estimated else ""
    avg = row.bytes // row.count if row.count else 0
    return [str(row.rank), mark + format_bytes(row.bytes), f"{mark}{row.count:,}",
            format_bytes(avg), format_age(row.oldest_s), row.kind]


def _growth_cells(row: ReportRow) -> List[str]:
    if not row.verdict:
        return ["", ""]
    sign = "+" if row.growth_bps >= 0 else "-"
    return [row.verdict, f"{sign}{format_bytes(int(abs(row.growth_bps)))}/s"]


def _classes(bytes_, counts) -> str:
    return ", ".join(f"{counts[i]:,} {name} ({format_bytes(bytes_[i])})" for i, name in enumerate(REACH_NAMES))


def _reach_header(report: Report) -> List[str]:
    reach = report.reach
    if reach is None:
        return []
    lines = [f"reachability: not scanned: {printable(p)}" for p in reach.problems]
    if reach.threads:
        lines.append(f"reachability: read {format_bytes(reach.scanned_bytes)} in {reach.elapsed_s:.2f} s, "
                     f"{_plural(reach.threads, 'thread')} stopped {reach.frozen_s * 1000:.0f} ms; "
                     + _classes(reach.bytes, reach.counts))
    return lines


def _plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _reach_lines(reach: RowReach) -> List[str]:
    lines = ["reachability: " + _classes(reach.bytes, reach.counts)]
    if reach.samples:
        alike = f", {reach.similarity:.0%} alike" if reach.similarity is not None else ""
        lines.append(f"content ({_plural(len(reach.samples), 'sample')}{alike}):")
    for sample in reach.samples:
        label = f"0x{sample.address:x} {REACH_NAMES[REACH_CLASSES.index(sample.reach)]}"
        for number, (hex_text, text) in enumerate(hex_lines(sample.head[:SAMPLE_SHOWN_BYTES])):
            lines.append(f"  {label if number == 0 else '':<30} {hex_text:<47}  {text}")
    return lines


def _contents_line(contents: RowContents) -> str:
    """Kernel objects: what they point at, else the start of one of them."""
    alike = f", {contents.similarity:.0%} alike" if contents.similarity is not None else ""
    text = f"contents ({_plural(contents.sampled, 'object')} read{alike}): "
    if contents.pointers:
        return text + "points at " + ", ".join(_pointer_text(p) for p in contents.pointers)
    if contents.samples:
        hex_text, ascii_part = hex_lines(contents.samples[0].head[:16])[0]
        return text + f"{hex_text}  {ascii_part}"
    return text + "nothing read"


def _pointer_text(pointer: KernelPointer) -> str:
    """`eventfd_fops at +8 (16)`; a table as the functions it holds."""
    name = printable(pointer.symbol)
    if pointer.holds:
        name = "{" + ", ".join(printable(f) for f in pointer.holds[:3]) + (", ...}" if len(pointer.holds) > 3 else "}")
    return f"{name} at +{pointer.offset} ({pointer.objects})"


def _target_line(t: Target) -> str:
    text = f"pid {t.pid} {printable(t.comm)}"
    if t.forked_from:
        text += f", forked from pid {t.forked_from}"
    if t.allocator_name or t.allocator:
        text += f", allocator {t.allocator_name or '?'}"
        text += f" ({t.allocator})" if t.allocator else ""
    if t.container:
        c = t.container
        known = [printable(c.name)] if c.name else []
        known += [f"image {printable(c.image)}"] if c.image else []
        text += f", container {c.runtime} {c.id[:12]}" + (f" ({', '.join(known)})" if known else "")
    return text


def _hooked_line(t: Target) -> str:
    """`hooked in pid 42: libjemalloc.so.2 (malloc, _Znwm, ...); libc.so.6 (mmap, ...)`."""
    objects = [f"{printable(os.path.basename(obj))} ({', '.join(printable(s) for s in symbols)})"
               for obj, symbols in t.hooked]
    return f"hooked in pid {t.pid}: " + "; ".join(objects)


def _counters(counters, flag: bool = False, color: bool = False) -> str:
    parts = []
    for name, value in counters.items():
        part = f"{name}={value:,}"
        if flag and value:
            part = f"{RED}{part} (!){RESET}" if color else f"{part} (!)"
        parts.append(part)
    return ", ".join(parts)


def _totals_line(report: Report) -> str:
    bytes_, count = report.totals.get("bytes", 0), report.totals.get("count", 0)
    age = f" older than {report.older_than_ms} ms" if report.older_than_ms > 0 else ""
    text = f"outstanding: {format_bytes(bytes_)} in {count:,} allocations{age}"
    if report.rows:
        total = max(report.sites_total, len(report.rows))
        text += f"; top {len(report.rows)} of {total} sites by {report.group_by}"
    return text


def _empty_message(report: Report) -> str:
    if report.older_than_ms > 0:
        return f"no outstanding allocations older than {report.older_than_ms} ms"
    return "no outstanding allocations"


def _allocations(report: Report) -> List[str]:
    headers = ["address", "size", "age", "pid", "kind", "stack"]
    cells: List[Sequence[str]] = []
    for a in report.allocations:
        age = format_age((report.taken_ns - a.timestamp_ns) / 1e9) if report.taken_ns else "?"
        cells.append([f"0x{a.address:x}", format_bytes(a.size), age, str(a.pid), a.kind,
                      f"{a.stack.pid}:{a.stack.stack_id}"])
    table = tabulate(cells, headers=headers, tablefmt="simple", disable_numparse=True,
                     colalign=["left", "right", "right", "right", "left", "left"])
    return ["outstanding allocations, largest first:"] + table.splitlines()
