"""Frame names shared by the graph formats (folded, pprof, flamegraph, plot).

A graph merges frames by name, so a name is the function alone (no offset):
`fibonacci`, or `[unknown] libfoo.so` when the symbol is missing, or the
note of a stack that was not collected. root_first() orders a row's frames
the way flame graphs and folded stacks read them: outermost first.
"""
from __future__ import annotations

from typing import Tuple

from leaktrace.model import Frame, ReportRow
from leaktrace.probes.alloc_functions import ALLOCATOR_SYMBOLS


def frame_name(frame: Frame) -> str:
    if frame.symbol:
        return frame.symbol
    if frame.addr == 0 and frame.note:
        return f"[{frame.note}]"
    module = frame.module.rsplit("/", 1)[-1] if frame.module else "unknown module"
    return f"[unknown] {module}"


def root_first(row: ReportRow) -> Tuple[str, ...]:
    return tuple(frame_name(f) for f in reversed(row.frames))


def row_title(row: ReportRow) -> str:
    """The innermost known function that is not the allocator itself."""
    for frame in row.frames:
        if frame.symbol and frame.symbol not in ALLOCATOR_SYMBOLS and not frame.symbol.startswith("__libc_"):
            return frame.symbol
    return frame_name(row.frames[0]) if row.frames else "[no frames]"
