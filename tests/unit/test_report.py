"""build_report() and the reporters, on snapshots shaped like a small leaking C program.

The resolver is a symbol table for that program, injected the way the ELF and
kallsyms symbolizers are; it records its calls so tests can see which stacks
were symbolized.
"""
from __future__ import annotations

import io
from dataclasses import replace
import json
from itertools import zip_longest

import pytest

from leaktrace.aggregate import aggregate
from leaktrace.base.config import ReportConfig
from leaktrace.base.errors import UsageError
from leaktrace.base.model import Allocation, Bucket, Container, Frame, RawStack, Snapshot, StackKey, Target
from leaktrace.report import REPORTERS, get_reporter
from leaktrace.report.json_report import read_reports
from leaktrace.report.table import format_age, format_bytes
from leaktrace.symbolize import FRAME_POINTER_WARNING, MAX_ALLOCS_PER_SITE, build_report

NOW = 11_234_567_890_123
S = 1_000_000_000
WIDTH = 1 << 28
PID = 4242
APP = "/tmp/pytest-leaky/leaky"
TEMPLATE = "std::vector<std::pair<std::basic_string<char>, std::map<int, double> > >"
LONG_CXX = f"void std::vector<{TEMPLATE}>::_M_realloc_insert<{TEMPLATE} const&>" * 12

# Functions of the traced program: start address, size, symbol, file, line.
FUNCTIONS = (
    (0x401126, 0x40, "leak_buffer", "leaky.c", 12),
    (0x401166, 0x3A, "grow_cache", "leaky.c", 25),
    (0x4011A0, 0x60, "main", "leaky.c", 40),
    (0x4012A0, 0x80, "händler_π", "ünïcode.c", 3),
    (0x401400, 0x200, LONG_CXX, "cache.cpp", 77),
)


class SymbolTable:
    """resolve() for the program above; other addresses are [unknown]."""

    def __init__(self):
        self.calls = []

    def __call__(self, key, raw):
        self.calls.append(key)
        return tuple(self.frame(a, m or "fp") for a, m in zip_longest(raw.addresses, raw.methods))

    @staticmethod
    def frame(addr, method):
        for start, size, symbol, file, line in FUNCTIONS:
            if start <= addr < start + size:
                return Frame(addr, symbol, addr - start, APP, file, line, unwind=method)
        module = "/usr/lib/x86_64-linux-gnu/libc.so.6" if addr > 0x7F0000000000 else APP
        return Frame(addr, None, module=module, unwind=method)


MALLOC = 0x7F3A1C0A50F0  # inside libc's malloc, where the uprobe fires
LIBC_START = (0x7F3A1C029D90, 0x7F3A1C029E40, 0x401045)  # __libc_start_call_main, ..., _start


def stack(*functions):
    """A collected stack: malloc, these functions at +0x1f each, then libc's start-up."""
    starts = {f[2]: f[0] for f in FUNCTIONS}
    return RawStack((MALLOC,) + tuple(starts[name] + 0x1F for name in functions) + LIBC_START)


LEAK, CACHE = StackKey(PID, 17), StackKey(PID, 3)
UNWOUND, UNKNOWN = StackKey(PID, -14), StackKey(PID, 99)  # failed unwind; id not read back
STACKS = {LEAK: stack("leak_buffer", "main"), CACHE: stack("grow_cache", "main")}


def bucket(key, age_s, nbytes, count, **fields):
    start = NOW - int(age_s * S)
    return Bucket(key, start, start + WIDTH, nbytes, count, pid=PID, comm="leaky", **fields)


def snapshot(buckets, stacks=STACKS, mode="user", **fields):
    fields = {"targets": (Target(PID, "leaky", APP, "/usr/lib/x86_64-linux-gnu/libc.so.6", "glibc"),),
              "events": {"allocs": 5120, "frees": 4000}, "losses": {"stacks_full": 0}, **fields}
    return Snapshot(mode=mode, taken_ns=NOW, started_ns=NOW - 30 * S, wall_time=1_714_000_000.25,
                    buckets=tuple(buckets), stacks=stacks, **fields)


def report_for(snap, config=ReportConfig(), resolve=None, warnings=()):
    return build_report(snap, aggregate(snap, config), resolve or SymbolTable(), config, warnings)


def test_rows_carry_the_site_figures_and_symbolized_frames():
    snap = snapshot([bucket(LEAK, 70, 40960, 40), bucket(LEAK, 5, 1024, 1), bucket(CACHE, 3, 512, 8)])
    report = report_for(snap)
    first = report.rows[0]
    assert (first.rank, first.bytes, first.count, first.kind) == (1, 41984, 41, "heap")
    assert (first.pid, first.comm, first.estimated) == (PID, "leaky", False)
    assert first.oldest_s == 70.0
    assert first.bytes_older == (41984, 40960, 40960)
    assert [(f.symbol, f.offset, f.line) for f in first.frames[1:3]] == [
        ("leak_buffer", 0x1F, 12), ("main", 0x1F, 40)]
    assert (first.frames[0].addr, first.frames[0].symbol) == (MALLOC, None)
    assert report.rows[1].frames[1].symbol == "grow_cache"
    assert report.totals == {"bytes": 41984 + 512, "count": 49}
    assert (report.elapsed_s, report.timestamp, report.taken_ns) == (30.0, 1_714_000_000.25, NOW)
    assert (report.sites_total, report.older_than_ms, report.warnings) == (2, 500, ())


def test_only_the_shown_sites_are_symbolized():
    keys = [StackKey(PID, i) for i in range(40)]
    snap = snapshot([bucket(k, 30, 100 + i, 1) for i, k in enumerate(keys)],
                    stacks={k: stack("leak_buffer", "main") for k in keys})
    resolver = SymbolTable()
    report = report_for(snap, ReportConfig(top=5), resolver)
    assert resolver.calls == keys[:-6:-1]  # the five largest, largest first
    assert [r.bytes for r in report.rows] == [139, 138, 137, 136, 135]
    assert report.sites_total == 40


def test_uncollected_stacks_get_a_note_and_no_symbolizer_call():
    snap = snapshot([bucket(UNWOUND, 30, 900, 3), bucket(UNKNOWN, 30, 800, 2), bucket(LEAK, 30, 700, 1)])
    resolver = SymbolTable()
    report = report_for(snap, resolve=resolver)
    assert resolver.calls == [LEAK]
    assert report.rows[0].frames == (Frame(0, note="stack not collected (unwind failed)"),)
    assert report.rows[1].frames == (Frame(0, note="stack not collected"),)
    assert report.warnings == ()


def test_frame_pointer_warning_once_when_most_stacks_are_shallow():
    shallow = {StackKey(PID, i): RawStack((0x401126 + i,)) for i in range(3)}
    deep = {StackKey(PID, 9): stack("leak_buffer", "grow_cache", "main")}
    buckets = [bucket(k, 30, 100, 1) for k in list(shallow) + list(deep)]
    report = report_for(snapshot(buckets, stacks={**shallow, **deep}))
    assert report.warnings == (FRAME_POINTER_WARNING,)
    assert "-fno-omit-frame-pointer" in FRAME_POINTER_WARNING


@pytest.mark.parametrize("mode, shallow_count", [("user", 2), ("kernel", 3)])
def test_no_frame_pointer_warning_for_half_shallow_or_kernel_stacks(mode, shallow_count):
    stacks = {StackKey(PID, i): RawStack((0x401126,)) for i in range(shallow_count)}
    stacks[StackKey(PID, 9)] = stack("leak_buffer", "grow_cache", "main")
    stacks[StackKey(PID, 10)] = stack("grow_cache", "main", "main")
    report = report_for(snapshot([bucket(k, 30, 100, 1) for k in stacks], stacks=stacks, mode=mode))
    assert report.warnings == ()


def test_probe_notes_and_caller_warnings_appear_once_in_order():
    snap = snapshot([bucket(LEAK, 30, 100, 1)], notes=("tracepoint percpu:percpu_alloc_percpu missing",))
    lost = "3 stacks lost: raise --max-stacks"
    report = report_for(snap, warnings=(lost, lost))
    assert report.warnings == ("tracepoint percpu:percpu_alloc_percpu missing", lost)


@pytest.mark.parametrize("rate, estimated", [(0, False), (1, False), (4096, True)])
def test_sampled_snapshots_mark_rows_as_estimates(rate, estimated):
    snap = snapshot([bucket(LEAK, 30, 4096, 1), bucket(CACHE, 30, 8192, 2)], sample_rate=rate)
    report = report_for(snap)
    assert [r.estimated for r in report.rows] == [estimated, estimated]


def test_show_allocs_lists_old_allocations_of_shown_sites_largest_first_capped():
    leak_allocs = [Allocation(PID, 0x5581_0000 + 64 * i, 32 + i, NOW - 40 * S, LEAK) for i in range(30)]
    young = Allocation(PID, 0x5590_0000, 1 << 20, NOW - 100_000_000, LEAK)  # 100 ms old
    unshown = Allocation(PID, 0x55A0_0000, 1 << 22, NOW - 40 * S, CACHE)
    snap = snapshot([bucket(LEAK, 40, 1500, 30), bucket(CACHE, 40, 100, 1)],
                    allocations=tuple(leak_allocs) + (young, unshown))
    report = report_for(snap, ReportConfig(top=1, show_allocs=True))
    assert [a.size for a in report.allocations] == list(range(61, 61 - MAX_ALLOCS_PER_SITE, -1))
    assert report_for(snap, ReportConfig(top=1)).allocations == ()


def test_format_helpers():
    assert [format_bytes(n) for n in (0, 1023, 8192, 1024 * 1024 - 1, 1 << 40)] == [
        "0 B", "1023 B", "8.0 KiB", "1.0 MiB", "1.0 TiB"]
    assert [format_age(s) for s in (0.25, 59.94, 245, 7384)] == ["0.2s", "59.9s", "4m05s", "2h03m"]


# --- every reporter over the same reports -------------------------------------------

CONTAINER = Container("docker", "3f2a1b9c8d7e6f5a4b3c2d1e0f", "web", "leaky:1")


def sample_reports():
    unicode_stacks = {LEAK: stack("leak_buffer", "händler_π", LONG_CXX, "main"),
                      CACHE: RawStack((0x7F00DEAD,))}
    allocs = tuple(Allocation(PID, 0x5581_0000 + i, 64 << i, NOW - 20 * S, LEAK) for i in range(3))
    return {
        "typical": report_for(snapshot([bucket(LEAK, 70, 40960, 40), bucket(CACHE, 3, 512, 8)])),
        "empty": report_for(snapshot([])),
        "unicode-and-c++": report_for(snapshot([bucket(LEAK, 30, 4096, 1), bucket(CACHE, 30, 64, 1)],
                                               stacks=unicode_stacks)),
        "terabytes": report_for(
            snapshot([bucket(LEAK, 300, 1 << 40, 1), bucket(CACHE, 20, 3 << 40, 3)])),
        "sampled-with-allocs": report_for(
            snapshot([bucket(LEAK, 30, 1 << 20, 256)], sample_rate=4096, allocations=allocs,
                     losses={"stacks_full": 12, "allocs_full": 0}),
            ReportConfig(show_allocs=True)),
        "kernel-by-cache": report_for(
            snapshot([bucket(StackKey(0, 5), 30, 4096, 21, kind="cache", cache="dentry", cgroup_id=77)],
                     stacks={StackKey(0, 5): stack("leak_buffer", "main")}, mode="kernel",
                     targets=()), ReportConfig(group_by="cache")),
        "container": report_for(snapshot([bucket(LEAK, 30, 100, 1)],
                                         targets=(Target(PID, "leaky", APP, container=CONTAINER),))),
    }


REPORTS = sample_reports()


# Text formats; the binary ones (pprof) are covered by tests/unit/test_formats.py.
@pytest.mark.parametrize("name", sorted(n for n in REPORTERS if not getattr(REPORTERS[n], "binary", False)))
@pytest.mark.parametrize("case", sorted(REPORTS))
def test_every_reporter_renders_every_report(name, case):
    report = REPORTS[case]
    out = io.StringIO()
    get_reporter(name).render(report, out)
    text = out.getvalue()
    # folded stacks of an empty report are no lines at all
    assert text.endswith("\n") or (name == "folded" and not report.rows and text == "")
    has_leak = any(f.symbol == "leak_buffer" for row in report.rows for f in row.frames)
    assert ("leak_buffer" in text) == has_leak


def test_table_shows_the_leaking_function_and_its_bytes():
    out = io.StringIO()
    get_reporter("table").render(REPORTS["typical"], out)
    assert "leak_buffer+0x1f (leaky.c:12) [leaky]" in out.getvalue()
    assert "40.0 KiB" in out.getvalue()


def test_table_unicode_and_long_symbols_survive_whole():
    out = io.StringIO()
    get_reporter("table").render(REPORTS["unicode-and-c++"], out)
    assert "händler_π+0x1f (ünïcode.c:3)" in out.getvalue()
    assert LONG_CXX in out.getvalue()


def test_table_for_an_empty_report_names_the_age_filter():
    out = io.StringIO()
    get_reporter("table").render(REPORTS["empty"], out)
    assert "no outstanding allocations older than 500 ms" in out.getvalue()


def test_table_flags_only_nonzero_losses():
    out = io.StringIO()
    get_reporter("table").render(REPORTS["sampled-with-allocs"], out)
    losses = next(line for line in out.getvalue().splitlines() if line.startswith("losses:"))
    assert "stacks_full=12 (!)" in losses and "allocs_full=0 (!)" not in losses


@pytest.mark.parametrize("show_unwind", [True, False])
def test_table_shows_unwind_methods_only_when_asked(show_unwind):
    snap = snapshot([bucket(LEAK, 30, 100, 1)],
                    stacks={LEAK: RawStack(STACKS[LEAK].addresses, ("fp", "fp", "cfi"))})
    out = io.StringIO()
    get_reporter("table", show_unwind=show_unwind).render(report_for(snap), out)
    assert ("<cfi>" in out.getvalue()) == show_unwind


def test_json_is_one_line_per_report_and_reads_back():
    out = io.StringIO()
    for case in sorted(REPORTS):
        get_reporter("json").render(REPORTS[case], out)
    lines = out.getvalue().splitlines()
    assert len(lines) == len(REPORTS)
    assert json.loads(lines[0])["schema"] == 1
    assert list(read_reports(lines)) == [REPORTS[c] for c in sorted(REPORTS)]


def test_unknown_format_is_a_usage_error_listing_the_formats():
    with pytest.raises(UsageError) as e:
        get_reporter("html")
    assert "html" in e.value.message and "table" in e.value.hint and "json" in e.value.hint


def test_table_shows_uncertain_bytes_only_when_a_row_has_some():
    typical = REPORTS["typical"]
    plain = io.StringIO()
    get_reporter("table").render(typical, plain)
    assert "uncertain" not in plain.getvalue()
    rows = (replace(typical.rows[0], uncertain_bytes=3 * 1024),) + typical.rows[1:]
    marked = io.StringIO()
    get_reporter("table").render(replace(typical, rows=rows), marked)
    header = next(line for line in marked.getvalue().splitlines() if line.lstrip().startswith("#"))
    assert header.rstrip().endswith("uncertain")
    assert "3.0 KiB" in marked.getvalue()
