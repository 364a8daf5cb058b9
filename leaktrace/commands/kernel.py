"""`leaktrace kernel [INTERVAL [COUNT]]`: kernel allocations system-wide, and who holds them.

Traces kmalloc, slab caches, pages, percpu and vmalloc through tracepoints
and reports what is still outstanding, grouped by stack, slab cache, process
or cgroup (shown as the container where it is one). Kinds this kernel has no
tracepoints for are reported and skipped; the rest still runs.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import replace
from typing import Sequence, Tuple

import click

from ..judge import evidence
from ..base import timing
from ..process.cgroups import CgroupPaths
from ..base.console import stderr_line
from ..base.errors import UsageError
from ..base.model import KERNEL_KINDS
from ..probes import features, slabs
from ..probes.kernel import KernelFilters, KernelProbe
from ..probes.kernel_contents import SPACE_KERNEL_DATA, ContentReader, data_bounds
from ..session import Session
from ..symbols.kallsyms import POINTER_TYPES, KernelSymbols
from . import options

GROUPS = ("stack", "cache", "process", "cgroup")
SLAB_KINDS = ("kmalloc", "cache")
# Tests point detection at a copy of tracefs with events removed, to play a
# kernel that lacks them; bcc still compiles against the real one.
TRACEFS_ENV = "LEAKTRACE_TRACEFS"


def split_words(values: Sequence[str]) -> Tuple[str, ...]:
    """--kind a,b --kind c -> (a, b, c), order kept, duplicates dropped."""
    words = [w.strip() for value in values for w in value.split(",") if w.strip()]
    return tuple(dict.fromkeys(words))


def parse_kinds(values: Sequence[str], caches: Sequence[str]) -> Tuple[str, ...]:
    kinds = split_words(values)
    unknown = [k for k in kinds if k not in KERNEL_KINDS]
    if unknown:
        raise UsageError(f"unknown allocation kind {unknown[0]!r}",
                         hint="--kind takes " + ", ".join(KERNEL_KINDS))
    if kinds:
        return kinds
    if caches:  # only slab allocations have a cache
        wants_kmalloc = any(slabs.kmalloc_class(c) for c in caches)
        return ("kmalloc", "cache") if wants_kmalloc else ("cache",)
    return KERNEL_KINDS


def check_caches(caches: Sequence[str], known: set) -> None:
    """Every --cache must name a slab cache of this kernel."""
    if not known:
        return  # slabinfo unreadable: the probe's own check is the privilege one
    for cache in caches:
        if cache in known:
            continue
        close = difflib.get_close_matches(cache, sorted(known), n=5)
        listed = close if close else sorted(known)
        raise UsageError(f"unknown slab cache {cache!r}",
                         hint=("did you mean: " if close else "caches on this kernel: ")
                         + ", ".join(listed))


def resolve_merged(caches: Sequence[str]) -> Tuple[str, ...]:
    """Caches SLUB merged into another are traced under that one's name."""
    aliases = slabs.merged_into(slabs.read_slabinfo())
    for cache in caches:
        if cache in aliases:
            stderr_line(f"leaktrace: warning: slab cache {cache} is merged into {aliases[cache]} on "
                        f"this kernel; its objects are reported under {aliases[cache]}")
    return tuple(dict.fromkeys(aliases.get(cache, cache) for cache in caches))


def announce(probe: KernelProbe, filters: KernelFilters) -> None:
    what = ", ".join(probe.plan.kinds)
    only = []
    if filters.pids:
        only.append("pid " + ",".join(map(str, filters.pids)))
    if filters.comms:
        only.append("comm " + ",".join(filters.comms))
    if filters.caches:
        only.append("cache " + ",".join(filters.caches))
    scope = f" for {'; '.join(only)}" if only else " system-wide"
    for note in probe.plan.notes:
        stderr_line(f"leaktrace: warning: {note}")
    stderr_line(f"leaktrace: tracing kernel allocations ({what}){scope}; Ctrl-C to stop")
    timing.report("to tracing", total=True)


@click.command()
@options.report_options
@click.option("--by", "group_by", type=click.Choice(GROUPS), default="stack", show_default=True,
              help="Group outstanding allocations by stack, slab cache, process or cgroup.")
@click.option("--kind", "kinds", multiple=True, metavar="KIND[,KIND]",
              help="Trace only these kinds: " + ", ".join(KERNEL_KINDS) + " (default: all).")
@click.option("--cache", "caches", multiple=True, metavar="NAME[,NAME]",
              help="Only these slab caches (as in /proc/slabinfo; kmalloc-N included).")
@click.option("--pid", "pids", type=click.IntRange(min=1), multiple=True,
              help="Only allocations made by this process (repeat for several).")
@click.option("--comm", "comms", multiple=True, help="Only allocations made by tasks with this name.")
@click.option("--full-stacks", is_flag=True,
              help="Walk the stack of every allocation (several times slower); by default each "
                   "kernel path is walked once and later allocations on it are named by the "
                   "return addresses read off the stack (a kernel that refuses that reader gets "
                   "every stack walked, and the report says so).")
@click.option("--no-content", "no_content", is_flag=True,
              help="Do not read the first bytes of the top sites' outstanding objects (by default "
                   "the final report shows samples and the kernel symbols they point at).")
def kernel(group_by, kinds, caches, pids, comms, full_stacks, no_content, **opts):
    """Trace kernel allocations system-wide and report those still outstanding.

    Prints a report every INTERVAL seconds (default 5) until Ctrl-C,
    --duration or COUNT reports; a final report always follows.
    """
    caches = split_words(caches)
    filters = KernelFilters(kinds=parse_kinds(kinds, caches), pids=tuple(pids),
                            comms=split_words(comms), caches=caches)
    config = options.probe_config(opts)
    tracefs = os.environ.get(TRACEFS_ENV, "")
    if opts["dump_bpf"]:
        probe = KernelProbe(config, filters, full_stacks)
        probe.detect(tracefs)
        options.dump_bpf(probe.dump())
        return
    settings = options.trace_settings(opts, group_by=group_by)
    options.check_outputs(settings.output)
    features.check_privileges()
    check_caches(caches, slabs.slab_caches())
    probe = KernelProbe(config, replace(filters, caches=resolve_merged(caches)), full_stacks)
    probe.detect(tracefs)
    try:
        probe.attach()
        trace(probe, settings, content=not no_content)
    finally:
        probe.close()
        timing.report("of the exit")


def content_reader(probe: KernelProbe, symbols: KernelSymbols, warnings: list):
    """session.evidence: what the shown sites' objects hold; None when off."""
    pointed = KernelSymbols(types=POINTER_TYPES)
    reader = ContentReader(probe.bpf)
    if not reader.attach(data_bounds(pointed)):
        warnings.append(reader.problem)
        return None
    return lambda snapshot, sites: evidence.gather(
        snapshot, sites, reader.read, lambda addresses: reader.read(addresses, SPACE_KERNEL_DATA),
        pointed.name, symbols)


def trace(probe: KernelProbe, settings: options.TraceSettings, content: bool = True) -> None:
    """Announce, run the report loop, print the final report."""
    symbols = KernelSymbols()
    warnings = [] if not symbols.hidden else [
        "kernel addresses are hidden (/proc/kallsyms reads 0): stacks cannot be symbolized"]
    evidence = content_reader(probe, symbols, warnings) if content else None
    with options.report_sink(settings.output) as render, options.recording_sink(settings.output) as record:
        session = Session(
            probe=probe, report_config=settings.report, run_config=settings.run, render=render, record=record,
            resolve=symbols.resolve, cgroup_name=CgroupPaths().label, warnings=lambda: warnings,
            evidence=evidence,
        )
        session.listen()
        announce(probe, probe.filters)
        reason = session.run()
    stderr_line(f"leaktrace: stopped ({reason})")
