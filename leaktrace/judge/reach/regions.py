"""Pure: which parts of a process's memory the scan reads, and as what.

plan(maps, stack_pointers, blocks) -> Regions, from the process's mappings:
  skipped   not both readable and writable (code, read-only data, guard
            pages, file mappings that are not writable), the kernel's [vvar]
            and [vsyscall], device memory under /dev (reading it may have
            side effects)
  stack     a mapping holding a thread's stack pointer: a root from that
            pointer (less the 128-byte red zone the ABI lets a function use
            below it) to the mapping's end; the dead frames below are not read
  heap      a writable mapping that holds tracked blocks (the brk heap, an
            arena, a large block's own mmap): read whole, its words count
            through the blocks (classify.py)
  root      every other writable mapping: the executable's and libraries'
            .data/.bss (and the anonymous tail of .bss), TLS, memory the
            process mapped before tracing began, writable shared memory
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import List, Sequence, Tuple

from ...symbols.maps import MapEntry
from .memory import HEAP, ROOT

RED_ZONE = 128  # x86-64 System V: below the stack pointer, still the function's
KERNEL_AREAS = ("[vvar]", "[vvar_vclock]", "[vsyscall]", "[vdso]")
READABLE_DEVICES = ("/dev/zero", "/dev/shm/")  # anonymous shared memory, tmpfs


@dataclass(frozen=True)
class Region:
    start: int
    end: int
    role: str  # memory.ROOT or memory.HEAP
    why: str  # "data", "stack", "anonymous", "shared", "heap"

    @property
    def size(self) -> int:
        return self.end - self.start


def plan(maps: Sequence[MapEntry], stack_pointers: Sequence[int],
         blocks: Sequence[Tuple[int, int]]) -> List[Region]:
    """Regions to read, in address order. blocks: (address, size) of tracked blocks."""
    starts = sorted(address for address, _ in blocks)
    regions = []
    for entry in maps:
        if not _scannable(entry):
            continue
        pointers = [sp for sp in stack_pointers if entry.contains(sp)]
        if pointers:
            low = max(entry.start, min(pointers) - RED_ZONE) & ~7
            regions.append(Region(low, entry.end, ROOT, "stack"))
        elif _holds_block(starts, entry):
            regions.append(Region(entry.start, entry.end, HEAP, "heap"))
        else:
            regions.append(Region(entry.start, entry.end, ROOT, _root_kind(entry)))
    return regions


def _scannable(entry: MapEntry) -> bool:
    if entry.perms[:2] != "rw" or entry.path in KERNEL_AREAS:
        return False
    return not entry.path.startswith("/dev/") or entry.path.startswith(READABLE_DEVICES)


def _holds_block(starts: List[int], entry: MapEntry) -> bool:
    i = bisect.bisect_left(starts, entry.start)
    return i < len(starts) and starts[i] < entry.end


def _root_kind(entry: MapEntry) -> str:
    if entry.perms[3] == "s":
        return "shared"
    return "data" if entry.file_backed else "anonymous"
