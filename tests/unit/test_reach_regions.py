"""Which memory the reachability scan reads, and as what (regions.plan), and
reading a copy back by address (memory.MemoryImage)."""
from __future__ import annotations

from leaktrace.judge.reach.memory import HEAP, ROOT, MemoryImage, Segment
from leaktrace.judge.reach.regions import RED_ZONE, plan
from leaktrace.symbols.maps import parse_maps

MAPS = """\
55d0c0a00000-55d0c0a01000 r--p 00000000 fd:01 1234 /app/server
55d0c0a01000-55d0c0a02000 r-xp 00001000 fd:01 1234 /app/server
55d0c0a03000-55d0c0a04000 rw-p 00003000 fd:01 1234 /app/server
55d0c0a04000-55d0c0a05000 rw-p 00000000 00:00 0
55d0c1000000-55d0c1021000 rw-p 00000000 00:00 0 [heap]
7f1000000000-7f1000021000 rw-p 00000000 00:00 0
7f1000021000-7f1004000000 ---p 00000000 00:00 0
7f2000000000-7f2000800000 rw-p 00000000 00:00 0
7f3000000000-7f3000001000 rw-s 00000000 00:01 77 /dev/shm/queue
7f3000001000-7f3000002000 rw-s 00000000 00:06 5 /dev/dri/card0
7f3000002000-7f3000003000 r--p 00000000 fd:01 99 /usr/share/locale/C.utf8
7f3000003000-7f3000004000 rw-p 0002a000 fd:01 42 /usr/lib/x86_64-linux-gnu/libc.so.6
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0 [stack]
7ffc00100000-7ffc00102000 r--p 00000000 00:00 0 [vvar]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0 [vsyscall]
"""


def roles(regions):
    return [(hex(r.start), hex(r.end), r.role, r.why) for r in regions]


def test_plan_picks_roots_heaps_and_live_stacks():
    blocks = [(0x55D0C1000010, 64), (0x7F2000000000, 0x800000)]
    threads = [0x7FFC00020000, 0x7F1000020F00]  # main thread, and one in an anonymous mapping
    got = roles(plan(parse_maps(MAPS), threads, blocks))
    assert got == [
        ("0x55d0c0a03000", "0x55d0c0a04000", ROOT, "data"),  # the executable's .data
        ("0x55d0c0a04000", "0x55d0c0a05000", ROOT, "anonymous"),  # .bss past the file
        ("0x55d0c1000000", "0x55d0c1021000", HEAP, "heap"),
        (hex(0x7F1000020F00 - RED_ZONE), "0x7f1000021000", ROOT, "stack"),  # a thread, from its sp
        ("0x7f2000000000", "0x7f2000800000", HEAP, "heap"),  # a large block's own mapping
        ("0x7f3000000000", "0x7f3000001000", ROOT, "shared"),  # /dev/shm is memory; /dev/dri is not read
        ("0x7f3000003000", "0x7f3000004000", ROOT, "data"),  # libc's .data; its read-only locale is not
        (hex(0x7FFC00020000 - RED_ZONE), "0x7ffc00021000", ROOT, "stack"),
    ]


def test_without_tracked_blocks_the_heap_is_a_root():
    got = plan(parse_maps(MAPS), [], [])
    heap = next(r for r in got if r.start == 0x55D0C1000000)
    assert (heap.role, heap.why) == (ROOT, "anonymous")


def test_a_block_ending_where_a_mapping_starts_does_not_make_it_a_heap():
    got = plan(parse_maps(MAPS), [], [(0x55D0C0A04000 - 64, 64)])
    bss = next(r for r in got if r.start == 0x55D0C0A04000)
    assert bss.role == ROOT


def test_memory_image_reads_across_segments_and_holes():
    image = MemoryImage([Segment(0x2000, b"cdef"), Segment(0x1FFC, b"ab\0\0", HEAP)])
    assert image.read(0x1FFC, 8) == b"ab\0\0cdef"
    assert image.read(0x2002, 6) == b"ef\0\0\0\0"  # past the copy: pages never touched
    assert image.read(0x9000, 3) == b"\0\0\0"
