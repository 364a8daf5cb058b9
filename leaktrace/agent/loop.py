"""The agent's loop: sample, judge, publish, and trace one suspect at a time.

Two threads. The sampler's (sampler.py) reads /proc every period_s (status,
not smaps_rollup: no walk of every mapping) -> Watch -> an AgentState for
/metrics, on a schedule no trace can hold up. The main thread waits for each
new sample; when a series grows (Watch.suspects) and the budget has credit,
Escalations picks one and escalate.trace() traces it there (Session installs
signal handlers, which only the main thread may do). The trace's check,
once attached and then between polls, charges the probes' measured cost and
stops it when its rate since the last check would overdraw the budget; a
reachability scan at its end is charged once it is done. Its evidence goes
to the EvidenceStore and its top sites to /metrics. One lock guards what both threads touch (the Watch, the budget,
the escalations and what is published). SIGTERM/SIGINT stop the agent: a
trace in progress ends with its final report and evidence, its probes
detached.
"""
from __future__ import annotations

import os
import queue
import signal
import threading
import time
from collections import deque
from typing import Callable, Deque, Dict, Optional, Tuple

from leaktrace.base import stop_signals
from leaktrace.agent import escalate
from leaktrace.agent.budget import Budget, ProbeCost
from leaktrace.agent.config import AgentConfig
from leaktrace.agent.evidence import EvidenceStore, escalation_name
from leaktrace.agent.exporter import KEPT_ESCALATIONS, SITES_PER_ESCALATION, AgentState
from leaktrace.agent.findings import SiteFinding, event, top_sites
from leaktrace.agent.policy import Escalations
from leaktrace.agent.sampler import Clock, Sampler
from leaktrace.agent.watch import CGROUP, PROCESS, SLAB, TOTAL, Judged, Key, Watch, policy_for
from leaktrace.base.units import format_bytes
from leaktrace.triage.procfs import Sample
from leaktrace.triage.sampling import read_sample


def read_memory() -> Sample:
    return read_sample(skip_pid=os.getpid(), exact=False)


class Agent:
    def __init__(self, config: AgentConfig, store: EvidenceStore, say: Callable[[str], None],
                 tracer: Callable = escalate.trace, clock: Optional[Clock] = None,
                 read: Callable[[], Sample] = read_memory):
        self.config = config
        self.store = store
        self.say = say
        self.tracer = tracer
        self.clock = clock or Clock()
        self.read = read
        self.watch = Watch(policy_for(config.window_s, config.min_growth, config.period_s),
                           config.window_s, config.cgroup)
        self.escalations = Escalations(config.cooldown_s, config.sample_rate)
        self.budget = Budget(config.budget, os.cpu_count() or 1, config.window_s, self.clock.now())
        self.state = AgentState(budget=config.budget)
        self.sites: Deque[Tuple[SiteFinding, ...]] = deque(maxlen=KEPT_ESCALATIONS)
        self.losses: Dict[str, int] = {}
        self.samples, self.sample_seconds = 0, 0.0
        self.deadline = 0.0
        self.active: Optional[Key] = None  # the target being traced
        self.stop_reason = ""
        self._lock = threading.Lock()  # the sampler's thread and the main thread
        self._wakeups: "queue.SimpleQueue[str]" = queue.SimpleQueue()  # put() is safe in a signal handler
        self._charged, self._checked_at, self._mode = 0.0, 0.0, "user"
        self._checks, self._unstoppable = 0, 0.0  # the trace's: cost until its first rate was judged
        self._said_unmeasured = False

    # ---- the loop ----------------------------------------------------------
    def run(self) -> str:
        """Until SIGTERM/SIGINT or duration_s; returns why it stopped."""
        restore_signals = stop_signals.take((signal.SIGTERM, signal.SIGINT),
                                            lambda *_: self.stop("interrupted"))
        self.deadline = self.clock.now() + (self.config.duration_s or float("inf"))
        sampler = Sampler(self._sample, self.config.period_s, self.clock,
                          failed=lambda: self.stop("sampling failed"))
        sampler.start()
        try:
            while not self.stop_reason:
                if self.clock.now() >= self.deadline:
                    self.stop("duration reached")
                elif self.config.escalate:
                    self._maybe_escalate()
                self._wait_for_sample()
        finally:
            sampler.stop()
            restore_signals()
        if sampler.failure is not None:
            raise sampler.failure
        return self.stop_reason

    def stop(self, reason: str) -> None:
        """End the loop (a trace in progress at its next check); safe in a signal handler."""
        self.stop_reason = self.stop_reason or reason
        self._wakeups.put("stop")

    def _wait_for_sample(self) -> None:
        """Until the sampler has taken a new sample, the agent stops or the deadline passes."""
        left = self.deadline - self.clock.now()
        try:
            self._wakeups.get(timeout=None if left == float("inf") else max(0.0, left))
            while True:  # what else came meanwhile (a trace takes many samples' time)
                self._wakeups.get_nowait()
        except queue.Empty:
            pass

    def _sample(self) -> None:
        """On the sampler's thread."""
        started = time.monotonic()
        sample = self.read()
        with self._lock:
            self.watch.observe(sample)
            self.samples += 1
            self.sample_seconds = time.monotonic() - started
            self._publish()
        self._wakeups.put("sample")

    def _publish(self) -> None:
        """A new AgentState for /metrics; the caller holds the lock."""
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
            overhead=self.budget.overhead(self.clock.now()), samples=self.samples,
            sample_seconds=self.sample_seconds, write_errors=self.store.errors,
            losses=dict(self.losses))

    # ---- escalations ---------------------------------------------------------
    def _maybe_escalate(self) -> None:
        now = self.clock.now()
        with self._lock:
            suspect = self.escalations.choose(self.watch.suspects(self.config.targets), now)
            ready = suspect is not None and self.budget.can_start(now)
        if ready:
            self.escalate(suspect)

    def request(self, suspect: Judged) -> escalate.Request:
        key, c = suspect.key, self.config
        sample_rate = self.escalations.sample_rate(key)
        if key.kind == PROCESS:
            return escalate.Request("process", c.trace_s, c.interval_s, pid=key.pid, sample_rate=sample_rate,
                                    reach_max_bytes=c.reach_max_bytes)
        if key.kind == SLAB:
            return escalate.Request("slab", c.trace_s, c.interval_s, cache=key.name)
        return escalate.Request(key.name, c.trace_s, c.interval_s)

    def escalate(self, suspect: Judged) -> None:
        request, key = self.request(suspect), suspect.key
        started, wall = self.clock.now(), time.time()
        directory = self.store.open(escalation_name(wall, f"{key.kind}-{key.pid or key.name}"))
        recorder = self.store.recorder(directory)
        self._charged, self._checked_at, self._mode = 0.0, started, request.mode
        self._checks, self._unstoppable = 0, 0.0
        scan = ""
        if request.reach_max_bytes:
            scan = ", then scanning its memory" if request.scans else " (sampled: no reachability scan)"
        self.say(f"{key.label()} grows {format_bytes(int(suspect.trend.rate))}/s over "
                 f"{suspect.trend.span_s:.0f} s: tracing it for {request.duration_s:g} s{scan}")
        with self._lock:
            self.active = key
            self._publish()
        try:
            outcome = self.tracer(request, recorder, self._check)
        finally:
            recorder.close()
            with self._lock:
                self.active = None
        self._finish(suspect, request, outcome, started, directory)

    def _check(self, cost: ProbeCost) -> str:
        """Once attached, then between the trace's polls: charge its cost, stop it when due.

        The first call's rate spans the compile too; the second's is the first
        measured from the attach, so what was charged until then no check
        could have stopped.
        """
        now = self.clock.now()
        spent = cost.seconds(self._mode)
        self._checks += 1
        if self._checks <= 2:
            self._unstoppable = spent
        rate = (spent - self._charged) / max(now - self._checked_at, 1e-3)
        with self._lock:
            self.budget.spend(spent - self._charged)
            overdraws = self.budget.overdraws(rate, now)
        self._charged, self._checked_at = spent, now
        if self.stop_reason or now >= self.deadline:
            return "interrupted"
        return "over_budget" if overdraws else ""

    def _finish(self, suspect: Judged, request: escalate.Request, outcome: escalate.Outcome,
                started: float, directory) -> None:
        sites = top_sites(outcome.report, suspect.key.label(), SITES_PER_ESCALATION)
        files = self.store.finish(directory, outcome.report)
        ended = self.clock.now()
        self.store.log(event(suspect, request, outcome, sites, ended - started, time.time(), files))
        with self._lock:
            # the scan ran after the last check: like the detach, no check can stop it
            final = outcome.cost.seconds(request.mode) + outcome.scan_seconds
            self.budget.spend(final - self._charged)
            self.budget.unstoppable = self._unstoppable + final - self._charged
            self.escalations.finished(suspect.key, outcome.outcome, ended)
            for counter, count in (outcome.report.losses.items() if outcome.report else ()):
                self.losses[counter] = self.losses.get(counter, 0) + count
            if sites:
                self.sites.append(sites)
            self._publish()
        found = f"; top site {sites[0].function} {format_bytes(sites[0].bytes)} {sites[0].verdict}" if sites else ""
        self.say(f"{suspect.key.label()}: {outcome.outcome}{': ' + outcome.message if outcome.message else ''}"
                 f"{found}")
        if not outcome.measured and not self._said_unmeasured:
            self._said_unmeasured = True
            self.say("BPF run-time statistics are off (no CAP_SYS_ADMIN, and the "
                     "kernel.bpf_stats_enabled sysctl is 0): probe cost is not measured and --budget "
                     "is not enforced; traces end at --trace-for")
        if outcome.outcome == "interrupted":
            self.stop("interrupted")
