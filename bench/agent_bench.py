#!/usr/bin/env python3
"""What `leaktrace agent` costs: its CPU and memory while it only watches (every
process, cgroup and slab cache of this host), and while it traces a leaking
process (bcc's compile included), with the probe cost it measured.

Run as root from the repository: .venv/bin/python bench/agent_bench.py
(options: --idle S, --period S; the trace uses a 20 s window so it starts soon)
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from agent_support import Workloads, free_port  # noqa: E402
from harness import compile_c  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def memory(pid: int) -> dict:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {key: int(status[key].split()[0]) // 1024 for key in ("VmRSS", "VmHWM")}  # MiB


def start_agent(out: str, *args: str) -> subprocess.Popen:
    command = [str(REPO / ".venv/bin/leaktrace"), "agent", "--listen", f"127.0.0.1:{free_port()}",
               "--out", out, *args]
    agent = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    for line in agent.stderr:
        if "metrics on" in line:
            return agent
    raise RuntimeError("the agent did not start")


def idle(seconds: float, period: str, out: str) -> dict:
    """Watching only: every process and cache of this host, no trace."""
    agent = start_agent(out, "--period", period, "--no-escalate")
    try:
        time.sleep(min(5.0, seconds))  # start-up (imports) is not steady state
        before, started = cpu_seconds(agent.pid), time.monotonic()
        time.sleep(seconds)
        used, elapsed = cpu_seconds(agent.pid) - before, time.monotonic() - started
        return {"cpu_percent_of_one_core": 100 * used / elapsed, **memory(agent.pid),
                "processes": sum(p.name.isdigit() for p in Path("/proc").iterdir())}
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait()


def tracing(out: str, workload: Path) -> dict:
    """One trace of a leaking process: the agent's CPU and peak memory over it."""
    with Workloads("leaktrace-agent-bench") as work:
        work.start(workload, "leak")
        agent = start_agent(out, "--period", "1s", "--window", "20s", "--trace-for", "30s",
                            "--interval", "5s", "--targets", "process", "--cgroup", work.path,
                            "--cooldown", "1h")
        try:
            for line in agent.stderr:
                if "tracing it" in line:
                    break
            before, started = cpu_seconds(agent.pid), time.monotonic()
            for line in agent.stderr:
                if ": completed" in line or ": over_budget" in line or ": failed" in line:
                    break
            used, elapsed = cpu_seconds(agent.pid) - before, time.monotonic() - started
            peak = memory(agent.pid)["VmHWM"]
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait()
    event = json.loads((Path(out) / "events.jsonl").read_text().splitlines()[0])
    return {"trace_wall_s": round(elapsed, 1), "agent_cpu_s": round(used, 2),
            "agent_cpu_percent_of_one_core": round(100 * used / elapsed, 1), "peak_rss_mib": peak,
            "probe_seconds_measured": event["cost"]["probe_seconds"], "outcome": event["trace"]["outcome"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--idle", type=float, default=120.0, help="seconds of idle measurement")
    parser.add_argument("--period", default="10s", help="the agent's --period while idle")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        workload = compile_c("fleet_workload.c", Path(work))
        result = {"idle": idle(args.idle, args.period, f"{work}/idle"),
                  "idle_period_1s": idle(args.idle / 2, "1s", f"{work}/idle1"),
                  "tracing": tracing(f"{work}/trace", workload)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
