"""Which suspect to trace next, and how hard to sample it.

Contract: pure (the caller passes the clock). One escalation at a time is the
agent loop's shape (it traces in its own thread of control); this decides
among the suspects: the fastest-growing one that is not cooling down. Each
target, once traced, waits cooldown_s before it can be traced again. A trace
stopped for the budget makes the next trace of that target sample by bytes
SAMPLE_STEP times harder (bytes per sample start at FIRST_SAMPLE_RATE when
the first trace recorded everything), up to MAX_SAMPLE_RATE.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

from leaktrace.agent.watch import Judged, Key

OUTCOMES = ("completed", "target_exited", "over_budget", "interrupted", "failed")
FIRST_SAMPLE_RATE = 4096
SAMPLE_STEP = 16
MAX_SAMPLE_RATE = 1 << 24


class Escalations:
    def __init__(self, cooldown_s: float, sample_rate: int = 0):
        self.cooldown_s = cooldown_s
        self.first_sample_rate = sample_rate
        self.until: Dict[Key, float] = {}  # target -> when it may be traced again
        self.sample_rates: Dict[Key, int] = {}
        self.counts: Dict[tuple, int] = {}  # (kind, outcome) -> escalations

    def choose(self, suspects: Sequence[Judged], now: float) -> Optional[Judged]:
        for key in [k for k, until in self.until.items() if until <= now]:
            del self.until[key]
        return next((s for s in suspects if s.key not in self.until), None)

    def sample_rate(self, key: Key) -> int:
        return self.sample_rates.get(key, self.first_sample_rate)

    def finished(self, key: Key, outcome: str, now: float) -> None:
        self.until[key] = now + self.cooldown_s
        self.counts[(key.kind, outcome)] = self.counts.get((key.kind, outcome), 0) + 1
        if outcome == "over_budget":
            rate = self.sample_rate(key)
            self.sample_rates[key] = min(MAX_SAMPLE_RATE, rate * SAMPLE_STEP if rate > 1
                                         else FIRST_SAMPLE_RATE)
