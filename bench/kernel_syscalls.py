#!/usr/bin/env python3
"""Kernel-mode overhead: syscall loops untraced, under `leaktrace kernel`, and
under bcc memleak's kernel mode, all in one run on the same binary.

Each loop (pipe+close, open+close, socketpair+close; see
kernel_syscalls_loop.c) makes the kernel allocate and free on every op.
leaktrace runs with its defaults: every kind, process, cgroup and cache
attribution on. memleak runs as `memleak-bpfcc` (kernel mode: no -p), with
BCC_KERNEL_SOURCE pointing at leaktrace's merged headers. Slowdown is
untraced ops/s over traced ops/s. Two targets are printed per loop: the
issue's slowdown of at most TARGET_SLOWDOWN, and leaktrace's extra cost at
most half of memleak's: (leaktrace - 1) <= (memleak - 1) / 2.

Run as root from the repository: .venv/bin/python bench/kernel_syscalls.py
Options: --seconds S per measurement, --repeat N (median kept), --skip-memleak,
--full-stacks (also leaktrace --full-stacks, which walks every stack as memleak does).
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from leaktrace.probes import headers  # noqa: E402

LOOPS = ("pipe", "open", "socketpair")
MEMLEAK = "/usr/sbin/memleak-bpfcc"
LEAKTRACE = REPO / ".venv" / "bin" / "leaktrace"
TARGET_SLOWDOWN = 2.5


def build(out_dir: str) -> str:
    binary = os.path.join(out_dir, "kernel_syscalls_loop")
    subprocess.run(["gcc", "-O2", "-o", binary, str(HERE / "kernel_syscalls_loop.c")], check=True)
    return binary


def ops_per_s(binary: str, loop: str, seconds: float, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        out = subprocess.run([binary, loop, str(seconds)], capture_output=True, text=True, check=True)
        runs.append(float(out.stdout.split("ops_per_s=")[1]))
    return statistics.median(runs)


def measure_all(binary: str, seconds: float, repeat: int) -> Dict[str, float]:
    return {loop: ops_per_s(binary, loop, seconds, repeat) for loop in LOOPS}


def start_tracer(command: List[str], ready: str, env: dict) -> subprocess.Popen:
    """Start a tracer and block until it prints `ready` (on stdout or stderr)."""
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        log.seek(0)
        text = log.read()
        if ready in text:
            time.sleep(1)  # let it settle after attaching
            proc.log = log
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    log.seek(0)
    raise SystemExit(f"{command[0]} did not start:\n{log.read()[-2000:]}")


def stop_tracer(proc: subprocess.Popen) -> str:
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    proc.log.seek(0)
    return proc.log.read()


def under(command: List[str], ready: str, env: dict, binary: str, seconds: float, repeat: int):
    proc = start_tracer(command, ready, env)
    try:
        return measure_all(binary, seconds, repeat)
    finally:
        stop_tracer(proc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-memleak", action="store_true")
    parser.add_argument("--full-stacks", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: tracing needs it")
    env = dict(os.environ)
    env["BCC_KERNEL_SOURCE"] = headers.ensure_kernel_source() or env.get("BCC_KERNEL_SOURCE", "")
    with tempfile.TemporaryDirectory() as tmp:
        binary = build(tmp)
        results = {"untraced": measure_all(binary, args.seconds, args.repeat)}
        results["leaktrace"] = under([str(LEAKTRACE), "kernel", "3600", "--format", "json"],
                                     "leaktrace: tracing", env, binary, args.seconds, args.repeat)
        if args.full_stacks:
            results["--full-stacks"] = under([str(LEAKTRACE), "kernel", "3600", "--format", "json",
                                              "--full-stacks"], "leaktrace: tracing", env, binary,
                                             args.seconds, args.repeat)
        if not args.skip_memleak:
            results["memleak"] = under(["/usr/bin/python3", MEMLEAK, "3600"], "Attaching to kernel",
                                       env, binary, args.seconds, args.repeat)
        results["untraced again"] = measure_all(binary, args.seconds, args.repeat)
    print_table(results)
    return 0


def print_table(results: Dict[str, Dict[str, float]]) -> None:
    base = {loop: max(results["untraced"][loop], results["untraced again"][loop]) for loop in LOOPS}
    print(f"{'loop':<12}{'untraced ops/s':>16}{'leaktrace ops/s':>17}{'slowdown':>10}"
          f"{f'<= {TARGET_SLOWDOWN}x':>9}{'memleak ops/s':>15}{'slowdown':>10}  half of memleak's")
    for loop in LOOPS:
        ours = base[loop] / results["leaktrace"][loop]
        line = (f"{loop:<12}{base[loop]:>16,.0f}{results['leaktrace'][loop]:>17,.0f}{ours:>9.2f}x"
                f"{'yes' if ours <= TARGET_SLOWDOWN else 'NO':>9}")
        if "memleak" in results:
            theirs = base[loop] / results["memleak"][loop]
            met = "yes" if ours - 1 <= (theirs - 1) / 2 else "NO"
            line += f"{results['memleak'][loop]:>15,.0f}{theirs:>9.2f}x  {met}"
        if "--full-stacks" in results:
            line += f"   --full-stacks {base[loop] / results['--full-stacks'][loop]:.2f}x"
        print(line)
    print("slowdown = untraced ops/s / traced ops/s (untraced: best of the runs before and after); "
          f"targets: slowdown <= {TARGET_SLOWDOWN}x; leaktrace's extra cost <= half of memleak's")


if __name__ == "__main__":
    sys.exit(main())
