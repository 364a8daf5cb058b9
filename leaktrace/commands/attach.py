"""`leaktrace attach -p PID | --container NAME [INTERVAL [COUNT]]`: trace running processes."""
from __future__ import annotations

from typing import List, Optional

import click

from ..process import containers, targets
from ..base import timing
from ..base.errors import UsageError
from ..probes import features, uretprobe
from ..probes.user import UserProbe
from ..symbols.copyout import MODES as DOCKER_CP_MODES
from ..symbols.user import UserSymbols
from . import options
from .tracing import describe, trace_processes, traced


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
    Hooks every allocation entry point the allocator defines (malloc & co,
    C++ operator new/delete, jemalloc's mallocx family, tc_*, mi_*); the
    report says which symbols were hooked in which object.
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
    with timing.step("allocator"):
        processes = [traced(pid, opts["obj"]) for pid in pids]
    probe.compile_early()  # clang runs while the symbol tables and placements are read
    resolver = UserSymbols(lines=settings.lines, docker_cp=docker_cp)
    for process in processes:
        resolver.add(process)
    try:
        for process in processes:
            probe.attach(process)
        trace_processes(probe, processes, [describe(process, probe) for process in processes], settings,
                        lambda: any(targets.is_running(p) for p in pids), resolver)
    finally:
        probe.close()
        timing.report("of the exit")
