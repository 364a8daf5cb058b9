"""`leaktrace diff A B`: which stacks grew, shrank, appeared or disappeared.

A and B are recordings (their last interval) or `FILE@SECONDS` (the interval
taken by then), so two points of one recording compare too.
"""
from __future__ import annotations

import json
import os
from typing import List, Optional, Tuple

import click
from tabulate import tabulate

from ..base import output_files
from ..judge.compare import Change, compare, to_dict
from ..base.console import stderr_line
from ..base.errors import UsageError
from ..base.model import Report, ReportRow
from ..report.recording import read_recording, select
from ..report.frames import row_title
from ..report.table import printable
from ..base.units import format_bytes
from .output import open_output


def parse_point(text: str) -> Tuple[str, Optional[float]]:
    """'FILE' or 'FILE@SECONDS' -> (path, seconds or None for the last interval)."""
    path, sep, at = text.rpartition("@")
    if not sep or os.path.exists(text):
        return text, None
    try:
        seconds = float(at)
    except ValueError:
        raise UsageError(f"{text!r}: {at!r} is not a number of seconds",
                         hint="write FILE@SECONDS, e.g. app.rec@30") from None
    if seconds < 0:
        raise UsageError(f"{text!r}: seconds must not be negative", hint="write e.g. app.rec@30")
    return path, seconds


def load_point(text: str) -> Report:
    path, at = parse_point(text)
    saved = read_recording(path)
    for note in saved.notes():
        stderr_line(f"leaktrace: warning: {note}")
    return select(saved.reports, at)[-1]


def _signed(n: int) -> str:
    return ("+" if n > 0 else "-" if n < 0 else "±") + format_bytes(abs(n))


def render_table(changes: Tuple[Change, ...], before: Report, after: Report, out) -> None:
    out.write(f"before: {before.elapsed_s:.1f} s traced, {format_bytes(before.totals.get('bytes', 0))}; "
              f"after: {after.elapsed_s:.1f} s traced, {format_bytes(after.totals.get('bytes', 0))}\n")
    if not changes:
        out.write("no stacks in either report\n")
        return
    cells = [[c.status, _signed(c.bytes_delta), f"{c.count_delta:+,}", format_bytes(c.bytes_before),
              format_bytes(c.bytes_after), c.kind, printable(_title(c))] for c in changes]
    out.write(tabulate(cells, headers=["change", "bytes", "allocs", "before", "after", "kind", "function"],
                       tablefmt="simple", disable_numparse=True,
                       colalign=["left", "right", "right", "right", "right", "left", "left"]) + "\n")


def _title(change: Change) -> str:
    return row_title(ReportRow(0, 0, 0, 0.0, change.frames))


@click.command()
@click.argument("before", metavar="A")
@click.argument("after", metavar="B")
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="json writes one document (docs/formats.md).")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write to FILE instead of stdout.")
def diff(before: str, after: str, output_format: str, output: Optional[str]) -> None:
    """Compare two recordings, or two points of one: `diff app.rec@10 app.rec@60`.

    Stacks are matched by their symbolized frames, not addresses, so two runs
    of one program compare. Largest byte change first.
    """
    if output:
        output_files.check(output, "-o", replace=True)
    a, b = load_point(before), load_point(after)
    changes = compare(a, b)
    with open_output(output, False, output_format) as out:
        if output_format == "json":
            out.write(json.dumps(to_dict(changes, a, b, (before, after)), separators=(",", ":")) + "\n")
        else:
            render_table(changes, a, b, out)
