"""The agent's sampling schedule, on a thread of its own.

Contract: Sampler(take, period_s, clock, failed) calls take() every period_s
from start() until stop(), whatever the agent's main thread is doing. A
trace compiles its BPF program, attaches, writes its final report and its
evidence (seconds each, tens of them on a loaded machine) without calling
back, so a schedule driven from the trace would leave a gap in every series,
and a series with a gap is "unknown" until a window has passed again. A
late sample brings no burst of catch-up samples: the next is period_s after
it. An exception in take() ends the schedule: it is kept in failure and
failed() is called, so the agent can stop and raise it.

Clock is the time the schedule runs on; tests pass one whose time they move.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Optional


class Clock:
    """Monotonic time, and waiting on it."""

    def now(self) -> float:
        return time.monotonic()

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Until event is set or seconds have passed; True when it was set."""
        return event.wait(max(0.0, seconds))


class Sampler:
    def __init__(self, take: Callable[[], None], period_s: float, clock: Clock,
                 failed: Callable[[], None]):
        self.take = take
        self.period_s = period_s
        self.clock = clock
        self.failed = failed
        self.failure: Optional[BaseException] = None
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leaktrace-agent-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ends the schedule; returns once a sample in progress is done."""
        self._halt.set()
        self._thread.join()

    def _run(self) -> None:
        due = self.clock.now()
        try:
            while not self._halt.is_set():
                self.take()
                due = max(due + self.period_s, self.clock.now())
                self.clock.wait(self._halt, due - self.clock.now())
        except BaseException as error:  # handed to the main thread, which raises it
            self.failure = error
            self.failed()
