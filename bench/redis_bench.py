#!/usr/bin/env python3
"""redis-benchmark SET/GET (1 KB values) against Debian's redis-server (jemalloc):
untraced, then under `leaktrace attach -p PID`, in one run; ratios printed.
Also shows what bcc memleak says when asked to attach to the same server.

Run as root from the repository: .venv/bin/python bench/redis_bench.py
(options: --requests N, --clients C, --port P)
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from leaktrace.probes import headers  # noqa: E402
LEAKTRACE = [str(REPO / ".venv/bin/leaktrace")]
MEMLEAK = "/usr/sbin/memleak-bpfcc"


def start_server(port: int, workdir: str) -> subprocess.Popen:
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", workdir],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True).stdout.strip() == "PONG":
            return server
        time.sleep(0.1)
    server.kill()
    raise RuntimeError("redis-server did not answer")


def throughput(port: int, requests: int, clients: int) -> dict:
    """requests per second for SET and GET."""
    out = subprocess.run(["redis-benchmark", "-p", str(port), "-t", "set,get", "-d", "1024",
                          "-n", str(requests), "-c", str(clients), "--csv"],
                         capture_output=True, text=True, check=True).stdout
    rows = list(csv.reader(io.StringIO(out)))
    return {row[0]: float(row[1]) for row in rows[1:] if row and row[0] in ("SET", "GET")}


def under_tracer(argv, ready: str, stream: str, run):
    tracer = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True)
    lines = []
    for line in getattr(tracer, stream):
        lines.append(line.rstrip())
        if ready in line:
            break
    try:
        return (run() if tracer.poll() is None else None), lines
    finally:
        if tracer.poll() is None:
            os.killpg(tracer.pid, signal.SIGINT)
        out, err = tracer.communicate(timeout=60)
        lines += (out + err).splitlines()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--port", type=int, default=6390)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("redis_bench.py: run as root")
    headers.ensure_kernel_source(lambda msg: None)  # memleak needs them too
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(args.port, tmp)
        try:
            bench = lambda: throughput(args.port, args.requests, args.clients)  # noqa: E731
            untraced = bench()
            traced, _ = under_tracer(LEAKTRACE + ["attach", "-p", str(server.pid)], "leaktrace: tracing",
                                     "stderr", bench)
            untraced_after = bench()
            _, memleak_lines = under_tracer(["/usr/bin/python3", MEMLEAK, "-p", str(server.pid), "5"],
                                            "Attaching to pid", "stdout", lambda: time.sleep(3))
        finally:
            server.terminate()
            server.wait()
    print(f"redis-benchmark -t set,get -d 1024 -n {args.requests} -c {args.clients} (requests/s)")
    print(f"{'op':4} {'untraced':>10} {'leaktrace':>10} {'untraced again':>15} {'traced/untraced':>16}")
    for op in ("SET", "GET"):
        base = (untraced[op] + untraced_after[op]) / 2
        print(f"{op:4} {untraced[op]:10.0f} {traced[op]:10.0f} {untraced_after[op]:15.0f} "
              f"{traced[op] / base:15.2f}x")
    print("bcc memleak -p PID on the same server said:")
    for line in memleak_lines[-8:]:
        print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
