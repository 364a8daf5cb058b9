"""Where the start-up and the exit go: named steps, timed.

Every step is timed (two clock reads). With LEAKTRACE_TIMING=1 the breakdown
is printed on stderr when tracing starts and again after the detach, so a
slow attach says which step was slow (compile, symbol tables, unwind tables,
placement, uprobes). On a terminal, a step still running after a second says
what it is doing, as compilers and indexers do; pipes and files get no
progress lines, so scripts reading stderr see the same lines as before.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator, List, Tuple

from .console import stderr_line

# How long a step runs before its progress line (tests set 0 to see every one).
PROGRESS_AFTER_S = float(os.environ.get("LEAKTRACE_PROGRESS_AFTER_S", "1.0"))
_steps: List[Tuple[str, float]] = []
_reported = 0  # steps already printed


def enabled() -> bool:
    return os.environ.get("LEAKTRACE_TIMING", "") not in ("", "0")


@contextmanager
def step(name: str, doing: str = "") -> Iterator[None]:
    """Time one step; doing: the progress line's words ("compiling the probes")."""
    timer = None
    if doing and sys.stderr.isatty():
        timer = threading.Timer(PROGRESS_AFTER_S, stderr_line, (f"leaktrace: {doing} ...",))
        timer.daemon = True
        timer.start()
    started = time.monotonic()
    try:
        yield
    finally:
        _steps.append((name, time.monotonic() - started))
        if timer is not None:
            timer.cancel()


def record(name: str, seconds: float) -> None:
    """A step timed elsewhere (a background thread's work)."""
    _steps.append((name, seconds))


def breakdown(steps: List[Tuple[str, float]]) -> str:
    """Each step's seconds, in the order they ran (a repeated step is summed)."""
    totals: dict = {}
    for name, seconds in steps:
        totals[name] = totals.get(name, 0.0) + seconds
    return ", ".join(f"{name} {seconds:.2f} s" for name, seconds in totals.items())


def since_start() -> float:
    """Seconds since this process started (Python's own start-up included)."""
    with open("/proc/self/stat") as stat:
        started_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
    return time.clock_gettime(time.CLOCK_BOOTTIME) - started_ticks / os.sysconf("SC_CLK_TCK")


def report(when: str, total: bool = False) -> None:
    """Print the steps since the last report (LEAKTRACE_TIMING=1 only); total:
    with the time since the process started (Python's start-up and imports
    included; the compile runs beside other steps, so steps may overlap)."""
    global _reported
    steps, _reported = _steps[_reported:], len(_steps)
    if enabled() and steps:
        line = f"leaktrace: timing {when}: {breakdown(steps)}"
        if total:
            line += f"; {since_start():.2f} s since the command started"
        stderr_line(line)
