#!/usr/bin/env python3
"""Attach and detach times: leaktrace cold and warm, and bcc's memleak, in one run.

Targets: a small idle program (bench/malloc_free.c, waiting on its stdin) and,
when installed, Debian's redis-server (jemalloc). Per round and target:
  - leaktrace cold: a fresh, empty LEAKTRACE_CACHE_DIR (no unwind tables, no
    placements); the kernel headers are the machine's, already prepared;
  - leaktrace warm: the same cache again;
  - bcc memleak.
"attach" is command start to every probe live: leaktrace's "tracing" line
(printed once all are live); memleak prints its line before it attaches, so
its probes count as live when it holds as many perf-event fds (one per
uprobe) as it ends up holding. "detach" is SIGINT to exit. The
breakdown is leaktrace's own (LEAKTRACE_TIMING=1) of the median round.

Run as root from the repository: .venv/bin/python bench/attach_bench.py
(options: --rounds N, --skip-memleak, --skip-redis)
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
from typing import Callable, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from leaktrace.probes import headers  # noqa: E402

LEAKTRACE = [str(REPO / ".venv/bin/leaktrace")]
MEMLEAK = ["/usr/bin/python3", "/usr/sbin/memleak-bpfcc"]
PORT = 6391


def memleak_probes(pid: int) -> int:
    """How many uprobes memleak (pid) holds now: bcc opens each as a perf event fd."""
    count = 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                count += os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[perf_event]"
            except OSError:
                pass
    except OSError:
        pass
    return count


def start_small(work: str) -> subprocess.Popen:
    binary = os.path.join(work, "malloc_free")
    if not os.path.exists(binary):
        subprocess.run(["gcc", "-O2", "-pthread", str(HERE / "malloc_free.c"), "-o", binary], check=True)
    return subprocess.Popen([binary], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)


def start_redis(work: str) -> subprocess.Popen:
    server = subprocess.Popen(["redis-server", "--port", str(PORT), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", work],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        answer = subprocess.run(["redis-cli", "-p", str(PORT), "ping"], capture_output=True, text=True)
        if answer.stdout.strip() == "PONG":
            return server
        time.sleep(0.1)
    server.kill()
    raise RuntimeError("redis-server did not answer")


def leaktrace_once(pid: int, cache: str, tries: int = 3) -> Tuple[float, float, str]:
    """(attach s, detach s, leaktrace's own breakdown) of one attach; again
    when another tool's uprobe made the kernel refuse a link meanwhile."""
    try:
        return _leaktrace_once(pid, cache)
    except LinkRefused as refused:
        if tries <= 1:
            raise RuntimeError(str(refused))
        print(f"retrying: {refused}", file=sys.stderr)
        return leaktrace_once(pid, cache, tries - 1)


class LinkRefused(Exception):
    pass


def _leaktrace_once(pid: int, cache: str) -> Tuple[float, float, str]:
    env = dict(os.environ, LEAKTRACE_CACHE_DIR=cache, LEAKTRACE_TIMING="1", PYTHONUNBUFFERED="1")
    started = time.monotonic()
    tracer = subprocess.Popen(LEAKTRACE + ["attach", "-p", str(pid), "3600"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    lines = []
    for line in tracer.stderr:
        lines.append(line.strip())
        if line.startswith("leaktrace: tracing"):
            break
    else:
        tracer.wait()
        problem = "leaktrace did not start: " + " | ".join(lines)
        raise LinkRefused(problem) if "refused a uprobe link" in problem else RuntimeError(problem)
    attach_s = time.monotonic() - started
    breakdown = ""
    for line in tracer.stderr:  # the timing line follows the tracing line at once
        breakdown = line.split(": ", 2)[-1].strip()
        break
    time.sleep(0.5)
    stop = time.monotonic()
    os.killpg(tracer.pid, signal.SIGINT)
    tracer.communicate(timeout=120)
    return attach_s, time.monotonic() - stop, breakdown


def memleak_once(pid: int, expected: int) -> Tuple[float, float, int]:
    """(attach s, detach s, probes it held) of one memleak run; expected: the
    probe count a first run ended with (0: learn it, wait 3 s)."""
    started = time.monotonic()
    tracer = subprocess.Popen(MEMLEAK + ["-p", str(pid), "3600"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    held, last_change = 0, time.monotonic()
    while time.monotonic() - started < 60:
        now_held = memleak_probes(tracer.pid)
        if now_held != held:
            held, last_change = now_held, time.monotonic()
        if (expected and held >= expected) or (not expected and held and time.monotonic() - last_change > 3):
            break
        time.sleep(0.005)
    attach_s = (time.monotonic() if expected else last_change) - started
    time.sleep(0.5)
    stop = time.monotonic()
    os.killpg(tracer.pid, signal.SIGINT)
    tracer.wait(120)
    return attach_s, time.monotonic() - stop, held


def bench_target(name: str, start: Callable[[str], subprocess.Popen], rounds: int, with_memleak: bool,
                 work: str) -> Dict[str, List]:
    results: Dict[str, List] = {"cold": [], "warm": [], "memleak": []}
    target = start(work)
    expected = 0
    try:
        for _ in range(rounds):
            cache = tempfile.mkdtemp(prefix="lt-cache-", dir=work)
            results["cold"].append(leaktrace_once(target.pid, cache))
            results["warm"].append(leaktrace_once(target.pid, cache))
            shutil.rmtree(cache, ignore_errors=True)
            if with_memleak:
                attach_s, detach_s, held = memleak_once(target.pid, expected)
                expected = expected or held
                results["memleak"].append((attach_s, detach_s, f"{held} uprobes"))
    finally:
        target.kill()
        target.wait()
    return results


def median_row(samples: List[Tuple[float, float, str]]) -> Optional[Tuple[float, float, str]]:
    if not samples:
        return None
    ordered = sorted(samples, key=lambda s: s[0])
    return (statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples),
            ordered[len(ordered) // 2][2])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-memleak", action="store_true")
    parser.add_argument("--skip-redis", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("attach_bench.py: run as root")
    # The machine's headers, prepared once: a cold cache must not time their merge.
    headers.ensure_kernel_source(lambda msg: None)  # sets BCC_KERNEL_SOURCE when it must
    targets = [("small program", start_small)]
    if not args.skip_redis and shutil.which("redis-server"):
        targets.append(("redis-server", start_redis))
    print(f"attach = command start to every probe live; detach = SIGINT to exit; "
          f"medians of {args.rounds} rounds; uname -r {os.uname().release}; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'target':14} {'mode':16} {'attach s':>8} {'detach s':>8}  breakdown of the median round")
    with tempfile.TemporaryDirectory() as work:
        for name, start in targets:
            results = bench_target(name, start, args.rounds, not args.skip_memleak, work)
            for mode, label in (("cold", "leaktrace cold"), ("warm", "leaktrace warm"),
                                ("memleak", "bcc memleak")):
                row = median_row(results[mode])
                if row:
                    print(f"{name:14} {label:16} {row[0]:8.2f} {row[1]:8.2f}  {row[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
