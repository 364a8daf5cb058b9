"""The in-kernel totals map of either mode, read once per report and kept small.

TotalsMap.read() reads every entry once (batch.read_all), has the
age_blocks.BlockFolder count each under the block that holds it now, and
deletes the entries the folder took over. Between reports, compact() does the
same when the map gets crowded (a long --interval, thousands of stacks
leaking at once), so the map never fills with blocks that could have left it.
"""
from __future__ import annotations

import struct
from typing import Callable, Hashable, List, Tuple

from .age_blocks import SLOTS, BlockEntry, BlockFolder, Folded
from . import batch

# Value layout shared by both modes: s64 bytes[SLOTS], s64 count[SLOTS], ...
SLOT_VALUES = struct.Struct(f"<{2 * SLOTS}q")
CROWDED = 0.5  # share of the map's capacity above which compact() folds
COMPACT_EVERY_NS = 1_000_000_000


def slots_of(value) -> Tuple[Tuple[int, int], ...]:
    """(bytes, count) per slot of a bucket_totals / kbucket_totals value."""
    numbers = SLOT_VALUES.unpack_from(bytes(value))
    return tuple(zip(numbers[:SLOTS], numbers[SLOTS:]))


class TotalsMap:
    def __init__(self, table, context_of: Callable[[object, object], Hashable],
                 folder: BlockFolder, inserted: Callable[[], int]):
        self.table = table  # the bcc table `buckets`
        self.context_of = context_of  # (key, value) -> context: the key without its block
        self.folder = folder
        self.inserted = inserted  # entries the kernel ever inserted (a counter)
        self._held = 0  # entries in the map at the last read ...
        self._inserted_then = 0  # ... and the insert counter then
        self._last_ns = 0

    def _entry(self, key, value) -> BlockEntry:
        return BlockEntry(type(key).from_buffer_copy(key), self.context_of(key, value),
                          key.level, key.block, slots_of(value))

    def read(self, now_ns: int, drop: Callable[[Hashable], bool] = lambda context: False) -> Folded:
        inserted = self.inserted()
        entries: List[BlockEntry] = batch.read_all(self.table, self._entry)
        folded = self.folder.fold(entries, now_ns, drop)
        batch.delete(self.table, folded.retired)  # nothing adds to them any more
        self._held, self._inserted_then = len(entries) - len(folded.retired), inserted
        self._last_ns = now_ns
        return folded

    def crowded(self) -> bool:
        held = self._held + self.inserted() - self._inserted_then
        return held > CROWDED * self.table.max_entries

    def compact(self, now_ns: int, drop: Callable[[Hashable], bool] = lambda context: False) -> Folded:
        """Fold between reports when the map is crowded (at most once a second)."""
        if now_ns - self._last_ns < COMPACT_EVERY_NS or not self.crowded():
            return Folded((), (), {})
        return self.read(now_ns, drop)
