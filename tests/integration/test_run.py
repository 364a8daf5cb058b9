"""`leaktrace run -- CMD`: probes are live before the command's first instruction.

The command inherits leaktrace's stdin and stdout, so its LEAKED line shows
up among the non-JSON lines of the tracer's stdout.
"""
import re
import subprocess
import time

import pytest

from harness import (
    OLDER_THAN_MS, SETTLE_S, Tracer, assert_within, describe_stacks, frame_symbols, leaked_under,
    parse_leaked, stacks_with,
)

pytestmark = pytest.mark.privileged


def run_to_exit(command):
    """Run command under leaktrace until it exits; returns (leaked, final report)."""
    with Tracer(["run", "--format", "json", "--older-than", OLDER_THAN_MS, "--", *command]) as tracer:
        code = tracer.wait(60)
        assert code == 0, "leaktrace run failed\n" + tracer.describe()
    reports = tracer.reports()
    assert reports, "no report when the command exited\n" + tracer.describe()
    return parse_leaked(tracer.other_output()), reports[-1]


def assert_site(report, function, expected):
    found = leaked_under(report, function)
    context = f"\n{function}: {found}, program says {expected}\n" + describe_stacks(report)
    assert_within(found["bytes"], expected["bytes"], 10, "bytes" + context)
    assert_within(found["count"], expected["count"], 10, "count" + context)


def test_run_catches_an_allocation_in_the_first_microseconds_of_main(build):
    leaked, final = run_to_exit([build("early_leak.c"), "1500"])
    assert_site(final, "early_leak", leaked["sites"]["early_leak"])


UNKNOWN_CODE_WARNING = "stop in code mapped after its unwind tables were loaded"


def test_run_unwinds_the_first_allocations_through_libraries_the_loader_maps(build):
    """The tables are loaded again once ld.so has mapped libc: a program and a libc
    without frame pointers unwind fully from main's first call, and no stack stops
    in code "mapped after its tables were loaded" (there was no dlopen)."""
    leaked, final = run_to_exit([build("early_leak.c", ["-O2", "-fomit-frame-pointer"],
                                       name="early_leak_nofp"), "1500"])
    early = stacks_with(final, "early_leak")
    assert sum(s["count"] for s in early) == leaked["sites"]["early_leak"]["count"], describe_stacks(final)
    for stack in early:
        assert frame_symbols(stack)[:2] == ["early_leak", "main"], describe_stacks(final)
    cut = [s for s in final["stacks"] if any("the walk stops here" in (f.get("note") or "") for f in s["frames"])]
    assert not cut, describe_stacks(final)
    assert not [w for w in final["warnings"] if UNKNOWN_CODE_WARNING in w], final["warnings"]


def test_run_reports_the_target_it_started(build):
    _, final = run_to_exit([build("early_leak.c"), "800"])
    assert len(final["targets"]) == 1, final["targets"]
    assert final["targets"][0]["comm"] == "early_leak", final["targets"]
    assert final["pid"] == final["targets"][0]["pid"], final


def wait_for_line(tracer, prefix, timeout=20):
    deadline = time.monotonic() + timeout
    while not any(line.startswith(prefix) for line in tracer.other_output()):
        assert time.monotonic() < deadline, f"no {prefix!r} line\n" + tracer.describe()
        time.sleep(0.05)


def test_run_passes_arguments_and_stdin_to_the_command(build):
    with Tracer(["run", "--format", "json", "--older-than", OLDER_THAN_MS, "--",
                 build("fibonacci.c"), "25"], stdin=subprocess.PIPE) as tracer:
        tracer.wait_tracing()
        tracer.proc.stdin.write("go\n")
        tracer.proc.stdin.flush()
        wait_for_line(tracer, "LEAKED ")
        time.sleep(SETTLE_S)
        tracer.proc.stdin.close()  # fibonacci exits; leaktrace prints its final report
        assert tracer.wait(30) == 0, tracer.describe()
    leaked = parse_leaked(tracer.other_output())
    assert leaked["count"] == 25  # the argument reached the command
    assert_site(tracer.reports()[-1], "fibonacci", leaked["sites"]["fibonacci"])


def test_run_trace_prints_the_first_allocations_of_main(build):
    with Tracer(["run", "--format", "json", "--older-than", OLDER_THAN_MS, "--trace", "--",
                 build("early_leak.c"), "800"]) as tracer:
        code = tracer.wait(60)
        assert code == 0, "leaktrace run failed\n" + tracer.describe()
    early = re.findall(r"^\d+ pid=\d+ tid=\d+ malloc 0x[0-9a-f]+ size=4000 stack=-?\d+$",
                       tracer.stderr, re.MULTILINE)
    assert len(early) == 3, tracer.describe()  # early_leak.c: 3 blocks of 4000 bytes
