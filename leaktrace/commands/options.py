"""Click options shared by the tracing commands, and how they become config.

One name from CLI to config to BPF: --min-size <-> min_size <-> MIN_SIZE.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, TextIO

import click

from ..base import output_files
from ..base.config import (DEFAULT_INTERVAL_S, DEFAULT_OLDER_THAN_MS, DEFAULT_TOP, OutputConfig, ProbeConfig,
                      ReachConfig, ReportConfig, RunConfig)
from ..base.errors import UsageError
from ..base.model import Report
from ..report.recording import RecordingWriter
from ..report import REPORTERS, get_reporter, is_binary, render_reports

FORMATS = tuple(REPORTERS)
REACH_WHEN = ("final", "each")
DEFAULT_REACH_MAX_MB = 1024


def _interval_and_count(positional: bool) -> list:
    """bcc-tools style `[INTERVAL [COUNT]]`, or options where a command
    line follows (run -- CMD)."""
    if positional:
        return [
            click.argument("interval", type=click.FloatRange(min=0.1), required=False, default=DEFAULT_INTERVAL_S),
            click.argument("count", type=click.IntRange(min=1), required=False),
        ]
    return [
        click.option("--interval", type=click.FloatRange(min=0.1), default=DEFAULT_INTERVAL_S,
                     show_default=True, help="Seconds between reports."),
        click.option("--count", type=click.IntRange(min=1), help="Stop after this many reports."),
    ]


def report_options(func: Callable = None, *, positional: bool = True) -> Callable:
    """Options that shape what a report shows (any mode)."""
    if func is None:
        return lambda f: report_options(f, positional=positional)
    decorators = _interval_and_count(positional) + [
        click.option("--duration", type=click.FloatRange(min=0.1), help="Stop after this many seconds."),
        click.option("--top", type=click.IntRange(min=0), default=DEFAULT_TOP, show_default=True,
                     help="Show the N stacks holding the most memory (0: every one)."),
        click.option("--older-than", "older_than_ms", type=click.IntRange(min=0),
                     default=DEFAULT_OLDER_THAN_MS, show_default=True, metavar="MS",
                     help="Report only allocations older than MS milliseconds (exact to ~268 ms "
                          "for memory up to 4 s old, coarser for older memory)."),
        click.option("--min-size", type=click.IntRange(min=0), default=0, metavar="BYTES",
                     help="Ignore allocations smaller than this."),
        click.option("--max-size", type=click.IntRange(min=0), default=0, metavar="BYTES",
                     help="Ignore allocations larger than this (0: no limit)."),
        click.option("--format", "output_format", type=click.Choice(FORMATS), default="table",
                     show_default=True, help="Report format; json writes one document per line."),
        click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True),
                     help="Write reports to FILE instead of stdout (created 0600; never through "
                          "a symlink or into another user's file)."),
        click.option("--record", type=click.Path(dir_okay=False, writable=True), metavar="FILE",
                     help="Also save every interval's report to FILE (gzipped JSON lines, 0600) "
                          "for `leaktrace report` and `leaktrace diff`."),
        click.option("--show-allocs", is_flag=True, help="List the addresses and sizes of outstanding allocations."),
        click.option("--max-allocs", type=click.IntRange(min=1024), default=1 << 20, show_default=True,
                     help="Outstanding allocations the kernel can track."),
        click.option("--max-stacks", type=click.IntRange(min=64), default=1 << 14, show_default=True,
                     help="Distinct stacks the kernel can keep."),
        click.option("--max-buckets", type=click.IntRange(min=1024), default=1 << 17, show_default=True,
                     help="Per-stack, per-age-block totals the kernel can keep (blocks of old "
                          "memory are folded out of it as they coarsen)."),
        click.option("--dump-bpf", is_flag=True, hidden=True, help="Print the BPF program and exit."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def user_options(func: Callable) -> Callable:
    """Options of the user-space modes (attach, run)."""
    decorators = [
        click.option("--sample-rate", type=click.IntRange(min=0), default=0, metavar="BYTES",
                     help="Record on average one allocation per BYTES allocated, scaled back up "
                          "(estimates; 0 records all)."),
        click.option("--obj", type=click.Path(exists=True, dir_okay=False),
                     help="Hook the allocator in this object instead of the one discovered (it must "
                          "define malloc, or je_malloc for a prefixed jemalloc)."),
        click.option("--combined-only", is_flag=True,
                     help="Accepted for bcc memleak users: totals are always kept in the kernel."),
        click.option("--trace", is_flag=True, help="Print every allocation and free (debugging)."),
        click.option("--lines", is_flag=True, help="Add file:line from DWARF to shown frames."),
        click.option("--show-unwind", is_flag=True, help="Say how each frame was recovered (fp, cfi)."),
        click.option("--unwind", type=click.Choice(("auto", "fp", "cfi")), default="auto", show_default=True,
                     help="Walk stacks with frame pointers, with .eh_frame unwind tables (cfi), or "
                          "with tables only for processes mapping code without frame pointers (auto)."),
        click.option("--no-mmap", is_flag=True, help="Do not trace mmap/munmap/mremap."),
        click.option("--probe-throwing-new", is_flag=True,
                     help="Hook the allocator's throwing operator new even on a kernel that cannot "
                          "make a std::bad_alloc out of it unwind (lockdown): such a throw then "
                          "terminates the program."),
        click.option("--follow-forks", is_flag=True,
                     help="Also trace the processes the targets fork from now on, each from its first "
                          "instruction, in rows with its own pid (not what exec starts). The probes "
                          "then fire in every process using the hooked objects, untraced ones too."),
        click.option("--reachability", type=click.Choice(REACH_WHEN), is_flag=False, flag_value="final",
                     default=None, help="Scan the targets' memory for pointers into outstanding "
                     "allocations: unreferenced, indirectly lost or reachable, with content samples. "
                     "At the final report (--reachability, =final) or at every report (=each); "
                     "stops the target's threads while its memory is copied."),
        click.option("--reachability-max-mb", type=click.IntRange(min=1), default=DEFAULT_REACH_MAX_MB,
                     show_default=True, metavar="MIB",
                     help="Do not scan targets with more memory to read than this (per report)."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def probe_config(opts: dict) -> ProbeConfig:
    if opts["max_size"] and opts["max_size"] < opts["min_size"]:
        raise UsageError("--max-size is smaller than --min-size")
    if opts.get("reachability") and opts.get("sample_rate", 0) > 1:
        raise UsageError("--reachability needs every allocation recorded, not samples",
                         hint="drop --sample-rate (an unsampled block holding a pointer would "
                              "make the block it points at look lost)")
    return ProbeConfig(
        min_size=opts["min_size"], max_size=opts["max_size"], sample_rate=opts.get("sample_rate", 0),
        max_allocs=opts["max_allocs"], max_stacks=opts["max_stacks"], max_buckets=opts["max_buckets"],
        trace=opts.get("trace", False),
        track_mmap=not opts.get("no_mmap", False),
        probe_throwing_new=opts.get("probe_throwing_new", False),
        unwind=opts.get("unwind", "auto"),
        follow_forks=opts.get("follow_forks", False),
    )


@dataclass(frozen=True)
class TraceSettings:
    """What a tracing command's report loop reads from its options, typed once
    at the command line: nothing past this point sees click's options."""

    report: ReportConfig
    run: RunConfig
    output: OutputConfig
    reach: ReachConfig = ReachConfig()
    lines: bool = False  # file:line from DWARF for shown frames
    trace_events: bool = False  # --trace: print every event on stderr


def trace_settings(opts: dict, group_by: str = "stack") -> TraceSettings:
    return TraceSettings(
        report=ReportConfig(top=opts["top"], older_than_ms=opts["older_than_ms"],
                            show_allocs=opts["show_allocs"], group_by=group_by),
        run=RunConfig(interval_s=opts["interval"], count=opts["count"], duration_s=opts["duration"]),
        output=OutputConfig(format=opts["output_format"], path=opts["output"], record=opts.get("record"),
                            show_unwind=opts.get("show_unwind", False)),
        reach=ReachConfig(when=opts.get("reachability") or "",
                          max_bytes=opts.get("reachability_max_mb", DEFAULT_REACH_MAX_MB) << 20),
        lines=opts.get("lines", False), trace_events=opts.get("trace", False),
    )


def reach_scanner(reach: ReachConfig, probe_config: ProbeConfig, read_allocations, from_start: bool):
    """The Session's inspect hook for --reachability, or None without it.
    from_start: the probes saw every allocation since exec (run)."""
    if not reach.when:
        return None
    from ..judge.reach.scan import Scanner  # numpy: only when asked for
    filtered = bool(probe_config.min_size or probe_config.max_size)
    return Scanner(read_allocations, max_bytes=reach.max_bytes, missing_blocks=filtered or not from_start)


# Formats whose reports can follow each other in one stream; the others
# (pprof, flamegraph, folded, plot) describe one moment in a whole file.
STREAMING_FORMATS = ("table", "json")


def check_outputs(output: OutputConfig) -> None:
    """Refuse a bad --format/-o/--record combination or path before any probe is attached."""
    name = output.format
    if name not in STREAMING_FORMATS and not output.path:
        raise UsageError(f"--format {name} writes one file per report, not a stream",
                         hint=f"add -o FILE (rewritten at every interval), or --record FILE "
                              f"and `leaktrace report FILE --format {name}` later")
    if output.path:
        output_files.check(output.path, "-o", replace=name not in STREAMING_FORMATS)
    if output.record:
        output_files.check(output.record, "--record")


@contextmanager
def report_sink(output: OutputConfig) -> Iterator[Callable[[Report], None]]:
    """A function that renders one report to --output or stdout, flushed.
    Whole-file formats replace --output with the latest report each interval."""
    check_outputs(output)
    reporter = get_reporter(output.format, show_unwind=output.show_unwind)
    if output.format not in STREAMING_FORMATS:
        yield _file_sink(reporter, output.path)
        return
    out: TextIO = output_files.open_file(output.path, "-o", append=True) if output.path else sys.stdout
    try:
        def render(report: Report) -> None:
            reporter.render(report, out)
            out.flush()
        yield render
    finally:
        if out is not sys.stdout:
            out.close()


@contextmanager
def recording_sink(output: OutputConfig) -> Iterator[Optional[Callable[[Report], None]]]:
    """A function that appends one report to the --record recording, or None."""
    if not output.record:
        yield None
        return
    recorder = RecordingWriter(output.record)
    try:
        yield recorder.write
    finally:
        recorder.close()


def _file_sink(reporter, path: str) -> Callable[[Report], None]:
    reports: list = []

    def render(report: Report) -> None:
        # a plot draws the whole session; the others only the latest report
        reports[:] = reports + [report] if hasattr(reporter, "render_series") else [report]
        with output_files.replaced(path, "-o", binary=is_binary(reporter)) as out:
            render_reports(reporter, reports, out)  # readers never see half a file
    return render


def dump_bpf(text: str) -> None:
    click.echo(text)
