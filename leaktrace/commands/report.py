"""`leaktrace report FILE`: render a saved recording again, offline.

Works on any machine: a recording holds symbolized reports, so neither the
traced process nor its binaries are needed. The plot format draws every
interval up to the chosen one; the others render the chosen interval.
A recording holds every site of each interval; --top picks how many are shown.
"""
from __future__ import annotations

from typing import Optional

import click

from ..base import output_files
from ..base.config import DEFAULT_TOP
from ..base.console import stderr_line
from ..base.errors import UsageError
from ..report.recording import limited, read_recording, select
from ..report import REPORTERS, get_reporter, is_binary, render_reports
from .output import open_output


@click.command()
@click.argument("recording", type=click.Path(dir_okay=False))
@click.option("--format", "output_format", type=click.Choice(list(REPORTERS)), default="table",
              show_default=True, help="Output format (pprof is gzipped protobuf: use -o).")
@click.option("--at", "at_s", type=click.FloatRange(min=0), metavar="SECONDS",
              help="The interval taken at this many seconds of tracing (the last one by then).")
@click.option("--last", is_flag=True, help="The last interval (the default).")
@click.option("--top", type=click.IntRange(min=0), default=DEFAULT_TOP, show_default=True,
              help="Show the N stacks holding the most memory (0: every one recorded).")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write to FILE instead of stdout.")
@click.option("--show-unwind", is_flag=True, help="Say how each frame was recovered (table).")
def report(recording: str, output_format: str, at_s: Optional[float], last: bool, top: int,
           output: Optional[str], show_unwind: bool) -> None:
    """Render a recording made with --record (or a --format json file) again."""
    if last and at_s is not None:
        raise UsageError("--at and --last both choose the interval", hint="pass one of them")
    if output:
        output_files.check(output, "-o", replace=True)
    saved = read_recording(recording)
    for note in saved.notes():
        stderr_line(f"leaktrace: warning: {note}")
    reports = select(saved.reports, at_s)
    # Only the chosen interval is cut: a plot follows its stacks through every earlier one.
    reports = reports[:-1] + (limited(reports[-1], top),)
    reporter = get_reporter(output_format, show_unwind=show_unwind)
    with open_output(output, is_binary(reporter), output_format) as out:
        render_reports(reporter, reports, out)
