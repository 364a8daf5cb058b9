"""Pure stage: Snapshot -> the top sites, most outstanding bytes first.

aggregate() keeps the buckets old enough for the report (--older-than), groups
them by config.group_by, sums bytes and counts, and cuts to the top N. It reads
no files and calls no symbolizer: it only decides which stacks are worth
symbolizing, so that the expensive stage after it sees N sites, not thousands.

Ages are bounded by the buckets: a Bucket's allocations were made in
[start_ns, end_ns), so "older than T" keeps a bucket only if end_ns <= now - T
(every allocation in it is surely older) and a site's age is now - start_ns of
its oldest bucket (an upper bound, rounded to the bucket width).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Dict, Iterable, List, Mapping, Tuple

from leaktrace.base.config import ReportConfig
from leaktrace.base.errors import UsageError
from leaktrace.base.model import AGE_THRESHOLDS_S, Bucket, Site, Snapshot, StackKey

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000


def _bucket_pid(bucket: Bucket) -> int:
    # User-mode probes may leave Bucket.pid unset: the stack's pid is the process.
    return bucket.pid or bucket.stack.pid


# One key function per grouping; the key is also Site.key.
GROUP_KEYS: Dict[str, Callable[[Bucket], Tuple]] = {
    "stack": lambda b: (b.stack.pid, b.stack.stack_id, b.kind),
    "cache": lambda b: (b.cache,),
    "process": lambda b: (_bucket_pid(b), b.comm),
    "cgroup": lambda b: (b.cgroup_id,),
}


@dataclass(frozen=True)
class AggregateResult:
    sites: Tuple[Site, ...]  # the top N, most bytes first
    totals: Mapping[str, int]  # {"bytes", "count"} over every bucket that passed
    sites_total: int  # sites before the top N cut

    def limited(self, top: int) -> "AggregateResult":
        """The same result cut to its top N sites (top <= 0: all of them)."""
        return replace(self, sites=self.sites[:top]) if top > 0 else self


def aggregate(snapshot: Snapshot, config: ReportConfig) -> AggregateResult:
    """Group the snapshot's buckets into sites and keep the top config.top.

    config.top <= 0 keeps every site. Buckets with count <= 0 are ignored.
    Sites are ordered by bytes (the session orders them by verdict after:
    judgement.judge_interval aggregates with top 0, judges, then cuts).
    """
    key_of = _group_key(config.group_by)
    kept = [b for b in snapshot.buckets if _passes(b, snapshot.taken_ns, config.older_than_ms)]
    groups: Dict[Tuple, List[Bucket]] = {}
    for bucket in kept:
        groups.setdefault(key_of(bucket), []).append(bucket)
    silent: Dict[Tuple, int] = {}
    for bucket in snapshot.silent_frees:
        silent[key_of(bucket)] = silent.get(key_of(bucket), 0) + bucket.count
    sites = sorted(
        (replace(_make_site(key, buckets, snapshot.taken_ns), silent_frees=silent.get(key, 0))
         for key, buckets in groups.items()),
        key=lambda s: (-s.bytes, -s.count, s.key),  # keys of one grouping share a shape
    )
    top = sites[: config.top] if config.top > 0 else sites
    totals = {"bytes": sum(b.bytes for b in kept), "count": sum(b.count for b in kept)}
    return AggregateResult(sites=tuple(top), totals=totals, sites_total=len(sites))


def _group_key(group_by: str) -> Callable[[Bucket], Tuple]:
    try:
        return GROUP_KEYS[group_by]
    except KeyError:
        valid = ", ".join(GROUP_KEYS)
        raise UsageError(
            f"unknown grouping {group_by!r}", hint=f"--group-by takes one of: {valid}"
        ) from None


def _passes(bucket: Bucket, taken_ns: int, older_than_ms: int) -> bool:
    if bucket.count <= 0:
        return False
    if older_than_ms <= 0:
        return True
    return bucket.end_ns <= taken_ns - older_than_ms * NS_PER_MS


def _make_site(key: Tuple, buckets: List[Bucket], taken_ns: int) -> Site:
    stack_bytes: Dict[StackKey, int] = {}
    for bucket in buckets:
        stack_bytes[bucket.stack] = stack_bytes.get(bucket.stack, 0) + bucket.bytes
    stacks = sorted(stack_bytes, key=lambda k: (-stack_bytes[k], k.pid, k.stack_id))
    bytes_older = tuple(
        sum(b.bytes for b in buckets if b.end_ns <= taken_ns - t * NS_PER_S)
        for t in AGE_THRESHOLDS_S
    )
    return Site(
        key=key,
        bytes=sum(b.bytes for b in buckets),
        count=sum(b.count for b in buckets),
        oldest_ns=max(0, taken_ns - min(b.start_ns for b in buckets)),
        stacks=tuple(stacks),
        kind=_shared((b.kind for b in buckets), "mixed"),
        pid=_shared((_bucket_pid(b) for b in buckets), 0),
        comm=_shared((b.comm for b in buckets), ""),
        cache=_shared((b.cache for b in buckets), ""),
        cgroup_id=_shared((b.cgroup_id for b in buckets), 0),
        bytes_older=bytes_older,
        age_buckets=_age_buckets(buckets),
    )


def _age_buckets(buckets: List[Bucket]) -> Tuple[Tuple[int, int, int], ...]:
    """Bytes per allocation-time window, summed over the site's stacks."""
    by_window: Dict[Tuple[int, int], int] = {}
    for b in buckets:
        by_window[(b.start_ns, b.end_ns)] = by_window.get((b.start_ns, b.end_ns), 0) + b.bytes
    return tuple((start, end, n) for (start, end), n in sorted(by_window.items()))


def _shared(values: Iterable, mixed):
    """The one value all buckets agree on, else `mixed`: never a misleading pick."""
    distinct = set(values)
    return distinct.pop() if len(distinct) == 1 else mixed
