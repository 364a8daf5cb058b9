"""Reports every output format must handle, and readers that are not ours.

CASES: empty, deep stacks, unicode and very long C++ symbols, sizes 0 and
2**40, and a report made the live way (aggregate with the GrowthTracker,
build_report, annotate) over three intervals of a leaking program.
parse_folded() reads folded stacks the way flamegraph.pl does (its line
regex), independently of leaktrace's writer. tool() finds a consumer
program; missing, it skips, except under CI where it fails.
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import replace
from typing import Dict, Tuple

import pytest

from leaktrace.base.config import ReportConfig
from leaktrace.judge.growth import GrowthTracker
from leaktrace.judge.judgement import judge_interval
from leaktrace.base.model import (Bucket, ContentSample, Frame, RawStack, ReachSummary, Report, ReportRow,
                             RowReach, Snapshot, StackKey, Target)
from leaktrace.symbolize import build_report

S = 1_000_000_000
APP = "/tmp/leaky/app"
LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"
TEMPLATE = "std::map<std::basic_string<char>, std::vector<std::pair<int, double> > >"
LONG_CXX = f"void std::vector<{TEMPLATE}>::_M_realloc_insert<{TEMPLATE} const&>(iterator)" * 10
FUNCTIONS = {0x401100: "fibonacci", 0x401200: "worker", 0x401300: "main", 0x401400: "händler_π",
             0x401500: LONG_CXX}


def resolve(key, raw):
    frames = []
    for addr in raw.addresses:
        start = addr & ~0xFF
        if start in FUNCTIONS:
            frames.append(Frame(addr, FUNCTIONS[start], addr - start, APP, "app.c", 10))
        else:
            frames.append(Frame(addr, "malloc" if addr > 0x7F0000000000 else None, 0x10, LIBC))
    return tuple(frames)


def live_report() -> Tuple[Report, ...]:
    """Three interval reports of a program whose fibonacci() leaks 8 KiB a second."""
    leak, buffer = StackKey(4242, 17), StackKey(4242, 3)
    stacks = {leak: RawStack((0x7F3A1C0A50F0, 0x40111F, 0x40121F, 0x40131F)),
              buffer: RawStack((0x7F3A1C0A50F0, 0x40151F, 0x40131F))}
    tracker, reports = GrowthTracker(), []
    config = ReportConfig(top=10, older_than_ms=500)
    boot = 9_000 * S
    for second in range(1, 4):
        now = boot + second * 2 * S
        buckets = [Bucket(leak, boot + i * S, boot + i * S + (1 << 28), 8192, 1)
                   for i in range(second * 2)]
        buckets.append(Bucket(buffer, boot, boot + (1 << 28), 1 << 20, 1))
        snap = Snapshot("user", now, boot, 1_714_000_000.0 + second * 2, tuple(buckets), stacks,
                        targets=(Target(4242, "app", APP, LIBC, "glibc"),))
        ranked, judged = judge_interval(snap, config, tracker)
        reports.append(build_report(snap, ranked.limited(config.top), resolve, config, judged=judged))
    return tuple(reports)


def _report(*rows: ReportRow) -> Report:
    total = sum(r.bytes for r in rows)
    return Report("user", 1_714_000_000.0, 12.5, (), {"bytes": total, "count": len(rows)}, {}, {}, rows,
                  sites_total=len(rows))


def _frames(*names: str) -> Tuple[Frame, ...]:
    return tuple(Frame(0x401000 + 0x10 * i, n, 0x1F, APP, None, None) for i, n in enumerate(names))


def reached_report() -> Report:
    """The live report after a --reachability scan: classes, samples, a problem line."""
    live = live_report()[-1]
    reach = RowReach(bytes=(40960, 8192, 0), counts=(5, 1, 0), similarity=0.75, samples=(
        ContentSample(0x55D0C0A012A0, 8192, b"GET /index.html \x00\xff\n\t|;", "unreferenced"),))
    summary = ReachSummary(scanned_bytes=12 << 20, elapsed_s=0.18, frozen_s=0.05, threads=2,
                           bytes=(40960, 8192, 1 << 20), counts=(5, 1, 1), problems=("PID 4243 exited",))
    return replace(live, rows=(replace(live.rows[0], reach=reach),) + live.rows[1:], reach=summary)


CASES: Dict[str, Report] = {
    "empty": _report(),
    "deep": _report(ReportRow(1, 4096, 4, 3.0, _frames(*(["fibonacci"] + [f"recurse_{i}" for i in range(300)])),
                              verdict="leak")),
    "unicode_cxx": _report(
        ReportRow(1, 65536, 16, 9.0, _frames("fibonacci", "händler_π", LONG_CXX, "main"), verdict="growing"),
        ReportRow(2, 64, 1, 1.0, (Frame(0x7F00DEAD0000, None, 0, "/opt/weird;name\nlib.so"),
                                  Frame(0, note="stack not collected (unwind failed)")))),
    "sizes": _report(ReportRow(1, 1 << 40, 1, 70.0, _frames("fibonacci", "main"), "mmap"),
                     ReportRow(2, 0, 0, 0.0, _frames("idle", "main"))),
    "live": live_report()[-1],
    "reached": reached_report(),
}

# flamegraph.pl's stackcollapse input rule: everything up to the last run of
# blanks is the stack, then a number.
FOLDED_LINE = re.compile(r"^(.*)\s+?(\d+(?:\.\d*)?)$")


def parse_folded(text: str) -> Dict[Tuple[str, ...], int]:
    stacks: Dict[Tuple[str, ...], int] = {}
    for line in text.splitlines():
        match = FOLDED_LINE.match(line)
        assert match, f"flamegraph.pl would ignore this line: {line[:120]!r}"
        names = tuple(match.group(1).split(";"))
        stacks[names] = stacks.get(names, 0) + int(match.group(2))
    return stacks


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (scripts/setup.sh --test installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path
