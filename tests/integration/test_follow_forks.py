"""--follow-forks (root + BPF): tests/programs/prefork_server.c forks 3 workers
after leaktrace attached, each leaking a known count, and one worker forks a
child of its own. Every worker's leak is found under its own pid, the
parent's blocks only under the parent's (the workers free some of their
copies: unknown frees, nothing else), and a second server of the same
binary that nobody traces is not in the report although the probes sit in
the same file.

Tolerance: none; the programs leak exactly what they print and nothing else.
"""
import json
import re
import subprocess
import time

import pytest

from harness import (OLDER_THAN_MS, SETTLE_S, TIMEOUT_SCALE, LeakyProcess, Tracer, describe_stacks,
                     leaktrace_command, stacks_with)

pytestmark = pytest.mark.privileged

_CHILD_LINE = re.compile(r"^(WORKER|GRANDCHILD) pid=(\d+) bytes=(\d+) count=(\d+)$")


def children_printed(leaker: LeakyProcess):
    """{pid: (what, bytes, count)} of the WORKER and GRANDCHILD lines."""
    return parse_children(leaker._out.lines)


def parse_children(lines):
    found = {}
    for line in lines:
        match = _CHILD_LINE.match(line.strip())
        if match:
            found[int(match[2])] = (match[1], int(match[3]), int(match[4]))
    return found


def under(report, function, pid):
    """(bytes, count) of the rows of pid whose stack holds function."""
    rows = [s for s in stacks_with(report, function) if s["pid"] == pid]
    return sum(s["bytes"] for s in rows), sum(s["count"] for s in rows)


def test_workers_forked_after_attach_are_traced_each_under_its_own_pid(build):
    check_prefork_server(build)


def check_prefork_server(build):
    """The first test's body (also the kernel matrix's `forks` check); returns the final report."""
    server = build("prefork_server.c")
    with LeakyProcess([server]) as leaker, LeakyProcess([server]) as bystander:
        with Tracer(["attach", "-p", leaker.pid, "--follow-forks", "--format", "json",
                     "--older-than", OLDER_THAN_MS, "--top", 0, 1]) as tracer:
            tracer.wait_tracing()
            leaker.go()
            bystander.go()
            parent = leaker.wait_leaked()
            bystander.wait_leaked()
            time.sleep(SETTLE_S)
            reports = tracer.stop()
            assert tracer.returncode == 0, tracer.describe()
        children = children_printed(leaker)
        others = {leaker.pid} | set(children)
        strangers = {bystander.pid} | set(children_printed(bystander))
    final = reports[-1]
    assert len(children) == 4, leaker._out.text()
    for pid, (what, nbytes, count) in children.items():
        function = "leak_in_worker" if what == "WORKER" else "leak_in_grandchild"
        assert under(final, function, pid) == (nbytes, count), f"{what} {pid}\n" + describe_stacks(final)
    # The parent's blocks once, under the parent, though every worker holds a copy (and frees 4).
    assert under(final, "leak_in_parent", leaker.pid) == (parent["bytes"], parent["count"]), describe_stacks(final)
    assert all(s["pid"] == leaker.pid for s in stacks_with(final, "leak_in_parent")), describe_stacks(final)
    assert final["events"]["unknown_frees"] >= 3 * 4, final["events"]
    expected = parent["bytes"] + sum(b for _, b, _ in children.values())
    assert final["totals"]["bytes"] == expected, describe_stacks(final)
    # Nobody else: the untraced server and its workers hit the same probes.
    assert {s["pid"] for s in final["stacks"]} <= others, describe_stacks(final)
    assert not {s["pid"] for s in final["stacks"]} & strangers
    # The header: every child named with its parent, and how many are traced.
    forked = {t["pid"]: t["forked_from"] for t in final["targets"] if t["forked_from"]}
    assert set(forked) == set(children), final["targets"]
    grandchild = next(pid for pid, (what, _, _) in children.items() if what == "GRANDCHILD")
    assert forked[grandchild] in children and forked[grandchild] != leaker.pid, final["targets"]
    assert "following forks: processes traced now 5, in all 5 (1 named, 4 forked; 0 exited)" in final["probes"]
    return final


def test_run_keeps_what_children_held_when_they_exited_with_their_symbols(build, tmp_path):
    """Every worker is gone before the final report: its rows stay, named by its parent's symbols."""
    server = build("prefork_server.c")
    out = tmp_path / "report.json"
    # stdin ends after "go": everyone leaks, prints and exits at once.
    done = subprocess.run([*leaktrace_command(), "run", "--follow-forks", "--format", "json", "--older-than", "0",
                           "--top", "0", "-o", str(out), "--", str(server)], input="go\n", capture_output=True, text=True,
                          timeout=120 * TIMEOUT_SCALE)
    assert done.returncode == 0, done.stderr
    children = parse_children(done.stdout.splitlines())
    final = [json.loads(line) for line in out.read_text().splitlines()][-1]
    assert len(children) == 4, done.stdout
    for pid, (what, nbytes, count) in children.items():
        function = "leak_in_worker" if what == "WORKER" else "leak_in_grandchild"
        assert under(final, function, pid) == (nbytes, count), f"{what} {pid}\n" + describe_stacks(final)
    assert "4 forked; 4 exited" in final["probes"][-1], final["probes"]
    assert not any("only PID" in w or "not traced" in w for w in final["warnings"]), final["warnings"]
