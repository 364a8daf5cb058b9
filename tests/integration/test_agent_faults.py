"""The agent under bad input and faults: one line and an exit code for what a
user got wrong; for what goes wrong while it runs, the probes detached, the
evidence so far written, and the agent going on."""
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agent_support import AgentProcess, Workloads, free_port, metric_value, wait_for
from harness import REPO, compile_c

pytestmark = pytest.mark.privileged

QUICK = ("--period", "1s", "--window", "10s", "--trace-for", "6s", "--interval", "1s",
         "--targets", "process")
WAIT_S = 180


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    return compile_c("fleet_workload.c", tmp_path_factory.mktemp("fleet"))


def run_agent(*args):
    return subprocess.run([sys.executable, "-m", "leaktrace", "agent", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def assert_one_line(done, *fragments):
    assert done.returncode == 64, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert all(f in lines[0] for f in fragments), lines[0]


def test_an_unreachable_out_is_one_line_and_exit_64(tmp_path):
    (tmp_path / "a-file").write_text("")
    done = run_agent("--out", str(tmp_path / "a-file" / "out"), "--listen", f"127.0.0.1:{free_port()}")
    assert_one_line(done, "--out", "cannot write there")


def test_a_port_in_use_is_one_line_and_exit_64(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_agent("--out", str(tmp_path / "out"), "--listen", f"127.0.0.1:{port}")
    assert_one_line(done, f"127.0.0.1:{port}", "in use")


def bpf_programs_held(pid):
    """BPF programs the process holds descriptors of (its probes)."""
    held = 0
    for fdinfo in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            held += "prog_id:" in fdinfo.read_text()
        except OSError:
            continue
    return held


def tracing(agent):
    """The first interval of a trace is recorded: its probes are live."""
    return any(agent.out_dir.glob("*/trace.rec"))


def test_sigterm_during_a_trace_detaches_and_keeps_the_evidence(workload, tmp_path):
    with Workloads("leaktrace-agent-term") as work:
        leak = work.start(workload, "leak")
        with AgentProcess(tmp_path / "out", *QUICK, "--trace-for", "10m", "--cgroup", work.path) as agent:
            wait_for("a trace under way", lambda: tracing(agent), WAIT_S)
            assert agent.stop(signal.SIGTERM) == 0
        assert "stopped (interrupted)" in agent.stderr.text()
        [event] = agent.events()
        assert event["trace"]["outcome"] == "interrupted"
        assert "leak_block" in [s["function"] for s in event["sites"]]
        recording = next(f for f in event["files"] if f.endswith("trace.rec"))
        replay = subprocess.run([sys.executable, "-m", "leaktrace", "report", recording, "--format",
                                 "json"], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert replay.returncode == 0 and "leak_block" in replay.stdout
        assert leak.poll() is None


def test_a_target_exiting_mid_trace_ends_it_and_the_agent_goes_on(workload, tmp_path):
    with Workloads("leaktrace-agent-exit") as work:
        leak = work.start(workload, "leak")
        with AgentProcess(tmp_path / "out", *QUICK, "--trace-for", "10m", "--cgroup", work.path) as agent:
            wait_for("a trace under way", lambda: tracing(agent), WAIT_S)
            assert bpf_programs_held(agent.proc.pid) > 0
            leak.kill()
            [event] = wait_for("the trace's event", agent.events, 60)
            assert event["trace"]["outcome"] == "target_exited"
            assert agent.proc.poll() is None
            assert bpf_programs_held(agent.proc.pid) == 0  # detached, with the agent still running
            metrics = agent.metrics()
            assert metric_value(metrics, "leaktrace_escalations_total", outcome="target_exited") == 1


class DiskFiller(threading.Thread):
    """Takes every free page of a file system until stopped."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            try:
                os.write(self.fd, b"\0" * 4096)
            except OSError:
                self.done.wait(0.01)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.join()
        os.close(self.fd)


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_for_out_is_one_line_per_write_and_retention_bounds_it(workload, small_disk):
    with Workloads("leaktrace-agent-disk") as work:
        work.start(workload, "leak")
        with AgentProcess(small_disk / "out", *QUICK, "--cooldown", "1s", "--retain", "2",
                          "--max-out", "1MiB", "--cgroup", work.path) as agent:
            wait_for("three traces", lambda: len(agent.events()) >= 3, WAIT_S)
            kept = [p for p in (small_disk / "out").iterdir() if p.is_dir()]
            assert len(kept) <= 2
            # fill the disk, and keep it full as retention frees room: writes fail, the agent goes on
            with DiskFiller(small_disk / "filler"):
                agent.wait_line("No space left on device; the agent continues", WAIT_S)
            wait_for("a write error counted",
                     lambda: (metric_value(agent.metrics(), "leaktrace_agent_write_errors_total") or 0) > 0,
                     WAIT_S)
            assert agent.proc.poll() is None
        failures = [l for l in agent.stderr.lines if "cannot write" in l]
        assert failures and all("No space left on device" in l for l in failures)
        assert "Traceback" not in agent.stderr.text()
