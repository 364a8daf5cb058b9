"""The one on-disk cache every part of leaktrace uses, and the rules that keep
what others can write out of it.

Where: LEAKTRACE_CACHE_DIR when set; for root /var/cache/leaktrace, never
under $HOME or $XDG_CACHE_HOME (sudo -E, or env_keep of HOME, hands root
another user's environment); for anyone else $XDG_CACHE_HOME/leaktrace, else
~/.cache/leaktrace. Parts live in subdirectories: placement/, unwind/,
kernel-headers/, containers/.

Trust: the cache directory and every directory above it must belong to this
user or root and not be writable by others (unless sticky, like /tmp); the
cache's own directories and files must belong to this user and be writable
by no one else; symbolic links are never followed inside it. Anything else
is refused with one warning line per run, and leaktrace runs without the
cache: a cache only saves time. Contents read back are still checked by
their users (placement_cache, unwind.tables) against the files they describe.
"""
from __future__ import annotations

import errno
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import Optional

ROOT_CACHE = Path("/var/cache/leaktrace")
_warned = False


class Untrusted(Exception):
    """A cache path others could have written."""


def root_dir() -> Path:
    explicit = os.environ.get("LEAKTRACE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    if os.geteuid() == 0:
        return ROOT_CACHE
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "leaktrace"


def warn_once(message: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        print(f"leaktrace: warning: {message}; running without the cache", file=sys.stderr, flush=True)


def _check_owned(path: Path, info: os.stat_result) -> None:
    """A cache entry: ours, not a link, writable by nobody else."""
    if stat.S_ISLNK(info.st_mode):
        raise Untrusted(f"{path} is a symbolic link")
    if info.st_uid != os.geteuid():
        raise Untrusted(f"{path} belongs to user {info.st_uid}, not to this user")
    if info.st_mode & 0o022:
        raise Untrusted(f"{path} is writable by other users")


def _check_ancestors(path: Path) -> None:
    """Nobody but us or root can rename or replace anything on the way to path."""
    for parent in Path(os.path.realpath(path)).parents:
        info = os.stat(parent)
        if info.st_uid not in (0, os.geteuid()):
            raise Untrusted(f"{parent} belongs to user {info.st_uid}")
        if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
            raise Untrusted(f"{parent} is writable by other users")


def private_dir(path: Path) -> Path:
    """path as a directory of ours that nobody else can write (created 0700);
    raises Untrusted (or OSError when it cannot be created)."""
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    _check_owned(path, info)
    if not stat.S_ISDIR(info.st_mode):
        raise Untrusted(f"{path} is not a directory")
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)  # ours and read-only to others (an older version's umask)
    return path


def directory(*parts: str) -> Optional[Path]:
    """The cache directory for parts (created 0700), or None (warned once)
    when it cannot be created or others could write to it."""
    top = root_dir()
    try:
        top.parent.mkdir(parents=True, exist_ok=True)  # ~/.cache on a new account
        _check_ancestors(top)
        current = private_dir(top)
        for part in parts:
            current = private_dir(current / part)
    except Untrusted as exc:
        warn_once(f"cache refused: {exc}")
        return None
    except OSError as exc:
        warn_once(f"cache {top} unusable: {exc.strerror}")
        return None
    return current


def read_bytes(path: Path) -> Optional[bytes]:
    """A cache file's content; None when absent, unreadable or untrusted."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR):  # those: simply not cached
            warn_once(f"cache file {path} refused: {exc.strerror}")
        return None
    with os.fdopen(fd, "rb") as stream:
        info = os.fstat(fd)
        try:
            _check_owned(path, info)
            if not stat.S_ISREG(info.st_mode):
                raise Untrusted(f"{path} is not a regular file")
        except Untrusted as exc:
            warn_once(f"cache file refused: {exc}")
            return None
        return stream.read()


def write_bytes(path: Path, data: bytes) -> None:
    """Replace a cache file atomically (0600); failures only cost a recomputation."""
    try:
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass
