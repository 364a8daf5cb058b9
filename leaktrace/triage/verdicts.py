"""Pure analysis: a Capture -> a Triage (verdicts, top growers, next commands).

Contract: triage(capture) reads nothing and prints nothing. Every series is
judged by the growth model the agent uses too (leaktrace.judge.trend): a line fitted
over all samples, above a noise floor, that still rises in the latter half of
the window. A category is "leak" when it grows so and the kernel cannot take
the memory back, "cache" when it grows but is reclaimable, "stable" when it
is flat, wanders, or grew and then held (a start-up, a cache that filled),
and "unknown" when the window is too short to measure. Growth of processes
too young to judge and of leaktrace itself is taken out of the user total.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, List, Mapping, Optional, Sequence, Tuple

from leaktrace.judge import trend
from leaktrace.triage.advice import NextStep, next_step
from leaktrace.triage.growers import (Grower, excluded_anon, growers_of, process_growers,
                                      young_notes)
from leaktrace.triage.procfs import Capture, Sample

MiB = 1 << 20
# Below this span /proc/uptime (10 ms steps) and read time swamp the slope.
MIN_SPAN_S = 0.2
# Below this a "growth" is mostly wander (with 2 samples r2 is always 1).
MIN_R2 = 0.5
POLICY = trend.TrendPolicy(min_points=2, min_span_s=MIN_SPAN_S, min_r2=MIN_R2)


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
class Triage:
    window_s: float  # first to last sample
    samples: int
    mem_total: int
    mem_available: int
    verdicts: Tuple[Verdict, ...]
    growers: Mapping[str, Tuple[Grower, ...]]  # category -> top growers
    next_steps: Tuple[NextStep, ...]
    notes: Tuple[str, ...]


def judge(category: Category, samples: Sequence[Sample], measurable: bool, noise: int = 0,
          excluded: Sequence[int] = ()) -> Verdict:
    """One category's verdict; excluded is subtracted from each sample before
    the fit (user_anon: the processes that cannot be judged)."""
    times = [s.time_s for s in samples]
    levels = [category.level(s.meminfo) for s in samples]
    available = samples[-1].meminfo.get("MemAvailable", 0)
    if not measurable:
        return Verdict(category.name, category.label, levels[-1], None, 0, None, "unknown")
    policy = replace(POLICY, floor_bytes=max(category.floor, noise))
    fitted = [level - x for level, x in zip(levels, excluded)] if excluded else levels
    judged = trend.judge(list(zip(times, fitted)), policy)
    note = ""
    if judged.state == trend.GROWING:
        verdict = "cache" if category.reclaimable else "leak"
    else:
        verdict = "stable"
        if judged.state == trend.PLATEAU:
            note = "grew, then held in the latter half of the window: a start-up or a cache that filled"
    exhaust = available / judged.rate if verdict == "leak" else None
    return Verdict(category.name, category.label, levels[-1], judged.rate, judged.growth, exhaust,
                   verdict, note)


def _sample_notes(samples: Sequence[Sample]) -> List[str]:
    notes = []
    first, last = set(samples[0].processes), set(samples[-1].processes)
    if first - last:
        notes.append(f"{len(first - last)} processes exited during sampling (not ranked)")
    if last - first:
        notes.append(f"{len(last - first)} processes started during sampling (not ranked)")
    return notes


def _judge_all(samples: Sequence[Sample], measurable: bool) -> Tuple[Verdict, ...]:
    excluded = excluded_anon(samples)
    direct = {c.name: judge(c, samples, measurable, excluded=excluded if c.name == "user_anon" else ())
              for c in CATEGORIES if not c.residual}
    churn = sum(abs(v.growth) for v in direct.values())
    return tuple(
        direct[c.name] if c.name in direct else judge(c, samples, measurable, churn)
        for c in CATEGORIES
    )


def _unmask_process_growth(verdicts: Tuple[Verdict, ...], procs: Tuple[Grower, ...], span: float,
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
        notes.extend(young_notes(samples))
        procs = process_growers(samples)
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
        growers[verdict.category] = growers_of(capture, verdict.category)
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
