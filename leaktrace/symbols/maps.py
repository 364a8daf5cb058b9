"""Parse /proc/PID/maps: which object is mapped at which address.

Contract: parse_maps(text) turns the kernel's maps text into MapEntry values in
file order; lines that do not have the kernel's shape are skipped (the kernel
never writes them, and one bad line must not hide the rest). read_maps(pid)
reads a live process's maps (read_maps_text(pid): the text alone) and raises
TargetError when the process is gone, PermissionProblem when we may not read it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

from ..base import privileges
from ..base.errors import TargetError

DELETED_SUFFIX = " (deleted)"


@dataclass(frozen=True)
class MapEntry:
    start: int
    end: int
    perms: str  # "r-xp"
    offset: int  # file offset of `start`
    dev: str  # "fd:01" (major:minor, hex)
    inode: int
    path: str  # file path, "[heap]", "[vdso]", or "" for anonymous memory
    deleted: bool = False  # the file was unlinked after it was mapped

    @property
    def executable(self) -> bool:
        return "x" in self.perms

    @property
    def file_backed(self) -> bool:
        return self.inode != 0 and self.path.startswith("/")

    def contains(self, addr: int) -> bool:
        return self.start <= addr < self.end


def parse_line(line: str) -> MapEntry | None:
    # The path is the sixth field and may itself contain spaces.
    fields = line.split(None, 5)
    if len(fields) < 5:
        return None
    try:
        start_text, end_text = fields[0].split("-", 1)
        start, end = int(start_text, 16), int(end_text, 16)
        offset, inode = int(fields[2], 16), int(fields[4])
    except ValueError:
        return None
    perms, dev = fields[1], fields[3]
    if len(perms) != 4 or ":" not in dev or end < start:
        return None
    path = fields[5].rstrip("\n") if len(fields) == 6 else ""
    deleted = path.endswith(DELETED_SUFFIX)
    if deleted:
        path = path[: -len(DELETED_SUFFIX)]
    return MapEntry(start, end, perms, offset, dev, inode, path, deleted)


def parse_maps(text: str) -> List[MapEntry]:
    entries = (parse_line(line) for line in text.splitlines())
    return [entry for entry in entries if entry is not None]


def read_maps(pid: int) -> List[MapEntry]:
    return parse_maps(read_maps_text(pid))


def read_maps_text(pid: int) -> str:
    path = f"/proc/{pid}/maps"
    try:
        with open(path) as maps:
            text = maps.read()
    except (FileNotFoundError, ProcessLookupError):
        raise TargetError(
            f"process {pid} is gone (no {path})",
            hint="it exited before its memory map was read; trace a running process",
        ) from None
    except PermissionError:
        raise privileges.denied(path, pid) from None
    except OSError as exc:
        raise TargetError(f"cannot read {path}: {exc.strerror}") from None
    if not text:
        # Kernel threads, and processes about to vanish, have an empty map.
        raise TargetError(f"process {pid} has no user memory (a kernel thread, or exiting)")
    return text
