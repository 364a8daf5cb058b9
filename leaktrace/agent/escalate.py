"""The agent's one door to the tracing machinery: a time-boxed trace of one suspect.

Contract: trace(request, record, check) runs one escalation to its end and
returns an Outcome (why it ended, the final report, what the probes cost). A
growing process gets what `leaktrace attach -p PID` runs, sampled by bytes at
request.sample_rate; a growing slab cache what `leaktrace kernel --cache NAME
--by process` runs; growing vmalloc or percpu memory `leaktrace kernel --kind
KIND --by process`. Both go through UserProbe / KernelProbe and Session,
exactly as the commands use them; this module only wires them, so a change
to the tracing machinery touches the agent here and nowhere else.

Every interval's report (every site) goes to record(); check(cost) is called
once when the probes are attached (so a rate is measured from there, not
from the start of the compile) and then between polls, with the probes' cost
so far, and returns a reason to stop early (the budget, the agent stopping)
or "". The outcome's cost is read once the detach is done: it includes the
probes' last runs. BPF run-time statistics are switched
on for the escalation only (BPF_ENABLE_STATS needs CAP_SYS_ADMIN; without it,
the kernel.bpf_stats_enabled sysctl set by the operator does). Failures a command would print as one line
(target gone, no allocator found, BPF refused) end as outcome "failed" with
that line; the probes are always detached before trace() returns. A trace
stopped by check() before its first interval report keeps every allocation
it saw in its final report (final_config). With request.reach_max_bytes, an
unsampled process trace ends as `attach --reachability` does: the final
report scans the process's memory after the detach (its rows get their
classes), and the CPU the scan takes on this thread is the outcome's
scan_seconds (time.thread_time: the sampler's thread is not counted).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from typing import Callable, Optional

from leaktrace.process import targets
from leaktrace.agent.budget import ProbeCost
from leaktrace.process.cgroups import CgroupPaths
from leaktrace.base.config import ProbeConfig, ReportConfig, RunConfig
from leaktrace.base.errors import LeaktraceError
from leaktrace.base.model import Report
from leaktrace.probes import progstats, release
from leaktrace.probes.kernel import KernelFilters, KernelProbe
from leaktrace.probes.user import UserProbe
from leaktrace.session import Session
from leaktrace.symbols.kallsyms import KernelSymbols

# Session.run()'s reasons -> the agent's outcomes (policy.OUTCOMES)
OUTCOME_OF = {"duration reached": "completed", "target exited": "target_exited",
              "interrupted": "interrupted", "terminated": "interrupted", "hung up": "interrupted",
              "over_budget": "over_budget", "count reached": "completed"}
KERNEL_KINDS_OF = {"vmalloc": ("vmalloc",), "percpu": ("percpu",)}


@dataclass(frozen=True)
class Request:
    kind: str  # process (user mode), slab, vmalloc or percpu (kernel mode)
    duration_s: float
    interval_s: float
    pid: int = 0
    cache: str = ""
    sample_rate: int = 0
    top: int = 10
    reach_max_bytes: int = 0  # scan the process at the final report (0: no scan)

    @property
    def mode(self) -> str:
        return "user" if self.kind == "process" else "kernel"

    @property
    def scans(self) -> bool:
        """A reachability scan ends the trace: a process traced unsampled (a block the
        probes skipped may hold the only pointer to another, which would look lost)."""
        return self.mode == "user" and self.reach_max_bytes > 0 and self.sample_rate <= 1


@dataclass(frozen=True)
class Outcome:
    outcome: str  # policy.OUTCOMES
    message: str = ""
    report: Optional[Report] = None  # the final report, top sites first
    cost: ProbeCost = ProbeCost()
    measured: bool = False  # run-time statistics were on
    scan_seconds: float = 0.0  # CPU time of the reachability scan


def trace(request: Request, record: Callable[[Report], None],
          check: Callable[[ProbeCost], str]) -> Outcome:
    stats_fd = progstats.enable_run_stats()
    measured = stats_fd is not None or progstats.run_stats_on_globally()
    probe = None
    try:
        probe, session_parts = _start(request)
        return _run(request, probe, session_parts, record, check, measured)
    except LeaktraceError as error:
        message = error.message + (f"; {error.hint}" if error.hint else "")
        return Outcome("failed", message, cost=_cost(probe), measured=measured)
    finally:
        if probe is not None:
            probe.close()
        if stats_fd is not None:
            os.close(stats_fd)


def _start(request: Request):
    """The attached probe and what its Session needs (resolve, targets, alive, warnings, tick)."""
    probe, parts, attach = _user(request) if request.mode == "user" else _kernel(request)
    try:
        attach()
    except BaseException:
        probe.close()  # whatever was attached before the failure
        raise
    return probe, parts


def _user(request: Request):
    from leaktrace.commands.tracing import describe, traced  # the tracing commands' own wiring
    from leaktrace.symbols.user import UserSymbols
    targets.check_traceable(request.pid)
    process = traced(request.pid, None)
    resolver = UserSymbols()
    resolver.add(process)
    probe = UserProbe(ProbeConfig(sample_rate=request.sample_rate))
    target = describe(process)
    parts = dict(resolve=resolver.resolve, targets=lambda: (target,),
                 alive=lambda: targets.is_running(request.pid), warnings=resolver.warnings,
                 tick=resolver.refresh, inspect=_scanner(request, probe))
    return probe, parts, lambda: probe.attach(process)


def _scanner(request: Request, probe: UserProbe) -> Optional["TimedScan"]:
    if not request.scans:
        return None
    from leaktrace.judge.reach.scan import Scanner  # numpy: only when asked for
    # attach's scan: blocks made before the probes attached are missing from the map
    return TimedScan(Scanner(probe.read_allocations, request.reach_max_bytes, missing_blocks=True))


class TimedScan:
    """The Session's inspect hook, adding up the CPU time it takes on this thread."""

    def __init__(self, scan: Callable):
        self.scan = scan
        self.seconds = 0.0

    def __call__(self, snapshot):
        started = time.thread_time()
        try:
            return self.scan(snapshot)
        finally:
            self.seconds += time.thread_time() - started


def _kernel(request: Request):
    from leaktrace.commands.kernel import parse_kinds, resolve_merged  # the kernel command's own
    caches = resolve_merged((request.cache,)) if request.cache else ()
    kinds = KERNEL_KINDS_OF.get(request.kind) or parse_kinds((), caches)
    probe = KernelProbe(ProbeConfig(), KernelFilters(kinds=kinds, caches=caches))
    probe.detect()
    names = dict(resolve=KernelSymbols().resolve, cgroup_name=CgroupPaths().label)
    return probe, dict(names, tick=lambda: None), probe.attach


def _run(request: Request, probe, parts: dict, record, check, measured: bool) -> Outcome:
    reports = []

    def keep(report: Report) -> None:
        reports[:] = [report]

    refresh = parts.pop("tick")
    scan = parts.get("inspect")
    session = Session(probe=probe, render=keep, record=record,
                      report_config=ReportConfig(top=request.top,
                                                 group_by="stack" if request.mode == "user" else "process"),
                      run_config=RunConfig(interval_s=request.interval_s, duration_s=request.duration_s),
                      **parts)

    def checked() -> None:
        reason = check(_cost(probe))
        if reason:
            session.report_config = final_config(session)
            session.stop(reason)

    def tick() -> None:
        refresh()
        checked()

    session.tick = tick
    checked()  # attached: what attaching cost, and the time the rate counts from
    reason = session.run()
    release.wait()  # the final report detached the probes; until they are gone they still run
    return Outcome(OUTCOME_OF.get(reason, "completed"), reason, reports[-1] if reports else None,
                   _cost(probe), measured, scan.seconds if scan else 0.0)


def final_config(session: Session) -> ReportConfig:
    """The report config for the final report of a trace the agent stops early.

    Stopped before its first interval (the budget can stop a hot target's
    trace within 100 ms), no allocation is yet older than the age filter
    (500 ms, in buckets of ~268 ms), which would leave the report empty; that
    trace is all the agent gets of its target until the cooldown ends, so its
    final report keeps every allocation it saw (their verdicts stay unknown:
    one interval says nothing about growth).
    """
    if session.reports:
        return session.report_config
    return replace(session.report_config, older_than_ms=0)


def _cost(probe) -> ProbeCost:
    """What the probe's programs cost so far, by the kernel's own count."""
    bpf = getattr(probe, "bpf", None)
    if bpf is None:
        return ProbeCost()
    run_time = runs = 0
    for function in list(bpf.funcs.values()):
        stats = progstats.run_stats(function.fd)
        if stats:
            run_time, runs = run_time + stats[0], runs + stats[1]
    return ProbeCost(run_time, runs)
