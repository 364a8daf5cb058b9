"""Folded stacks: `root;caller;...;leaf WEIGHT`, one line per stack.

The input format of flamegraph.pl, inferno and speedscope. The weight is
outstanding bytes; identical stacks (same names, e.g. one stack in two
processes) are summed; stacks holding 0 bytes are left out. Frame names lose
the two characters the format reserves: `;` (the separator) and line breaks.
"""
from __future__ import annotations

from typing import Dict, TextIO, Tuple

from leaktrace.base.model import Report
from leaktrace.report.frames import root_first


def folded_name(name: str) -> str:
    return name.replace(";", ":").replace("\n", " ").replace("\r", " ")


def folded_stacks(report: Report) -> Dict[Tuple[str, ...], int]:
    """Stack (root first) -> outstanding bytes, in report order."""
    stacks: Dict[Tuple[str, ...], int] = {}
    for row in report.rows:
        if row.bytes <= 0:
            continue
        names = tuple(folded_name(n) for n in root_first(row)) or ("[no frames]",)
        stacks[names] = stacks.get(names, 0) + row.bytes
    return stacks


class FoldedReporter:
    binary = False

    def __init__(self, show_unwind: bool = False) -> None:
        del show_unwind

    def render(self, report: Report, out: TextIO) -> None:
        for names, weight in folded_stacks(report).items():
            out.write(f"{';'.join(names)} {weight}\n")
        out.flush()
