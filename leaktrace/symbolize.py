"""Pure stage: judged sites -> a self-contained Report.

build_report() resolves the stacks of the sites it is given only (one call
of the injected `resolve` per site, for the stack holding most of its bytes,
and once per interval: a cut built after the full report reuses its frames),
turns nanoseconds into seconds, gives each row its site's verdict and
contents (looked up by site key), names cgroups through the injected
`cgroup_name`, attaches --show-allocs allocations and adds the warnings a
user needs to trust the figures. `resolve` and `cgroup_name` are where the
process and kernel symbolizers plug in; this module does no I/O itself.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from leaktrace.aggregate import NS_PER_MS, AggregateResult
from leaktrace.base.config import ReportConfig
from leaktrace.judge.judgement import Judged, SiteVerdict
from leaktrace.base.model import (Allocation, Frame, RawStack, Report, ReportRow, RowContents, Site, Snapshot,
                             StackKey)

Resolver = Callable[[StackKey, RawStack], Tuple[Frame, ...]]

# --show-allocs lists at most this many allocations per site: enough to see
# sizes and addresses, not a dump of the allocation map.
MAX_ALLOCS_PER_SITE = 20

NOT_COLLECTED = "stack not collected"
# Rows not grouped by stack also show this many further stacks.
MORE_STACKS = 2
# Negative ids are bpf_get_stackid() errors (-errno).
STACK_ERRORS = {-12: "stack map full", -14: "unwind failed", -17: "stack id collision"}

SHALLOW_DEPTH = 2
FRAME_POINTER_WARNING = (
    "most stacks are only 1-2 frames deep: the program was probably built without "
    "frame pointers; rebuild it with -fno-omit-frame-pointer (see the FAQ on "
    "[unknown] frames and frame pointers)"
)


@dataclass(frozen=True)
class SiteFrames:
    """A site's symbolized stacks: the heaviest, and the next ones for rows not grouped by stack."""

    frames: Tuple[Frame, ...]
    depth: int  # collected depth of the heaviest stack; 0 if not collected
    more_stacks: Tuple[Tuple[Frame, ...], ...] = ()


def build_report(
    snapshot: Snapshot,
    result: AggregateResult,
    resolve: Resolver,
    config: ReportConfig,
    warnings: Iterable[str] = (),
    judged: Judged = Judged(),
    contents: Optional[Mapping[Tuple, RowContents]] = None,
    cgroup_name: Callable[[int], str] = str,
    symbolized: Optional[Dict[Tuple, SiteFrames]] = None,
) -> Report:
    """Symbolize the sites of `result` and package everything for rendering.

    Rows take their verdicts, reachability and contents from judged and
    contents by site key. `symbolized` (site key -> SiteFrames) is filled as
    sites are resolved: pass the same dict to build a cut of the same
    interval's report without resolving its stacks again."""
    symbolized = {} if symbolized is None else symbolized
    estimated = snapshot.sample_rate > 1  # 0 or 1: every allocation was recorded
    rows: List[ReportRow] = []
    for rank, site in enumerate(result.sites, start=1):
        if site.key not in symbolized:
            symbolized[site.key] = _symbolize(snapshot, site, resolve, config.group_by)
        row = _make_row(rank, site, symbolized[site.key], estimated, cgroup_name)
        rows.append(_judged_row(row, judged.verdicts.get(site.key), (contents or {}).get(site.key)))
    depths = [symbolized[site.key].depth for site in result.sites if symbolized[site.key].depth]
    notes = list(snapshot.notes) + list(warnings)
    if snapshot.mode == "user" and _mostly_shallow(depths):
        notes.append(FRAME_POINTER_WARNING)
    return Report(
        mode=snapshot.mode,
        timestamp=snapshot.wall_time,
        elapsed_s=max(0, snapshot.taken_ns - snapshot.started_ns) / 1e9,
        attach_s=max(0, snapshot.live_ns - snapshot.started_ns) / 1e9 if snapshot.live_ns else 0.0,
        targets=tuple(snapshot.targets),
        totals=dict(result.totals),
        events=dict(snapshot.events),
        losses=dict(snapshot.losses),
        rows=tuple(rows),
        allocations=_shown_allocations(snapshot, result.sites, config) if config.show_allocs else (),
        warnings=tuple(dict.fromkeys(notes)),  # once each, first mention first
        probes=snapshot.probes,
        group_by=config.group_by,
        sample_rate=snapshot.sample_rate,
        older_than_ms=config.older_than_ms,
        sites_total=result.sites_total,
        taken_ns=snapshot.taken_ns,
        reach=judged.reach,
    )


def _symbolize(snapshot: Snapshot, site: Site, resolve: Resolver, group_by: str) -> SiteFrames:
    frames, depth = _site_frames(snapshot, site, resolve)
    more = _more_stacks(snapshot, site, resolve) if group_by != "stack" else ()
    return SiteFrames(frames, depth, more)


def _judged_row(row: ReportRow, verdict: Optional[SiteVerdict], contents: Optional[RowContents]) -> ReportRow:
    """The row with its site's verdict (growth history, reachability) and contents."""
    if verdict is not None:
        growth = verdict.growth
        row = replace(row, history=growth.history, growth_bps=growth.growth_bps, verdict=verdict.verdict,
                      verdict_reason=verdict.reason, reach=verdict.reach, uncertain_bytes=verdict.uncertain_bytes)
    return replace(row, contents=contents) if contents is not None else row


def _site_frames(snapshot: Snapshot, site: Site, resolve: Resolver) -> Tuple[Tuple[Frame, ...], int]:
    """Frames of the site's heaviest stack and its collected depth (0 if not collected)."""
    if not site.stacks:
        return (_not_collected(None),), 0
    key = site.stacks[0]
    raw = snapshot.stacks.get(key) if key.stack_id >= 0 else None
    if raw is None or not raw.addresses:
        return (_not_collected(key),), 0
    return tuple(resolve(key, raw)), len(raw.addresses)


def _more_stacks(snapshot: Snapshot, site: Site, resolve: Resolver) -> Tuple[Tuple[Frame, ...], ...]:
    """Frames of the site's 2nd..(MORE_STACKS+1)th heaviest collected stacks."""
    more = []
    for key in site.stacks[1:]:
        raw = snapshot.stacks.get(key) if key.stack_id >= 0 else None
        if raw is not None and raw.addresses:
            more.append(tuple(resolve(key, raw)))
        if len(more) == MORE_STACKS:
            break
    return tuple(more)


def _not_collected(key: Optional[StackKey]) -> Frame:
    reason = STACK_ERRORS.get(key.stack_id) if key else None
    note = f"{NOT_COLLECTED} ({reason})" if reason else NOT_COLLECTED
    return Frame(addr=0, note=note)


def _mostly_shallow(depths: List[int]) -> bool:
    shallow = sum(1 for d in depths if d <= SHALLOW_DEPTH)
    return shallow * 2 > len(depths)


def _make_row(rank: int, site: Site, symbolized: SiteFrames, estimated: bool,
              cgroup_name: Callable[[int], str]) -> ReportRow:
    return ReportRow(
        rank=rank,
        bytes=site.bytes,
        count=site.count,
        oldest_s=site.oldest_ns / 1e9,
        frames=symbolized.frames,
        kind=site.kind,
        pid=site.pid,
        comm=site.comm,
        cache=site.cache,
        cgroup=cgroup_name(site.cgroup_id) if site.cgroup_id else "",
        bytes_older=site.bytes_older,
        estimated=estimated,
        more_stacks=symbolized.more_stacks,
        silent_frees=site.silent_frees,
    )


def _shown_allocations(
    snapshot: Snapshot, sites: Tuple[Site, ...], config: ReportConfig
) -> Tuple[Allocation, ...]:
    """Outstanding allocations of the shown sites, largest first, capped per site."""
    rank_of: Dict[StackKey, int] = {}
    for rank, site in enumerate(sites):
        for key in site.stacks:
            rank_of.setdefault(key, rank)  # a stack is listed under its best-ranked site
    cutoff = snapshot.taken_ns - max(0, config.older_than_ms) * NS_PER_MS
    per_site: Dict[int, List[Allocation]] = {}
    for alloc in snapshot.allocations:
        rank = rank_of.get(alloc.stack)
        if rank is None or alloc.timestamp_ns > cutoff:
            continue
        per_site.setdefault(rank, []).append(alloc)
    shown: List[Allocation] = []
    for allocs in per_site.values():
        allocs.sort(key=lambda a: (-a.size, a.timestamp_ns, a.address))
        shown.extend(allocs[:MAX_ALLOCS_PER_SITE])
    shown.sort(key=lambda a: (-a.size, a.timestamp_ns, a.address))
    return tuple(shown)
