"""Reachability in rows and verdicts: the pure stage after the scan, driven the
way the session drives it (judge_interval: aggregate, judge, rank; then build_report)."""
from __future__ import annotations

import io
from dataclasses import replace

from leaktrace.aggregate import aggregate
from leaktrace.base.config import ReportConfig
from leaktrace.judge.growth import GrowthTracker
from leaktrace.judge.judgement import Judged, SiteVerdict, judge_interval
from leaktrace.base.model import (INDIRECTLY_LOST, NOT_CLASSIFIED, REACHABLE, UNREFERENCED, Allocation,
                             Bucket, Frame, RawStack, ReachScan, RowReach, Snapshot, StackKey)
from leaktrace.judge.reach import content
from leaktrace.judge.reach.rows import combine
from leaktrace.report.table import TableReporter
from leaktrace.symbolize import build_report

S = 1_000_000_000
WIDTH = 1 << 28
BOOT = 1_000 * S
LOST, CACHE, CHAIN = StackKey(7, 1), StackKey(7, 2), StackKey(7, 3)
NAMES = {LOST: "drop_buffers", CACHE: "cache_put", CHAIN: "chain_link"}


def resolve(key, raw):
    return (Frame(0x401000 + key.stack_id, NAMES[key], 0x10, "/app"),)


def allocations(stack, count, size, first_s, step_s=0.5):
    return [Allocation(7, 0x5000_0000 * stack.stack_id + 0x100 * i, size,
                       BOOT + int((first_s + i * step_s) * S), stack) for i in range(count)]


def snapshot(now_s, allocs, classes=None, heads=None):
    """Buckets built from the allocations (as the kernel keeps them), and a scan if classes are given."""
    sums = {}
    for a in allocs:
        start = a.timestamp_ns // WIDTH * WIDTH
        b, c = sums.get((a.stack, start), (0, 0))
        sums[(a.stack, start)] = (b + a.size, c + 1)
    buckets = tuple(Bucket(stack, start, start + WIDTH, b, c) for (stack, start), (b, c) in sums.items())
    reach = ReachScan(classes=bytes(classes), heads=heads or {}) if classes is not None else None
    return Snapshot("user", BOOT + int(now_s * S), BOOT, 0.0, buckets,
                    {k: RawStack((0x401000 + k.stack_id,)) for k in NAMES}, allocations=tuple(allocs),
                    reach=reach)


def report_of(snap, tracker, older_than_ms=500):
    config = ReportConfig(top=10, older_than_ms=older_than_ms)
    ranked, judged = judge_interval(snap, config, tracker)
    return build_report(snap, ranked.limited(config.top), resolve, config, judged=judged)


def row(report, stack):
    return next(r for r in report.rows if r.frames[0].symbol == NAMES[stack])


def grow(tracker, stack, per_interval, size, intervals=4):
    """Intervals of a site that only grows: growth alone says `leak`."""
    for n in range(1, intervals):
        report_of(snapshot(n * 2.0, allocations(stack, n * per_interval, size, 0.0, 2.0 / per_interval)), tracker)
    return allocations(stack, intervals * per_interval, size, 0.0, 2.0 / per_interval)


def test_a_growing_cache_still_referenced_is_growing_not_leak():
    tracker = GrowthTracker()
    allocs = grow(tracker, CACHE, 4, 4096)
    plain = report_of(snapshot(8.0, allocs), tracker)
    assert row(plain, CACHE).verdict == "leak" and row(plain, CACHE).reach is None

    tracker = GrowthTracker()
    allocs = grow(tracker, CACHE, 4, 4096)
    scanned = report_of(snapshot(8.0, allocs, [REACHABLE] * len(allocs)), tracker)
    cache = row(scanned, CACHE)
    assert cache.verdict == "growing"
    assert cache.verdict_reason.startswith("100% reachable: grew and never freed, but still referenced; ")
    assert "grew and never freed:" in cache.verdict_reason  # growth's own numbers follow


def test_unreferenced_blocks_are_a_leak_before_growth_can_judge_and_rank_first():
    lost = allocations(LOST, 20, 96, 0.0, 0.01)
    cache = allocations(CACHE, 4, 1 << 20, 0.0)  # more bytes: first by size alone
    snap = snapshot(5.0, lost + cache, [UNREFERENCED] * 20 + [REACHABLE] * 4,
                    heads={0: b"request #0 GET /", 1: b"request #1 GET /", 25: b"x"})
    report = report_of(snap, GrowthTracker())
    assert [r.frames[0].symbol for r in report.rows] == ["drop_buffers", "cache_put"]
    top = report.rows[0]
    assert top.verdict == "leak" and top.rank == 1
    assert top.verdict_reason.startswith("100% unreferenced: nothing reachable points at 20 of 20 "
                                         "allocations (definitely lost); 1 of 3 intervals")
    assert top.reach.bytes == (1920, 0, 0) and top.reach.counts == (20, 0, 0)
    assert [s.head for s in top.reach.samples] == [b"request #0 GET /", b"request #1 GET /"]
    assert top.reach.similarity == content.similarity([b"request #0 GET /", b"request #1 GET /"])
    assert report.rows[1].verdict == "unknown"
    assert report.reach.counts == (20, 0, 4) and report.reach.bytes == (1920, 0, 4 << 20)


def test_indirectly_lost_counts_as_lost_and_a_small_lost_share_keeps_growths_verdict():
    chain = allocations(CHAIN, 4, 128, 0.0)
    mixed = allocations(CACHE, 10, 100, 0.0, 0.1)
    classes = [INDIRECTLY_LOST] * 4 + [UNREFERENCED] + [REACHABLE] * 9
    report = report_of(snapshot(5.0, chain + mixed, classes), GrowthTracker())
    assert row(report, CHAIN).verdict == "leak"
    assert row(report, CHAIN).verdict_reason.startswith("100% indirectly lost: nothing reachable")
    cache = row(report, CACHE)
    assert cache.verdict == "unknown"
    assert cache.verdict_reason.startswith("10% unreferenced, 90% reachable; 1 of 3")


def test_rows_count_what_passed_the_age_filter_and_skip_unclassified_blocks():
    allocs = allocations(LOST, 6, 64, 0.0, 0.5)  # at 0.0 .. 2.5 s
    classes = [UNREFERENCED, NOT_CLASSIFIED, UNREFERENCED, UNREFERENCED, UNREFERENCED, UNREFERENCED]
    report = report_of(snapshot(3.0, allocs, classes), GrowthTracker(), older_than_ms=1000)
    lost = row(report, LOST)
    # buckets ending after 2.0 s fail --older-than 1000: the same allocations are left out
    kept = [a for a in allocs if (a.timestamp_ns // WIDTH + 1) * WIDTH <= BOOT + 2 * S]
    assert lost.count == len(kept) == 4
    assert lost.reach.counts == (3, 0, 0)  # one of them was not classified


def test_without_a_scan_nothing_changes():
    allocs = allocations(LOST, 3, 64, 0.0)
    tracker_a, tracker_b = GrowthTracker(), GrowthTracker()
    plain = report_of(snapshot(5.0, allocs), tracker_a)
    config = ReportConfig(top=10, older_than_ms=500)
    snap = snapshot(5.0, allocs)
    result = aggregate(snap, config)
    tracker_b.observe(result.sites, snap.taken_ns)  # growth's verdicts alone, nothing combined
    growth_only = Judged({s.key: SiteVerdict(g.verdict, g.reason, g)
                          for s in result.sites for g in [tracker_b.judged(s)]})
    expected = build_report(snap, growth_only.ranked(result), resolve, config, judged=growth_only)
    assert plain == expected and plain.reach is None


def test_a_failed_scan_reports_its_problem_and_no_row_classes():
    allocs = allocations(LOST, 3, 64, 0.0)
    snap = replace(snapshot(5.0, allocs, [NOT_CLASSIFIED] * 3),
                   reach=ReachScan(classes=bytes([NOT_CLASSIFIED] * 3), problems=("PID 7 exited",)))
    report = report_of(snap, GrowthTracker())
    assert report.reach.problems == ("PID 7 exited",) and report.rows[0].reach is None
    out = io.StringIO()
    TableReporter().render(report, out)
    assert "reachability: not scanned: PID 7 exited" in out.getvalue()


def test_combine_keeps_the_verdict_when_nothing_was_classified():
    empty = RowReach(bytes=(0, 0, 0), counts=(0, 0, 0))
    assert combine("stable", "flat", empty) == ("stable", "flat")


def test_table_shows_classes_and_content_samples():
    allocs = allocations(LOST, 2, 96, 0.0)
    snap = snapshot(5.0, allocs, [UNREFERENCED, UNREFERENCED],
                    heads={0: b"request #0 GET /leaked/path\0\0\0\0\0", 1: b"request #1 GET /leaked/path"})
    out = io.StringIO()
    TableReporter().render(report_of(snap, GrowthTracker()), out)
    text = out.getvalue()
    assert "reachability: 2 unreferenced (192 B), 0 indirectly lost (0 B), 0 reachable (0 B)" in text
    assert "content (2 samples, " in text
    assert "72 65 71 75 65 73 74 20 23 30 20 47 45 54 20 2f  request #0 GET /" in text
    assert "leaked/path....." in text


def test_reachability_with_sampling_is_refused_before_anything_runs(capsys):
    from leaktrace.cli import main

    code = main(["run", "--reachability", "--sample-rate", "4096", "--", "/nonexistent/program"])
    err = capsys.readouterr().err
    assert code == 64 and err.count("\n") == 1
    assert err.startswith("leaktrace: --reachability needs every allocation recorded, not samples; drop "
                          "--sample-rate")
    code = main(["attach", "-p", "1", "--reachability=later"])
    assert code == 64 and "'later' is not one of 'final', 'each'" in capsys.readouterr().err
