"""The agent's growth model: one bounded series per process, cgroup, slab
cache and memory total, judged by leaktrace.judge.trend.

Contract: Watch.observe(sample) records one triage Sample (pure, no I/O);
judged(kind) returns the current Trend of every series of that kind;
suspects() the series worth tracing, fastest first. A series keeps the points
of the last window only, and is judged only once it spans the whole window
(TrendPolicy.min_span_s): a process must be watched for a full window before
its growth counts, so a start-up is seen to end before anything is traced.
Processes are keyed by pid and start time (a reused pid is a new process);
leaktrace's own processes are never watched. A series whose owner is gone is
dropped at once.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from typing import Deque, Dict, Iterator, List, Tuple

from leaktrace.judge import trend
from leaktrace.process.cgroups import container_label
from leaktrace.triage.procfs import Sample

PROCESS, CGROUP, SLAB, TOTAL = "process", "cgroup", "slab", "total"
# Totals the agent can trace when they grow (kernel --kind ...), and the one
# it only reports (user anonymous memory: the processes are traced instead).
TOTALS = {"vmalloc": "VmallocUsed", "percpu": "Percpu", "user_anon": "AnonPages",
          "slab_unreclaimable": "SUnreclaim", "slab_reclaimable": "SReclaimable"}
TRACEABLE = (PROCESS, SLAB, TOTAL)
TRACEABLE_TOTALS = ("vmalloc", "percpu")
# What --targets names: processes, slab caches, and the two traceable totals.
TARGET_KINDS = (PROCESS, SLAB) + TRACEABLE_TOTALS
MIN_POINTS = 6


@dataclass(frozen=True)
class Key:
    """What one series follows."""

    kind: str  # process, cgroup, slab, total
    name: str  # comm, cgroup path, cache name, total name
    pid: int = 0
    started_s: float = 0.0  # processes: when it started (seconds after boot)
    container: str = ""  # processes and cgroups: the container, when one

    @property
    def target_kind(self) -> str:
        """process, slab, vmalloc or percpu (as --targets names them)."""
        return self.name if self.kind == TOTAL else self.kind

    def label(self) -> str:
        if self.kind == PROCESS:
            return f"{self.name} (pid {self.pid})"
        return f"{self.kind} {self.name}"


@dataclass(frozen=True)
class Judged:
    key: Key
    trend: trend.Trend


def policy_for(window_s: float, min_growth: int, period_s: float) -> trend.TrendPolicy:
    """Judge only a full window (10% slack for late samples), with enough points."""
    points = max(MIN_POINTS, int(window_s / period_s * 0.5))
    return trend.TrendPolicy(min_points=points, min_span_s=window_s * 0.9, floor_bytes=min_growth)


class Watch:
    def __init__(self, policy: trend.TrendPolicy, window_s: float, cgroup: str = ""):
        self.policy = policy
        self.window_s = window_s
        self.cgroup = cgroup  # only processes whose cgroup path starts with this
        self.series: Dict[Key, Deque[Tuple[float, int]]] = {}

    def observe(self, sample: Sample) -> None:
        seen = dict(self._levels(sample))
        for key in [k for k in self.series if k not in seen]:
            del self.series[key]  # the process exited, the cache was destroyed
        horizon = sample.time_s - self.window_s * 1.1
        for key, level in seen.items():
            points = self.series.setdefault(key, deque())
            points.append((sample.time_s, level))
            while points and points[0][0] < horizon:
                points.popleft()

    def _levels(self, sample: Sample) -> Iterator[Tuple[Key, int]]:
        cgroups: Dict[Tuple[str, str], int] = {}
        for proc in sample.processes.values():
            if proc.leaktrace or not proc.cgroup.startswith(self.cgroup):
                continue
            container = container_label(proc.container)
            yield Key(PROCESS, proc.comm, proc.pid, proc.started_s or 0.0, container), proc.anon
            cgroup = (proc.cgroup or "/", container)
            cgroups[cgroup] = cgroups.get(cgroup, 0) + proc.anon
        for (path, container), anon in cgroups.items():
            yield Key(CGROUP, path, container=container), anon
        for name, cache in (sample.slabs or {}).items():
            yield Key(SLAB, name), cache.bytes
        for name, field in TOTALS.items():
            if field in sample.meminfo:
                yield Key(TOTAL, name), sample.meminfo[field]

    def judged(self, kind: str) -> List[Judged]:
        """Every series of one kind, fastest growing first."""
        found = [Judged(k, trend.judge(list(p), self._policy(k))) for k, p in self.series.items()
                 if k.kind == kind]
        found.sort(key=lambda j: j.trend.rate, reverse=True)
        return found

    def _policy(self, key: Key) -> trend.TrendPolicy:
        # A total's noise is other work's churn: it needs more than one process's floor.
        if key.kind == TOTAL:
            return replace(self.policy, floor_bytes=self.policy.floor_bytes * 4)
        return self.policy

    def suspects(self, kinds: Tuple[str, ...] = TARGET_KINDS) -> List[Judged]:
        """Growing series of these target kinds, fastest first."""
        found = [j for kind in TRACEABLE for j in self.judged(kind)
                 if j.trend.state == trend.GROWING and j.key.target_kind in kinds]
        found.sort(key=lambda j: j.trend.rate, reverse=True)
        return found
