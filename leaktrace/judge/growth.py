"""Leak or cache? Growth verdicts over the intervals of one session.

One snapshot cannot tell a leak from a cache that filled up: both hold
memory. Watching over time can. GrowthTracker keeps, per site key, the
outstanding bytes and count at every interval of a session (0 at an interval
where the site held nothing that passed the filters) and the site's age
buckets, so it can see whether allocations that had already lived a while
were freed by the next interval. judge() turns one site's series into:

  leak     bytes grew over the window, at least MIN_LEAK_ALLOCS allocations
           were added, and allocations that had already lived a full interval
           (and at least OLD_AGE_S) were not freed afterwards (>= KEEP_SHARE
           of their bytes still held)
  growing  bytes grew and are still growing, but old allocations get freed,
           or too little was seen to say that they never are
  stable   flat totals; or grew, then held while old allocations were freed
           and replaced (a cache that filled up); or one allocation held
  unknown  fewer than MIN_POINTS intervals seen

with the numbers behind each (reason). A leak the session's losses could
explain (missed_frees.Doubts: kernel frees that were missed) is `unknown`, with
the reason (judged()). Sites are ranked leak, growing, unknown, stable, then
by bytes (judgement.py), so a steadily growing 800 KiB leak outranks a
one-off 8 MiB thread stack. Pure: no clock and no I/O; judgement.judge()
feeds the sites of each snapshot in order (observe), the same way in user
and kernel mode.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from typing import Deque, Dict, Optional, Sequence, Tuple

from leaktrace.judge.missed_frees import Doubts
from leaktrace.base.model import AGE_THRESHOLDS_S, Site
from leaktrace.base.units import format_bytes

MIN_POINTS = 3
MAX_POINTS = 120  # intervals kept per site: 10 minutes at the default 5 s
DROP_AFTER = 5  # intervals a site may be absent before its history is dropped
MIN_GROWTH_BYTES = 1024  # below this, a change is noise (a few small blocks)
GROWTH_SHARE = 0.05  # ... or below this share of the site's peak
KEEP_SHARE = 0.95
MIN_LEAK_ALLOCS = 2  # one allocation that appears and stays is a buffer, not a leak
OLD_AGE_S = 1.0
RECENT_FIT = 0.5  # r² the latter half's rise needs to count as still growing
NS_PER_S = 1_000_000_000

VERDICT_ORDER = {"leak": 0, "growing": 1, "unknown": 2, "stable": 3}


@dataclass(frozen=True)
class Series:
    """One site over a session: what judge() reads."""

    times_s: Tuple[float, ...]  # since the first interval
    bytes: Tuple[int, ...]
    counts: Tuple[int, ...]
    held: int = 0  # bytes of old allocations seen at an interval ...
    kept: int = 0  # ... and of those, still outstanding at the next one
    bytes_older: Tuple[int, ...] = ()  # now, per AGE_THRESHOLDS_S


@dataclass(frozen=True)
class Growth:
    verdict: str
    reason: str
    growth_bps: float
    history: Tuple[int, ...]
    retention: Optional[float] = None  # kept / held; None when nothing old was seen


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> Tuple[float, float]:
    """Least-squares slope of ys over xs and the fit's r² (1.0 for a flat series)."""
    n = len(xs)
    if n < 2:
        return 0.0, 1.0
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if sxx == 0:
        return 0.0, 1.0
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sxx
    ss_tot = sum((y - mean_y) ** 2 for y in ys)
    if ss_tot == 0:
        return slope, 1.0
    ss_res = sum((y - (mean_y + slope * (x - mean_x))) ** 2 for x, y in zip(xs, ys))
    return slope, max(0.0, 1.0 - ss_res / ss_tot)


def judge(series: Series) -> Growth:
    """The verdict for one site's series, with the numbers that justify it."""
    slope, r2 = fit_line(series.times_s, series.bytes)
    history = tuple(series.bytes)
    retention = series.kept / series.held if series.held else None
    n = len(history)
    if n < MIN_POINTS:
        return Growth("unknown", f"{n} of {MIN_POINTS} intervals needed to judge growth",
                      slope, history, retention)
    floor = max(MIN_GROWTH_BYTES, GROWTH_SHARE * max(history))
    change = history[-1] - history[0]
    added = series.counts[-1] - series.counts[0]
    facts = _facts(series, slope, r2, change, added, retention)
    if change <= floor or slope <= 0:
        return Growth("stable", "flat: " + facts, slope, history, retention)
    if retention is not None and retention >= KEEP_SHARE and added >= MIN_LEAK_ALLOCS:
        return Growth("leak", "grew and never freed: " + facts, slope, history, retention)
    if _still_rising(series, floor):
        return Growth("growing", "still growing: " + facts, slope, history, retention)
    held_what = "one allocation held" if added < MIN_LEAK_ALLOCS else "old allocations freed"
    return Growth("stable", f"grew, then held ({held_what}): " + facts, slope, history, retention)


def _still_rising(series: Series, floor: float) -> bool:
    """Did the latter half of the window keep growing, beyond the noise floor?

    A full cache's total jitters (entries replaced, the age filter's bucket
    edges), so a rise needs a consistent slope (r² >= RECENT_FIT), not one
    high point."""
    half = len(series.bytes) // 2
    times, values = series.times_s[half:], series.bytes[half:]
    slope, r2 = fit_line(times, values)
    return slope * (times[-1] - times[0]) > floor / 2 and r2 >= RECENT_FIT


def _facts(series: Series, slope: float, r2: float, change: int, added: int,
           retention: Optional[float]) -> str:
    span = series.times_s[-1] - series.times_s[0]
    sign = "+" if change >= 0 else "-"
    parts = [f"{sign}{format_bytes(abs(change))} in {span:.1f} s "
             f"({_rate(slope)}, fit r²={r2:.2f})",
             f"{added:+,} allocations"]
    if retention is None:
        parts.append("no allocation lived long enough to see it freed or kept")
    else:
        parts.append(f"{retention:.0%} of old allocations kept at the next interval")
    now = series.bytes[-1]
    if now and series.bytes_older:
        shares = "/".join(f"{older / now:.0%}" for older in series.bytes_older)
        ages = "/".join(str(t) for t in AGE_THRESHOLDS_S[: len(series.bytes_older)])
        parts.append(f"older than {ages} s: {shares}")
    return "; ".join(parts)


def cohort_cut(instant: int, windows: Sequence[Tuple[int, int, int]]) -> int:
    """The latest time <= instant that no (start, end, bytes) window straddles."""
    cut, moved = instant, True
    while moved:
        moved = False
        for start, end, _ in windows:
            if start < cut < end:
                cut, moved = start, True
    return cut


def _rate(bps: float) -> str:
    sign = "+" if bps >= 0 else "-"
    return f"{sign}{format_bytes(int(abs(bps)))}/s"


@dataclass
class _SiteHistory:
    bytes: Deque[int]
    counts: Deque[int]
    buckets: Tuple[Tuple[int, int, int], ...] = ()
    held: int = 0
    kept: int = 0
    absent: int = 0
    bytes_older: Tuple[int, ...] = ()


@dataclass
class GrowthTracker:
    """Per-site history across the intervals of one session."""

    max_points: int = MAX_POINTS
    times: Deque[int] = field(default_factory=deque)
    sites: Dict[Tuple, _SiteHistory] = field(default_factory=dict)

    def judged(self, site: Site, doubts: Doubts = Doubts()) -> Growth:
        """The site's verdict, unless the snapshot's losses could explain its figures."""
        growth = self.growth(site.key)
        why = doubts.reason(site)
        if why and growth.verdict == "leak":
            return replace(growth, verdict="unknown", reason=f"not called a leak: {why}; {growth.reason}")
        if site.cache in doubts.counted:
            return replace(growth, reason=f"upper bound: {why}; {growth.reason}")
        return growth

    def observe(self, sites: Sequence[Site], taken_ns: int) -> None:
        if self.times and taken_ns <= self.times[-1]:
            return  # the same instant twice (a final report right after a periodic one)
        old_before = self._old_before(taken_ns)
        present = {site.key: site for site in sites}
        for key in list(self.sites):
            if key not in present:
                self._record(key, None, old_before)
        for key, site in present.items():
            self._record(key, site, old_before)
        self.times.append(taken_ns)
        if len(self.times) > self.max_points:
            self.times.popleft()

    def _old_before(self, taken_ns: int) -> Optional[int]:
        """Buckets that ended before this instant were old at the previous interval."""
        if not self.times:
            return None
        previous = self.times[-1]
        return previous - max(taken_ns - previous, int(OLD_AGE_S * NS_PER_S))

    def _record(self, key: Tuple, site: Optional[Site], old_before: Optional[int]) -> None:
        history = self.sites.get(key)
        if history is None:
            zeros = [0] * len(self.times)  # absent so far: nothing outstanding passed the filters
            history = _SiteHistory(deque(zeros, self.max_points), deque(zeros, self.max_points))
            self.sites[key] = history
        now = site.age_buckets if site else ()
        if old_before is not None and history.buckets:
            # The same allocations on both sides: those made before a cut
            # no age block straddles (old blocks coarsen between intervals).
            cut = cohort_cut(old_before, history.buckets + now)
            held = sum(n for _, end, n in history.buckets if end <= cut)
            history.held += held
            history.kept += min(held, sum(n for _, end, n in now if end <= cut))
        history.bytes.append(site.bytes if site else 0)
        history.counts.append(site.count if site else 0)
        history.buckets = site.age_buckets if site else ()
        history.bytes_older = site.bytes_older if site else ()
        history.absent = 0 if site else history.absent + 1
        if history.absent >= DROP_AFTER:
            del self.sites[key]

    def series(self, key: Tuple) -> Optional[Series]:
        history = self.sites.get(key)
        if history is None:
            return None
        first = self.times[0]
        times = tuple((t - first) / NS_PER_S for t in self.times)
        return Series(times, tuple(history.bytes), tuple(history.counts), history.held,
                      history.kept, history.bytes_older)

    def growth(self, key: Tuple) -> Growth:
        series = self.series(key)
        if series is None:
            return Growth("unknown", "not seen yet", 0.0, ())
        return judge(series)
