"""What the graph formats (folded, pprof, flamegraph, plot) share about frames.

A graph merges frames by name, so a frame is named by the function alone
(model.Frame.name(): no offset). root_first() orders a row's frame names the
way flame graphs and folded stacks read them: outermost first; row_title()
names a row by its innermost function that is not the allocator.
"""
from __future__ import annotations

from typing import Tuple

from leaktrace.base.model import ReportRow
from leaktrace.probes.alloc_functions import ALLOCATOR_SYMBOLS


def root_first(row: ReportRow) -> Tuple[str, ...]:
    return tuple(f.name() for f in reversed(row.frames))


def row_title(row: ReportRow) -> str:
    """The innermost known function that is not the allocator itself."""
    for frame in row.frames:
        if frame.symbol and frame.symbol not in ALLOCATOR_SYMBOLS and not frame.symbol.startswith("__libc_"):
            return frame.symbol
    return row.frames[0].name() if row.frames else "[no frames]"
