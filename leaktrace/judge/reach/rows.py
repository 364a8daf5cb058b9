"""Pure: reachability per site, and the verdict that uses it.

site_reach() gives each site its classes and content samples, reach_summary()
the scan's totals; judgement.judge() folds them into each site's verdict with
combine(), so a site whose blocks nothing points at ranks with the leaks even
when its total is flat.

The combined verdict (combine()):
  leak     at least LOST_SHARE of the row's classified bytes are unreferenced
           or indirectly lost: nothing reachable points at them
  growing  growth said leak, but at least HELD_SHARE is still referenced: a
           cache or list that only grows is not lost memory
  else     growth's verdict, with the shares added to its reason
Rows count the allocations that passed the same age filter as their buckets
(a block counts once its age bucket is older than --older-than); blocks made
or freed around the freeze are not classified, so a row's classes can sum to
a little less than its totals.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from ...aggregate import NS_PER_MS
from ...base.model import (INDIRECTLY_LOST, NOT_CLASSIFIED, REACH_CLASSES, UNREFERENCED, Allocation,
                     ContentSample, ReachSummary, RowReach, Site, Snapshot)
from . import content

LOST_SHARE = 0.5
HELD_SHARE = 0.95


def reach_summary(snapshot: Snapshot, older_than_ms: int) -> ReachSummary:
    """The scan's totals over every classified allocation old enough to count."""
    reach = snapshot.reach
    bytes_, counts = _totals(snapshot, older_than_ms)
    return ReachSummary(scanned_bytes=reach.scanned_bytes, elapsed_s=reach.elapsed_s,
                        frozen_s=reach.frozen_s, threads=reach.threads, bytes=bytes_,
                        counts=counts, problems=reach.problems)


def combine(verdict: str, reason: str, reach: RowReach) -> Tuple[str, str]:
    """The row's verdict and reason, given its reachability."""
    if not sum(reach.counts):
        return verdict, reason
    lost = reach.share("unreferenced") + reach.share("indirectly_lost")
    facts = shares_text(reach)
    tail = f"; {reason}" if reason else ""
    if lost >= LOST_SHARE:
        lost_count = reach.counts[UNREFERENCED] + reach.counts[INDIRECTLY_LOST]
        return "leak", (f"{facts}: nothing reachable points at {lost_count:,} of "
                        f"{sum(reach.counts):,} allocations (definitely lost){tail}")
    if verdict == "leak" and reach.share("reachable") >= HELD_SHARE:
        return "growing", f"{facts}: grew and never freed, but still referenced{tail}"
    return verdict, facts + tail


def shares_text(reach: RowReach) -> str:
    """'98% unreferenced, 2% reachable': the classes holding any bytes."""
    names = ("unreferenced", "indirectly lost", "reachable")
    return ", ".join(f"{reach.share(key):.0%} {name}" for key, name in zip(REACH_CLASSES, names)
                     if reach.bytes[REACH_CLASSES.index(key)]) or "nothing classified"


def site_reach(sites: Sequence[Site], snapshot: Snapshot, older_than_ms: int) -> Dict[Tuple, RowReach]:
    """Per site key: its classified allocations by class, and its content samples."""
    site_of = {(stack, site.kind): site.key for site in sites for stack in site.stacks}
    sums: Dict[Tuple, Tuple[List[int], List[int]]] = {key: ([0] * 3, [0] * 3) for key in site_of.values()}
    sampled: Dict[Tuple, List[Tuple[int, int, Allocation, int]]] = {}
    for i, a, code in _counted(snapshot, older_than_ms):
        key = site_of.get((a.stack, a.kind))
        if key is None:
            continue
        sums[key][0][code] += a.size
        sums[key][1][code] += 1
        if i in snapshot.reach.heads:
            sampled.setdefault(key, []).append((code, a.timestamp_ns, a, i))
    return {key: _row_reach(bytes_, counts, sampled.get(key, []), snapshot.reach.heads)
            for key, (bytes_, counts) in sums.items() if any(counts)}


def _row_reach(bytes_: List[int], counts: List[int], sampled, heads) -> RowReach:
    sampled.sort(key=lambda s: (s[0], s[1], s[2].address))
    samples = tuple(ContentSample(address=a.address, size=a.size, head=heads[i], reach=REACH_CLASSES[code])
                    for code, _, a, i in sampled[:content.SHOWN_SAMPLES])
    return RowReach(bytes=tuple(bytes_), counts=tuple(counts), samples=samples,
                    similarity=content.similarity([heads[i] for _, _, _, i in sampled]))


def _totals(snapshot: Snapshot, older_than_ms: int) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    bytes_, counts = [0] * 3, [0] * 3
    for _, a, code in _counted(snapshot, older_than_ms):
        bytes_[code] += a.size
        counts[code] += 1
    return tuple(bytes_), tuple(counts)


def _counted(snapshot: Snapshot, older_than_ms: int):
    """(index, allocation, class code) of classified allocations old enough to be counted."""
    width = _bucket_width(snapshot)
    cutoff = snapshot.taken_ns - max(0, older_than_ms) * NS_PER_MS
    for i, (a, code) in enumerate(zip(snapshot.allocations, snapshot.reach.classes)):
        if code == NOT_CLASSIFIED:
            continue
        if older_than_ms > 0 and (a.timestamp_ns // width + 1) * width > cutoff:
            continue  # its age bucket did not pass --older-than (aggregate._passes)
        yield i, a, code


def _bucket_width(snapshot: Snapshot) -> int:
    for bucket in snapshot.buckets:
        if bucket.end_ns > bucket.start_ns:
            return bucket.end_ns - bucket.start_ns
    return 1
