"""Who grows: processes, slab caches and vmalloc callers over a Capture.

Contract: pure functions of the samples. Each owner's series is judged by the
shared growth model (leaktrace.judge.trend); only a "growing" one is a grower, so a
process that started up and plateaued, or a cache that filled, is not ranked.
Processes that cannot be judged fairly are never ranked: leaktrace's own,
and those too young to tell start-up from a leak (started less than
max(window, STARTUP_S) before the first sample, or during sampling).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from leaktrace.judge import trend
from leaktrace.process.cgroups import container_label
from leaktrace.triage.procfs import Capture, ProcessMemory, Sample

GROWER_FLOOR = 64 * 1024  # a grower must gain this much over the window
TOP_GROWERS = 5
STARTUP_S = 10.0  # a process younger than this (or the window) may still be starting
# Two samples already fit a line; what needs more is said by the window.
GROWER_POLICY = trend.TrendPolicy(min_points=2, floor_bytes=GROWER_FLOOR, min_r2=0.5)

Series = Dict[tuple, List[Tuple[float, int]]]


@dataclass(frozen=True)
class Grower:
    kind: str  # process, slab, vmalloc
    name: str  # comm, cache name, or caller function
    level: int
    rate: float
    pid: int = 0
    container: str = ""
    reclaimable: Optional[bool] = None


def _top(series: Series, make: Callable, policy: trend.TrendPolicy = GROWER_POLICY) -> tuple:
    """Growers from {key: [(time, bytes), ...]}, fastest first."""
    growers = []
    for key, points in series.items():
        judged = trend.judge(points, policy)
        if judged.state == trend.GROWING:
            growers.append(make(key, judged.level, judged.rate))
    growers.sort(key=lambda g: g.rate, reverse=True)
    return tuple(growers[:TOP_GROWERS])


def unranked(samples: Sequence[Sample]) -> Set[int]:
    """PIDs never ranked: leaktrace's own, the young, and any not seen throughout."""
    first, span = samples[0], samples[-1].time_s - samples[0].time_s
    young_before = first.time_s - max(span, STARTUP_S)
    everywhere = set.intersection(*(set(s.processes) for s in samples))
    skipped = {pid for s in samples for pid in s.processes} - everywhere
    for pid in everywhere:
        proc = first.processes[pid]
        if proc.leaktrace or (proc.started_s is not None and proc.started_s > young_before):
            skipped.add(pid)
    return skipped


def process_growers(samples: Sequence[Sample]) -> tuple:
    skip = unranked(samples)
    series: Series = {}
    latest: Dict[int, ProcessMemory] = {}
    for sample in samples:
        for pid, proc in sample.processes.items():
            if pid not in skip:
                series.setdefault((pid,), []).append((sample.time_s, proc.anon))
                latest[pid] = proc

    def make(key, level, rate):
        proc = latest[key[0]]
        return Grower("process", proc.comm, level, rate, proc.pid, container_label(proc.container))

    return _top(series, make)


def excluded_anon(samples: Sequence[Sample]) -> List[int]:
    """Per sample, anonymous bytes of processes never ranked: their start-up
    (or leaktrace's own) growth is not the machine leaking."""
    skip = unranked(samples)
    return [sum(p.anon for pid, p in s.processes.items() if pid in skip) for s in samples]


def young_notes(samples: Sequence[Sample]) -> List[str]:
    """One sentence per young process that grew: why it is not ranked."""
    skip, first, last = unranked(samples), samples[0], samples[-1]
    notes = []
    for pid in sorted(skip & set(first.processes) & set(last.processes)):
        proc, grew = last.processes[pid], last.processes[pid].anon - first.processes[pid].anon
        if proc.leaktrace or grew < GROWER_FLOOR:
            continue
        age = last.time_s - proc.started_s if proc.started_s is not None else 0.0
        notes.append(f"{proc.comm} (pid {pid}) started {age:.0f} s ago and grew {grew >> 10} KiB: "
                     "too young to tell start-up from a leak (not ranked); run triage again later")
    return notes


def _filled_series(samples: Sequence[Sample], tables: Sequence[Mapping[str, int]]) -> Series:
    """{(name,): [(time, bytes), ...]} with 0 where a name is absent (not created yet)."""
    names = set()
    for table in tables:
        names.update(table)
    return {(n,): [(s.time_s, t.get(n, 0)) for s, t in zip(samples, tables)] for n in names}


def slab_growers(capture: Capture, reclaimable: bool) -> tuple:
    samples = [s for s in capture.samples if s.slabs is not None]
    tables = [
        {n: c.bytes for n, c in s.slabs.items() if capture.slab_reclaimable.get(n, False) == reclaimable}
        for s in samples
    ]
    series = _filled_series(samples, tables)
    return _top(series, lambda k, lvl, r: Grower("slab", k[0], lvl, r, reclaimable=reclaimable))


def vmalloc_growers(samples: Sequence[Sample]) -> tuple:
    samples = [s for s in samples if s.vmalloc is not None]
    series = _filled_series(samples, [s.vmalloc for s in samples])
    return _top(series, lambda k, lvl, r: Grower("vmalloc", k[0], lvl, r))


def growers_of(capture: Capture, category: str) -> tuple:
    """The top growers that explain one category's growth."""
    if category == "user_anon":
        return process_growers(capture.samples)
    if category in ("slab_unreclaimable", "slab_reclaimable"):
        return slab_growers(capture, category == "slab_reclaimable")
    if category == "vmalloc":
        return vmalloc_growers(capture.samples)
    return ()  # percpu, raw pages and shmem have no per-owner view in /proc
