"""Pure: a copy of a process's memory, as the scan read it.

A Segment is one contiguous copy (start address, bytes) with its role:
  root  every word is a possible reference (data/bss, a thread's live stack,
        registers, memory no tracked block lives in)
  heap  memory that holds tracked blocks: words count only through the
        blocks they lie in (see classify.py)
Pages that were never touched are not copied (they hold zeros); reading an
address in such a hole of a planned region gives zeros.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Sequence

WORD = 8
ROOT, HEAP = "root", "heap"


@dataclass(frozen=True)
class Segment:
    start: int  # address of data[0]; a multiple of WORD
    data: bytes
    role: str = ROOT

    @property
    def end(self) -> int:
        return self.start + len(self.data)


class MemoryImage:
    """Segments sorted by address, read back by address (for content samples)."""

    def __init__(self, segments: Sequence[Segment]):
        self.segments = sorted(segments, key=lambda s: s.start)
        self._starts = [s.start for s in self.segments]

    def read(self, address: int, size: int) -> bytes:
        """The copied bytes at [address, address+size); zeros where nothing was
        copied (pages never touched)."""
        out = bytearray(size)
        i = max(0, bisect.bisect_right(self._starts, address) - 1)
        end = address + size
        while i < len(self.segments) and self.segments[i].start < end:
            seg = self.segments[i]
            lo, hi = max(address, seg.start), min(end, seg.end)
            if lo < hi:
                out[lo - address:hi - address] = seg.data[lo - seg.start:hi - seg.start]
            i += 1
        return bytes(out)
