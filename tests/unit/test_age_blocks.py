"""Age blocks: folding old totals out of the kernel's map keeps the map small
and the totals exact. The kernel side is simulated with the same placement
rule bpf/age_blocks.h applies (an addition lands in the block that holds its
epoch at that moment); no root."""
import random
import subprocess
from bisect import bisect_left
from itertools import accumulate

import pytest

from leaktrace.probes.source import bpf_dir

from leaktrace.probes.age_blocks import (RETIRE_AFTER_NS, SLOTS, AgeTotal, BlockEntry, BlockFolder, block_shift,
                                  left_at, level_of, place)

SHIFT = 28  # epochs of 2^28 ns, the default
EPOCH_NS = 1 << SHIFT
S = 1_000_000_000


class SimulatedMap:
    """The kernel's totals map: additions land where age_place() puts them."""

    def __init__(self):
        self.entries = {}  # (context, level, block) -> [[bytes] * SLOTS, [count] * SLOTS]

    def add(self, context, epoch, now_epoch, nbytes, count):
        level, block = place(epoch, now_epoch)
        slot = epoch - block if level == 0 else 0
        value = self.entries.setdefault((context, level, block), [[0] * SLOTS, [0] * SLOTS])
        value[0][slot] += nbytes
        value[1][slot] += count

    def read(self):
        return [BlockEntry(key, key[0], key[1], key[2], tuple(zip(value[0], value[1])))
                for key, value in self.entries.items()]

    def delete(self, keys):
        for key in keys:
            del self.entries[key]


class Trace:
    """Allocations and frees against the simulated map, with their ground truth."""

    def __init__(self):
        self.map = SimulatedMap()
        self.folder = BlockFolder(SHIFT)
        self.live = {}  # id -> (context, epoch, bytes)
        self.next_id = 0
        self.peak_entries = 0

    def allocate(self, context, now_ns, nbytes):
        epoch = now_ns >> SHIFT
        self.map.add(context, epoch, epoch, nbytes, 1)
        self.live[self.next_id] = (context, epoch, nbytes)
        self.next_id += 1

    def free(self, ident, now_ns):
        context, epoch, nbytes = self.live.pop(ident)
        self.map.add(context, epoch, now_ns >> SHIFT, -nbytes, -1)

    def report(self, now_ns, drop=lambda context: False):
        self.peak_entries = max(self.peak_entries, len(self.map.entries))
        folded = self.folder.fold(self.map.read(), now_ns, drop)
        self.map.delete(folded.retired)
        return folded

    def truth(self):
        """context -> (sorted epochs, prefix sums of bytes): what is live, by age."""
        by_context = {}
        for context, epoch, nbytes in self.live.values():
            by_context.setdefault(context, []).append((epoch, nbytes))
        return {context: ([e for e, _ in sorted(items)], [0, *accumulate(n for _, n in sorted(items))])
                for context, items in by_context.items()}


def live_in(truth, context, first, epochs):
    epochs_sorted, sums = truth.get(context, ([], [0]))
    return sums[bisect_left(epochs_sorted, first + epochs)] - sums[bisect_left(epochs_sorted, first)]


def check_exact(trace, folded, now_ns):
    """Totals per context partition the timeline, each exactly what is live in it."""
    now = now_ns >> SHIFT
    truth = trace.truth()
    by_context = {}
    for total in folded.totals:
        by_context.setdefault(total.context, []).append(total)
    for context, totals in by_context.items():
        ranges = sorted((t.first, t.first + t.epochs) for t in totals)
        assert all(a[1] <= b[0] for a, b in zip(ranges, ranges[1:])), f"overlap in {ranges}"
        for total in totals:
            assert total.bytes == live_in(truth, context, total.first, total.epochs), total
            if total.epochs > 1:  # a coarse block is never wider than its youngest age
                assert now - (total.first + total.epochs) >= total.epochs, (total, now)
    live = {}
    for context, _, nbytes in trace.live.values():
        live[context] = live.get(context, 0) + nbytes
    assert {c: sum(t.bytes for t in ts) for c, ts in by_context.items()} == \
        {c: n for c, n in live.items() if n}


def test_placement_matches_the_rule_of_the_bpf_header():
    # level L >= 1 once the level-L block ended at least one block ago
    assert level_of(100, 100) == 0 and place(100, 100) == (0, 96)
    assert level_of(96, 111) == 0  # the previous 8-epoch block keeps its slots
    assert level_of(96, 112) == 1  # two blocks on: level 1, same range
    assert place(96, 127) == (1, 96) and place(96, 128) == (2, 96)
    assert block_shift(0) == block_shift(1) == 3 and block_shift(5) == 7
    assert left_at(0, 96) == 112 and left_at(1, 96) == 128


# bpf/age_blocks.h compiled for user space, fed "epoch now" lines.
PLACE_C = r"""
#include <stdint.h>
#include <stdio.h>
typedef uint32_t u32;
typedef uint8_t u8;
#define __always_inline inline __attribute__((always_inline))
#include "age_blocks.h"
int main(void)
{
    u32 epoch, now, block;
    u8 level;
    while (scanf("%u %u", &epoch, &now) == 2) {
        u32 slot = age_place(epoch, now, &block, &level);
        printf("%u %u %u\n", level, block, slot);
    }
    return 0;
}
"""


def test_the_bpf_header_places_every_epoch_where_the_folder_expects_it(tmp_path):
    source = tmp_path / "place.c"
    source.write_text(PLACE_C)
    subprocess.run(["gcc", "-O1", "-Wno-unknown-pragmas", f"-I{bpf_dir()}", str(source),
                    "-o", str(tmp_path / "place")], check=True)
    rng = random.Random(3)
    cases = [(e, e + age) for e in (0, 7, 8, 95, 96, 1 << 20, (1 << 31) + 5)
             for age in (0, 1, 15, 16, 17, 31, 32, 1000, 1 << 20)]
    cases += [(e, rng.randrange(e, 1 << 32)) for e in (rng.randrange(1 << 32) for _ in range(3000))]
    cases = [(e, n) for e, n in cases if n < 1 << 32]
    run = subprocess.run([str(tmp_path / "place")], input="".join(f"{e} {n}\n" for e, n in cases),
                         capture_output=True, text=True, check=True)
    expected = []
    for epoch, now in cases:
        level, block = place(epoch, now)
        expected.append(f"{level} {block} {epoch - block if level == 0 else 0}")
    assert run.stdout.split("\n")[:-1] == expected


def test_a_week_of_leaking_and_freeing_stays_exact_with_a_small_map():
    rng = random.Random(7)
    trace = Trace()
    contexts = [("pid", stack) for stack in range(6)]
    start = now = 1000 * S
    end = now + 7 * 24 * 3600 * S
    step = 60 * S  # each context allocates once a minute
    report_every = 10 * 60 * S
    next_report = now + report_every
    reports = 0
    while now < end:
        for context in contexts:
            trace.allocate(context, now + rng.randrange(step // 2), rng.randrange(16, 4096))
        if trace.live and rng.random() < 0.6:  # frees of allocations of any age
            for ident in rng.sample(sorted(trace.live), min(4, len(trace.live))):
                trace.free(ident, now + step // 2)
        now += step
        if now >= next_report:
            folded = trace.report(now)
            reports += 1
            if reports % 50 == 0:
                check_exact(trace, folded, now)
            next_report += report_every
    folded = trace.report(now)
    check_exact(trace, folded, now)
    # Neither the map nor the folder grows with the length of the trace (the
    # week is 2.2 million epochs): a few recent blocks, and ~3 blocks per
    # level (levels double in width) where frees of old memory land.
    levels = level_of(start >> SHIFT, now >> SHIFT)
    assert levels == 18
    assert trace.peak_entries <= len(contexts) * (6 + 3 * levels), trace.peak_entries
    per_context = max(sum(1 for key in trace.folder.carried if key[0] == c) for c in contexts)
    assert per_context <= 3 * levels, per_context


def test_a_steady_leak_in_every_epoch_needs_few_entries_per_stack():
    trace = Trace()
    contexts = [("pid", stack) for stack in range(40)]
    now = 5000 * S
    for second in range(1, 121):  # 2 minutes, 4 allocations a second per stack, reports every 5 s
        for quarter in range(4):
            for context in contexts:
                trace.allocate(context, now + quarter * S // 4, 64)
        now += S
        if second % 5 == 0:
            check_exact(trace, trace.report(now), now)
    # 2 level-0 blocks (~2 s each) hold the last seconds with their slots,
    # plus those left behind since the last report.
    assert trace.peak_entries <= 6 * len(contexts), trace.peak_entries


def test_slots_keep_the_age_of_young_memory_to_one_epoch():
    trace = Trace()
    now = 10_000 * S
    trace.allocate("ctx", now, 100)
    trace.allocate("ctx", now + 3 * EPOCH_NS, 200)
    folded = trace.report(now + 4 * EPOCH_NS)
    assert sorted((t.first, t.epochs, t.bytes) for t in folded.totals) == [
        (now >> SHIFT, 1, 100), ((now >> SHIFT) + 3, 1, 200)]


def test_a_free_that_lands_in_a_coarse_block_meets_its_allocation_in_a_finer_one():
    # The allocation's entry is left behind but not yet retired when the
    # free lands in the coarser block: they must be counted together.
    trace = Trace()
    start = 20_000 * S
    trace.allocate("ctx", start, 64)
    trace.allocate("ctx", start, 32)
    switch = left_at(0, place(start >> SHIFT, start >> SHIFT)[1]) << SHIFT
    trace.free(0, switch)  # lands at level 1
    folded = trace.report(switch + RETIRE_AFTER_NS // 2)
    assert not folded.retired  # too recent to leave the map
    assert [(t.bytes, t.count) for t in folded.totals] == [(32, 1)]
    folded = trace.report(switch + 2 * RETIRE_AFTER_NS)
    # The allocations' level-0 entry leaves the map; the level-1 entry the
    # free made stays while frees can still land in it.
    assert [key[1] for key in folded.retired] == [0]
    assert [key[1] for key in trace.map.entries] == [1]
    assert [(t.bytes, t.count) for t in folded.totals] == [(32, 1)]


def test_dropped_contexts_leave_the_map_and_the_folder_with_their_totals():
    trace = Trace()
    now = 30_000 * S
    trace.allocate(("old image",), now, 500)
    trace.allocate(("new image",), now, 7)
    trace.report(now + 60 * S)  # the old image's block is carried by now
    assert trace.folder.carried
    folded = trace.report(now + 61 * S, drop=lambda context: context == ("old image",))
    assert folded.dropped == {("old image",): [500, 1]}
    assert [t.context for t in folded.totals] == [("new image",)]
    assert all(key[0] != ("old image",) for key in trace.folder.carried)


@pytest.mark.parametrize("epoch", [0, 7, 8, 1 << 20, (1 << 32) - 1])
def test_a_block_holds_its_epoch_at_every_age(epoch):
    for age in (0, 1, 9, 100, 10_000, 1 << 24):
        now = min(epoch + age, (1 << 32) - 1)
        level, block = place(epoch, now)
        assert block <= epoch < block + (1 << block_shift(level))


def test_a_wide_old_block_never_dates_memory_before_the_trace_began():
    # A level-3 block of 64 epochs that began 40 epochs before tracing did:
    # its memory is at most as old as the trace, never 40 epochs older.
    block = AgeTotal(context=(1, 2), first=100, epochs=64, bytes=800, count=1)
    assert block.span_ns(shift=28, since_ns=140 << 28) == (140 << 28, 164 << 28)
    assert block.span_ns(shift=28, since_ns=90 << 28) == (100 << 28, 164 << 28)
    assert block.span_ns(shift=28, since_ns=200 << 28) == (164 << 28, 164 << 28)
