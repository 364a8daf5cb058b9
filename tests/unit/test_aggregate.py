"""aggregate(): age filter, grouping, totals and the top N cut on hand-built snapshots.

Values are shaped like the probes' output: monotonic nanoseconds around a
machine up ~3 hours, buckets 2**28 ns (~268 ms) wide, glibc-sized chunks.
"""
from __future__ import annotations

import pytest

from leaktrace.aggregate import aggregate
from leaktrace.base.config import ReportConfig
from leaktrace.base.errors import UsageError
from leaktrace.base.model import Bucket, RawStack, Snapshot, StackKey

NOW = 11_234_567_890_123  # monotonic ns at the snapshot
WIDTH = 1 << 28
S = 1_000_000_000
MS = 1_000_000

LEAK = StackKey(pid=4242, stack_id=17)  # main -> leak_buffer -> malloc
CACHE = StackKey(pid=4242, stack_id=3)  # a cache that grows and is never trimmed
TEMP = StackKey(pid=4242, stack_id=9)  # short-lived buffers


def bucket(stack, age_s, nbytes, count, **fields):
    """A bucket whose allocations were made age_s seconds before NOW (its start)."""
    start = NOW - int(age_s * S)
    return Bucket(stack=stack, start_ns=start, end_ns=start + WIDTH, bytes=nbytes,
                  count=count, **fields)


def snapshot(*buckets, mode="user"):
    stacks = {b.stack: RawStack((0x401136, 0x4011A0)) for b in buckets}
    return Snapshot(mode=mode, taken_ns=NOW, started_ns=NOW - 120 * S, wall_time=1_714_000_000.5,
                    buckets=tuple(buckets), stacks=stacks)


def by_key(result):
    return {site.key: site for site in result.sites}


def test_leak_outranks_churn_and_totals_cover_every_kept_bucket():
    snap = snapshot(
        bucket(LEAK, 90, 64 * 1024, 64, comm="app"),
        bucket(LEAK, 30, 32 * 1024, 32, comm="app"),
        bucket(CACHE, 45, 4096, 1, comm="app"),
        bucket(TEMP, 5, 48, 3, comm="app"),
    )
    result = aggregate(snap, ReportConfig(top=2, older_than_ms=500))
    assert [s.key for s in result.sites] == [(4242, 17, "heap"), (4242, 3, "heap")]
    leak = result.sites[0]
    assert (leak.bytes, leak.count, leak.pid, leak.comm) == (96 * 1024, 96, 4242, "app")
    # Totals and the site count include TEMP although the top-2 cut drops it.
    assert result.totals == {"bytes": 96 * 1024 + 4096 + 48, "count": 96 + 1 + 3}
    assert result.sites_total == 3


def test_age_filter_keeps_a_bucket_ending_exactly_at_the_threshold():
    threshold = NOW - 500 * MS
    exact = Bucket(LEAK, threshold - WIDTH, threshold, 100, 1)
    one_ns_late = Bucket(TEMP, threshold - WIDTH + 1, threshold + 1, 7, 1)
    result = aggregate(snapshot(exact, one_ns_late), ReportConfig(older_than_ms=500))
    assert [s.stacks for s in result.sites] == [(LEAK,)]
    assert result.totals == {"bytes": 100, "count": 1}


def test_a_bucket_straddling_the_threshold_is_left_out():
    # Started 600 ms ago but still open 332 ms ago: some of it may be younger than 500 ms.
    straddling = bucket(LEAK, 0.6, 4096, 4)
    assert aggregate(snapshot(straddling), ReportConfig(older_than_ms=500)).sites == ()


def test_older_than_zero_includes_the_current_open_bucket():
    current = Bucket(LEAK, NOW - 1000, NOW - 1000 + WIDTH, 256, 2)  # ends in the future
    result = aggregate(snapshot(current), ReportConfig(older_than_ms=0))
    assert result.totals == {"bytes": 256, "count": 2}


def test_buckets_with_no_outstanding_allocations_are_ignored():
    freed = bucket(LEAK, 50, 0, 0)
    overfreed = bucket(CACHE, 50, -64, -1)  # frees counted after a map was full
    result = aggregate(snapshot(freed, overfreed, bucket(TEMP, 50, 32, 1)), ReportConfig())
    assert [s.stacks for s in result.sites] == [(TEMP,)]
    assert result.sites_total == 1


def test_oldest_age_and_age_distribution():
    snap = snapshot(bucket(LEAK, 75, 3000, 3), bucket(LEAK, 20, 200, 2), bucket(LEAK, 3, 10, 1))
    site = aggregate(snap, ReportConfig(older_than_ms=0)).sites[0]
    assert site.oldest_ns == 75 * S
    # >1s: all three; >10s: the 75 s and 20 s buckets; >60s: only the 75 s one.
    assert site.bytes_older == (3210, 3200, 3000)


def test_bucket_width_decides_whether_bytes_count_as_older_than_a_threshold():
    # Started 10.1 s ago, so its last allocations are only ~9.83 s old: not surely > 10 s.
    site = aggregate(snapshot(bucket(LEAK, 10.1, 512, 1)), ReportConfig()).sites[0]
    assert site.bytes_older == (512, 0, 0)


def test_group_by_cache_merges_stacks_and_orders_them_by_bytes():
    a, b = StackKey(0, 5), StackKey(0, 6)
    snap = snapshot(
        bucket(a, 30, 1024, 8, kind="cache", cache="dentry", pid=311, comm="find"),
        bucket(b, 40, 4096, 32, kind="cache", cache="dentry", pid=87, comm="systemd"),
        bucket(a, 30, 512, 1, kind="kmalloc", cache="kmalloc-512", pid=311, comm="find"),
        mode="kernel",
    )
    sites = by_key(aggregate(snap, ReportConfig(group_by="cache")))
    dentry = sites[("dentry",)]
    assert (dentry.bytes, dentry.count, dentry.stacks) == (5120, 40, (b, a))
    assert (dentry.kind, dentry.cache) == ("cache", "dentry")
    # Two processes share the site: no single pid or comm would be honest.
    assert (dentry.pid, dentry.comm) == (0, "")
    assert sites[("kmalloc-512",)].bytes == 512


def test_group_by_stack_keeps_kinds_apart_and_reports_the_allocating_process():
    k = StackKey(0, 12)  # kernel stacks have pid 0; the bucket knows the process
    snap = snapshot(bucket(k, 30, 8192, 2, kind="page", pid=900, comm="dd"),
                    bucket(k, 30, 64, 1, kind="kmalloc", pid=900, comm="dd"), mode="kernel")
    sites = by_key(aggregate(snap, ReportConfig(group_by="stack")))
    assert set(sites) == {(0, 12, "page"), (0, 12, "kmalloc")}
    assert (sites[(0, 12, "page")].pid, sites[(0, 12, "page")].comm) == (900, "dd")


def test_group_by_process_falls_back_to_the_stack_pid():
    other = StackKey(pid=5151, stack_id=17)  # same id, different process: another stack
    snap = snapshot(bucket(LEAK, 30, 100, 1, comm="app"), bucket(CACHE, 30, 50, 1, comm="app"),
                    bucket(other, 30, 400, 2, comm="worker"))
    sites = aggregate(snap, ReportConfig(group_by="process")).sites
    assert [(s.key, s.bytes, s.stacks) for s in sites] == [
        ((5151, "worker"), 400, (other,)),
        ((4242, "app"), 150, (LEAK, CACHE)),
    ]


def test_group_by_cgroup():
    snap = snapshot(bucket(LEAK, 30, 100, 1, cgroup_id=7781), bucket(CACHE, 30, 900, 1, cgroup_id=7781),
                    bucket(TEMP, 30, 300, 1, cgroup_id=1))
    sites = aggregate(snap, ReportConfig(group_by="cgroup")).sites
    assert [(s.key, s.bytes, s.cgroup_id) for s in sites] == [((7781,), 1000, 7781), ((1,), 300, 1)]


def test_unknown_grouping_is_a_usage_error_naming_the_choices():
    with pytest.raises(UsageError) as e:
        aggregate(snapshot(), ReportConfig(group_by="thread"))
    assert "thread" in e.value.message
    assert all(name in e.value.hint for name in ("stack", "cache", "process", "cgroup"))


def test_empty_snapshot():
    result = aggregate(snapshot(), ReportConfig())
    assert (result.sites, result.totals, result.sites_total) == ((), {"bytes": 0, "count": 0}, 0)


def test_top_zero_keeps_every_site_and_ties_order_deterministically():
    stacks = [StackKey(4242, i) for i in range(30)]
    snap = snapshot(*(bucket(k, 30, 128, 1) for k in reversed(stacks)))
    result = aggregate(snap, ReportConfig(top=0))
    assert [s.stacks[0] for s in result.sites] == stacks  # equal bytes: by stack id
    assert len(result.sites) == result.sites_total == 30


def test_terabyte_sites_sum_exactly():
    huge = 1 << 40
    snap = snapshot(bucket(LEAK, 100, huge, 1), bucket(LEAK, 90, huge - 1, 1), bucket(TEMP, 100, 1, 1))
    result = aggregate(snap, ReportConfig(top=1))
    assert result.sites[0].bytes == 2 * huge - 1
    assert result.totals["bytes"] == 2 * huge
