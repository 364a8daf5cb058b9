"""Unwind tables built in the background, so tracing starts before them.

Contract: TableBuilds(build) runs build(process) (unwind.spaces.
map_process_in_steps: parsing .eh_frame takes seconds for a large binary the
first time) for each submitted TracedProcess on one daemon worker thread, in
submission order, and hands each space it yields (a Built: partial ones, then
the complete one) once to finished(), called from the thread
that writes the BPF maps: nothing here writes a map from the worker, so the
maps keep one writer. Until a process's tables are written it has no
`unwind_spaces` entry, so bpf/unwind.h leaves its stacks to the kernel's
frame-pointer walk (bpf_get_stackid): EarlyWalks remembers which processes
those are, and early_notes() words the report's count of their outstanding
allocations with such stacks.
"""
from __future__ import annotations

import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Set, Tuple

from ..base import timing
from ..base.errors import LeaktraceError
from ..process.traced_process import TracedProcess
from ..unwind.spaces import ProcessSpace

# Tests hold each build back this long after finished() first sees it done (at
# the earliest, the probes' attach), to see the frame-pointer stacks of a
# process whose tables are still loading.
HOLD_S = float(os.environ.get("LEAKTRACE_UNWIND_HOLD_S", "0"))
NAMED_PIDS = 3  # more processes than this: one line for all of them
# The worker is pure Python (pyelftools) and holds the GIL: every ctypes call
# of the compile and attach (bcc makes hundreds) then waits up to the switch
# interval to get it back, 5 ms by default, which made a cold attach to
# redis-server seconds slower. A shorter interval bounds that wait.
SWITCH_INTERVAL_S = 0.0005


@dataclass(frozen=True)
class Built:
    process: TracedProcess
    version: int  # process.version when its maps were read for the space
    space: Optional[ProcessSpace]  # None: the process went away (error says how)
    error: Optional[LeaktraceError] = None


class TableBuilds:
    def __init__(self, build: Callable[[TracedProcess], Iterable[ProcessSpace]]):
        self._build = build
        self._todo: "queue.Queue[TracedProcess]" = queue.Queue()
        self._done: "queue.Queue[Built]" = queue.Queue()
        self._submitted: Set[int] = set()  # pids not handed out yet
        self._forgotten: Set[int] = set()  # pids whose build a synchronous load superseded
        self._held: List[Tuple[float, Built]] = []  # (when to hand out, build): HOLD_S
        self._worker: Optional[threading.Thread] = None
        self._stopped = False

    def submit(self, process: TracedProcess) -> None:
        """Build its tables in the background (once until finished() hands them out)."""
        if process.pid in self._submitted or self._stopped:
            return
        self._submitted.add(process.pid)
        self._todo.put(process)
        if self._worker is None:
            sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
            self._worker = threading.Thread(target=self._work, name="unwind-tables", daemon=True)
            self._worker.start()

    def waiting(self, pid: int) -> bool:
        return pid in self._submitted

    def forget(self, pid: int) -> None:
        """Hand out nothing more of pid's build: its tables were loaded since, from newer maps."""
        if pid in self._submitted:
            self._forgotten.add(pid)

    def finished(self) -> List[Built]:
        """The builds done since the last call."""
        now = time.monotonic()
        while True:
            try:
                self._held.append((now + HOLD_S, self._done.get_nowait()))
            except queue.Empty:
                break
        done = [built for due, built in self._held if due <= now]
        self._held = [(due, built) for due, built in self._held if due > now]
        kept = []
        for built in done:
            pid, last = built.process.pid, built.space is None or built.space.complete
            if last:
                self._submitted.discard(pid)
            if pid in self._forgotten:
                if last:
                    self._forgotten.discard(pid)
                continue
            kept.append(built)
        return kept

    def stop(self) -> None:
        """Build nothing more (the probes are closing)."""
        self._stopped = True

    def _work(self) -> None:
        while not self._stopped:
            process = self._todo.get()
            started = time.monotonic()
            self._steps(process)
            timing.record("unwind tables (background)", time.monotonic() - started)

    def _steps(self, process: TracedProcess) -> None:
        try:
            for space in self._build(process):
                self._done.put(Built(process, process.version, space))
        except LeaktraceError as exc:
            self._done.put(Built(process, process.version, None, exc))


class EarlyWalks:
    """Which processes' tables are still loading, and which arrived after tracing started."""

    def __init__(self):
        self.loading: Set[int] = set()
        self.loaded: Set[int] = set()  # written after the probes went live

    def mark(self, pid: int) -> None:
        self.loading.add(pid)

    def finish(self, pid: int, written: bool) -> None:
        """Its first tables were written (written), or will not be (no CFI needed, or gone)."""
        if pid in self.loading:
            self.loading.discard(pid)
            if written:
                self.loaded.add(pid)


def early_notes(loaded: Dict[int, int], loading: Dict[int, int]) -> List[str]:
    """The report's lines: pid -> its outstanding allocations whose stacks were
    walked with frame pointers only, for processes whose tables arrived after
    tracing started (loaded) and those whose tables are still loading."""
    loaded = {pid: n for pid, n in loaded.items() if n}
    if len(loaded) > NAMED_PIDS:
        notes = [f"stacks of {sum(loaded.values())} outstanding allocations of {len(loaded)} processes "
                 "were walked with frame pointers only: they were made while the unwind tables were "
                 "still loading"]
    else:
        notes = [f"stacks of {n} outstanding allocations of pid {pid} were walked with frame pointers "
                 "only: they were made while its unwind tables were still loading"
                 for pid, n in loaded.items()]
    return notes + [f"the unwind tables of pid {pid} are still loading: the stacks of its {n} "
                    "outstanding allocations were walked with frame pointers only"
                    for pid, n in loading.items() if n]
