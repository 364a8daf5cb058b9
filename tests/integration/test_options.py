"""memleak's options, with the meaning its users expect, on real traced
programs: --min-size/--max-size, --trace, -o FILE and --obj."""
from __future__ import annotations

import glob
import json
import re
import time

import pytest

from harness import (
    OLDER_THAN_MS, SETTLE_S, LeakyProcess, Tracer, describe_stacks, leaked_under, stacks_with, trace_leaker,
)

pytestmark = pytest.mark.privileged

# memalign_family.c: 8 blocks of each size, one function per allocator.
BLOCK_SIZES = {"leak_posix_memalign": 1000, "leak_aligned_alloc": 2048, "leak_memalign": 3000,
               "leak_valloc": 5000, "leak_pvalloc": 8192}


def test_size_filters_keep_exactly_the_allocations_within_bounds(build):
    low, high = 2000, 5000
    leaked, reports, _ = trace_leaker([build("memalign_family.c")], ["--min-size", low, "--max-size", high])
    final = reports[-1]
    for function, size in BLOCK_SIZES.items():
        found = stacks_with(final, function)
        if low <= size <= high:
            assert found, f"{function} ({size} B) missing\n" + describe_stacks(final)
            assert sum(s["bytes"] for s in found) == leaked["sites"][function]["bytes"], describe_stacks(final)
        else:
            assert not found, f"{function} ({size} B) passed the filter\n" + describe_stacks(final)
    # Whatever else the program allocated (stdio buffers) obeys the bounds too.
    assert all(low <= s["avg_size"] <= high for s in final["stacks"]), describe_stacks(final)


def test_trace_prints_each_allocation_as_it_happens(build):
    calls = 20
    _, _, tracer = trace_leaker([build("fibonacci.c"), calls], ["--trace"])
    tables = re.findall(r"^\d+ pid=\d+ tid=\d+ calloc 0x[0-9a-f]+ size=8192 stack=-?\d+$",
                        tracer.stderr, re.MULTILINE)
    assert len(tables) == calls, tracer.describe()


def test_output_file_receives_the_reports_and_stdout_none(build, tmp_path):
    out = tmp_path / "reports.jsonl"
    with LeakyProcess([build("fibonacci.c"), "30"]) as leaker:
        with Tracer(["attach", "-p", leaker.pid, "--format", "json", "--older-than", OLDER_THAN_MS,
                     "-o", out, 0.5]) as tracer:
            tracer.wait_tracing()
            leaker.go()
            leaked = leaker.wait_leaked()
            time.sleep(SETTLE_S)
            on_stdout = tracer.stop()
            assert tracer.returncode == 0, tracer.describe()
    assert on_stdout == [], "reports went to stdout as well"
    reports = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(reports) >= 2
    fib = leaked_under(reports[-1], "fibonacci")
    expected = leaked["sites"]["fibonacci"]
    assert (fib["bytes"], fib["count"]) == (expected["bytes"], expected["count"]), describe_stacks(reports[-1])


def test_obj_names_the_allocator_to_hook(build):
    libc = glob.glob("/lib/*-linux-gnu/libc.so.6") + glob.glob("/usr/lib/*-linux-gnu/libc.so.6")
    assert libc, "no glibc on this machine"
    leaked, reports, tracer = trace_leaker([build("fibonacci.c"), "20"], ["--obj", libc[0]])
    assert f"allocator in {libc[0]}" in tracer.stderr, tracer.describe()
    assert reports[-1]["targets"][0]["allocator"] == libc[0]
    fib = leaked_under(reports[-1], "fibonacci")
    assert fib["bytes"] == leaked["sites"]["fibonacci"]["bytes"], describe_stacks(reports[-1])
