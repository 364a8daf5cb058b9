"""Find the separate debug file of a stripped binary.

Contract: find_debug_file(binary, path, root) looks, in the order gdb does,
for /usr/lib/debug/.build-id/xx/rest.debug (accepted only if its build-id
matches), then for the .gnu_debuglink name next to the binary, in its .debug/
subdirectory and under /usr/lib/debug/<dir>/ (accepted only if the CRC32 in
the debuglink matches). `path` is the binary's path as the traced process
sees it; every candidate is opened inside `root` (the host "/" or
/proc/PID/root) by paths.open_in_root, and checked and parsed through that
one descriptor, so a container's debug files are read from the container
and nothing in it can point the search at a host file.

host_debug_file(binary) is the search on the host's own files for a binary
from elsewhere: only the host's build-id tree, because every other
candidate's directory is named by the container. Both return an ElfSymbols,
or None when nothing matching was found.
"""
from __future__ import annotations

import os
import posixpath
import string
import zlib
from typing import Dict, Iterator, Optional

from .elf import ElfError, ElfSymbols, open_elf, open_elf_fd, open_elf_in_root
from .paths import PathResolveError, open_in_root

DEBUG_DIR = "/usr/lib/debug"
_crc_cache: Dict[tuple, int] = {}


def build_id_path(build_id: str) -> str:
    return f"{DEBUG_DIR}/.build-id/{build_id[:2]}/{build_id[2:]}.debug"


def debuglink_candidates(path: str, name: str) -> Iterator[str]:
    directory = posixpath.dirname(path)
    yield posixpath.join(directory, name)
    yield posixpath.join(directory, ".debug", name)
    yield DEBUG_DIR + posixpath.join(directory, name)


def fd_crc32(fd: int) -> int:
    """CRC32 of a whole open file (the debuglink checksum), cached per file version."""
    info = os.fstat(fd)
    key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    if key not in _crc_cache:
        crc, offset = 0, 0
        for chunk in iter(lambda: os.pread(fd, 1 << 20, offset), b""):
            crc = zlib.crc32(chunk, crc)
            offset += len(chunk)
        _crc_cache[key] = crc
    return _crc_cache[key]


def file_crc32(path: str) -> Optional[int]:
    """fd_crc32 of a file leaktrace trusts (its private cache)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return fd_crc32(fd)
    except OSError:
        return None
    finally:
        os.close(fd)


def _usable_build_id(binary: ElfSymbols) -> bool:
    bid = binary.build_id or ""
    return len(bid) > 2 and all(c in string.hexdigits for c in bid)


def _by_build_id(binary: ElfSymbols, root: str) -> Optional[ElfSymbols]:
    if not _usable_build_id(binary):
        return None
    try:
        found = open_elf_in_root(root, build_id_path(binary.build_id))
    except ElfError:
        return None
    return found if found.build_id == binary.build_id else None


def _by_debuglink(binary: ElfSymbols, path: str, root: str) -> Optional[ElfSymbols]:
    if binary.debuglink is None:
        return None
    name, crc = binary.debuglink
    for candidate in debuglink_candidates(path, name):
        try:
            fd = open_in_root(root, candidate)
        except (OSError, PathResolveError):
            continue
        try:
            info = os.fstat(fd)
            usable = (info.st_dev, info.st_ino) != binary.identity and fd_crc32(fd) == crc
        except OSError:
            usable = False
        if not usable:
            os.close(fd)
            continue
        try:
            return open_elf_fd(fd, root.rstrip("/") + candidate)
        except ElfError:
            continue
    return None


def find_debug_file(binary: ElfSymbols, path: str, root: str = "/") -> Optional[ElfSymbols]:
    return _by_build_id(binary, root) or _by_debuglink(binary, path, root)


def host_debug_file(binary: ElfSymbols) -> Optional[ElfSymbols]:
    """The host's debug file for binary, from /usr/lib/debug/.build-id/ only."""
    if not _usable_build_id(binary):
        return None
    try:
        found = open_elf(build_id_path(binary.build_id))
    except ElfError:
        return None
    return found if found.build_id == binary.build_id else None
