"""Allocator semantics the probes must get right, on a real program
(tests/programs/alloc_semantics.c), traced by `leaktrace attach` (root + BPF).

Sizes and counts are exact: every block is leaked with the size it was asked
for, and the program's stdio runs on static buffers, so between "go" and its
LEAKED line the traced process makes no allocator call but its own.
"""
import re

import pytest

from harness import LeakyProcess, describe_stacks, leaked_under, stacks_with, trace

pytestmark = pytest.mark.privileged

COUNT_CALLS = 50  # calls of each of the 9 kinds of call in `alloc_semantics count`


def program_lines(leaker):
    # The harness parses only SITE/LEAKED; the program's other lines (MREMAP,
    # FAILED, CALLS) are read from the same collected stdout.
    return list(leaker._out.lines)


def printed(lines, pattern):
    for line in lines:
        match = re.fullmatch(pattern, line.strip())
        if match:
            return match
    raise AssertionError(f"no line matches {pattern!r} in {lines!r}")


@pytest.fixture(scope="module")
def semantics(build):
    with LeakyProcess([build("alloc_semantics.c")]) as leaker:
        leaked, reports, _ = trace(leaker, ["--show-allocs", "--top", "50"])
        lines = program_lines(leaker)
    return leaked, reports[-1], lines


def assert_exactly(report, function, expected, kind="heap"):
    found = leaked_under(report, function, kind)
    assert (found["bytes"], found["count"]) == (expected["bytes"], expected["count"]), (
        f"{function} ({kind}): {found}, the program says {expected}\n" + describe_stacks(report))


def test_realloc_to_zero_frees_and_is_not_a_failed_allocation(semantics):
    _, report, lines = semantics
    assert not stacks_with(report, "realloc_to_zero"), (
        "realloc(p, 0) left p reported\n" + describe_stacks(report))
    # The program counts its NULL returns from failing calls; realloc(p, 0)
    # also returns NULL but is a free, so it must add nothing.
    failures = int(printed(lines, r"FAILED count=(\d+)")[1])
    assert report["events"]["failed_allocs"] == failures, report["events"]


def test_a_failed_realloc_keeps_the_old_block_with_its_old_size(semantics):
    leaked, report, _ = semantics
    assert_exactly(report, "failed_realloc_keeps_block", leaked["sites"]["failed_realloc_keeps_block"])


def test_failed_and_overflowing_allocations_are_not_recorded(semantics):
    _, report, _ = semantics
    for function in ("fail_malloc_and_calloc", "overflow_calloc"):
        assert not stacks_with(report, function), f"{function} reported\n" + describe_stacks(report)


def test_reallocarray_leak_is_reported_with_n_times_size(semantics):
    leaked, report, _ = semantics
    assert_exactly(report, "leak_reallocarray", leaked["sites"]["leak_reallocarray"])


def test_a_large_malloc_is_one_heap_allocation_not_also_an_mmap(semantics):
    leaked, report, _ = semantics
    assert_exactly(report, "leak_large_malloc", leaked["sites"]["leak_large_malloc"])
    assert not stacks_with(report, "leak_large_malloc", "mmap"), (
        "malloc's own mmap reported as well\n" + describe_stacks(report))
    # Not vacuous: glibc did map each block, and the probes set those mmaps aside.
    assert report["events"]["nested_mmaps"] >= leaked["sites"]["leak_large_malloc"]["count"], report["events"]


def test_mremap_moves_the_tracking_to_the_new_address_and_size(semantics):
    leaked, report, lines = semantics
    assert_exactly(report, "move_region", leaked["sites"]["move_region"], kind="mmap")
    assert not stacks_with(report, "map_region"), (
        "the region mremap moved is still held at its old address\n" + describe_stacks(report))
    match = printed(lines, r"MREMAP old=(0x[0-9a-f]+) new=(0x[0-9a-f]+)")
    old, new = int(match[1], 16), int(match[2], 16)
    held = {int(a["address"], 16): a for a in report["allocations"]}
    assert old not in held, held.get(old)
    assert new in held, f"{new:#x} not among {sorted(hex(a) for a in held)}"
    assert (held[new]["size"], held[new]["kind"]) == (leaked["sites"]["move_region"]["bytes"], "mmap")


def test_each_allocation_is_counted_once(build):
    # Exact, not within a tolerance: between "go" and LEAKED the program makes
    # only these calls (static stdio buffers, one thread, nothing before "go"
    # is traced), each function once per call. memalign and aligned_alloc
    # share one address in Debian's glibc: hooked twice, each of their calls
    # counted two allocations and one `replaced`. realloc(NULL, n) runs malloc
    # and reallocarray runs realloc: the outer call alone records the block.
    with LeakyProcess([build("alloc_semantics.c"), "count", COUNT_CALLS]) as leaker:
        _, reports, _ = trace(leaker)
        lines = program_lines(leaker)
    calls = printed(lines, r"CALLS allocs=(\d+) frees=(\d+)")
    events, losses = reports[-1]["events"], reports[-1]["losses"]
    assert int(calls[1]) == 9 * COUNT_CALLS
    assert events["nested_calls"] >= 2 * COUNT_CALLS, events  # at least one per realloc(NULL)/reallocarray
    assert (events["allocs"], events["frees"]) == (int(calls[1]), int(calls[2])), events
    assert (events["replaced"], events["failed_allocs"], events["unknown_frees"]) == (0, 0, 0), (events, losses)
