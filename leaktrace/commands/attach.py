"""`leaktrace attach -p PID [INTERVAL [COUNT]]`: trace running processes."""
from __future__ import annotations

import time
from typing import Dict, List

import click

from .. import allocator, targets
from ..errors import LeaktraceError
from ..model import Target
from ..probes import features
from ..probes.user import UserProbe
from ..session import Session, stderr_line
from ..symbols import ProcessSymbols
from . import options

REFRESH_S = 0.5


def describe(plan: allocator.HookPlan, pid: int) -> Target:
    return Target(pid=pid, comm=targets.comm(pid), exe=targets.exe(pid),
                  allocator=plan.allocator_path, allocator_name=plan.allocator_name)


class UserSymbols:
    """Resolves stacks of each traced pid, keeping symbols after it exits."""

    def __init__(self, lines: bool = False):
        self.lines = lines
        self.by_pid: Dict[int, ProcessSymbols] = {}
        self._refreshed = 0.0

    def add(self, pid: int) -> None:
        self.by_pid[pid] = ProcessSymbols(pid, lines=self.lines)
        self._prime(pid)

    def _prime(self, pid: int) -> None:
        # A process between fork and exec, or exiting, has nothing to read
        # yet; symbolize() copes with whatever was learnt.
        try:
            self.by_pid[pid].prime()
        except LeaktraceError:
            pass

    def resolve(self, key, raw):
        symbols = self.by_pid.get(key.pid)
        if symbols is None:
            self.add(key.pid)
            symbols = self.by_pid[key.pid]
        return symbols.symbolize(raw)

    def refresh(self) -> None:
        """Re-read maps of live targets, so symbols survive their exit."""
        now = time.monotonic()
        if now - self._refreshed < REFRESH_S:
            return
        self._refreshed = now
        for pid in self.by_pid:
            if targets.is_running(pid):
                self._prime(pid)

    def warnings(self) -> List[str]:
        return [w for symbols in self.by_pid.values() for w in symbols.warnings]


def trace_processes(probe: UserProbe, target_list, opts: dict, alive, resolver: UserSymbols) -> None:
    """Announce, run the report loop, print the final report."""
    for target in target_list:
        if target.pid not in resolver.by_pid:
            resolver.add(target.pid)
    for target in target_list:
        stderr_line(f"leaktrace: tracing PID {target.pid} ({target.comm}), "
                    f"{target.allocator_name} allocator in {target.allocator}; Ctrl-C to stop")
    if opts["trace"]:
        probe.open_trace(lambda line: click.echo(line, err=True))
    with options.report_sink(opts) as render:
        session = Session(
            probe=probe, report_config=options.report_config(opts),
            run_config=options.run_config(opts), render=render, resolve=resolver.resolve,
            targets=lambda: tuple(target_list), alive=alive, warnings=resolver.warnings,
            tick=resolver.refresh,
        )
        reason = session.run()
    stderr_line(f"leaktrace: stopped ({reason})")


@click.command()
@click.option("-p", "--pid", "pids", type=int, multiple=True, required=True,
              help="Process to trace (repeat for several).")
@options.report_options
@options.user_options
def attach(pids, **opts):
    """Attach to running processes and report their unfreed allocations.

    Prints a report every INTERVAL seconds (default 5) until Ctrl-C, the
    targets exit, --duration or COUNT reports; a final report always follows.
    """
    probe = UserProbe(options.probe_config(opts))
    if opts["dump_bpf"]:
        options.dump_bpf(probe.dump())
        return
    for pid in pids:
        targets.check_traceable(pid)
    features.check_privileges()
    plans = [allocator.discover(pid, opts["obj"]) for pid in pids]
    resolver = UserSymbols(lines=opts["lines"])
    for pid in pids:
        resolver.add(pid)
    try:
        for plan in plans:
            probe.attach(plan, plan.pid)
        trace_processes(probe, [describe(plan, plan.pid) for plan in plans], opts,
                        lambda: any(targets.is_running(p) for p in pids), resolver)
    finally:
        probe.close()
