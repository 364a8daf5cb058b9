"""--follow-forks: the processes the targets forked, as the kernel followed them.

bpf/user_alloc.c's sched_process_fork program puts a traced process's new
child in `images` (the traced set) before the child first runs, with its
parent's pid; sched_process_exit and sched_process_exec mark it (IMAGE_*
bits in bpf/common.h): an exited pid may come back as an unrelated process,
and an exec'd child runs another program, whose allocator the parent's probes
do not cover, so the kernel stops recording both. ForkedChildren reads the
set at each poll, keeps what it learnt (a child stays in the report after it
exits) and removes exited children from the map so it does not fill up.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, List, Sequence, Tuple

from ..process import targets as processes
from ..base.errors import EnvironmentProblem
from ..base.model import Target
from . import btf

IMAGE_EXITED = 1  # bpf/common.h
IMAGE_EXECED = 2


def task_tgid_offset() -> int:
    """offsetof(struct task_struct, tgid) in the running kernel: the fork
    program tells a new process from a new thread by it."""
    layout = btf.kernel_member_offsets("task_struct", ("tgid",))
    if layout is None:
        raise EnvironmentProblem("--follow-forks needs the kernel's BTF (/sys/kernel/btf/vmlinux) to "
                                 "tell new processes from new threads",
                                 hint="trace each child with attach -p PID instead")
    return layout["tgid"]


@dataclass(frozen=True)
class Child:
    pid: int
    parent: int
    comm: str
    exe: str = ""
    exited: bool = False
    execed: bool = False


class ForkedChildren:
    def __init__(self):
        self.children: Dict[int, Child] = {}

    def read(self, table) -> List[int]:
        """Take in the children in the traced set; returns the pids new since the last read."""
        new = []
        for key, image in table.items():
            pid, parent = key.value, image.parent
            if not parent:
                continue  # a named target
            known = self.children.get(pid)
            if known is None or known.parent != parent:
                known = Child(pid, parent, processes.comm(pid), processes.exe(pid))
                new.append(pid)
            self.children[pid] = replace(known, exited=known.exited or bool(image.state & IMAGE_EXITED),
                                         execed=known.execed or bool(image.state & IMAGE_EXECED))
        return new

    def prune(self, table) -> None:
        """Remove exited children from the map (their rows stay)."""
        for pid, child in self.children.items():
            if child.exited:
                try:
                    del table[table.Key(pid)]
                except KeyError:
                    pass

    def is_followed(self, pid: int) -> bool:
        """Whether pid was followed and still runs the program it was forked into."""
        child = self.children.get(pid)
        return child is not None and not child.execed

    def alive(self) -> bool:
        return any(not c.exited and not c.execed and processes.is_running(c.pid)
                   for c in self.children.values())

    def targets(self, named: Sequence[Target]) -> Tuple[Target, ...]:
        """A Target per child, with its parent's allocator (the same objects until it execs)."""
        by_pid = {t.pid: t for t in named}
        found = []
        for child in sorted(self.children.values(), key=lambda c: c.pid):
            root = _root(child.parent, by_pid, self.children)
            found.append(replace(root, pid=child.pid, comm=child.comm, exe=child.exe or root.exe,
                                 forked_from=child.parent) if root else
                         Target(pid=child.pid, comm=child.comm, exe=child.exe, forked_from=child.parent))
        return tuple(found)

    def summary(self, named: int) -> str:
        """The probes: line saying how many processes are traced."""
        kids = list(self.children.values())
        exited = sum(1 for c in kids if c.exited)
        execed = [c for c in kids if c.execed]
        now = sum(1 for c in kids if not c.exited and not c.execed)
        text = (f"following forks: processes traced now {named + now}, "
                f"in all {named + len(kids)} ({named} named, {len(kids)} forked; {exited} exited)")
        if execed:
            names = ", ".join(f"{c.pid}" for c in execed[:5]) + (" ..." if len(execed) > 5 else "")
            text += (f"; {len(execed)} forked children exec'd another program and were not followed "
                     f"after it (pid {names}: trace with attach -p PID)")
        return text


def _root(parent: int, named: Dict[int, Target], children: Dict[int, Child]):
    """The named target a child descends from, or None."""
    seen = set()
    while parent not in named and parent in children and parent not in seen:
        seen.add(parent)
        parent = children[parent].parent
    return named.get(parent)
