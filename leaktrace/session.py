"""The reporting loop shared by every tracing command.

Every interval, one straight line: probe.snapshot() -> aggregate (every site
that passed the filters) -> judge (judgement.judge: the session's
GrowthTracker records the interval and each site gets its verdict, with the
doubts the snapshot's losses raise and, with --reachability, the scan that
`inspect` added to the snapshot) -> rank by verdict and cut to the top N ->
build_report (symbols through `resolve`, cgroup names through `cgroup_name`,
the same way in both modes) -> record the full report -> render the cut.
A recording gets every site, so a diff of recordings never mistakes a stack
that fell below the cut for one that went away; the cut reuses the full
report's frames, so each site is symbolized once per interval (every site
with --record, the top N without). In kernel mode, `evidence` reads what the
shown sites' objects hold (at the final report) and the rows carry it.
Stops on Ctrl-C, SIGTERM or SIGHUP (taken by listen(), before the command
says it is tracing), when the targets are gone, after
--duration, or after COUNT reports, and always prints a final report: nothing
collected is lost. The final report reads the maps (and the objects' contents),
then detaches every probe (probe.detach: fast, and no later signal can leave
one in a target), and only then scans, symbolizes and renders. The probe, the
symbol resolver and the reporter are passed in, so the loop knows nothing
about user or kernel mode; `run` adds on_signal (forward the signal to its
command) and finish (end the command, still traced, before the final report,
or after it when the final report scans the command's memory).
"""
from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .judge import missed_frees
from .base import stop_signals
from .base.config import ReportConfig, RunConfig
from .base.errors import LeaktraceError
from .judge.growth import GrowthTracker
from .judge.judgement import judge_interval
from .base.model import Report, RowContents, Site, Snapshot
from .symbolize import build_report

POLL_MS = 100
# Signals that stop the loop (each still gets a final report), and how the stop is told.
STOP_SIGNALS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated", signal.SIGHUP: "hung up"}


@dataclass
class Session:
    probe: object  # UserProbe or KernelProbe: snapshot(), poll()
    report_config: ReportConfig
    run_config: RunConfig
    render: Callable[[Report], None]
    resolve: Callable  # (StackKey, RawStack) -> tuple[Frame, ...]
    cgroup_name: Callable[[int], str] = str  # cgroup id -> what a row shows (kernel: its container)
    targets: Callable[[], tuple] = tuple
    alive: Callable[[], bool] = lambda: True
    warnings: Callable[[], List[str]] = list
    record: Optional[Callable[[Report], None]] = None  # --record: every site, before render
    tick: Callable[[], None] = lambda: None  # called between polls (symbol refresh)
    on_signal: Callable[[int], None] = lambda signum: None  # a stop signal arrived
    # run: end the command once the loop ended, before the final report (after
    # it with --reachability, whose final scan reads the command's memory).
    finish: Optional[Callable[[str], None]] = None
    growth: GrowthTracker = field(default_factory=GrowthTracker)
    # --reachability: adds a scan of the targets' memory to a snapshot, at the
    # final report or (inspect_each) at every report.
    inspect: Optional[Callable[[Snapshot], Snapshot]] = None
    inspect_each: bool = False
    # Kernel mode: what the objects of the given sites hold, at the final report.
    evidence: Optional[Callable[[Snapshot, Sequence[Site]], Dict[Tuple, RowContents]]] = None
    reports: int = 0
    _stop_reason: str = field(default="", init=False)
    _restore_signals: Optional[Callable[[], None]] = field(default=None, init=False)

    def listen(self) -> None:
        """Take the stop signals now, before the command says it is tracing: a
        signal sent the moment that line appears still ends with a final report."""
        if self._restore_signals is None:
            self._restore_signals = stop_signals.take(STOP_SIGNALS, self._request_stop)

    def _request_stop(self, signum, frame) -> None:
        self.stop(STOP_SIGNALS.get(signum, "interrupted"))
        self.on_signal(signum)

    def stop(self, reason: str) -> None:
        """End the run at the next poll (with its final report); run() returns reason."""
        self._stop_reason = reason

    def report(self, final: bool = False, detach: bool = False) -> Report:
        scan = self.inspect is not None and (final or self.inspect_each or self._last_by_count())
        read = self.evidence is not None and (final or self._last_by_count())
        snapshot = self.probe.snapshot(self.targets(),
                                       with_allocations=self.report_config.show_allocs or scan or read)
        if detach and not read:
            self.probe.detach()  # everything is read: leave the targets before the slow part
        if scan:
            snapshot = self.inspect(snapshot)
        config = self.report_config
        doubts = missed_frees.doubts(snapshot)
        ranked, judged = judge_interval(snapshot, config, self.growth, doubts)
        shown = ranked.limited(config.top)
        warnings = tuple(self.warnings()) + doubts.notes()
        contents = self.evidence(snapshot, shown.sites) if read else {}
        if detach and read:
            self.probe.detach()  # the objects' contents were the last thing read
        # One symbolization per interval: the recording's full report resolves
        # every site, the rendered cut reuses those frames.
        build = partial(build_report, snapshot, resolve=self.resolve, config=config,
                        warnings=warnings, judged=judged,
                        contents=contents, cgroup_name=self.cgroup_name, symbolized={})
        if self.record:  # first: a broken pipe on stdout loses nothing recorded
            self.record(build(ranked))
        report = build(shown)
        self.render(report)
        self.reports += 1
        return report

    def _last_by_count(self) -> bool:
        count = self.run_config.count
        return count is not None and self.reports + 1 >= count

    def _should_stop(self, started: float) -> str:
        if self._stop_reason:
            return self._stop_reason
        if not self.alive():
            return "target exited"
        duration = self.run_config.duration_s
        if duration is not None and time.monotonic() - started >= duration:
            return "duration reached"
        count = self.run_config.count
        if count is not None and self.reports >= count:
            return "count reached"
        return ""

    def run(self) -> str:
        """Report until a stop condition; returns why it stopped."""
        self.listen()
        started = time.monotonic()
        next_report = started + self.run_config.interval_s
        reported_at = None
        try:
            while True:
                reason = self._should_stop(started)
                if reason:
                    break
                now = time.monotonic()
                if now >= next_report:
                    self.report()
                    reported_at = time.monotonic()
                    next_report += self.run_config.interval_s
                    continue
                self.probe.poll(int(min(POLL_MS, (next_report - now) * 1000)) or 1)
                self.tick()
            scan_first = self.finish is not None and self.inspect is not None
            if self.finish and not scan_first:
                self.finish(reason)
            # The last periodic report is the final one when COUNT ended the run.
            if reason != "count reached" or reported_at is None:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                self.report(final=True, detach=not scan_first)
            if scan_first:  # still traced while it ends; probe.close() detaches after
                self.finish(reason)
            return reason
        finally:
            self._restore_signals()
            self._restore_signals = None


def describe_error(error: LeaktraceError) -> str:
    return f"leaktrace: {error.message}" + (f"; {error.hint}" if error.hint else "")
