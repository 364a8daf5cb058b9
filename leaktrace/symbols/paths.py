"""Resolve a path as a process inside another root would see it.

Contract: resolve_in_root(root, path) walks `path` one component at a time
under `root` (the host "/" or a container's /proc/PID/root), following
symlinks the way the kernel's openat2(RESOLVE_IN_ROOT) does: an absolute link
target starts again at `root`, `..` never climbs above `root`, and more than
MAX_SYMLINKS links is a loop. The result always starts with `root`, so a
container's `/app -> /etc/shadow` names the container's shadow file, never
the host's. Components that do not exist are kept as they are; opening the
result then fails in the caller, where the error belongs.
"""
from __future__ import annotations

import os
import stat
from typing import List

from ..errors import LeaktraceError

MAX_SYMLINKS = 40  # the kernel's own limit (MAXSYMLINKS)


class PathResolveError(LeaktraceError):
    """A path under a root could not be resolved (symlink loop)."""


def _join(root: str, parts: List[str]) -> str:
    base = root.rstrip("/")
    return base + "/" + "/".join(parts) if parts else (base or "/")


def resolve_in_root(root: str, path: str) -> str:
    """Return the host path of `path` as seen by a process whose root is `root`."""
    root = os.path.abspath(root)
    pending = [part for part in reversed(path.split("/"))]
    resolved: List[str] = []
    links = 0
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = _join(root, resolved + [part])
        try:
            is_link = stat.S_ISLNK(os.lstat(candidate).st_mode)
        except OSError:
            is_link = False  # missing or unreadable: keep it, the caller's open reports it
        if not is_link:
            resolved.append(part)
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise PathResolveError(
                f"too many symbolic links resolving {path} under {root}",
                hint="the path contains a symlink loop",
            )
        try:
            target = os.readlink(candidate)
        except OSError:
            resolved.append(part)
            continue
        if target.startswith("/"):
            resolved = []
        pending.extend(reversed(target.split("/")))
    return _join(root, resolved)
