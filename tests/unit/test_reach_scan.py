"""Which blocks lived through the freeze (scan.judge_blocks): classified only
those; the memory of blocks made or freed around it counts as a root."""
from __future__ import annotations

import struct

from leaktrace.base.model import NOT_CLASSIFIED, REACHABLE, UNREFERENCED, Allocation, StackKey
from leaktrace.judge.reach.memory import HEAP, Segment
from leaktrace.judge.reach.scan import Copy, judge_blocks

HEAP_AT = 0x5555_0000_0000
STACK = StackKey(7, 1)


def alloc(slot, timestamp=1, pid=7, kind="heap"):
    return Allocation(pid, HEAP_AT + 64 * slot, 48, timestamp, STACK, kind)


def heap(*pointers):
    """A heap copy where slot `a` holds a pointer to slot `b`, for each (a, b)."""
    data = bytearray(64 * 8)
    for a, b in pointers:
        struct.pack_into("<Q", data, 64 * a, HEAP_AT + 64 * b)
    for slot in range(8):
        data[64 * slot + 8:64 * slot + 16] = b"slot %d  " % slot
    return Copy((Segment(HEAP_AT, bytes(data), HEAP),), 0.001, 1)


def test_blocks_freed_or_made_around_the_freeze_are_roots_and_not_classified():
    before = [alloc(0), alloc(1), alloc(2), alloc(4), alloc(5, timestamp=1)]
    # after: 1 was freed; 3 is new; 5 was freed and its address reused
    after = [alloc(0), alloc(2), alloc(3), alloc(4), alloc(5, timestamp=2)]
    copy = heap((1, 2), (3, 4))
    classes, heads = judge_blocks(before, after, {7: copy}, untracked_is_root=False)
    # 0 is lost; 2 and 4 are kept by blocks whose fate at the freeze is unknown (1, 3)
    assert list(classes) == [UNREFERENCED, NOT_CLASSIFIED, REACHABLE, REACHABLE, NOT_CLASSIFIED]
    assert set(heads) == {0, 2, 3}
    assert heads[0][8:14] == b"slot 0"


def test_a_reused_address_is_a_new_block_whose_memory_is_a_root():
    before = [alloc(0), alloc(5, timestamp=1)]
    after = [alloc(0), alloc(5, timestamp=2)]
    classes, _ = judge_blocks(before, after, {7: heap((5, 0))}, untracked_is_root=False)
    assert list(classes) == [REACHABLE, NOT_CLASSIFIED]


def test_processes_not_copied_stay_unclassified():
    before = [alloc(0), alloc(1, pid=8)]
    classes, _ = judge_blocks(before, before, {7: heap()}, untracked_is_root=False)
    assert list(classes) == [UNREFERENCED, NOT_CLASSIFIED]


def test_a_thread_stack_block_is_classified_but_its_dead_frames_are_not_read():
    before = [alloc(0, kind="stack"), alloc(1)]
    classes, _ = judge_blocks(before, before, {7: heap((0, 1))}, untracked_is_root=False)
    assert list(classes) == [UNREFERENCED, UNREFERENCED]
