"""The agent's container image (deploy/build-image.sh), run with Docker in the
host's PID namespace with the DaemonSet's capabilities, finds a leak in
another container."""
import json
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from agent_support import free_port, metric_value, wait_for
from harness import REPO, compile_c

pytestmark = [pytest.mark.privileged, pytest.mark.docker]

BUILD_TIMEOUT_S = 1800  # a first build downloads ~130 MB of Debian packages
FOUND_WITHIN_S = 240
# Docker 20.10 knows neither CAP_BPF nor CAP_PERFMON: SYS_ADMIN stands in (as the DaemonSet says).
UNKNOWN_TO_DOCKER = {"BPF", "PERFMON"}


def daemonset_capabilities():
    manifest = REPO / "deploy" / "kubernetes" / "daemonset.yaml"
    daemonset = next(d for d in yaml.safe_load_all(manifest.read_text()) if d and d["kind"] == "DaemonSet")
    added = daemonset["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"]
    return [c for c in added if c not in UNKNOWN_TO_DOCKER]


@pytest.fixture(scope="module")
def agent_image(docker):
    tag = f"leaktrace-agent-test:{os.getpid()}"
    done = subprocess.run(["bash", str(REPO / "deploy" / "build-image.sh"), tag], capture_output=True,
                          text=True, timeout=BUILD_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    yield tag
    subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


def run(*args):
    """A docker CLI command that must succeed; its output."""
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_agent_image_finds_a_leak_in_another_container(docker, agent_image, tmp_path):
    binary = compile_c("fleet_workload.c", tmp_path)
    workload = docker.build_image([binary], f"leaktrace-fleet-workload:{os.getpid()}")
    leak_name, agent_name = f"leaktrace-leak-{os.getpid()}", f"leaktrace-agent-{os.getpid()}"
    out, port = tmp_path / "out", free_port()
    out.mkdir()
    try:
        run("run", "-d", "--name", leak_name, "--network", "none", workload,
            "/app/fleet_workload", "leak")
        pid = int(run("inspect", "-f", "{{.State.Pid}}", leak_name))
        cgroup = Path(f"/proc/{pid}/cgroup").read_text().splitlines()[-1].split("::", 1)[1]
        caps = [arg for cap in daemonset_capabilities() for arg in ("--cap-add", cap)]
        run("run", "-d", "--name", agent_name, "--pid", "host", "--network", "host", "--cap-drop", "ALL",
            *caps, "-v", "/sys/kernel/tracing:/sys/kernel/tracing", "-v", "/sys/kernel/debug:/sys/kernel/debug",
            "-v", f"{out}:/out", agent_image, "--listen", f"127.0.0.1:{port}", "--out", "/out",
            "--period", "1s", "--window", "20s", "--trace-for", "10s", "--interval", "2s",
            "--targets", "process", "--cgroup", cgroup)
        events = out / "events.jsonl"
        wait_for("the agent's first trace", events.exists, FOUND_WITHIN_S)
        event = json.loads(events.read_text().splitlines()[0])
        container_id = run("inspect", "-f", "{{.Id}}", leak_name)
        assert event["target"]["pid"] == pid and container_id[:12] in event["target"]["container"]
        top = event["sites"][0]
        assert (top["function"], top["comm"], top["verdict"]) == ("leak_block", "fleet_workload", "leak")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            metrics = answer.read().decode()
        assert metric_value(metrics, "leaktrace_site_outstanding_bytes", function="leak_block") > 0
    finally:
        subprocess.run(["docker", "rm", "-f", leak_name, agent_name], capture_output=True)
        subprocess.run(["docker", "rmi", "-f", workload], capture_output=True)

