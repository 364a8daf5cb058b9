"""Output formats: one module per format behind the REPORTERS registry.

A reporter takes a finished Report (plain data, already symbolized) and writes
it to a stream; it never reads the system. Adding a format means one
module, one entry here, one docs page and one parametrized test case.
A reporter whose `binary` is true writes bytes (pprof); one with
render_series() can draw a whole recording at once (plot): render_reports()
picks the right call.
"""
from __future__ import annotations

from typing import Dict, Protocol, Sequence, TextIO, Type

from leaktrace.base.errors import UsageError
from leaktrace.base.model import Report
from leaktrace.report.flamegraph import FlamegraphReporter
from leaktrace.report.folded import FoldedReporter
from leaktrace.report.json_report import JsonReporter
from leaktrace.report.plot import PlotReporter
from leaktrace.report.pprof import PprofReporter
from leaktrace.report.table import TableReporter


class Reporter(Protocol):
    def __init__(self, show_unwind: bool = False) -> None: ...

    def render(self, report: Report, out: TextIO) -> None: ...


REPORTERS: Dict[str, Type[Reporter]] = {
    "table": TableReporter, "json": JsonReporter, "folded": FoldedReporter,
    "pprof": PprofReporter, "flamegraph": FlamegraphReporter, "plot": PlotReporter,
}


def is_binary(reporter: Reporter) -> bool:
    return bool(getattr(reporter, "binary", False))


def render_reports(reporter: Reporter, reports: Sequence[Report], out) -> None:
    """A series-drawing reporter gets every report; any other the last one."""
    if hasattr(reporter, "render_series"):
        reporter.render_series(reports, out)
    else:
        reporter.render(reports[-1], out)


def get_reporter(name: str, show_unwind: bool = False) -> Reporter:
    """The reporter for --format NAME; show_unwind adds each frame's unwind method."""
    try:
        reporter = REPORTERS[name]
    except KeyError:
        valid = ", ".join(REPORTERS)
        raise UsageError(
            f"unknown output format {name!r}", hint=f"--format takes one of: {valid}"
        ) from None
    return reporter(show_unwind=show_unwind)
