"""The agent's loop: sample, judge, publish, and trace one suspect at a time.

Every period_s: triage's sampler reads /proc (status, not smaps_rollup: no
walk of every mapping) -> Watch -> an AgentState for /metrics. When a series
grows (Watch.suspects) and the budget has credit, Escalations picks one and
escalate.trace() traces it; while it runs, sampling and publishing go on from
its check between polls, which also stops it when the probes' measured cost
would overdraw the budget. Its evidence goes to the EvidenceStore and its top
sites to /metrics. SIGTERM/SIGINT stop the agent: a trace in progress ends
with its final report and evidence, its probes detached.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from collections import deque
from typing import Callable, Deque, Dict, Optional, Tuple

from leaktrace.agent import escalate
from leaktrace.agent.budget import Budget, ProbeCost
from leaktrace.agent.config import AgentConfig
from leaktrace.agent.evidence import EvidenceStore, escalation_name
from leaktrace.agent.exporter import KEPT_ESCALATIONS, SITES_PER_ESCALATION, AgentState
from leaktrace.agent.findings import SiteFinding, event, top_sites
from leaktrace.agent.policy import Escalations
from leaktrace.agent.watch import CGROUP, PROCESS, SLAB, TOTAL, Judged, Key, Watch, policy_for
from leaktrace.report.table import format_bytes
from leaktrace.triage.sampling import read_sample


class Agent:
    def __init__(self, config: AgentConfig, store: EvidenceStore, say: Callable[[str], None],
                 tracer: Callable = escalate.trace, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.store = store
        self.say = say
        self.tracer = tracer
        self.clock = clock
        self.watch = Watch(policy_for(config.window_s, config.min_growth, config.period_s),
                           config.window_s, config.cgroup)
        self.escalations = Escalations(config.cooldown_s, config.sample_rate)
        self.budget = Budget(config.budget, os.cpu_count() or 1, config.window_s, clock())
        self.state = AgentState(budget=config.budget)
        self.stopping = threading.Event()
        self.sites: Deque[Tuple[SiteFinding, ...]] = deque(maxlen=KEPT_ESCALATIONS)
        self.losses: Dict[str, int] = {}
        self.samples, self.sample_seconds = 0, 0.0
        self.next_sample = self.deadline = 0.0
        self.active: Optional[Key] = None  # the target being traced
        self._charged, self._checked_at, self._mode = 0.0, 0.0, "user"
        self._said_unmeasured = False

    # ---- the loop ----------------------------------------------------------
    def run(self) -> str:
        """Until SIGTERM/SIGINT or duration_s; returns why it stopped."""
        handlers = {s: signal.signal(s, lambda *_: self.stopping.set())
                    for s in (signal.SIGTERM, signal.SIGINT)}
        start = self.clock()
        self.next_sample = start
        self.deadline = start + self.config.duration_s if self.config.duration_s else float("inf")
        try:
            while not self.stopping.is_set() and self.clock() < self.deadline:
                self._sample_if_due()
                if self.config.escalate:
                    self._maybe_escalate()
                self.stopping.wait(max(0.0, min(self.next_sample, self.deadline) - self.clock()))
        finally:
            for number, handler in handlers.items():
                signal.signal(number, handler)
        return "interrupted" if self.stopping.is_set() else "duration reached"

    def _sample_if_due(self) -> None:
        now = self.clock()
        if now < self.next_sample:
            return
        self.next_sample = max(self.next_sample + self.config.period_s, now)
        started = time.monotonic()
        sample = read_sample(skip_pid=os.getpid(), exact=False)
        self.watch.observe(sample)
        self.samples += 1
        self.sample_seconds = time.monotonic() - started
        self.publish()

    def publish(self) -> None:
        top = self.config.export_top
        watched: Dict[str, int] = {}
        for key in self.watch.series:
            watched[key.kind] = watched.get(key.kind, 0) + 1
        self.state = AgentState(
            budget=self.config.budget, totals=tuple(self.watch.judged(TOTAL)),
            processes=tuple(self.watch.judged(PROCESS)[:top]),
            cgroups=tuple(self.watch.judged(CGROUP)[:top]), caches=tuple(self.watch.judged(SLAB)[:top]),
            watched=watched, escalations=dict(self.escalations.counts), active=self.active,
            sites=tuple(s for found in self.sites for s in found), probe_seconds=self.budget.spent,
            overhead=self.budget.overhead(self.clock()), samples=self.samples,
            sample_seconds=self.sample_seconds, write_errors=self.store.errors,
            losses=dict(self.losses))

    # ---- escalations ---------------------------------------------------------
    def _maybe_escalate(self) -> None:
        now = self.clock()
        suspect = self.escalations.choose(self.watch.suspects(self.config.targets), now)
        if suspect is not None and self.budget.can_start(now):
            self.escalate(suspect)

    def request(self, suspect: Judged) -> escalate.Request:
        key, c = suspect.key, self.config
        sample_rate = self.escalations.sample_rate(key)
        if key.kind == PROCESS:
            return escalate.Request("process", c.trace_s, c.interval_s, pid=key.pid, sample_rate=sample_rate)
        if key.kind == SLAB:
            return escalate.Request("slab", c.trace_s, c.interval_s, cache=key.name)
        return escalate.Request(key.name, c.trace_s, c.interval_s)

    def escalate(self, suspect: Judged) -> None:
        request, key = self.request(suspect), suspect.key
        started, wall = self.clock(), time.time()
        directory = self.store.open(escalation_name(wall, f"{key.kind}-{key.pid or key.name}"))
        recorder = self.store.recorder(directory)
        self._charged, self._checked_at, self._mode = 0.0, started, request.mode
        self.say(f"{key.label()} grows {format_bytes(int(suspect.trend.rate))}/s over "
                 f"{suspect.trend.span_s:.0f} s: tracing it for {request.duration_s:g} s")
        self.active = key
        self.publish()
        try:
            outcome = self.tracer(request, recorder, self._check)
        finally:
            recorder.close()
            self.active = None
        self._finish(suspect, request, outcome, started, directory)

    def _check(self, cost: ProbeCost) -> str:
        """Between the trace's polls: charge its cost, keep sampling, stop it when due."""
        now = self.clock()
        spent = cost.seconds(self._mode)
        rate = (spent - self._charged) / max(now - self._checked_at, 1e-3)
        self.budget.spend(spent - self._charged)
        self._charged, self._checked_at = spent, now
        self._sample_if_due()
        if self.stopping.is_set() or now >= self.deadline:
            return "interrupted"
        return "over_budget" if self.budget.overdraws(rate, now) else ""

    def _finish(self, suspect: Judged, request: escalate.Request, outcome: escalate.Outcome,
                started: float, directory) -> None:
        self.budget.spend(outcome.cost.seconds(request.mode) - self._charged)
        sites = top_sites(outcome.report, suspect.key.label(), SITES_PER_ESCALATION)
        files = self.store.finish(directory, outcome.report)
        ended = self.clock()
        self.store.log(event(suspect, request, outcome, sites, ended - started, time.time(), files))
        self.escalations.finished(suspect.key, outcome.outcome, ended)
        for counter, count in (outcome.report.losses.items() if outcome.report else ()):
            self.losses[counter] = self.losses.get(counter, 0) + count
        if sites:
            self.sites.append(sites)
        self.publish()
        found = f"; top site {sites[0].function} {format_bytes(sites[0].bytes)} {sites[0].verdict}" if sites else ""
        self.say(f"{suspect.key.label()}: {outcome.outcome}{': ' + outcome.message if outcome.message else ''}"
                 f"{found}")
        if not outcome.measured and not self._said_unmeasured:
            self._said_unmeasured = True
            self.say("BPF run-time statistics are off (no CAP_SYS_ADMIN, and the "
                     "kernel.bpf_stats_enabled sysctl is 0): probe cost is not measured and --budget "
                     "is not enforced; traces end at --trace-for")
        if outcome.outcome == "interrupted":
            self.stopping.set()
