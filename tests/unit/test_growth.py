"""Growth verdicts on simulated programs: allocations with known lifetimes go
through the real aggregate() every interval, in 2**28 ns age buckets like the
probes', and the session's GrowthTracker judges each site."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import List, Optional

import pytest

from leaktrace.base.config import ReportConfig
from leaktrace.judge.growth import MIN_POINTS, GrowthTracker, Series, fit_line, judge
from leaktrace.judge.judgement import judge_interval
from leaktrace.base.model import Bucket, RawStack, Snapshot, StackKey

S = 1_000_000_000
SHIFT = 28
BOOT = 5_000 * S  # monotonic clock when the simulated program starts
LEAK, CACHE, CHURN, STACK = (StackKey(4242, i) for i in (17, 3, 9, 21))


@dataclass
class Alloc:
    stack: StackKey
    at: float  # seconds since BOOT
    size: int
    freed: Optional[float] = None


def snapshot(allocs: List[Alloc], t: float) -> Snapshot:
    now = BOOT + int(t * S)
    totals = {}
    for a in allocs:
        if a.at <= t and (a.freed is None or a.freed > t):
            key = (a.stack, (BOOT + int(a.at * S)) >> SHIFT)
            nbytes, count = totals.get(key, (0, 0))
            totals[key] = (nbytes + a.size, count + 1)
    buckets = tuple(Bucket(stack, epoch << SHIFT, (epoch + 1) << SHIFT, n, c, pid=4242)
                    for (stack, epoch), (n, c) in totals.items())
    return Snapshot("user", now, BOOT, 1_714_000_000.0 + t, buckets,
                    {b.stack: RawStack((0x401136,)) for b in buckets})


def trace(allocs: List[Alloc], seconds: float, interval: float = 1.0, older_than_ms: int = 0):
    """Report every interval like a session; returns {stack_id: Growth} of the last one."""
    tracker = GrowthTracker()
    config = ReportConfig(top=0, older_than_ms=older_than_ms)
    steps = int(round(seconds / interval))
    for i in range(1, steps + 1):
        result, judged = judge_interval(snapshot(allocs, i * interval), config, tracker)
        result = result.limited(config.top)
    return {site.key[1]: judged.verdicts[site.key].growth for site in result.sites}, result


def every(stack, start, stop, step, size, lifetime=None):
    out, t = [], start
    while t < stop:
        out.append(Alloc(stack, t, size, None if lifetime is None else t + lifetime))
        t += step
    return out


def bounded_cache(fill_s=3.0, slots=256, size=4096, replace_every=0.005, stop=10.0, seed=1):
    """Fills `slots` entries over fill_s, then frees and replaces a random one every few ms."""
    rng = random.Random(seed)
    entries = [Alloc(CACHE, fill_s * i / slots, size) for i in range(slots)]
    allocs = list(entries)
    t = fill_s
    while t < stop:
        slot = rng.randrange(slots)
        entries[slot].freed = t
        entries[slot] = Alloc(CACHE, t, size)
        allocs.append(entries[slot])
        t += replace_every
    return allocs


def test_steady_leak_is_a_leak_with_its_rate():
    growth, _ = trace(every(LEAK, 0.05, 10, 0.1, 1024), 9)
    leak = growth[LEAK.stack_id]
    assert leak.verdict == "leak", leak.reason
    assert leak.growth_bps == pytest.approx(10 * 1024, rel=0.05)
    assert leak.retention == 1.0
    assert leak.history == tuple(sorted(leak.history)) and len(leak.history) == 9
    assert "100% of old allocations kept" in leak.reason


def test_bounded_cache_that_fills_then_holds_is_stable():
    growth, _ = trace(bounded_cache(), 10)
    cache = growth[CACHE.stack_id]
    assert cache.verdict == "stable", cache.reason
    assert cache.history[-1] == 256 * 4096
    assert cache.retention < 0.95
    assert "old allocations freed" in cache.reason


def test_cache_still_filling_while_it_evicts_is_growing():
    # A load that doubles: allocations live 3 s, the rate rises every second.
    allocs = [a for second in range(10)
              for a in every(CACHE, second, second + 1, 1 / (20 * (second + 1)), 2048, lifetime=3)]
    growth, _ = trace(allocs, 10)
    assert growth[CACHE.stack_id].verdict == "growing", growth[CACHE.stack_id].reason


def test_slow_leak_under_heavy_churn_in_the_same_stack_is_a_leak():
    # 400 short-lived 4 KiB blocks a second (live 0.3 s) hide a 128-byte leak every 50 ms.
    rng = random.Random(7)
    churn = [Alloc(LEAK, t, 4096, t + rng.uniform(0.05, 0.3)) for t in
             (i / 400 for i in range(12 * 400))]
    allocs = churn + every(LEAK, 0.01, 12, 0.05, 128)
    growth, _ = trace(allocs, 12, older_than_ms=0)
    leak = growth[LEAK.stack_id]
    assert leak.verdict == "leak", leak.reason
    # the fit sees the leak's slope, not the churn's 1.6 MB/s of turnover
    assert 0 < leak.growth_bps < 0.01 * 400 * 4096


def test_one_off_thread_stack_is_stable_and_ranked_below_a_smaller_leak():
    allocs = [Alloc(STACK, 2.5, 8 << 20)] + every(LEAK, 0.1, 8, 0.01, 1024)
    growth, result = trace(allocs, 8)
    assert growth[STACK.stack_id].verdict == "stable"
    assert "one allocation held" in growth[STACK.stack_id].reason
    assert growth[LEAK.stack_id].verdict == "leak"
    assert result.sites[0].bytes < result.sites[1].bytes  # the leak first, though smaller
    assert [s.key[1] for s in result.sites] == [LEAK.stack_id, STACK.stack_id]


def test_site_that_frees_everything_is_stable_and_dropped_later():
    allocs = every(CHURN, 0.1, 3, 0.1, 4096, lifetime=1.5)
    tracker = GrowthTracker()
    config = ReportConfig(top=0, older_than_ms=0)
    for i in range(1, 5):
        judge_interval(snapshot(allocs, i), config, tracker)
    key = (CHURN.pid, CHURN.stack_id, "heap")
    assert tracker.growth(key).verdict == "stable"
    for i in range(5, 11):  # nothing outstanding any more
        judge_interval(snapshot(allocs, i), config, tracker)
    assert key not in tracker.sites


def test_too_few_intervals_is_unknown():
    growth, _ = trace(every(LEAK, 0.05, 3, 0.1, 1024), 2)
    assert growth[LEAK.stack_id].verdict == "unknown"
    assert f"2 of {MIN_POINTS} intervals" in growth[LEAK.stack_id].reason


def test_site_appearing_after_the_start_counts_from_zero():
    growth, _ = trace(every(LEAK, 3.2, 3.3, 0.01, 4096), 6)
    leak = growth[LEAK.stack_id]
    assert leak.history[:3] == (0, 0, 0)
    assert leak.verdict == "leak", leak.reason  # a burst of 10 blocks, never freed


def test_fit_line_slope_and_quality():
    assert fit_line([0, 1, 2, 3], [10, 12, 14, 16]) == (2.0, 1.0)
    slope, r2 = fit_line([0, 1, 2, 3], [0, 10, 0, 10])
    assert slope == pytest.approx(2.0) and r2 == pytest.approx(0.2)
    assert fit_line([0, 1, 2], [5, 5, 5]) == (0.0, 1.0)


def test_judge_explains_a_flat_series_with_age_shares():
    series = Series((0, 5, 10), (8192, 8192, 8192), (2, 2, 2), held=16384, kept=16384,
                    bytes_older=(8192, 8192, 0))
    growth = judge(series)
    assert growth.verdict == "stable"
    assert "older than 1/10/60 s: 100%/100%/0%" in growth.reason
