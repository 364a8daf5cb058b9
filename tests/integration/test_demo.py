"""scripts/demo.sh end to end, for real: root, BPF, a Docker daemon, bcc's memleak.

The README's first command (`sudo scripts/demo.sh`) runs exactly as a
newcomer runs it; the others use --check, whose JSON verdict and saved
reports the tests parse. Each run must leave nothing behind: no demo
container, no demo image, no demo process, no Docker daemon it started.

The Docker daemon at the default socket is shared with other tests, so the
runs that need no daemon to answer point the demo at a private socket
(DOCKER_HOST) instead of stopping that one; runs that need memleak to be
missing name a memleak that does not exist (LEAKTRACE_DEMO_MEMLEAK).
"""
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from harness import REPO, _LineReader, frame_symbols, stack_with

pytestmark = [pytest.mark.privileged, pytest.mark.docker]

DEMO = REPO / "scripts" / "demo.sh"
BYTES_PER_CALL = 8192
KEPT_IN = re.compile(r"^demo: reports and logs kept in (\S+)", re.M)
NO_MEMLEAK = {"LEAKTRACE_DEMO_MEMLEAK": "/nonexistent/memleak-bpfcc"}
MEMLEAK_SKIPPED = "demo: bcc's memleak is not installed (package bpfcc-tools): skipping the comparison with it"


def demo_leftovers() -> list:
    """Containers, images and processes of the demo that still exist."""
    left = []
    for cmd in (["docker", "ps", "-aq", "--filter", "label=org.leaktrace.demo"],
                ["docker", "images", "-q", "leaktrace-demo/*"]):
        left += subprocess.run(cmd, capture_output=True, text=True).stdout.split()
    for cmd in (["pgrep", "-x", "mem-leak"], ["pgrep", "-x", "mem-leak-fix"],
                ["pgrep", "-f", r"leaktrace attach .*\.reports\.jsonl"],
                ["pgrep", "-f", r"leaktrace triage --window [0-9]+s --format json"],
                ["pgrep", "-f", r"memleak.* -p [0-9]+ -o 500 [0-9]+ 1$"]):
        left += subprocess.run(cmd, capture_output=True, text=True).stdout.split()
    return left


def run_demo(*args, env=None, timeout=300):
    done = subprocess.run(["bash", str(DEMO), *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env=dict(os.environ, **(env or {})))
    context = f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr[-3000:]}"
    return done, context


def daemons_serving(socket_dir: Path) -> list:
    """PIDs of dockerd or containerd processes whose arguments name socket_dir."""
    done = subprocess.run(["pgrep", "-f", f"(dockerd|containerd) .*{socket_dir}/"],
                          capture_output=True, text=True)
    return [int(pid) for pid in done.stdout.split()]


def mounts_under(where: Path) -> list:
    with open("/proc/mounts") as mounts:
        return [line.split()[1] for line in mounts if line.split()[1].startswith(f"{where}/")]


@pytest.fixture
def private_docker_host():
    """DOCKER_HOST for a socket no daemon answers on, in a short private
    directory (containerd's socket path under it must stay under 108 bytes).
    A daemon the demo failed to stop there is stopped afterwards."""
    where = Path(tempfile.mkdtemp(prefix="ltd-", dir="/tmp"))
    yield where, f"unix://{where}/docker.sock"
    for pid in daemons_serving(where):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while daemons_serving(where) and time.monotonic() < deadline:
        time.sleep(0.5)
    for mount in mounts_under(where):
        subprocess.run(["umount", mount], capture_output=True)
    shutil.rmtree(where, ignore_errors=True)


def final_report(results: Path, app: str) -> dict:
    lines = (results / f"{app}.reports.jsonl").read_text().splitlines()
    return json.loads(lines[-1])


def calls_logged(results: Path, app: str) -> list:
    text = (results / f"{app}.app.log").read_text()
    return [float(t) for t in re.findall(r" mono=(\d+\.\d+)$", text, re.M)]


def test_readme_command_shows_memleak_then_leaktrace_on_a_container_and_none_when_fixed(docker):
    assert os.access("/usr/sbin/memleak-bpfcc", os.X_OK), "scripts/setup.sh installs bpfcc-tools"
    done, context = run_demo()
    assert done.returncode == 0, context
    leaky, fixed = done.stdout.split("=== mem-leak-fix: leaktrace's final report ===")
    assert re.search(r"^\s+fibonacci\+0x[0-9a-f]+ \[app\]\n\s+child\+0x[0-9a-f]+ \[app\]",
                     leaky, re.M), context
    assert "container docker" in leaky, "the app did not run in a container\n" + context
    assert "FAIL" not in done.stdout and "PASS  no stack includes fibonacci" in fixed, context
    results = Path(KEPT_IN.search(done.stderr)[1])
    summary = json.loads((results / "summary.json").read_text())
    assert summary["ok"] and {r["app"] for r in summary["runs"]} == {"mem-leak", "mem-leak-fix"}
    report = final_report(results, "mem-leak")
    assert report["stacks"][0]["rank"] == 1
    # memleak first, shown as it printed it, then leaktrace, then one line on what differs.
    memleak_part = leaky.split("=== mem-leak: bcc's memleak ===\n")[1].split("\n\n")[0]
    printed = (results / "mem-leak.memleak.txt").read_text().splitlines()
    shown = memleak_part.splitlines()[1:]
    assert shown and all(line in printed for line in shown), context
    assert leaky.index("bcc's memleak") < leaky.index("leaktrace's final report")
    memleak_frames = len(shown) - 1
    ours = frame_symbols(report["stacks"][0])
    differs = re.search(r"^what differs: .*$", leaky, re.M)[0]
    assert f"memleak {memleak_frames} frame" in differs and f"leaktrace {len(ours)} frames" in differs
    assert f"leaktrace docker {report['targets'][0]['container']['name']}" in differs
    # The other outputs: verdict and growth, a flame graph file, triage.
    assert re.search(r"^verdict and growth: leak: grew and never freed: ", leaky, re.M), context
    svg = Path(re.search(r"^flame graph: (\S+) ", leaky, re.M)[1])
    assert svg.parent == results and "fibonacci" in svg.read_text()
    triage_line = re.search(r"^triage \(\d+ s of /proc, no BPF\): .*$", leaky, re.M)[0]
    triage = json.loads((results / "mem-leak.triage.json").read_text())
    pid = report["targets"][0]["pid"]
    steps = [s["command"] for s in triage["next_steps"] if s["category"] == "user_anon"]
    if steps == [f"leaktrace attach -p {pid}"]:
        assert f"next: leaktrace attach -p {pid}  #" in triage_line
    else:  # a busier process on this shared machine grew faster
        assert re.search(rf"pid {pid} (ranked \d+ of \d+ growers|was not among its \d+ growers)$"
                         rf"|so not pid {pid};", triage_line), triage_line
    assert not demo_leftovers(), context


def test_check_mode_plain_process_leak_matches_the_calls_the_app_made(tmp_path):
    done, context = run_demo("--no-setup", "--no-docker", "--leaky", "--seconds", "12",
                             "--rate", "20", "--check", "--out", str(tmp_path), env=NO_MEMLEAK)
    assert done.returncode == 0, context
    # Without memleak: one line says the comparison is skipped, and it is.
    assert [l for l in done.stderr.splitlines() if "memleak" in l] == [MEMLEAK_SKIPPED], context
    assert not (tmp_path / "mem-leak.memleak.txt").exists()
    assert "what differs" not in done.stderr and "verdict and growth: leak" in done.stderr
    verdict = json.loads(done.stdout)
    assert verdict["ok"] and [r["app"] for r in verdict["runs"]] == ["mem-leak"], context
    report = final_report(tmp_path, "mem-leak")
    assert report["targets"][0]["container"] is None
    top = report["stacks"][0]
    assert frame_symbols(top)[:2] == ["fibonacci", "child"], frame_symbols(top)
    assert top["bytes"] == top["count"] * BYTES_PER_CALL
    # The reported bytes are 8 KiB x the calls made from the start of tracing
    # until the age filter's cut-off; a call made while the probes went live
    # (attach_s) may be missed, none after.
    until = report["taken_ns"] / 1e9 - report["older_than_ms"] / 1000
    since = report["taken_ns"] / 1e9 - report["elapsed_s"]
    calls = calls_logged(tmp_path, "mem-leak")
    most = sum(1 for t in calls if since < t <= until)
    least = sum(1 for t in calls if since + report["attach_s"] < t <= until)
    assert least * 0.9 <= top["count"] <= most * 1.1, (
        f"fibonacci: {top['count']} blocks, {least}..{most} calls\n" + context)


def interrupt_demo(args, ready, env=None):
    """Run the demo, press Ctrl-C once ready(stderr lines) holds; (exit status, stderr)."""
    proc = subprocess.Popen(
        ["bash", str(DEMO), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True, env=dict(os.environ, **(env or {})),
        # As from a terminal: the test runner may have been started with SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    stderr = _LineReader(proc.stderr)
    try:
        deadline = time.monotonic() + 120
        while not ready(stderr.lines):
            assert time.monotonic() < deadline and proc.poll() is None, stderr.text()
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    stderr.join()
    return proc.returncode, f"exit {proc.returncode}\nstderr:\n{stderr.text()[-3000:]}"


def test_ctrl_c_keeps_the_final_report_and_leaves_nothing_behind(docker, tmp_path):
    tracing = [0.0]

    def one_report_in(lines):
        # One interval report after the probes are live, then Ctrl-C mid-trace.
        if not tracing[0] and any("leaktrace: tracing" in line for line in lines):
            tracing[0] = time.monotonic()
        return bool(tracing[0]) and time.monotonic() - tracing[0] > 6

    status, context = interrupt_demo(["--no-setup", "--docker", "--out", str(tmp_path)],
                                     one_report_in, env=NO_MEMLEAK)
    assert status == 130, context
    # The demo stops leaktrace with SIGTERM (or the terminal's SIGINT reaches it first).
    assert re.search(r"leaktrace: stopped \((interrupted|terminated)\)", context), context
    report = final_report(tmp_path, "mem-leak")
    assert stack_with(report, "fibonacci") is not None, context
    assert calls_logged(tmp_path, "mem-leak"), "the container's log was not kept"
    assert not (tmp_path / "mem-leak-fix.reports.jsonl").exists(), "the demo went on after Ctrl-C"
    assert not demo_leftovers(), context


def test_ctrl_c_while_memleak_runs_stops_it_and_leaves_nothing_behind(tmp_path):
    memleak_out = tmp_path / "mem-leak.memleak.txt"

    def memleak_attached(_lines):
        return memleak_out.exists() and "Attaching to pid" in memleak_out.read_text()

    status, context = interrupt_demo(["--no-setup", "--no-docker", "--leaky", "--out", str(tmp_path)],
                                     memleak_attached)
    assert status == 130, context
    assert not (tmp_path / "mem-leak.reports.jsonl").exists(), "the demo went on after Ctrl-C"
    assert not demo_leftovers(), context


def test_starts_a_docker_daemon_when_none_answers_and_leaves_none_running(docker, tmp_path,
                                                                          private_docker_host):
    where, host = private_docker_host
    done, context = run_demo("--no-setup", "--leaky", "--seconds", "10", "--check",
                             "--out", str(tmp_path), env=dict(NO_MEMLEAK, DOCKER_HOST=host))
    assert done.returncode == 0, context
    assert "demo: no Docker daemon answers: starting one for the demo" in done.stderr, context
    report = final_report(tmp_path, "mem-leak")
    box = report["targets"][0]["container"]
    assert box and box["runtime"] == "docker", "the app did not run in a container\n" + context
    # It ran on the daemon the demo started, which kept its state beside the socket...
    assert (where / "data-root" / "containers").is_dir(), context
    # ... and that daemon is gone, with its containerd and mounts; the shared one still answers.
    assert not daemons_serving(where) and not mounts_under(where), context
    answers = subprocess.run(["docker", "-H", host, "info"], capture_output=True, timeout=30)
    assert answers.returncode != 0, "a daemon still answers on the demo's socket"
    assert subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    assert not demo_leftovers(), context


def test_falls_back_to_a_plain_process_in_one_line_when_docker_cannot_run(docker, tmp_path,
                                                                         private_docker_host):
    where, host = private_docker_host
    (where / "data-root").write_text("a file where dockerd wants its data directory\n")
    done, context = run_demo("--no-setup", "--fixed", "--seconds", "10", "--check",
                             "--out", str(tmp_path), env={"DOCKER_HOST": host})
    assert done.returncode == 0, context
    said = [l for l in done.stderr.splitlines() if "Docker cannot run" in l]
    assert len(said) == 1 and said[0].endswith(": running the app as a plain process"), context
    assert "dockerd did not come up: " in said[0], context
    assert final_report(tmp_path, "mem-leak-fix")["targets"][0]["container"] is None
    assert json.loads(done.stdout)["ok"], context
    assert not daemons_serving(where), context
    assert not demo_leftovers(), context
