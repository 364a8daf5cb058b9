"""Kernel rows the losses could explain are not called leaks (missed_frees.py),
judged on a real /proc/slabinfo (tests/data/slabinfo) through the real
aggregate() and GrowthTracker; no root."""
from dataclasses import replace
from pathlib import Path

from leaktrace.aggregate import AggregateResult
from leaktrace.base.config import ReportConfig
from leaktrace.judge.missed_frees import Doubts, doubts
from leaktrace.judge.growth import GrowthTracker
from leaktrace.judge.judgement import Judged, SiteVerdict, judge_interval
from leaktrace.base.model import Bucket, Site, Snapshot, StackKey
from leaktrace.probes.kernel import slab_slots
from leaktrace.report.serialize import report_from_dict, report_to_dict
from leaktrace.symbolize import build_report

DATA = Path(__file__).resolve().parent.parent / "data" / "slabinfo" / "slabinfo.txt"
S = 1_000_000_000
SHIFT = 28
BOOT = 9_000 * S
SOCK = "sock_inode_cache"  # 133 objects in 7 slabs in the captured file
SOCK_SIZE = 832


def kernel_snapshot(t: int, counts: dict, missed_frees: int = 0) -> Snapshot:
    """One bucket per (cache, second): `counts[cache]` objects allocated each second up to t."""
    buckets = []
    for cache, per_second in counts.items():
        for second in range(t):
            start = BOOT + second * S
            buckets.append(Bucket(StackKey(0, hash(cache) % 1000), start, start + (1 << SHIFT),
                                  per_second * SOCK_SIZE, per_second, kind="cache", cache=cache))
    return Snapshot("kernel", BOOT + t * S, BOOT, 1_714_000_000.0 + t, tuple(buckets), {},
                    losses={"missed_frees": missed_frees}, slab_slots=slab_slots(str(DATA)))


def verdicts(counts: dict, seconds: int = 8, missed_frees: int = 0) -> dict:
    """Report once a second like a session; the last verdict of each cache's row."""
    tracker = GrowthTracker()
    config = ReportConfig(top=0, older_than_ms=0, group_by="cache")
    for t in range(1, seconds + 1):
        snapshot = kernel_snapshot(t, counts, missed_frees)
        result, judged = judge_interval(snapshot, config, tracker, doubts(snapshot))
    return {site.key[0]: judged.verdicts[site.key].growth for site in result.sites}


def test_slabinfo_gives_each_cache_the_objects_its_slabs_have_room_for():
    slots = slab_slots(str(DATA))
    assert slots[SOCK] == 133
    assert slots["dentry"] == 2391501 and slots["kmalloc-192"] == 116445
    assert slab_slots(str(DATA.parent / "missing")) == {}


def test_a_growing_row_larger_than_its_cache_is_not_called_a_leak():
    # 40 objects a second for 8 s: 320 counted in a cache with room for 133,
    # as when missed frees pile up (the reported 2.4 MiB sock_inode_cache "leak").
    growth = verdicts({SOCK: 40, "dentry": 40})
    assert growth["dentry"].verdict == "leak"  # the same growth where the cache can hold it
    sock = growth[SOCK]
    assert sock.verdict == "unknown"
    assert "320 objects are counted in sock_inode_cache, which has room for 133" in sock.reason
    assert "at least 187 frees were missed" in sock.reason


def test_the_report_says_which_caches_hold_less_than_counted():
    notes = doubts(kernel_snapshot(8, {SOCK: 40, "dentry": 40})).notes()
    assert len(notes) == 1 and notes[0].startswith("sock_inode_cache: 320 objects counted, more than the 133")


def test_a_row_no_larger_than_the_missed_frees_is_not_called_a_leak():
    growth = verdicts({"dentry": 40}, missed_frees=1_990_000)
    assert growth["dentry"].verdict == "unknown"
    assert "1,990,000 frees were missed while tracing, as many as this row's 320" in growth["dentry"].reason
    assert verdicts({"dentry": 40}, missed_frees=300)["dentry"].verdict == "leak"


def test_user_mode_losses_raise_no_doubt():
    site = Site(key=(1, 2, "heap"), bytes=10, count=1, oldest_ns=0, stacks=())
    user = Snapshot("user", BOOT, BOOT, 0.0, (), {}, losses={"missed_frees": 5})
    assert doubts(user) == Doubts() and Doubts().reason(site) == ""


def silent(snapshot: Snapshot, cache: str, retired: int) -> Snapshot:
    """The snapshot with `retired` records of the cache's row retired by address reuse."""
    row = Bucket(StackKey(0, hash(cache) % 1000), 0, 0, 0, retired, kind="cache", cache=cache)
    return replace(snapshot, silent_frees=(row,))


def test_a_row_whose_objects_go_silently_is_all_uncertain_and_not_a_leak():
    # kfree_rcu batches fire no tracepoint: 25 records of the dentry row were
    # retired when their addresses were allocated again.
    tracker = GrowthTracker()
    config = ReportConfig(top=0, older_than_ms=0, group_by="stack")
    for t in range(1, 9):
        snapshot = silent(kernel_snapshot(t, {"dentry": 40, "filp": 40}), "dentry", 25)
        found = doubts(snapshot)
        result, judged = judge_interval(snapshot, config, tracker, found)
    by_cache = {site.cache: site for site in result.sites}
    dentry, filp = by_cache["dentry"], by_cache["filp"]
    assert dentry.silent_frees == 25 and filp.silent_frees == 0
    assert found.uncertain_bytes(dentry) == dentry.bytes == 320 * SOCK_SIZE
    assert found.uncertain_bytes(filp) == 0
    assert judged.verdicts[dentry.key].uncertain_bytes == dentry.bytes  # what the row will carry
    assert judged.verdicts[dentry.key].growth.verdict == "unknown"
    assert ("25 of this row's objects were freed where no tracepoint fires"
            in judged.verdicts[dentry.key].growth.reason)
    assert judged.verdicts[filp.key].growth.verdict == "leak"


def test_missed_frees_make_as_many_objects_uncertain_at_the_row_mean_size():
    site = Site(key=(0, 1, "cache"), bytes=4000, count=40, oldest_ns=0, stacks=(), cache="dentry")
    assert Doubts(missed_frees=3).uncertain_bytes(site) == 300
    assert Doubts(missed_frees=100).uncertain_bytes(site) == 4000
    assert Doubts(counted={"dentry": (200, 133)}).uncertain_bytes(site) == 4000  # an upper bound


def test_report_rows_carry_uncertain_bytes_and_silent_frees_into_json():
    site = Site(key=(0, 1, "cache"), bytes=4000, count=40, oldest_ns=0, stacks=(), cache="dentry",
                silent_frees=7)
    other = replace(site, key=(0, 2, "cache"), silent_frees=0)
    growth = GrowthTracker().judged(site)
    judged = Judged({site.key: SiteVerdict(growth.verdict, growth.reason, growth,
                                           uncertain_bytes=Doubts(missed_frees=1).uncertain_bytes(site))})
    snap = Snapshot("kernel", 0, 0, 0.0, (), {})
    report = build_report(snap, AggregateResult((site, other), {}, 2), lambda key, raw: (), ReportConfig(),
                          judged=judged)
    rows = report.rows
    assert (rows[0].uncertain_bytes, rows[0].silent_frees) == (4000, 7)
    assert rows[1].uncertain_bytes == 0  # a site without a verdict: nothing uncertain said
    again = report_from_dict(report_to_dict(report)).rows[0]
    assert (again.uncertain_bytes, again.silent_frees) == (4000, 7)
