"""`leaktrace attach -p PID | --container NAME [INTERVAL [COUNT]]`: trace running processes."""
from __future__ import annotations

import time
from typing import Dict, List, Optional

import click

from .. import allocator, containers, targets
from ..errors import LeaktraceError, UsageError
from ..model import Target
from ..probes import features, uretprobe
from ..probes.user import UserProbe
from ..session import Session, stderr_line
from ..symbols import ProcessSymbols
from ..symbols.copyout import MODES as DOCKER_CP_MODES, DockerCopy
from . import options

REFRESH_S = 0.5


def describe(plan: allocator.HookPlan, pid: int) -> Target:
    return Target(pid=pid, comm=targets.comm(pid), exe=targets.exe(pid),
                  allocator=plan.allocator_path, allocator_name=plan.allocator_name,
                  container=containers.container_of(pid))


class UserSymbols:
    """Resolves stacks of each traced pid, keeping symbols after it exits."""

    def __init__(self, lines: bool = False, docker_cp: str = "auto"):
        self.lines = lines
        self.docker_cp = docker_cp
        self.by_pid: Dict[int, ProcessSymbols] = {}
        self._copiers: Dict[str, Optional[DockerCopy]] = {}  # per container id
        self._refreshed = 0.0

    def add(self, pid: int) -> None:
        self.by_pid[pid] = ProcessSymbols(pid, lines=self.lines, copier=self._copier(pid))
        self._prime(pid)

    def _copier(self, pid: int) -> Optional[DockerCopy]:
        """The docker cp fallback for pid's container (one per container), if any."""
        container = containers.container_of(pid, ask_docker=False)
        if container is None:
            return None
        problem = containers.root_access_problem(pid)
        if problem:
            copies = container.runtime == "docker" and self.docker_cp != "never"
            stderr_line(f"leaktrace: cannot read /proc/{pid}/root ({problem}); symbols come from "
                        + ("docker cp, else " if copies else "") + "host files identical to the mapped ones")
        if self.docker_cp == "never":
            return None
        if container.runtime != "docker":
            if self.docker_cp == "always":
                stderr_line(f"leaktrace: --docker-cp always: PID {pid} runs in a "
                            f"{container.runtime} container, not Docker; docker cp does not apply")
            return None
        if container.id not in self._copiers:
            self._copiers[container.id] = self._new_copier(container.id)
        return self._copiers[container.id]

    def _new_copier(self, container_id: str) -> Optional[DockerCopy]:
        copier = DockerCopy(container_id, self.docker_cp)
        if self.docker_cp == "always":
            try:
                copier.check()
            except LeaktraceError as exc:
                stderr_line(f"leaktrace: --docker-cp always: {exc.message}; "
                            "symbols come from /proc/PID/root and the host instead")
                return None
        return copier

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


def open_trace_output(probe: UserProbe, settings: options.TraceSettings) -> None:
    """--trace: print each event on stderr from now on (again: no effect)."""
    if settings.trace_events:
        probe.open_trace(lambda line: click.echo(line, err=True))


def trace_processes(probe: UserProbe, target_list, settings: options.TraceSettings, alive,
                    resolver: UserSymbols, command=None) -> None:
    """Announce, run the report loop, print the final report. command (`run`'s
    Command): the probes saw every allocation of its process from the start; it
    hears stop signals, is ended before the final report and adds its warnings."""
    inspect = options.reach_scanner(settings.reach, probe.config, probe.read_allocations,
                                    from_start=command is not None)
    for target in target_list:
        if target.pid not in resolver.by_pid:
            resolver.add(target.pid)
    open_trace_output(probe, settings)  # before "tracing": events sent before it opens are dropped
    for target in target_list:
        stderr_line(f"leaktrace: tracing PID {target.pid} ({target.comm}), "
                    f"{target.allocator_name} allocator in {target.allocator}; Ctrl-C to stop")
    with options.report_sink(settings.output) as render, options.recording_sink(settings.output) as record:
        session = Session(
            probe=probe, report_config=settings.report, run_config=settings.run, render=render, record=record,
            resolve=resolver.resolve, targets=lambda: tuple(target_list), alive=alive,
            warnings=resolver.warnings, tick=resolver.refresh, inspect=inspect,
            inspect_each=settings.reach.when == "each",
        )
        if command is not None:
            session.on_signal, session.finish = command.forward, command.finish
            session.warnings = lambda: resolver.warnings() + command.warnings()
            session.tick = lambda: (resolver.refresh(), command.watch())
        reason = session.run()
    stderr_line(f"leaktrace: stopped ({reason})")


def container_pids(name_or_id: Optional[str], all_processes: bool) -> List[int]:
    """PIDs --container and --all-processes name (none without --container)."""
    if name_or_id is None:
        if all_processes:
            raise UsageError("--all-processes needs --container NAME_OR_ID")
        return []
    found = containers.find_container(name_or_id)
    if all_processes:
        return containers.container_pids(found.pid)
    return [found.pid]


@click.command()
@click.option("-p", "--pid", "pids", type=int, multiple=True,
              help="Process to trace (repeat for several).")
@click.option("--container", "container_name", metavar="NAME_OR_ID",
              help="Trace the main process of this Docker container.")
@click.option("--all-processes", is_flag=True,
              help="With --container: trace every process in the container.")
@click.option("--docker-cp", type=click.Choice(DOCKER_CP_MODES), default="auto", show_default=True,
              help="Copy binaries and debug files out of Docker containers into a build-id "
                   "cache: auto when /proc cannot reach them, always for every module, or never.")
@options.report_options
@options.user_options
def attach(pids, container_name, all_processes, docker_cp, **opts):
    """Attach to running processes and report their unfreed allocations.

    Prints a report every INTERVAL seconds (default 5) until Ctrl-C, the
    targets exit, --duration or COUNT reports; a final report always follows.
    """
    probe = UserProbe(options.probe_config(opts))
    if opts["dump_bpf"]:
        options.dump_bpf(probe.dump())
        return
    settings = options.trace_settings(opts)
    options.check_outputs(settings.output)
    pids = list(dict.fromkeys([*pids, *container_pids(container_name, all_processes)]))
    if not pids:
        raise UsageError("no process to trace",
                         hint="give one with -p PID or --container NAME_OR_ID")
    for pid in pids:
        targets.check_traceable(pid)
    features.check_privileges()
    uretprobe.check_targets(pids)
    plans = [allocator.discover(pid, opts["obj"]) for pid in pids]
    resolver = UserSymbols(lines=settings.lines, docker_cp=docker_cp)
    for pid in pids:
        resolver.add(pid)
    try:
        for plan in plans:
            probe.attach(plan, plan.pid)
        trace_processes(probe, [describe(plan, plan.pid) for plan in plans], settings,
                        lambda: any(targets.is_running(p) for p in pids), resolver)
    finally:
        probe.close()
