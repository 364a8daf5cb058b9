"""Traced processes that exec: their old image's totals are dropped.

bpf/user_alloc.c counts each watched pid's execs (sched_process_exec, map
`images`) and files every allocation under the exec generation it was made
in. ExecWatch reads the generations at each report: totals of an older
generation belong to an address space that is gone, so drop() says to drop
them; the report gets a note of what was dropped, and the target the name of
the program it runs now. Generations are u16 in the totals key.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, Hashable, Mapping, Tuple

from ..process import targets as processes
from ..base.model import Target
from ..base.units import format_bytes


@dataclass(frozen=True)
class ExecSeen:
    """A traced process that exec'd: what the report says about it."""

    pid: int
    execs: int = 0  # since tracing began
    after_s: float = 0.0  # seconds into tracing, of the last exec
    comm: str = ""
    exe: str = ""
    dropped_bytes: int = 0
    dropped_count: int = 0

    def note(self) -> str:
        times = "" if self.execs == 1 else f" {self.execs} times, last"
        return (f"PID {self.pid} exec'd{times} {self.after_s:.1f} s into tracing and now runs "
                f"{self.exe or self.comm}: {format_bytes(self.dropped_bytes)} in "
                f"{self.dropped_count} allocations of the program it replaced were dropped "
                "(its address space is gone)")


class ExecWatch:
    def __init__(self):
        self.generations: Dict[int, int] = {}  # pid -> exec generation last read
        self.seen: Dict[int, ExecSeen] = {}

    def watch(self, table, pid: int) -> None:
        """From now on the kernel counts pid's execs."""
        table[table.Key(pid)] = table.Leaf()
        self.generations[pid] = 0

    def follow(self, pid: int) -> None:
        """pid was put in the table by the kernel (a followed fork)."""
        self.generations.setdefault(pid, 0)

    def read(self, table, started_ns: int) -> None:
        """Read each watched pid's generation; a new one means an exec."""
        for pid, known in self.generations.items():
            try:
                image = table[table.Key(pid)]
            except KeyError:
                continue
            if image.generation != known:
                self.generations[pid] = image.generation
                comm = processes.comm(pid)  # "?" once the process is gone
                self.seen[pid] = replace(
                    self.seen.get(pid) or ExecSeen(pid), execs=image.generation,
                    after_s=max(0, image.exec_ns - started_ns) / 1e9,
                    comm="" if comm == "?" else comm, exe=processes.exe(pid))

    def replaced(self, pid: int, image: int) -> bool:
        """Was `image` of pid replaced by an exec (its address space gone)?"""
        current = self.generations.get(pid)
        return current is not None and image != current & 0xFFFF

    def count_dropped(self, dropped: Mapping[Hashable, Tuple[int, int]]) -> None:
        """Add what was dropped ((pid, ...) context -> (bytes, count)) to the notes."""
        for context, (nbytes, count) in dropped.items():
            seen = self.seen.get(context[0])
            if seen is not None:
                self.seen[context[0]] = replace(seen, dropped_bytes=seen.dropped_bytes + nbytes,
                                                dropped_count=seen.dropped_count + count)

    def current(self, target: Target) -> Target:
        """The target as it is now: after an exec, the program it runs."""
        seen = self.seen.get(target.pid)
        if seen is None:
            return target
        return replace(target, comm=seen.comm or target.comm, exe=seen.exe or target.exe)

    def notes(self) -> Tuple[str, ...]:
        return tuple(seen.note() for seen in self.seen.values())
