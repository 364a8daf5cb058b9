"""JSON lines: one report per line, in the schema of docs/json-schema.md.

Interval reports stream one line each, flushed as they are written, so
`leaktrace --format json | jq` and recordings can read them as they come.
read_reports() is the inverse, for recordings and diffs.
"""
from __future__ import annotations

import json
from typing import Iterable, Iterator, TextIO

from leaktrace.base.errors import UsageError
from leaktrace.base.model import Report
from leaktrace.report.serialize import report_from_dict, report_to_dict


class JsonReporter:
    def __init__(self, show_unwind: bool = False) -> None:
        del show_unwind  # every frame always carries its unwind method in JSON

    def render(self, report: Report, out: TextIO) -> None:
        # ASCII escapes keep the line valid whatever the stream's encoding
        # (a comm or symbol may hold any bytes).
        out.write(json.dumps(report_to_dict(report), separators=(",", ":")) + "\n")
        out.flush()


def read_reports(lines: Iterable[str]) -> Iterator[Report]:
    """Reports from JSON lines; blank lines are skipped."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            document = json.loads(line)
        except ValueError as e:
            raise UsageError(
                f"line {number} is not JSON: {e}",
                hint="pass a file written by `leaktrace --format json`",
            ) from None
        except RecursionError:  # the parser's depth bound (sys.getrecursionlimit())
            raise UsageError(f"line {number} nests deeper than any report does: not a report",
                             hint="pass a file written by `leaktrace --format json`") from None
        try:
            report = report_from_dict(document)
        except UsageError as e:
            raise UsageError(f"line {number}: {e.message}", hint=e.hint) from None
        yield report
