"""scripts/demo.sh end to end, for real: root, BPF, a Docker daemon.

The README's first command (`sudo scripts/demo.sh`) runs exactly as a
newcomer runs it; the others use --check, whose JSON verdict and saved
reports the tests parse. Each run must leave nothing behind: no demo
container, no demo image, no demo process.
"""
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from harness import REPO, assert_within, frame_symbols, stack_with

pytestmark = [pytest.mark.privileged, pytest.mark.docker]

DEMO = REPO / "scripts" / "demo.sh"
BYTES_PER_CALL = 8192
KEPT_IN = re.compile(r"^demo: reports and logs kept in (\S+)", re.M)


def demo_leftovers() -> list:
    """Containers, images and processes of the demo that still exist."""
    left = []
    for cmd in (["docker", "ps", "-aq", "--filter", "label=org.leaktrace.demo"],
                ["docker", "images", "-q", "leaktrace-demo/*"]):
        left += subprocess.run(cmd, capture_output=True, text=True).stdout.split()
    for cmd in (["pgrep", "-x", "mem-leak"], ["pgrep", "-x", "mem-leak-fix"],
                ["pgrep", "-f", r"leaktrace attach .*\.reports\.jsonl"]):
        left += subprocess.run(cmd, capture_output=True, text=True).stdout.split()
    return left


def run_demo(*args, timeout=300):
    done = subprocess.run(["bash", str(DEMO), *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    context = f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr[-3000:]}"
    return done, context


def final_report(results: Path, app: str) -> dict:
    lines = (results / f"{app}.reports.jsonl").read_text().splitlines()
    return json.loads(lines[-1])


def calls_logged(results: Path, app: str) -> list:
    text = (results / f"{app}.app.log").read_text()
    return [float(t) for t in re.findall(r" mono=(\d+\.\d+)$", text, re.M)]


def test_readme_command_shows_fibonacci_leak_in_a_container_and_none_when_fixed(docker):
    done, context = run_demo()
    assert done.returncode == 0, context
    leaky, fixed = done.stdout.split("=== mem-leak-fix: final report ===")
    assert re.search(r"^\s+fibonacci\+0x[0-9a-f]+ \[app\]\n\s+child\+0x[0-9a-f]+ \[app\]",
                     leaky, re.M), context
    assert "container docker" in leaky, "the app did not run in a container\n" + context
    assert "FAIL" not in done.stdout and "PASS  no stack includes fibonacci" in fixed, context
    results = Path(KEPT_IN.search(done.stderr)[1])
    summary = json.loads((results / "summary.json").read_text())
    assert summary["ok"] and {r["app"] for r in summary["runs"]} == {"mem-leak", "mem-leak-fix"}
    assert final_report(results, "mem-leak")["stacks"][0]["rank"] == 1
    assert not demo_leftovers(), context


def test_check_mode_plain_process_leak_matches_the_calls_the_app_made(tmp_path):
    done, context = run_demo("--no-setup", "--no-docker", "--leaky", "--seconds", "12",
                             "--rate", "20", "--check", "--out", str(tmp_path))
    assert done.returncode == 0, context
    verdict = json.loads(done.stdout)
    assert verdict["ok"] and [r["app"] for r in verdict["runs"]] == ["mem-leak"], context
    report = final_report(tmp_path, "mem-leak")
    assert report["targets"][0]["container"] is None
    top = report["stacks"][0]
    assert frame_symbols(top)[:2] == ["fibonacci", "child"], frame_symbols(top)
    assert top["bytes"] == top["count"] * BYTES_PER_CALL
    # The reported bytes are 8 KiB x the calls made from the oldest traced one
    # until the age filter's cut-off.
    until = report["taken_ns"] / 1e9 - report["older_than_ms"] / 1000
    since = report["taken_ns"] / 1e9 - top["oldest_s"]
    calls = sum(1 for t in calls_logged(tmp_path, "mem-leak") if since < t <= until)
    assert_within(top["bytes"], calls * BYTES_PER_CALL, 10, "fibonacci bytes\n" + context)


def test_ctrl_c_keeps_the_final_report_and_leaves_nothing_behind(docker, tmp_path):
    proc = subprocess.Popen(
        ["bash", str(DEMO), "--no-setup", "--docker", "--out", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        # As from a terminal: the test runner may have been started with SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        stderr = ""
        while "leaktrace: tracing" not in stderr and time.monotonic() < deadline:
            stderr += proc.stderr.readline()
        assert "leaktrace: tracing" in stderr, stderr
        time.sleep(6)  # one interval report, then Ctrl-C mid-trace
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    context = f"exit {proc.returncode}\nstderr:\n{stderr}{err[-2000:]}"
    assert proc.returncode == 130, context
    assert "leaktrace: stopped (interrupted)" in err, context
    report = final_report(tmp_path, "mem-leak")
    assert stack_with(report, "fibonacci") is not None, context
    assert calls_logged(tmp_path, "mem-leak"), "the container's log was not kept"
    assert not (tmp_path / "mem-leak-fix.reports.jsonl").exists(), "the demo went on after Ctrl-C"
    assert not demo_leftovers(), context
