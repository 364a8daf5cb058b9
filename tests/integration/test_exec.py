"""A traced process that execs (root + BPF): tests/programs/exec_leak.c leaks
50 x 2000 bytes, then execs a second program (the same source under another
name) that leaks 30 x 3000 bytes. The first image's allocations went with
its address space: they must leave the report, which says so and names the
program running now.

Tolerance: none; both programs leak exactly what they print and nothing else.
"""
import os
import time

import pytest

from harness import OLDER_THAN_MS, SETTLE_S, LeakyProcess, Tracer, describe_stacks, leaked_under, parse_leaked

pytestmark = pytest.mark.privileged


def wait_until(check, timeout=20, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_allocations_of_a_replaced_image_are_dropped_and_the_new_program_is_named(build):
    first = build("exec_leak.c", name="exec_first")
    second = build("exec_leak.c", name="exec_second")
    with LeakyProcess([first, "first", second]) as leaker:
        with Tracer(["attach", "-p", leaker.pid, "--format", "json", "--older-than", OLDER_THAN_MS,
                     "--top", 50, 1]) as tracer:
            tracer.wait_tracing()
            leaker.go()
            before = leaker.wait_leaked()
            # Seen before the exec: the first image's leak is in a report.
            wait_until(lambda: any(leaked_under(r, "leak_before_exec")["bytes"] == before["bytes"]
                                   for r in tracer.reports()), what="the first leak in a report")
            leaker.proc.stdin.write("exec\n")
            leaker.proc.stdin.flush()
            wait_until(lambda: os.readlink(f"/proc/{leaker.pid}/exe").endswith("exec_second"),
                       what="the exec")
            leaker.go()
            wait_until(lambda: sum(1 for line in leaker._out.lines if line.startswith("LEAKED ")) == 2,
                       what="the second program's LEAKED line")
            after = parse_leaked([line for line in leaker._out.lines if line.startswith("LEAKED ")][1:])
            time.sleep(SETTLE_S)
            reports = tracer.stop()
            assert tracer.returncode == 0, tracer.describe()
    final = reports[-1]
    assert not leaked_under(final, "leak_before_exec")["stacks"], (
        "the replaced image's allocations are still listed\n" + describe_stacks(final))
    found = leaked_under(final, "leak_after_exec")
    assert (found["bytes"], found["count"]) == (after["bytes"], after["count"]), describe_stacks(final)
    assert (final["totals"]["bytes"], final["totals"]["count"]) == (after["bytes"], after["count"])
    target = final["targets"][0]
    assert target["comm"] == "exec_second" and target["exe"].endswith("exec_second"), target
    notes = [w for w in final["warnings"] if "exec'd" in w]
    assert len(notes) == 1 and f"in {before['count']} allocations" in notes[0], final["warnings"]
    # No new-image block was counted as an address recorded twice.
    assert final["events"]["replaced"] == 0, final["events"]
