"""The reachability classifier on synthetic memory with known truth."""
from __future__ import annotations

import struct

from leaktrace.base.model import INDIRECTLY_LOST as INDIRECT, REACHABLE, UNREFERENCED
from leaktrace.judge.reach.classify import ROOT_CONTENT, SKIP, Block, classify
from leaktrace.judge.reach.memory import HEAP, ROOT, Segment

HEAP_AT = 0x5555_0000_0000
DATA_AT = 0x5555_4000_0000


class Heap:
    """A heap mapping of 64-byte slots; put(slot, offset, value) writes a word."""

    def __init__(self, slots: int = 16):
        self.data = bytearray(64 * slots)

    @staticmethod
    def addr(slot: int, offset: int = 0) -> int:
        return HEAP_AT + 64 * slot + offset

    def put(self, slot: int, offset: int, value: int) -> None:
        struct.pack_into("<Q", self.data, 64 * slot + offset, value)

    def segment(self) -> Segment:
        return Segment(HEAP_AT, bytes(self.data), HEAP)


def root(*values: int) -> Segment:
    return Segment(DATA_AT, struct.pack(f"<{len(values)}Q", *values), ROOT)


def blocks(*slots: int, size: int = 48) -> list:
    return [Block(Heap.addr(s), size) for s in slots]


def test_a_list_from_a_root_is_reachable_a_dropped_chain_is_one_head_and_its_tail():
    heap = Heap()
    # kept: root -> 0 -> 1 -> 2; dropped chain: 3 -> 4 -> 5 (nothing points at 3); 6 alone
    for a, b in ((0, 1), (1, 2), (3, 4), (4, 5)):
        heap.put(a, 8, Heap.addr(b))
    got = classify(blocks(0, 1, 2, 3, 4, 5, 6), [root(Heap.addr(0)), heap.segment()])
    assert list(got) == [REACHABLE] * 3 + [UNREFERENCED, INDIRECT, INDIRECT, UNREFERENCED]


def test_interior_pointers_count_and_the_end_of_a_block_does_not():
    heap = Heap()
    got = classify(blocks(0, 1, 2), [root(Heap.addr(0, 47), Heap.addr(1, 48), Heap.addr(2, 1) | 1),
                                     heap.segment()])
    # 47 is the last byte of slot 0; 48 is one past slot 1's end; a low-bit tag stays inside
    assert list(got) == [REACHABLE, UNREFERENCED, REACHABLE]


def test_a_zero_sized_block_is_found_by_its_address():
    got = classify([Block(Heap.addr(0), 0)], [root(Heap.addr(0))])
    assert list(got) == [REACHABLE]


def test_a_cycle_nothing_points_into_has_one_head():
    heap = Heap()
    heap.put(2, 0, Heap.addr(5))
    heap.put(5, 0, Heap.addr(2))
    heap.put(5, 8, Heap.addr(5))  # a pointer to itself never counts
    got = classify(blocks(2, 5), [heap.segment()])
    assert list(got) == [UNREFERENCED, INDIRECT]


def test_a_cycle_hanging_off_a_lost_block_is_indirect_whatever_the_addresses():
    heap = Heap()
    # 9 -> 1 <-> 3 ; 1 and 3 have lower addresses than their only referrer 9
    heap.put(9, 0, Heap.addr(1))
    heap.put(1, 0, Heap.addr(3))
    heap.put(3, 0, Heap.addr(1))
    got = classify(blocks(1, 3, 9), [heap.segment()])
    assert list(got) == [INDIRECT, INDIRECT, UNREFERENCED]


def test_a_self_pointer_does_not_make_a_block_indirect():
    heap = Heap()
    heap.put(4, 16, Heap.addr(4))
    assert list(classify(blocks(4), [heap.segment()])) == [UNREFERENCED]


def test_words_outside_blocks_count_only_when_untracked_memory_is_a_root():
    heap = Heap()
    heap.put(7, 0, Heap.addr(0))  # slot 7 is no tracked block: free space, or untracked
    segs = [heap.segment()]
    assert list(classify(blocks(0), segs)) == [UNREFERENCED]
    assert list(classify(blocks(0), segs, untracked_is_root=True)) == [REACHABLE]


def test_block_content_roles():
    heap = Heap()
    heap.put(0, 0, Heap.addr(1))  # 0 is a root block (unknown fate): 1 is reachable
    heap.put(2, 0, Heap.addr(3))  # 2 is skipped (a thread stack's dead frames): 3 is lost
    got = classify([Block(Heap.addr(0), 48, ROOT_CONTENT), Block(Heap.addr(1), 48),
                    Block(Heap.addr(2), 48, SKIP), Block(Heap.addr(3), 48)], [heap.segment()])
    assert got[1] == REACHABLE and got[3] == UNREFERENCED


def test_order_of_blocks_is_the_callers_and_unaligned_or_stray_words_are_ignored():
    heap = Heap()
    raw = bytearray(heap.data)
    struct.pack_into("<Q", raw, 64 * 5 + 4, Heap.addr(6))  # unaligned: not a reference
    seg = Segment(HEAP_AT, bytes(raw), HEAP)
    got = classify([Block(Heap.addr(6), 48), Block(Heap.addr(5), 48)],
                   [seg, root(Heap.addr(5), 0x1234, 2**64 - 1)])
    assert list(got) == [UNREFERENCED, REACHABLE]


def test_deep_chains_do_not_recurse():
    n = 50_000
    data = bytearray(16 * n)
    for i in range(n - 1):
        struct.pack_into("<Q", data, 16 * i, HEAP_AT + 16 * (i + 1))
    got = classify([Block(HEAP_AT + 16 * i, 16) for i in range(n)],
                   [Segment(HEAP_AT, bytes(data), HEAP), root(HEAP_AT)])
    assert got == bytes([REACHABLE]) * n
    lost = classify([Block(HEAP_AT + 16 * i, 16) for i in range(n)], [Segment(HEAP_AT, bytes(data), HEAP)])
    assert lost[0] == UNREFERENCED and set(lost[1:]) == {INDIRECT}


def test_no_blocks_no_segments():
    assert classify([], [root(1, 2, 3)]) == b""
