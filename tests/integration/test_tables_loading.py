"""Tracing starts before the unwind tables are built (root + BPF).

leaktrace prints its tracing line without waiting for the unwind tables;
until they are written, the process's stacks are walked with frame pointers.
Here the tables are held back (LEAKTRACE_UNWIND_HOLD_S) while a program built
without frame pointers allocates from the first instant: every allocation is
counted exactly, the report says how many of the outstanding allocations
have stacks walked before the tables arrived (exactly those without a CFI
frame), and the leaks made after they arrived have whole stacks.
"""
import os
import re
import time

import pytest

from harness import (OLDER_THAN_MS, SETTLE_S, TIMEOUT_SCALE, LeakyProcess, Tracer, describe_stacks,
                     frame_symbols, stacks_with)

pytestmark = pytest.mark.privileged

EARLY_SIZE, LATE_SIZE = 3001, 5003  # tables_loading.c
HOLD_S = 2 * TIMEOUT_SCALE
LOADED = re.compile(r"stacks of (\d+) outstanding allocations of pid (\d+) were walked with frame "
                    r"pointers only: they were made while its unwind tables were still loading")


def loaded_note(report, pid):
    """N of the report's "stacks of N outstanding allocations" line for pid, or None."""
    for warning in report.get("warnings", ()):
        text = warning if isinstance(warning, str) else warning.get("text", str(warning))
        match = LOADED.search(text)
        if match and int(match[2]) == pid:
            return int(match[1])
    return None


def sized(report, size, walked=lambda stack: True):
    """Allocations of exactly this size in the report whose stacks were walked as asked."""
    return sum(s["count"] for s in report["stacks"]
               if s["count"] and s["bytes"] == s["count"] * size and walked(s))


def with_tables(stack):
    return any(frame.get("unwind") == "cfi" for frame in stack["frames"])


def test_allocations_before_the_tables_arrive_are_counted_and_later_stacks_are_whole(build, tmp_path):
    program = build("tables_loading.c", ["-O2", "-fomit-frame-pointer"], name="tables_loading_O2")
    env = {**os.environ, "LEAKTRACE_UNWIND_HOLD_S": str(HOLD_S),
           "LEAKTRACE_CACHE_DIR": str(tmp_path / "cache")}
    with LeakyProcess([program]) as leaker:
        with Tracer(["attach", "-p", leaker.pid, "--format", "json", "--older-than", OLDER_THAN_MS,
                     "0.5"], env=env) as tracer:
            tracer.wait_tracing()
            leaker.go()  # allocates from the first instant, tables held back
            deadline = time.monotonic() + 60 * TIMEOUT_SCALE
            while not any(loaded_note(r, leaker.pid) for r in tracer.reports()):
                assert time.monotonic() < deadline, "the tables never arrived\n" + tracer.describe()
                time.sleep(0.2)
            leaker.proc.stdin.write("late\n")
            leaker.proc.stdin.flush()
            leaked = leaker.wait_leaked()
            time.sleep(SETTLE_S)
            reports = tracer.stop()
            assert tracer.returncode == 0 and reports, tracer.describe()
    final = reports[-1]
    early = leaked["sites"]["early_leak"]["count"]
    walked_early = loaded_note(final, leaker.pid)
    assert walked_early is not None and 1 <= walked_early <= early, (walked_early, early)
    assert sized(final, EARLY_SIZE) == early, describe_stacks(final)
    # The count is exact: the stacks walked before the tables are the ones without a CFI frame.
    assert sized(final, EARLY_SIZE, lambda s: not with_tables(s)) == walked_early, describe_stacks(final)
    late = stacks_with(final, "late_leak")
    assert sum(s["count"] for s in late) == leaked["sites"]["late_leak"]["count"], describe_stacks(final)
    for stack in late:
        names = frame_symbols(stack)
        assert "main" in names[names.index("late_leak"):], names
        assert next(f["unwind"] for f in stack["frames"] if f.get("symbol") == "late_leak") == "cfi"
