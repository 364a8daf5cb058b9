"""Leak or cache, for real (root + BPF): verdicts on traced programs, and a
recording of the same run rendered again offline with the same numbers."""
from __future__ import annotations

import io
import json
import time

import pytest

from harness import LeakyProcess, Tracer, describe_stacks, run_leaktrace, stack_with
from leaktrace.report import REPORTERS, get_reporter, is_binary, render_reports
from leaktrace.report.serialize import report_from_dict

pytestmark = pytest.mark.privileged

INTERVAL_S = 0.5
OLDER_THAN_MS = 200


def watch(command, seconds: float, record=None):
    """Attach, report every INTERVAL_S, start the program after two empty
    intervals, watch it for `seconds`, Ctrl-C. Returns every JSON report."""
    args = ["attach", "--format", "json", "--older-than", OLDER_THAN_MS, "--top", 20]
    if record:
        args += ["--record", record]
    with LeakyProcess(command) as program:
        with Tracer([*args, "-p", program.pid, INTERVAL_S]) as tracer:
            tracer.wait_tracing()
            time.sleep(2 * INTERVAL_S)
            program.go()
            program.wait_leaked()
            time.sleep(seconds)
            reports = tracer.stop()
            assert tracer.returncode == 0, tracer.describe()
    assert len(reports) >= 6, f"only {len(reports)} reports"
    return reports


def verdict_of(report, function):
    stack = stack_with(report, function)
    assert stack, f"no stack through {function}\n" + describe_stacks(report)
    return stack


def test_fibonacci_leaker_is_a_leak_and_the_recording_replays_it(build, tmp_path):
    record = tmp_path / "fib.rec"
    reports = watch([build("fibonacci.c"), "200"], 4.0, record=record)
    final = reports[-1]
    fib = verdict_of(final, "fibonacci")
    assert fib["verdict"] == "leak", fib["verdict_reason"] + "\n" + describe_stacks(final)
    assert fib["history"][0] == 0 and fib["history"][-1] == fib["bytes"]
    assert fib["rank"] == 1, describe_stacks(final)

    done = run_leaktrace(["report", record, "--format", "json", "--top", 20])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == final  # the recording's last interval is the live final report
    folded = run_leaktrace(["report", record, "--format", "folded"]).stdout
    fib_lines = [line for line in folded.splitlines() if "fibonacci" in line.split(" ")[0]]
    assert sum(int(line.rsplit(" ", 1)[1]) for line in fib_lines) == fib["bytes"]

    # Every format renders the recording exactly as it renders the live reports.
    live = [report_from_dict(r) for r in reports]
    for name in REPORTERS:
        reporter = get_reporter(name)
        expected = io.BytesIO() if is_binary(reporter) else io.StringIO()
        render_reports(reporter, live, expected)
        out = tmp_path / f"fib.{name}"
        done = run_leaktrace(["report", record, "--format", name, "--top", 20, "-o", out])
        assert done.returncode == 0, (name, done.stderr)
        got = out.read_bytes() if is_binary(reporter) else out.read_text(encoding="utf-8")
        assert got == expected.getvalue(), name


def test_a_recording_keeps_the_stacks_below_the_live_top(build, tmp_path):
    """Live --top 1 shows one stack; the recording holds every one of the five
    memalign-family leakers, with the live totals."""
    record = tmp_path / "five.rec"
    args = ["attach", "--format", "json", "--older-than", OLDER_THAN_MS, "--top", 1, "--record", record]
    with LeakyProcess([build("memalign_family.c")]) as program:
        with Tracer([*args, "-p", program.pid, INTERVAL_S]) as tracer:
            tracer.wait_tracing()
            program.go()
            program.wait_leaked()
            time.sleep(4 * INTERVAL_S)
            reports = tracer.stop()
    final = reports[-1]
    assert len(final["stacks"]) == 1 and final["sites_total"] >= 5, describe_stacks(final)
    done = run_leaktrace(["report", record, "--format", "json", "--top", 0])
    assert done.returncode == 0, done.stderr
    saved = json.loads(done.stdout)
    assert len(saved["stacks"]) == final["sites_total"]
    assert saved["stacks"][0] == final["stacks"][0] and saved["totals"] == final["totals"]
    assert sum(s["bytes"] for s in saved["stacks"]) == final["totals"]["bytes"]
    for function in ("leak_posix_memalign", "leak_aligned_alloc", "leak_memalign", "leak_valloc", "leak_pvalloc"):
        assert stack_with(saved, function), function + "\n" + describe_stacks(saved)


def test_bounded_cache_that_fills_then_holds_is_stable(build):
    reports = watch([build("bounded_cache.c")], 5.0)
    final = reports[-1]
    cache = verdict_of(final, "cache_put")
    assert cache["verdict"] == "stable", cache["verdict_reason"] + "\n" + describe_stacks(final)
    # bounded: never more than its 256 entries of 4 KiB; the age filter hides the newest ones
    assert 128 * 4096 <= cache["bytes"] <= 256 * 4096
    assert max(cache["history"]) <= 256 * 4096
    assert "old allocations freed" in cache["verdict_reason"]


def test_slow_leak_under_heavy_churn_is_a_leak_ranked_first(build):
    reports = watch([build("slow_leak_churn.c")], 5.0)
    final = reports[-1]
    leak = verdict_of(final, "leak_slowly")
    assert leak["verdict"] == "leak", leak["verdict_reason"] + "\n" + describe_stacks(final)
    assert leak["rank"] == 1, describe_stacks(final)
    assert leak["growth_bps"] > 0 and leak["count"] >= 3
    assert leak["history"] == sorted(leak["history"])  # never freed: never goes down
    assert final["events"].get("frees", 0) > 100 * leak["count"], final["events"]
