"""TracedProcess: one traced process, looked at once, shared by every stage.

Contract: TracedProcess(pid) is built once per traced PID and handed to the
probes (which objects to hook, unwind tables), the unwinder and the
symbolizer, which read the process through it instead of through /proc:
- maps(): the memory map. Readers within REREAD_S share one read; a read
  whose text is the same as the last one (compared by digest) is not parsed
  again, and `version` changes only when the text did, so readers redo their
  own work (module lists, unwind tables) only then. fresh=True reads now (a
  symbolizer looking for an address no mapping holds).
- root: /proc/PID/root pinned as a held descriptor (/proc/self/fd/N) at
  construction: files are opened inside this process's root even after its
  PID is reused; the plain path when it cannot be opened.
- container() from /proc, named_container() with Docker's name and image:
  each looked up once.
- plan: the probes.allocator.HookPlan (its allocator and what is hooked),
  set once it is discovered; held here, never read by this module.
- alive(): the same process still holds the PID (not exited, not reused).
maps() raises TargetError / PermissionProblem as symbols.maps.read_maps does,
and TargetError once the process is gone or its PID reused.
"""
from __future__ import annotations

import hashlib
import os
import time
import weakref
from typing import Any, Optional, Tuple

from . import containers
from ..base.errors import TargetError
from ..base.model import Container
from ..symbols.maps import MapEntry, parse_maps, read_maps_text

REREAD_S = 0.2  # the unwinder's refresh period: one read serves it and the symbolizer
_UNSET: Any = object()


def start_time(pid: int) -> Optional[str]:
    """Field 22 of /proc/PID/stat: tells a process from a later one reusing its PID."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pin_root(pid: int) -> Optional[int]:
    try:
        return os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:  # gone, or not ours to reach (no CAP_SYS_PTRACE over it)
        return None


class TracedProcess:
    def __init__(self, pid: int, root: Optional[str] = None):
        self.pid = pid
        self.started = start_time(pid)
        self.plan: Any = None  # probes.allocator.HookPlan, once discovered
        self.version = 0  # changes whenever the maps' text did
        self._maps: Tuple[MapEntry, ...] = ()
        self._digest = b""
        self._read_at: Optional[float] = None
        self._container: Optional[Container] = _UNSET
        self._named: Optional[Container] = _UNSET
        self.root_name = root if root is not None else f"/proc/{pid}/root"  # for messages
        fd = _pin_root(pid) if root is None else None
        if fd is None:
            self.root = self.root_name
        else:
            self.root = f"/proc/self/fd/{fd}"
            weakref.finalize(self, os.close, fd)

    def alive(self) -> bool:
        now = start_time(self.pid)
        return now is not None and (self.started is None or now == self.started)

    def maps(self, fresh: bool = False) -> Tuple[MapEntry, ...]:
        now = time.monotonic()
        if not fresh and self._read_at is not None and now - self._read_at < REREAD_S:
            return self._maps
        text = read_maps_text(self.pid)
        if not self.alive():  # checked after the read: the text is of this process
            raise TargetError(f"process {self.pid} is gone (its PID is another process's now)",
                              hint="it exited before its memory map was read; trace a running process")
        self._read_at = now
        digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
        if digest != self._digest:
            self._digest, self._maps = digest, tuple(parse_maps(text))
            self.version += 1
        return self._maps

    def container(self) -> Optional[Container]:
        """Its container from /proc (engine and id), None on the host; no Docker call."""
        if self._container is _UNSET:
            self._container = containers.container_of(self.pid, ask_docker=False)
        return self._container

    def named_container(self) -> Optional[Container]:
        """container() with the name and image Docker gives it, asked once."""
        if self._named is _UNSET:
            found = self.container()
            docker = found is not None and found.runtime == "docker"
            self._named = containers.with_docker_names(found) if docker else found
        return self._named
