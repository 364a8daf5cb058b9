"""The growth model `triage` and the agent share: is a memory series growing
persistently, did it grow and then plateau, or does it only wander?

Contract: judge(points, policy) -> Trend, pure (no clock, no I/O). points are
(time_s, bytes) pairs, oldest first, of one process's anonymous memory, one
slab cache, one vmalloc caller or one meminfo total. The verdict needs
evidence over time, never one window's difference:

  unknown   fewer than policy.min_points samples, or they span less than
            policy.min_span_s (a process younger than the fit window)
  stable    the fitted growth over the span is below the noise floor, or the
            values wander (r² of the line below policy.min_r2)
  plateau   it grew beyond the floor, but its most recent part
            (policy.recent_share of the span) no longer does: a process that
            started up, a cache that filled
  growing   a good line fit over the whole span, above the floor, and the
            recent part still rises at no less than policy.recent_ratio of
            the overall rate: the only state worth tracing

The fit is growth.fit_line, the one least-squares fit of leaktrace.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

from leaktrace.judge.growth import fit_line

GROWING, PLATEAU, STABLE, UNKNOWN = "growing", "plateau", "stable", "unknown"
Point = Tuple[float, int]


@dataclass(frozen=True)
class TrendPolicy:
    min_points: int = 4
    min_span_s: float = 0.0  # the fit window: a shorter series is "unknown"
    floor_bytes: int = 64 * 1024  # growth over the span below this is noise ...
    floor_share: float = 0.01  # ... or below this share of the latest level
    min_r2: float = 0.5
    recent_share: float = 0.5  # the last part of the span that must still grow ...
    recent_ratio: float = 0.5  # ... at this share of the overall rate, at least


@dataclass(frozen=True)
class Trend:
    state: str
    rate: float  # bytes/s, fitted over the whole span
    r2: float
    growth: int  # fitted growth over the span
    span_s: float
    level: int  # the latest value
    recent_rate: float = 0.0


def floor(policy: TrendPolicy, level: int) -> float:
    """Growth over the span below which a change is noise."""
    return max(policy.floor_bytes, policy.floor_share * level)


def judge(points: Sequence[Point], policy: TrendPolicy) -> Trend:
    """The state of one series, with the numbers behind it."""
    if not points:
        return Trend(UNKNOWN, 0.0, 0.0, 0, 0.0, 0)
    times = [t for t, _ in points]
    values = [v for _, v in points]
    span, level = times[-1] - times[0], values[-1]
    if len(points) < max(2, policy.min_points) or span <= 0 or span < policy.min_span_s:
        return Trend(UNKNOWN, 0.0, 0.0, 0, span, level)
    rate, r2 = fit_line(times, values)
    growth = int(rate * span)
    if growth < floor(policy, level):
        return Trend(STABLE, rate, r2, growth, span, level)
    recent = _recent_rate(times, values, times[-1] - policy.recent_share * span)
    if recent < policy.recent_ratio * rate:
        return Trend(PLATEAU, rate, r2, growth, span, level, recent)
    state = GROWING if r2 >= policy.min_r2 else STABLE
    return Trend(state, rate, r2, growth, span, level, recent)


def _recent_rate(times: Sequence[float], values: Sequence[int], since: float) -> float:
    """The fitted rate over the points at or after `since` (at least two)."""
    first = next(i for i, t in enumerate(times) if t >= since)
    first = min(first, len(times) - 2)
    return fit_line(times[first:], values[first:])[0]
