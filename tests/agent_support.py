"""What the agent's integration tests share: workloads in a cgroup of their
own, the agent run through its real entry point, and a real Prometheus.

Workloads go into a fresh cgroup v2 directory, and the agent is told to watch
only that cgroup (--cgroup), so other work on a shared machine is neither
traced nor able to delay the test's escalations.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, List, Optional

from harness import REPO, _LineReader
from leaktrace.process.cgroups import cgroup2_root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(what: str, probe: Callable, timeout: float, every: float = 1.0):
    """probe()'s first true value within timeout, else an AssertionError naming what."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)


class Workloads:
    """Processes started in a cgroup of their own; killed, and the cgroup removed, at exit."""

    def __init__(self, name: str):
        root = cgroup2_root()
        assert root, "no cgroup v2 hierarchy is mounted"
        self.path = f"/{name}-{os.getpid()}"
        self.directory = Path(root + self.path)
        self.directory.mkdir(exist_ok=True)
        self.procs: List[subprocess.Popen] = []

    def start(self, *argv) -> subprocess.Popen:
        proc = subprocess.Popen([str(a) for a in argv], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        (self.directory / "cgroup.procs").write_text(str(proc.pid))
        self.procs.append(proc)
        return proc

    def __enter__(self) -> "Workloads":
        return self

    def __exit__(self, *exc) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for _ in range(50):  # the cgroup empties once the kernel has reaped them
            try:
                self.directory.rmdir()
                return
            except OSError:
                time.sleep(0.1)


class AgentProcess:
    """`python -m leaktrace agent ...` with its stderr collected."""

    def __init__(self, out_dir: Path, *args: str, port: int = 0):
        self.port = port or free_port()
        self.out_dir = Path(out_dir)
        command = [sys.executable, "-m", "leaktrace", "agent", "--listen", f"127.0.0.1:{self.port}",
                   "--out", str(self.out_dir), *args]
        self.proc = subprocess.Popen(command, cwd=REPO, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.stderr = _LineReader(self.proc.stderr)

    def wait_line(self, fragment: str, timeout: float) -> str:
        line = self.stderr.wait_for(lambda l: fragment in l, timeout)
        if line is None:
            raise AssertionError(f"agent printed no line with {fragment!r} in {timeout:.0f} s; "
                                 f"exit={self.proc.poll()} stderr:\n{self.stderr.text()}")
        return line

    def ready(self, timeout: float = 60) -> "AgentProcess":
        self.wait_line("metrics on http://", timeout)
        return self

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as answer:
            return answer.read().decode()

    def events(self) -> List[dict]:
        path = self.out_dir / "events.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 120) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout)
        finally:
            self.stderr.join()

    def __enter__(self) -> "AgentProcess":
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.stop()


def metric_value(text: str, name: str, **labels) -> Optional[float]:
    """The value of one sample in the text exposition format, or None."""
    for line in text.splitlines():
        if not line.startswith(name + ("{" if labels else " ")):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


class Prometheus:
    """Debian's prometheus server on loopback, scraping targets every second."""

    def __init__(self, workdir: Path, targets: List[str]):
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: leaktrace\n    static_configs: [{{targets: {json.dumps(targets)}}}]\n")
        self.log = open(workdir / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for("prometheus ready", self._ready, 60, every=0.5)

    def _ready(self) -> bool:
        assert self.proc.poll() is None, f"prometheus exited: {self.proc.returncode}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=5) as answer:
                return answer.status == 200
        except OSError:
            return False

    def query(self, promql: str) -> list:
        """The result vector of an instant query through the HTTP API."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as answer:
            body = json.load(answer)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def __enter__(self) -> "Prometheus":
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
