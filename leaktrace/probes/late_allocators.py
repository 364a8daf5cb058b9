"""Allocators mapped after attach (dlopen): calls to them are not traced, and the report says so."""
from __future__ import annotations

import os
from typing import Dict, Iterable, List, Optional

from .allocator import defines_malloc


def _real_path(path: str) -> Optional[str]:
    """os.path.realpath, or None when a /proc/PID/root on the way is gone."""
    try:
        return os.path.realpath(path)
    except OSError:
        return None


class LateAllocators:
    """The notes on libraries mapped after attach that define malloc, each said once."""

    def __init__(self):
        self._notes: Dict[str, None] = {}

    def notes(self) -> List[str]:
        return list(self._notes)

    def notice(self, mapped_late: Dict[int, List[str]], hooked_paths: Iterable[str]) -> None:
        """Look at the paths mapped late per pid (emptied once seen)."""
        if not any(mapped_late.values()):
            return  # the common case, at every poll: no path to resolve
        hooked = {_real_path(path) for path in hooked_paths}
        for pid, paths in mapped_late.items():
            for path in paths:
                host = f"/proc/{pid}/root{path}"
                real = _real_path(host)  # None once the process is gone: nothing to say then
                if real is not None and real not in hooked and defines_malloc(host):
                    self._notes.setdefault(
                        f"PID {pid} mapped {path} after tracing began (dlopen?); it defines malloc, "
                        "and calls to it are not traced (trace them with --obj PATH)", None)
            paths.clear()
