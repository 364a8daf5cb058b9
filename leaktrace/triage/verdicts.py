"""Pure analysis: a Capture -> a Triage (verdicts, top growers, next commands).

Contract: triage(capture) reads nothing and prints nothing. Growth is the
least-squares slope over all samples (bytes/s), so one noisy sample does not
decide. A category is "leak" when it grows by more than its noise floor over
the window and the kernel cannot take the memory back, "cache" when it grows
but is reclaimable, "stable" otherwise, and "unknown" when the window is too
short to measure.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from leaktrace.triage.advice import NextStep, next_step
from leaktrace.cgroups import container_label
from leaktrace.triage.procfs import Capture, Sample

MiB = 1 << 20
# Below this span /proc/uptime (10 ms steps) and read time swamp the slope.
MIN_SPAN_S = 0.2
# Below this a "growth" is mostly wander (with 2 samples r2 is always 1).
MIN_R2 = 0.5
GROWER_FLOOR = 64 * 1024  # a grower must gain this much over the window
TOP_GROWERS = 5


def _unaccounted(m: Mapping[str, int]) -> int:
    """Used pages that no other meminfo counter explains (raw page allocations)."""
    known = ("Active", "Inactive", "Unevictable", "Slab", "KernelStack", "PageTables",
             "SecPageTables", "VmallocUsed", "Percpu", "Hugetlb")
    return max(0, m.get("MemTotal", 0) - m.get("MemFree", 0) - sum(m.get(k, 0) for k in known))


@dataclass(frozen=True)
class Category:
    name: str
    label: str
    level: Callable[[Mapping[str, int]], int]
    reclaimable: bool
    floor: int  # growth over the window below this is noise
    residual: bool = False  # computed from the others, so their churn is its noise


CATEGORIES = (
    Category("user_anon", "user anonymous memory", lambda m: m.get("AnonPages", 0), False, MiB),
    Category("slab_unreclaimable", "slab unreclaimable", lambda m: m.get("SUnreclaim", 0), False, MiB),
    Category("slab_reclaimable", "slab reclaimable", lambda m: m.get("SReclaimable", 0), True, MiB),
    Category("vmalloc", "vmalloc", lambda m: m.get("VmallocUsed", 0), False, MiB),
    # Per-cpu free-page lists are outside MemFree, so this swings by megabytes.
    Category("unaccounted", "page allocations not accounted elsewhere", _unaccounted, False, 16 * MiB,
             residual=True),
    Category("percpu", "percpu", lambda m: m.get("Percpu", 0), False, 256 * 1024),
    Category("shmem", "shmem (tmpfs, shared anonymous)", lambda m: m.get("Shmem", 0), False, MiB),
)


@dataclass(frozen=True)
class Verdict:
    category: str
    label: str
    level: int  # bytes at the last sample
    rate: Optional[float]  # bytes/s; None when the window is too short
    growth: int  # fitted growth over the window
    exhaust_s: Optional[float]  # MemAvailable / rate, for leaks only
    verdict: str  # leak, cache, stable, unknown
    note: str = ""


@dataclass(frozen=True)
class Grower:
    kind: str  # process, slab, vmalloc
    name: str  # comm, cache name, or caller function
    level: int
    rate: float
    pid: int = 0
    container: str = ""
    reclaimable: Optional[bool] = None


@dataclass(frozen=True)
class Triage:
    window_s: float  # first to last sample
    samples: int
    mem_total: int
    mem_available: int
    verdicts: Tuple[Verdict, ...]
    growers: Mapping[str, Tuple[Grower, ...]]  # category -> top growers
    next_steps: Tuple[NextStep, ...]
    notes: Tuple[str, ...]


def fit(times: Sequence[float], values: Sequence[float]) -> Tuple[float, float]:
    """Least-squares (slope, r2) of values over times; (0, 0) when times do not vary.

    r2 near 1 means steady growth; near 0 means the values only wander.
    """
    n = len(times)
    mean_t, mean_v = sum(times) / n, sum(values) / n
    spread_t = sum((t - mean_t) ** 2 for t in times)
    spread_v = sum((v - mean_v) ** 2 for v in values)
    if spread_t == 0:
        return 0.0, 0.0
    covariance = sum((t - mean_t) * (v - mean_v) for t, v in zip(times, values))
    r2 = covariance ** 2 / (spread_t * spread_v) if spread_v else 0.0
    return covariance / spread_t, r2


def slope(times: Sequence[float], values: Sequence[float]) -> float:
    return fit(times, values)[0]


def judge(category: Category, samples: Sequence[Sample], measurable: bool, noise: int = 0) -> Verdict:
    times = [s.time_s for s in samples]
    levels = [category.level(s.meminfo) for s in samples]
    available = samples[-1].meminfo.get("MemAvailable", 0)
    if not measurable:
        return Verdict(category.name, category.label, levels[-1], None, 0, None, "unknown")
    rate, r2 = fit(times, levels)
    growth = int(rate * (times[-1] - times[0]))
    if growth < max(category.floor, levels[-1] // 100, noise) or r2 < MIN_R2:
        verdict = "stable"
    else:
        verdict = "cache" if category.reclaimable else "leak"
    exhaust = available / rate if verdict == "leak" else None
    return Verdict(category.name, category.label, levels[-1], rate, growth, exhaust, verdict)


def _top(series: Dict[tuple, List[Tuple[float, int]]], make: Callable, span: float) -> tuple:
    """Growers from {key: [(time, bytes), ...]}, fastest first."""
    growers = []
    for key, points in series.items():
        if len(points) < 2:  # appeared or exited: no trend to fit
            continue
        rate, r2 = fit([t for t, _ in points], [v for _, v in points])
        if rate * span >= GROWER_FLOOR and r2 >= MIN_R2:
            growers.append(make(key, points[-1][1], rate))
    growers.sort(key=lambda g: g.rate, reverse=True)
    return tuple(growers[:TOP_GROWERS])


def process_growers(samples: Sequence[Sample], span: float) -> tuple:
    series: Dict[tuple, List[Tuple[float, int]]] = {}
    latest = {}
    for sample in samples:
        for pid, proc in sample.processes.items():
            series.setdefault((pid,), []).append((sample.time_s, proc.anon))
            latest[pid] = proc

    def make(key, level, rate):
        proc = latest[key[0]]
        return Grower("process", proc.comm, level, rate, proc.pid, container_label(proc.container))

    return _top(series, make, span)


def _filled_series(samples: Sequence[Sample], tables: Sequence[Mapping[str, int]]) -> dict:
    """{(name,): [(time, bytes), ...]} with 0 where a name is absent (not created yet)."""
    names = set()
    for table in tables:
        names.update(table)
    return {(n,): [(s.time_s, t.get(n, 0)) for s, t in zip(samples, tables)] for n in names}


def slab_growers(capture: Capture, span: float, reclaimable: bool) -> tuple:
    samples = [s for s in capture.samples if s.slabs is not None]
    tables = [
        {n: c.bytes for n, c in s.slabs.items() if capture.slab_reclaimable.get(n, False) == reclaimable}
        for s in samples
    ]
    series = _filled_series(samples, tables)
    return _top(series, lambda k, lvl, r: Grower("slab", k[0], lvl, r, reclaimable=reclaimable), span)


def vmalloc_growers(samples: Sequence[Sample], span: float) -> tuple:
    samples = [s for s in samples if s.vmalloc is not None]
    series = _filled_series(samples, [s.vmalloc for s in samples])
    return _top(series, lambda k, lvl, r: Grower("vmalloc", k[0], lvl, r), span)


def _growers(capture: Capture, verdict: Verdict, span: float) -> tuple:
    samples = capture.samples
    if verdict.category == "user_anon":
        return process_growers(samples, span)
    if verdict.category in ("slab_unreclaimable", "slab_reclaimable"):
        return slab_growers(capture, span, verdict.category == "slab_reclaimable")
    if verdict.category == "vmalloc":
        return vmalloc_growers(samples, span)
    return ()  # percpu, raw pages and shmem have no per-owner view in /proc


def _sample_notes(samples: Sequence[Sample]) -> List[str]:
    notes = []
    first, last = set(samples[0].processes), set(samples[-1].processes)
    if first - last:
        notes.append(f"{len(first - last)} processes exited during sampling (not ranked)")
    if last - first:
        notes.append(f"{len(last - first)} processes started during sampling (not ranked)")
    return notes


def _judge_all(samples: Sequence[Sample], measurable: bool) -> Tuple[Verdict, ...]:
    direct = {c.name: judge(c, samples, measurable) for c in CATEGORIES if not c.residual}
    churn = sum(abs(v.growth) for v in direct.values())
    return tuple(
        direct[c.name] if c.name in direct else judge(c, samples, measurable, churn)
        for c in CATEGORIES
    )


def _unmask_process_growth(verdicts: Tuple[Verdict, ...], procs: tuple, span: float,
                           available: int) -> Tuple[Verdict, ...]:
    """A process that grows steadily is a suspect even when others' churn hides it in the total."""
    floor = next(c.floor for c in CATEGORIES if c.name == "user_anon")
    if not procs or procs[0].rate * span < floor:
        return verdicts
    top = procs[0]
    note = f"the total is masked by other processes; {top.name} (pid {top.pid}) alone grows steadily"
    return tuple(
        replace(v, verdict="leak", exhaust_s=available / top.rate, note=note)
        if v.category == "user_anon" and v.verdict == "stable" else v
        for v in verdicts
    )


def triage(capture: Capture) -> Triage:
    samples = capture.samples
    span = samples[-1].time_s - samples[0].time_s
    measurable = len(samples) >= 2 and span >= MIN_SPAN_S
    notes = list(capture.missing)
    if not measurable:
        notes.append(
            f"window too short to measure growth ({span:.2f} s between first and last "
            f"sample); use --window 10s or more"
        )
    notes.extend(_sample_notes(samples))
    verdicts = _judge_all(samples, measurable)
    if measurable:
        procs = process_growers(samples, span)
        available = samples[-1].meminfo.get("MemAvailable", 0)
        verdicts = _unmask_process_growth(verdicts, procs, span, available)
    growers, steps = {}, []
    slabs_known = all(s.slabs is not None for s in samples)
    # Leaks before caches, the fastest first: the first step is the one to take.
    suspicious = sorted(
        (v for v in verdicts if v.verdict in ("leak", "cache")),
        key=lambda v: (v.verdict != "leak", -(v.rate or 0)),
    )
    for verdict in suspicious:
        growers[verdict.category] = _growers(capture, verdict, span)
        steps.append(next_step(verdict, growers[verdict.category], slabs_known))
    last = samples[-1].meminfo
    return Triage(
        window_s=span,
        samples=len(samples),
        mem_total=last.get("MemTotal", 0),
        mem_available=last.get("MemAvailable", 0),
        verdicts=verdicts,
        growers=growers,
        next_steps=tuple(steps),
        notes=tuple(notes),
    )
