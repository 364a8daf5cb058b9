"""Unwind tables built in the background, so tracing starts before them.

Contract: TableBuilds(build) runs build(process) (unwind.spaces.map_process:
parsing .eh_frame takes seconds for a large binary the first time) for each
submitted TracedProcess on one daemon worker thread, in submission order,
and hands each result (a Built) once to finished(), called from the thread
that writes the BPF maps: nothing here writes a map from the worker, so the
maps keep one writer. EarlyWalks marks a process whose tables are being
built (bpf/unwind.h then walks its stacks with frame pointers and counts
them per process in `unwind_early`) and says in the report how many
allocations were walked that way.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Set, Tuple

from ..base import timing
from ..base.errors import LeaktraceError
from ..process.traced_process import TracedProcess
from ..unwind.spaces import ProcessSpace

TABLES_PENDING = 0xFFFFFFFF  # UNWIND_TABLES_PENDING
# Tests hold each build back this long after finished() first sees it done (at
# the earliest, the probes' attach), to see the frame-pointer stacks of a
# process whose tables are still loading.
HOLD_S = float(os.environ.get("LEAKTRACE_UNWIND_HOLD_S", "0"))
NAMED_PIDS = 3  # more processes than this: one line for all of them


@dataclass(frozen=True)
class Built:
    process: TracedProcess
    version: int  # process.version when its maps were read for the space
    space: Optional[ProcessSpace]  # None: the process went away (error says how)
    error: Optional[LeaktraceError] = None


class TableBuilds:
    def __init__(self, build: Callable[[TracedProcess], ProcessSpace]):
        self._build = build
        self._todo: "queue.Queue[TracedProcess]" = queue.Queue()
        self._done: "queue.Queue[Built]" = queue.Queue()
        self._submitted: Set[int] = set()  # pids not handed out yet
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
            self._worker = threading.Thread(target=self._work, name="unwind-tables", daemon=True)
            self._worker.start()

    def waiting(self, pid: int) -> bool:
        return pid in self._submitted

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
        for built in done:
            self._submitted.discard(built.process.pid)
        return done

    def stop(self) -> None:
        """Build nothing more (the probes are closing)."""
        self._stopped = True

    def _work(self) -> None:
        while not self._stopped:
            process = self._todo.get()
            started = time.monotonic()
            self._done.put(self._one(process))
            timing.record("unwind tables (background)", time.monotonic() - started)

    def _one(self, process: TracedProcess) -> Built:
        try:
            space = self._build(process)
        except LeaktraceError as exc:
            return Built(process, process.version, None, exc)
        return Built(process, process.version, space)


class EarlyWalks:
    """Processes whose tables are being built, and their frame-pointer walks meanwhile."""

    def __init__(self, bpf):
        self.bpf = bpf
        self._pending: Set[int] = set()
        self._counted: Dict[int, None] = {}  # pids whose early walks the report counts

    def mark(self, pid: int) -> None:
        """Before its probes go live: count its walks until finish()."""
        early, spaces = self.bpf["unwind_early"], self.bpf["unwind_spaces"]
        early[early.Key(pid)] = early.Leaf(0)
        spaces[spaces.Key(pid)] = spaces.Leaf(0, TABLES_PENDING)
        self._pending.add(pid)

    def finish(self, pid: int, written: bool, counted: bool) -> None:
        """Its tables were written (they replaced the mark), or will not be;
        counted: whether its early walks go into the report."""
        if pid not in self._pending:
            return
        self._pending.discard(pid)
        if not written:
            _delete(self.bpf["unwind_spaces"], pid)
        if counted:
            self._counted[pid] = None
        else:
            _delete(self.bpf["unwind_early"], pid)

    def notes(self) -> List[str]:
        return early_notes({pid: self._count(pid) for pid in self._counted},
                           {pid: self._count(pid) for pid in sorted(self._pending)})

    def _count(self, pid: int) -> int:
        table = self.bpf["unwind_early"]
        try:
            return int(table[table.Key(pid)].value)
        except KeyError:
            return 0


def early_notes(loaded: Dict[int, int], loading: Dict[int, int]) -> List[str]:
    """The report's lines: pid -> allocations walked with frame pointers only,
    for processes whose tables arrived since (loaded) and those still waiting."""
    loaded = {pid: n for pid, n in loaded.items() if n}
    if len(loaded) > NAMED_PIDS:
        notes = [f"stacks of the first {sum(loaded.values())} allocations of {len(loaded)} processes "
                 "were walked with frame pointers only: their unwind tables were still loading"]
    else:
        notes = [f"stacks of the first {n} allocations of pid {pid} were walked with frame pointers "
                 "only: the unwind tables were still loading" for pid, n in loaded.items()]
    return notes + [f"the unwind tables of pid {pid} are still loading: the stacks of its {n} "
                    "allocations so far were walked with frame pointers only"
                    for pid, n in loading.items() if n]


def _delete(table, pid: int) -> None:
    try:
        del table[table.Key(pid)]
    except KeyError:
        pass
