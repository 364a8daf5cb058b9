"""Output formats: one module per format behind the REPORTERS registry.

A reporter takes a finished Report (plain data, already symbolized) and writes
it to a text stream; it never reads the system. Adding a format means one
module, one entry here, one docs page and one parametrized test case.
"""
from __future__ import annotations

from typing import Dict, Protocol, TextIO, Type

from leaktrace.errors import UsageError
from leaktrace.model import Report
from leaktrace.report.json_report import JsonReporter
from leaktrace.report.table import TableReporter


class Reporter(Protocol):
    def __init__(self, show_unwind: bool = False) -> None: ...

    def render(self, report: Report, out: TextIO) -> None: ...


REPORTERS: Dict[str, Type[Reporter]] = {"table": TableReporter, "json": JsonReporter}


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
