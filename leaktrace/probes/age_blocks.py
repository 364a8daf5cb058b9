"""The totals' time axis: age blocks, and folding old blocks out of the kernel.

Mirrors bpf/age_blocks.h (keep both in step). Time is counted in epochs of
2^AGE_BUCKET_SHIFT ns. The kernel adds an allocation to a level-0 block of
SLOTS epochs, one slot per epoch; once a level-L block ended at least one
such block ago its epochs belong to level L + 1 (blocks twice as wide, no
slots), so a block is never wider than the age of its youngest allocation.
Frees land in the block where the kernel places their allocation at the time
of the free.

BlockFolder runs at every report, on one read of the map: every entry is
counted under the block that holds its epochs now (so a free that landed in
a coarse block and the allocation still counted in a finer one meet), and an
entry that no free can reach any more (RETIRE_AFTER_NS after it was left
behind) is moved into the folder's own totals and deleted from the map. The
map holds only recent blocks and blocks that frees reach now, whatever the
length of the trace; totals stay exact because every addition lands in
exactly one entry and an entry leaves the map only once nothing adds to it.
Pure: no clock, no bcc.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Dict, Hashable, Iterable, List, Optional, Sequence, Tuple

SLOT_BITS = 3
SLOTS = 1 << SLOT_BITS
MAX_LEVEL = 32 - SLOT_BITS
NS_PER_S = 1_000_000_000
# A probe reads the clock, then updates an entry microseconds later; an entry
# left behind this long ago gets no more updates and can leave the map.
RETIRE_AFTER_NS = NS_PER_S


def block_shift(level: int) -> int:
    return SLOT_BITS + max(level - 1, 0)


def _behind(epoch: int, now: int, shift: int) -> bool:
    """Is the block of `epoch` at `shift` at least two blocks behind `now`'s?"""
    return (now >> shift) >= (epoch >> shift) + 2


def level_of(epoch: int, now: int) -> int:
    """The level the kernel files `epoch` under at epoch `now` (age_place):
    the coarsest shift it is behind at, found by the same binary search."""
    if not _behind(epoch, now, SLOT_BITS):
        return 0
    low, high = SLOT_BITS, 32  # behind at low, not at high
    while high - low > 1:
        middle = (low + high) // 2
        if _behind(epoch, now, middle):
            low = middle
        else:
            high = middle
    return low - SLOT_BITS + 1


@lru_cache(maxsize=65536)  # a report places the same few blocks for every stack
def place(epoch: int, now: int) -> Tuple[int, int]:
    """(level, first epoch) of the block holding `epoch` at epoch `now`."""
    level = level_of(epoch, now)
    shift = block_shift(level)
    return level, (epoch >> shift) << shift


def left_at(level: int, block: int) -> Optional[int]:
    """The epoch from which frees no longer land in this block (None: never)."""
    if level >= MAX_LEVEL:
        return None
    shift = block_shift(level + 1)
    return ((block >> shift) + 2) << shift


@dataclass(frozen=True)
class BlockEntry:
    """One entry of a totals map: per slot (bytes, count) at level 0, else slot 0 only."""

    key: object  # the map's own key, handed back for deletion
    context: Hashable  # everything in the key but the block: (pid, stack, kind, ...)
    level: int
    block: int
    slots: Sequence[Tuple[int, int]]


@dataclass(frozen=True)
class AgeTotal:
    """Outstanding bytes and count of one context allocated in [first, first + epochs)."""

    context: Hashable
    first: int
    epochs: int
    bytes: int
    count: int

    def span_ns(self, shift: int, since_ns: int) -> Tuple[int, int]:
        """[start, end) in ns; nothing was traced before since_ns, so a wide
        old block starts no earlier (an age never exceeds the time traced)."""
        end = (self.first + self.epochs) << shift
        return min(max(self.first << shift, since_ns), end), end


@dataclass(frozen=True)
class Folded:
    totals: Tuple[AgeTotal, ...]
    retired: Tuple[object, ...]  # map keys to delete now
    dropped: Dict[Hashable, Tuple[int, int]]  # context -> (bytes, count) dropped


@dataclass
class BlockFolder:
    """Totals of blocks taken out of the map, per (context, level, block)."""

    shift_ns: int  # AGE_BUCKET_SHIFT: an epoch is 2^shift_ns ns
    carried: Dict[Tuple[Hashable, int, int], List[int]] = field(default_factory=dict)

    def fold(self, entries: Iterable[BlockEntry], now_ns: int,
             drop: Callable[[Hashable], bool] = lambda context: False) -> Folded:
        """Every entry under the block that holds it now; which entries leave the map.

        Contexts for which drop() is true are deleted from the map and from
        the folder (the exec'd image of a process), their totals returned."""
        now = now_ns >> self.shift_ns
        retire_before = (now_ns - RETIRE_AFTER_NS) >> self.shift_ns
        sums: Dict[Tuple[Hashable, int, int], List[int]] = {}
        retired, dropped = [], {}
        for entry in entries:
            if drop(entry.context):
                retired.append(entry.key)
                _add(dropped, entry.context, _entry_sum(entry))
                continue
            level, block = _placed(entry.level, entry.block, now)
            if entry.level == 0 and level == 0:
                for slot, (nbytes, count) in enumerate(entry.slots):
                    if count:
                        _add(sums, (entry.context, -1, entry.block + slot), (nbytes, count))
                continue
            left = left_at(entry.level, entry.block)
            moves = (entry.level, entry.block) != (level, block) and left is not None \
                and left <= retire_before
            target = self.carried if moves else sums
            _add(target, (entry.context, level, block), _entry_sum(entry))
            if moves:
                retired.append(entry.key)
        self._settle(now, drop, dropped)
        for key, value in self.carried.items():
            _add(sums, key, value)
        totals = tuple(AgeTotal(context, block, _width(level), nbytes, count)
                       for (context, level, block), (nbytes, count) in sums.items()
                       if nbytes or count)
        return Folded(totals, tuple(retired), dropped)

    def _settle(self, now: int, drop, dropped: Dict) -> None:
        """Carried blocks filed under the block that holds them now; empty ones forgotten."""
        settled: Dict[Tuple[Hashable, int, int], List[int]] = {}
        for (context, level, block), value in self.carried.items():
            if drop(context):
                _add(dropped, context, value)
                continue
            level, block = _placed(level, block, now)
            _add(settled, (context, level, block), value)
        self.carried = {key: value for key, value in settled.items() if value[0] or value[1]}


def _placed(level: int, block: int, now: int) -> Tuple[int, int]:
    """Where a block filed at `level` is held now: never finer than it was."""
    placed = place(block, now)
    return placed if placed[0] >= level else (level, block)


def _width(level: int) -> int:
    """Epochs one total spans: a slot for level 0 (level -1 here), else the block."""
    return 1 if level < 0 else 1 << block_shift(level)


def _entry_sum(entry: BlockEntry) -> Tuple[int, int]:
    return sum(s[0] for s in entry.slots), sum(s[1] for s in entry.slots)


def _add(into: Dict, key, value) -> None:
    total = into.get(key)
    if total is None:
        into[key] = [value[0], value[1]]
    else:
        total[0] += value[0]
        total[1] += value[1]
