"""Kernel rows the losses could explain are not called leaks (missed_frees.py),
judged on a real /proc/slabinfo (tests/data/slabinfo) through the real
aggregate() and GrowthTracker; no root."""
from pathlib import Path

from leaktrace.aggregate import aggregate
from leaktrace.config import ReportConfig
from leaktrace.missed_frees import Doubts, doubts
from leaktrace.growth import GrowthTracker
from leaktrace.model import Bucket, Site, Snapshot, StackKey
from leaktrace.probes.kernel import slab_slots

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
        tracker.doubts = doubts(snapshot)
        result = aggregate(snapshot, config, rank=tracker.rank)
    return {site.key[0]: tracker.latest[site.key] for site in result.sites}


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
