"""--reachability on real programs with known truth (root + BPF + ptrace).

Each program (tests/programs/reach_*.c*) says in its header which of its
blocks are reachable, unreferenced or indirectly lost; the classes must match
exactly, in attach and in run. A cache that a global points at is not a
leak; the target behaves the same while it is stopped and scanned; a target
that cannot be scanned costs one line and nothing else.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Dict, List

import pytest

from harness import (OLDER_THAN_MS, SETTLE_S, LeakyProcess, Tracer, describe_stacks, stacks_with,
                     trace_leaker)

pytestmark = pytest.mark.privileged

CLASSES = ("unreferenced", "indirectly_lost", "reachable")


def classes_under(report: Dict, function: str) -> Dict[str, int]:
    """Counts per class over every stack through function (None-safe)."""
    found = {name: 0 for name in CLASSES}
    for stack in stacks_with(report, function):
        reach = stack["reachability"]
        assert reach is not None, f"{function} was not classified\n" + describe_stacks(report)
        for name in CLASSES:
            found[name] += reach[name]["count"]
    return found


def run_and_stop(command: List[str], args=()) -> List[Dict]:
    """`leaktrace run` a lingering program, tell it to go, Ctrl-C once it leaked."""
    with Tracer(["run", "--format", "json", "--older-than", OLDER_THAN_MS, "--reachability", *args,
                 "--", *command], stdin=subprocess.PIPE) as tracer:
        tracer.go_until_leaked()
        time.sleep(SETTLE_S)
        reports = tracer.stop()  # the final report scans the lingering program
        tracer.proc.stdin.close()
        # then run ends it, still traced, and exits with its status
        assert tracer.returncode == 128 + signal.SIGTERM, tracer.describe()
    return reports


def assert_scanned(report: Dict) -> None:
    reach = report["reachability"]
    assert reach is not None and reach["problems"] == [], reach
    assert reach["threads"] >= 1 and reach["scanned_bytes"] > 0 and reach["frozen_s"] > 0, reach


@pytest.mark.parametrize("mode", ["attach", "run", "run-jemalloc"])
def test_classes_match_the_programs_truth_exactly(build, mode):
    """run-jemalloc: jemalloc's own metadata and free regions are not taken for references."""
    program = (build("reach_classes.c", flags=("-ljemalloc",), name="reach_classes_jemalloc")
               if mode == "run-jemalloc" else build("reach_classes.c"))
    if mode == "attach":
        _, reports, _ = trace_leaker([program], ["--reachability"])
    else:
        reports = run_and_stop([str(program)])
    final = reports[-1]
    assert all(r["reachability"] is None for r in reports[:-1])  # only the final report scans
    assert_scanned(final)
    context = describe_stacks(final)
    assert classes_under(final, "keep_in_list") == {"unreferenced": 0, "indirectly_lost": 0,
                                                    "reachable": 12}, context
    assert classes_under(final, "drop_buffers") == {"unreferenced": 20, "indirectly_lost": 0,
                                                    "reachable": 0}, context
    assert classes_under(final, "chain_link") == {"unreferenced": 0, "indirectly_lost": 6,
                                                  "reachable": 0}, context
    head = [s for s in stacks_with(final, "chain_head") if not stacks_with({"stacks": [s]}, "chain_link")]
    assert [s["reachability"]["unreferenced"]["count"] for s in head] == [1], context
    for function in ("drop_buffers", "chain_link"):
        stack = stacks_with(final, function)[0]
        assert stack["verdict"] == "leak", stack["verdict_reason"]
        assert "definitely lost" in stack["verdict_reason"], stack["verdict_reason"]
    assert stacks_with(final, "keep_in_list")[0]["verdict"] != "leak"


@pytest.mark.parametrize("mode", ["attach", "run"])
def test_the_content_sample_of_a_leaked_string_buffer_shows_the_string(build, mode):
    program = build("reach_classes.c")
    reports = (trace_leaker([program], ["--reachability"])[1] if mode == "attach"
               else run_and_stop([str(program)]))
    buffers = stacks_with(reports[-1], "drop_buffers")[0]["reachability"]
    texts = [s["text"] for s in buffers["samples"]]
    assert len(texts) == 3 and all(t.startswith("request #") for t in texts), texts
    assert all("GET /leaked/path" in t for t in texts), texts
    assert bytes.fromhex(buffers["samples"][0]["hex"]).startswith(b"request #")
    assert 0.8 < buffers["similarity"] < 1.0  # the same request but for its number


def test_cxx_objects_held_only_by_lost_objects_are_indirectly_lost(build):
    program = build("reach_tree.cpp", cxx=True)
    final = run_and_stop([str(program)])[-1]
    assert_scanned(final)
    leaves, context = 10, describe_stacks(final, 20)
    # The whole program loses one tree: the Tree is unreferenced; its vector
    # storage, its leaves and their names are indirectly lost.
    summary = final["reachability"]
    assert (summary["unreferenced"]["count"], summary["indirectly_lost"]["count"]) == (1, 1 + 2 * leaves)
    drop, keep = classes_under(final, "drop_tree"), classes_under(final, "keep_tree")
    assert drop["unreferenced"] == 1 and drop["reachable"] == 0, context
    assert drop["indirectly_lost"] >= 1 + leaves, context  # vector and leaves (names, if unwound here)
    assert keep["unreferenced"] == keep["indirectly_lost"] == 0, context
    assert keep["reachable"] >= 2 + leaves, context
    # The 41-byte names: half kept, half lost, whichever stacks they were unwound to.
    names = [s["reachability"] for s in final["stacks"] if s["avg_size"] == 41 and s["reachability"]]
    assert sum(n["indirectly_lost"]["count"] for n in names) == leaves, context
    assert sum(n["reachable"]["count"] for n in names) == leaves, context
    lost = [s for s in stacks_with(final, "drop_tree") if s["reachability"]["indirectly_lost"]["count"]]
    assert all(s["verdict"] == "leak" for s in lost), context


def test_a_growing_cache_a_global_points_at_is_not_a_leak(build):
    """Growth alone calls both sites of reach_cache a leak; the scan at each
    report tells the referenced cache from the lost entries."""
    with LeakyProcess([build("reach_cache.c")]) as program:
        with Tracer(["attach", "--format", "json", "--older-than", OLDER_THAN_MS, "--reachability=each",
                     "-p", program.pid, "0.5"]) as tracer:
            tracer.wait_tracing()
            program.go()
            program.wait_leaked()
            time.sleep(4)
            reports = tracer.stop()
            assert tracer.returncode == 0, tracer.describe()
    scanned = [r for r in reports if r["reachability"] is not None]
    assert len(scanned) == len(reports) >= 6
    final = reports[-1]
    cache, lost = stacks_with(final, "cache_put")[0], stacks_with(final, "lose_entry")[0]
    assert cache["verdict"] == "growing", cache["verdict_reason"]
    assert cache["verdict_reason"].startswith("100% reachable: grew and never freed, but still referenced; "
                                              "grew and never freed: "), cache["verdict_reason"]
    assert lost["verdict"] == "leak" and lost["verdict_reason"].startswith("100% unreferenced: ")
    assert lost["rank"] < cache["rank"]
    assert cache["reachability"]["samples"][0]["text"].startswith("........cached key ")


def test_the_target_behaves_the_same_while_it_is_scanned_again_and_again(build):
    """Signals arriving while it is stopped are delivered, blocked reads and
    sleeps are not cut short, its output is byte for byte the untraced one."""
    program = str(build("reach_steady.c"))
    with subprocess.Popen([program], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as plain:
        assert plain.stdout.readline() == "ready\n"
        feed(plain.stdin, plain.pid)
        untraced = "ready\n" + plain.stdout.read()
    with Tracer(["run", "--format", "json", "--older-than", 0, "--reachability=each", "--interval", 0.1,
                 "--", program], stdin=subprocess.PIPE) as tracer:
        tracer.wait_tracing()
        feed(tracer.proc.stdin, int(tracer.stderr.split("tracing PID ", 1)[1].split()[0]))
        assert tracer.wait(60) == 0, tracer.describe()
    assert tracer.other_output() == untraced.splitlines(), tracer.describe()
    assert "lines=40 " in untraced and " signals=40 eintr=0 short_sleeps=0" in untraced
    scans = [r["reachability"] for r in tracer.reports() if r["reachability"]]
    stopped = [s for s in scans if s["frozen_s"] > 0]
    assert len(stopped) >= 5, scans  # it really was stopped and read, many times
    assert all(s["threads"] == 2 for s in stopped), stopped


def feed(stdin, pid: int, lines: int = 40) -> None:
    """reach_steady's input: a real-time signal and a line, every 50 ms, then "end"."""
    for i in range(lines):
        os.kill(pid, signal.SIGRTMIN)
        stdin.write(f"line {i} of the steady program\n")
        stdin.flush()
        time.sleep(0.05)
    stdin.write("end\n")
    stdin.close()


def seize(pid: int) -> subprocess.Popen:
    """Another tracer (as a debugger would be) holding pid."""
    code = ("import ctypes,sys,time\n"
            "libc=ctypes.CDLL(None,use_errno=True)\n"
            f"assert libc.ptrace(0x4206,{pid},None,None)==0\n"
            "print('seized',flush=True)\n"
            "sys.stdin.read()\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "seized"
    return holder


def test_a_target_held_by_a_debugger_gives_one_line_and_the_rest_of_the_report(build):
    with LeakyProcess([build("reach_classes.c")]) as program:
        holder = seize(program.pid)
        try:
            with Tracer(["attach", "--format", "json", "--older-than", OLDER_THAN_MS, "--reachability",
                         "-p", program.pid]) as tracer:
                tracer.wait_tracing()
                program.go()
                program.wait_leaked()
                time.sleep(SETTLE_S)
                final = tracer.stop()[-1]
                assert tracer.returncode == 0, tracer.describe()
        finally:
            holder.stdin.close()
            holder.wait(10)
    problems = final["reachability"]["problems"]
    assert len(problems) == 1 and "cannot stop PID" in problems[0] and "debugger" in problems[0]
    assert stacks_with(final, "drop_buffers")[0]["count"] == 20  # the rest of the report is there
    assert all(s["reachability"] is None for s in final["stacks"])


def test_a_target_that_exits_and_the_size_bound_each_give_one_line(build):
    with LeakyProcess([build("reach_classes.c")]) as program:
        with Tracer(["attach", "--format", "json", "--older-than", 0, "--reachability",
                     "-p", program.pid]) as tracer:
            tracer.wait_tracing()
            program.go()
            program.wait_leaked()
            program.stop()  # exits: the final report cannot scan it
            assert tracer.wait(30) == 0, tracer.describe()
    final = tracer.reports()[-1]
    assert final["reachability"]["problems"] == [f"PID {program.pid} exited before its memory was scanned"]
    assert stacks_with(final, "drop_buffers"), describe_stacks(final)

    _, reports, _ = trace_leaker([build("fibonacci.c"), "300"], ["--reachability-max-mb", 1,
                                                                "--reachability"])
    problems = reports[-1]["reachability"]["problems"]
    assert len(problems) == 1 and "over the 1 MiB left of --reachability-max-mb" in problems[0], problems
    assert stacks_with(reports[-1], "fibonacci")


def test_nothing_stays_attached_when_leaktrace_is_killed_mid_freeze(build):
    """SIGKILL while a target is stopped: the kernel resumes it."""
    with LeakyProcess([build("reach_cache.c")]) as program:
        with Tracer(["attach", "--format", "json", "--reachability=each", "-p", program.pid, "0.1"]) as tracer:
            tracer.wait_tracing()
            program.go()
            program.wait_leaked()
            time.sleep(1)
            tracer.kill()
        time.sleep(0.5)
        status = open(f"/proc/{program.pid}/status").read()
        assert "TracerPid:\t0" in status, status
        switches = _switches(program.pid)
        time.sleep(0.5)
        assert _switches(program.pid) > switches + 5  # still looping (usleep every 20 ms)
        assert program.proc.poll() is None


def _switches(pid: int) -> int:
    status = open(f"/proc/{pid}/status").read()
    return int(status.split("voluntary_ctxt_switches:\t", 1)[1].split()[0])
