"""Find the separate debug file of a stripped binary.

Contract: find_debug_file(binary, path, root) looks, in the order gdb does,
for /usr/lib/debug/.build-id/xx/rest.debug (accepted only if its build-id
matches), then for the .gnu_debuglink name next to the binary, in its .debug/
subdirectory and under /usr/lib/debug/<dir>/ (accepted only if the CRC32 in
the debuglink matches). `path` is the binary's path as the traced process
sees it; every candidate is resolved inside `root` (the host "/" or
/proc/PID/root), so a container's debug files are read from the container.
Returns an ElfSymbols, or None when nothing matching was found.
"""
from __future__ import annotations

import os
import posixpath
import zlib
from typing import Dict, Iterator, Optional

from .elf import ElfError, ElfSymbols, open_elf
from .paths import PathResolveError, resolve_in_root

DEBUG_DIR = "/usr/lib/debug"
_crc_cache: Dict[tuple, int] = {}


def build_id_path(build_id: str) -> str:
    return f"{DEBUG_DIR}/.build-id/{build_id[:2]}/{build_id[2:]}.debug"


def debuglink_candidates(path: str, name: str) -> Iterator[str]:
    directory = posixpath.dirname(path)
    yield posixpath.join(directory, name)
    yield posixpath.join(directory, ".debug", name)
    yield DEBUG_DIR + posixpath.join(directory, name)


def file_crc32(path: str) -> Optional[int]:
    """CRC32 of a whole file (the debuglink checksum), cached per file version."""
    try:
        info = os.stat(path)
        key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        if key not in _crc_cache:
            crc = 0
            with open(path, "rb") as stream:
                for chunk in iter(lambda: stream.read(1 << 20), b""):
                    crc = zlib.crc32(chunk, crc)
            _crc_cache[key] = crc
        return _crc_cache[key]
    except OSError:
        return None


def _open_in_root(root: str, path: str) -> Optional[ElfSymbols]:
    try:
        return open_elf(resolve_in_root(root, path))
    except (ElfError, PathResolveError):
        return None


def _by_build_id(binary: ElfSymbols, root: str) -> Optional[ElfSymbols]:
    if not binary.build_id or len(binary.build_id) < 3:
        return None
    found = _open_in_root(root, build_id_path(binary.build_id))
    return found if found is not None and found.build_id == binary.build_id else None


def _by_debuglink(binary: ElfSymbols, path: str, root: str) -> Optional[ElfSymbols]:
    if binary.debuglink is None:
        return None
    name, crc = binary.debuglink
    for candidate in debuglink_candidates(path, name):
        try:
            host_path = resolve_in_root(root, candidate)
        except PathResolveError:
            continue
        if not os.path.isfile(host_path) or _same_file(host_path, binary.path):
            continue
        if file_crc32(host_path) != crc:
            continue
        try:
            return open_elf(host_path)
        except ElfError:
            continue
    return None


def _same_file(first: str, second: str) -> bool:
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False


def find_debug_file(binary: ElfSymbols, path: str, root: str = "/") -> Optional[ElfSymbols]:
    return _by_build_id(binary, root) or _by_debuglink(binary, path, root)
