"""The probe budget: the share of the host's CPU time the agent's probes may use.

Contract: pure (the caller passes the clock). Cost is measured, not guessed:
the kernel's BPF run-time statistics (run_time_ns of every program the
escalation loaded, while statistics are enabled) plus, per program run, the
cost of getting there, which run_time_ns does not include: a uprobe's trap
(HIT_NS["user"], the floor bench/malloc_bench.py measures: ~3 µs per
malloc+free pair, three probe hits) or a tracepoint's call (HIT_NS["kernel"]).

Budget is a ledger over the agent's whole life: credit accrues at
share x CPUs x elapsed time and is spent by probes, and holds at most
share x CPUs x horizon_s, so a burst can use what quiet minutes saved but the
cumulative overhead (overhead()) never exceeds the share. An escalation
stops when its cost at its current rate would overdraw the credit within
LOOKAHEAD_S plus DETACH_S, what the probes still cost after the stop (the
final read, the detach), so it is stopped before it overspends, not after.
No check can stop what the probes cost while they attach (on a malloc-heavy
target the first probes run while the others attach) and until the first
poll: an escalation starts only when the credit also covers what the last
one cost that no check could stop (unstoppable, learned from it).
"""
from __future__ import annotations

from dataclasses import dataclass

HIT_NS = {"user": 1000, "kernel": 50}
LOOKAHEAD_S = 0.5  # more than the Session's poll period (100 ms), so a check comes first
# The probes' cost after a stop, in seconds at the trace's rate. Measured on a malloc-heavy
# target: 0.07 CPU-s at 1.0-1.3 CPU-s/s (0.06 s), though the detach took 2.3 s under load.
DETACH_S = 0.5
START_SHARE = 0.5  # an escalation starts only when this share of the full credit is there


@dataclass(frozen=True)
class ProbeCost:
    run_time_ns: int = 0  # summed over the programs, as the kernel measured it
    runs: int = 0

    def seconds(self, mode: str) -> float:
        return (self.run_time_ns + self.runs * HIT_NS[mode]) / 1e9


class Budget:
    def __init__(self, share: float, cpus: int, horizon_s: float, now: float):
        self.share = share
        self.cpus = cpus
        self.cap = share * cpus * horizon_s  # CPU-seconds of credit at most
        self.credit = 0.0
        self.spent = 0.0  # CPU-seconds the probes used, all escalations together
        self.unstoppable = 0.0  # the last escalation's cost before its first check and after its stop
        self.started = self._accrued_at = now

    def accrue(self, now: float) -> None:
        self.credit = min(self.cap, self.credit + self.share * self.cpus * (now - self._accrued_at))
        self._accrued_at = now

    def can_start(self, now: float) -> bool:
        self.accrue(now)
        return self.credit >= max(START_SHARE * self.cap, min(self.unstoppable, self.cap))

    def spend(self, seconds: float) -> None:
        self.credit -= seconds
        self.spent += seconds

    def overdraws(self, rate: float, now: float) -> bool:
        """Would spending `rate` CPU-seconds per second until the next check and
        through the stop that follows it overdraw the credit?"""
        self.accrue(now)
        return rate * (LOOKAHEAD_S + DETACH_S) > self.credit

    def overhead(self, now: float) -> float:
        """The probes' share of the host's CPU time since the agent started."""
        elapsed = now - self.started
        return self.spent / (elapsed * self.cpus) if elapsed > 0 else 0.0
