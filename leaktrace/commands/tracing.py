"""The report loop's wiring shared by `attach` and `run` (user mode): one
TracedProcess per target, name the targets, open --trace's stream, build the
Session from typed settings, run it."""
from __future__ import annotations

from typing import Optional, Sequence

import click

from ..process import targets
from ..base import timing
from ..base.console import stderr_line
from ..base.model import Target
from ..probes import allocator
from ..probes.user import UserProbe
from ..session import Session
from ..symbols.user import UserSymbols
from ..process.traced_process import TracedProcess
from . import options


def traced(pid: int, obj: Optional[str]) -> TracedProcess:
    """A running process to trace, with its hook plan (--obj: the allocator)."""
    process = TracedProcess(pid)
    process.plan = allocator.discover(process, obj)
    return process


def describe(process: TracedProcess, probe: Optional[UserProbe] = None) -> Target:
    """The target as reports name it; with the probe that attached to it, what was hooked where."""
    pid, plan = process.pid, process.plan
    return Target(pid=pid, comm=targets.comm(pid), exe=targets.exe(pid),
                  allocator=plan.allocator_path, allocator_name=plan.allocator_name,
                  container=process.named_container(), hooked=probe.hooked(pid) if probe else ())


def open_trace_output(probe: UserProbe, settings: options.TraceSettings) -> None:
    """--trace: print each event on stderr from now on (again: no effect)."""
    if settings.trace_events:
        probe.open_trace(lambda line: click.echo(line, err=True))


def trace_processes(probe: UserProbe, processes: Sequence[TracedProcess], target_list, settings: options.TraceSettings,
                    alive, resolver: UserSymbols, command=None) -> None:
    """Announce, run the report loop, print the final report. command (`run`'s
    Command): the probes saw every allocation of its process from the start; it
    hears stop signals, is ended before the final report and adds its warnings."""
    tick, resolve = resolver.refresh, resolver.resolve
    if probe.config.follow_forks:
        tick, resolve = _with_children(probe, resolver)
        if command is None:  # attach: a parent may exit and leave its workers running
            named_alive = alive
            alive = lambda: named_alive() or probe.forks.alive()  # noqa: E731
    inspect = options.reach_scanner(settings.reach, probe.config, probe.read_allocations,
                                    from_start=command is not None)
    for process in processes:
        if process.pid not in resolver.by_pid:
            resolver.add(process)
    with options.report_sink(settings.output) as render, options.recording_sink(settings.output) as record:
        session = Session(
            probe=probe, report_config=settings.report, run_config=settings.run, render=render, record=record,
            resolve=resolve, targets=lambda: tuple(target_list), alive=alive,
            warnings=resolver.warnings, tick=tick, inspect=inspect,
            inspect_each=settings.reach.when == "each",
        )
        if command is not None:
            session.on_signal, session.finish = command.forward, command.finish
            session.warnings = lambda: resolver.warnings() + command.warnings()
            session.tick = lambda: (tick(), command.watch())
        session.listen()
        open_trace_output(probe, settings)  # before "tracing": events sent before it opens are dropped
        for target in target_list:
            stderr_line(f"leaktrace: tracing PID {target.pid} ({target.comm}), "
                        f"{target.allocator_name} allocator in {target.allocator}; Ctrl-C to stop")
        timing.report("to tracing", total=True)
        reason = session.run()
    stderr_line(f"leaktrace: stopped ({reason})")


def _with_children(probe: UserProbe, resolver: UserSymbols):
    """tick and resolve that give each followed child its symbols: read while
    it runs, else its parent's (the same mappings until it maps something)."""
    def take_children() -> None:
        for pid, child in sorted(probe.forks.children.items()):  # parents first, but for pid wrap
            if pid not in resolver.by_pid:
                resolver.add_child(TracedProcess(pid), child.parent)

    def tick() -> None:
        resolver.refresh()
        take_children()

    def resolve(key, raw):
        take_children()
        return resolver.resolve(key, raw)
    return tick, resolve
