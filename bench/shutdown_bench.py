#!/usr/bin/env python3
"""Shutdown time: SIGINT to exit of `leaktrace attach`, final report included.

An idle program (bench/malloc_free.c waits on its stdin before allocating)
maps either the system libc or a private copy of it. On the copy no other
tool holds a uprobe, so leaktrace attaches BPF links where the kernel has
them; on the system libc it uses whatever the kernel accepts there (perf
events while a bcc tool, or a uprobe one leaked, holds malloc). Each round
attaches, waits for the probes, sends SIGINT and times until leaktrace's
exit status is collected (the detach helper included: leaktrace waits for it).

Run as root from the repository: .venv/bin/python bench/shutdown_bench.py
(options: --rounds N, --leaktrace PATH)
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LIBC = "/lib/x86_64-linux-gnu/libc.so.6"


def build(out_dir: str) -> str:
    binary = os.path.join(out_dir, "malloc_free")
    subprocess.run(["gcc", "-O2", "-pthread", str(HERE / "malloc_free.c"), "-o", binary], check=True)
    return binary


def one_shutdown(leaktrace: str, pid: int) -> float:
    tracer = subprocess.Popen([leaktrace, "attach", "-p", str(pid)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in tracer.stderr:
        if line.startswith("leaktrace: tracing"):
            break
    else:
        raise SystemExit(f"leaktrace did not start (exit {tracer.wait()})")
    time.sleep(1.0)
    started = time.perf_counter()
    tracer.send_signal(signal.SIGINT)
    tracer.stderr.read()
    tracer.wait()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--leaktrace", default=str(REPO / ".venv" / "bin" / "leaktrace"),
                        help="the leaktrace to time (e.g. another checkout's, side by side)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        binary = build(work)
        private = Path(work) / "libc"
        private.mkdir()
        shutil.copy2(LIBC, private / "libc.so.6")
        for label, env in (("system libc", None), ("private libc copy", {**os.environ, "LD_LIBRARY_PATH": str(private)})):
            target = subprocess.Popen([binary], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)
            try:
                times = [one_shutdown(args.leaktrace, target.pid) for _ in range(args.rounds)]
            finally:
                target.kill()
                target.wait()
            print(f"{label}: SIGINT to exit, median {statistics.median(times):.2f} s "
                  f"(min {min(times):.2f}, max {max(times):.2f}, {args.rounds} rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
