"""UserSymbols: the symbol policy for traced processes.

One ProcessSymbols per traced process (a TracedProcess: its maps are read
through it, shared with the probes), primed as soon as it is traced and
re-primed (refresh) while it runs, so its stacks still resolve after it
exits; for a process in a container, the `docker cp` fallback (--docker-cp)
when its files cannot be reached through /proc/PID/root, one copier per
container. resolve(key, raw) is the session's resolver in user mode.
"""
from __future__ import annotations

import time
from typing import Dict, List, Optional

from ..process import containers, targets
from ..base import timing
from ..base.console import stderr_line
from ..base.errors import LeaktraceError
from ..process.traced_process import TracedProcess
from .copyout import DockerCopy
from .process import ProcessSymbols

REFRESH_S = 0.5  # how often live targets' modules are looked at (their maps: TracedProcess)


class UserSymbols:
    """Resolves stacks of each traced pid, keeping symbols after it exits."""

    def __init__(self, lines: bool = False, docker_cp: str = "auto"):
        self.lines = lines
        self.docker_cp = docker_cp
        self.by_pid: Dict[int, ProcessSymbols] = {}
        self._copiers: Dict[str, Optional[DockerCopy]] = {}  # per container id
        self._refreshed = 0.0

    def add(self, process: TracedProcess) -> None:
        with timing.step("symbol tables", "reading symbol tables"):
            self.by_pid[process.pid] = ProcessSymbols(process, lines=self.lines, copier=self._copier(process))
            self._prime(process.pid)

    def add_child(self, process: TracedProcess, parent: int) -> None:
        """A forked child: until it maps something new its addresses are its
        parent's, whose symbols serve when the child is gone before it is read."""
        symbols = ProcessSymbols(process, lines=self.lines, copier=self._copier(process))
        try:
            symbols.prime()
        except LeaktraceError:
            symbols = self.by_pid.get(parent, symbols)
        self.by_pid[process.pid] = symbols

    def _copier(self, process: TracedProcess) -> Optional[DockerCopy]:
        """The docker cp fallback for the process's container (one per container), if any."""
        container = process.container()
        if container is None:
            return None
        pid = process.pid
        problem = containers.root_access_problem(pid)
        if problem:
            copies = container.runtime == "docker" and self.docker_cp != "never"
            stderr_line(f"leaktrace: cannot read /proc/{pid}/root ({problem}); symbols come from "
                        + ("docker cp, else " if copies else "") + "host files identical to the mapped ones")
        if self.docker_cp == "never":
            return None
        if container.runtime != "docker":
            if self.docker_cp == "always":
                stderr_line(f"leaktrace: --docker-cp always: PID {pid} runs in a "
                            f"{container.runtime} container, not Docker; docker cp does not apply")
            return None
        if container.id not in self._copiers:
            self._copiers[container.id] = self._new_copier(container.id)
        return self._copiers[container.id]

    def _new_copier(self, container_id: str) -> Optional[DockerCopy]:
        copier = DockerCopy(container_id, self.docker_cp)
        if self.docker_cp == "always":
            try:
                copier.check()
            except LeaktraceError as exc:
                stderr_line(f"leaktrace: --docker-cp always: {exc.message}; "
                            "symbols come from /proc/PID/root and the host instead")
                return None
        return copier

    def _prime(self, pid: int) -> None:
        # A process between fork and exec, or exiting, has nothing to read
        # yet; symbolize() copes with whatever was learnt.
        try:
            self.by_pid[pid].prime()
        except LeaktraceError:
            pass

    def resolve(self, key, raw):
        symbols = self.by_pid.get(key.pid)
        if symbols is None:
            self.add(TracedProcess(key.pid))
            symbols = self.by_pid[key.pid]
        return symbols.symbolize(raw)

    def refresh(self) -> None:
        """Open the modules live targets mapped since, so symbols survive their exit."""
        now = time.monotonic()
        if now - self._refreshed < REFRESH_S:
            return
        self._refreshed = now
        for pid in self.by_pid:
            if targets.is_running(pid):
                self._prime(pid)

    def warnings(self) -> List[str]:
        return [w for symbols in self.by_pid.values() for w in symbols.warnings]
